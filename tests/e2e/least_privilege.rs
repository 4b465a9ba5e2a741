//! NATS as production should run it: TLS with client certificates, and one user per service
//! with the permissions shipped in `deploy/nats/permissions.conf`. The saga works end to end
//! with them — both outcomes, notifications, the admin reads — and a service's credentials
//! cannot publish another's events, touch another's bucket, change or delete a stream, read
//! another's replies, or write a dead letter under another consumer's name: the server refuses
//! each and says so. A letter it may write, under its own name, cannot launder a forged event
//! through order-service's redrive either.

use events::ServiceId;
use futures::StreamExt as _;
use std::path::Path;
use std::time::Duration;

use events::permissions::IMPORTED_API_PREFIX;
use testkit::{NatsServer, Pki, System};

const USERS: [(ServiceId, &str, &str); 3] = [
    (
        ServiceId::Order,
        "ORDER_PASSWORD",
        "order-secret-1-4b7e0c9a2f",
    ),
    (
        ServiceId::Inventory,
        "INVENTORY_PASSWORD",
        "inventory-secret-2-8d1f6a3c5e",
    ),
    (
        ServiceId::Notification,
        "NOTIFICATION_PASSWORD",
        "notification-secret-3-2c9e7b4a1d",
    ),
];

#[tokio::test]
async fn the_saga_runs_over_tls_with_least_privilege_users_and_a_foreign_publish_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let permissions = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/permissions.conf");
    // The permissions file reads each password from the server's environment.
    let mut server = NatsServer::builder()
        .config(&pki.server_config())
        .include(&permissions);
    for (_, variable, password) in USERS {
        server = server.env(variable, password);
    }
    server = server.env("OPERATOR_PASSWORD", OPERATOR_PASSWORD);
    let server = server.start();

    let mut builder = System::builder()
        .nats(server)
        .provisioner_env("NATS_USER", "operator")
        .provisioner_env("NATS_PASSWORD", OPERATOR_PASSWORD)
        .env("NATS_TLS_CA", pki.ca.to_str().unwrap())
        .env("NATS_TLS_CERT", pki.client_cert.to_str().unwrap())
        .env("NATS_TLS_KEY", pki.client_key.to_str().unwrap());
    for (service, _, password) in USERS {
        builder = builder
            .service_env(service, "NATS_USER", service.name())
            .service_env(service, "NATS_PASSWORD", password)
            .service_env(service, "NATS_JS_API_PREFIX", IMPORTED_API_PREFIX);
    }
    let system = builder.start().await;

    // The whole saga, both outcomes, every service under its own user on what the operator
    // provisioned; the admin reads that list keys and dead letters work too.
    system.set_stock("SECURE", 3).await;
    let order_id = system.place_order("sam", &[("SECURE", 1)]).await;
    system.wait_for_status(&order_id, "confirmed").await;
    let too_many = system.place_order("sam", &[("SECURE", 5)]).await;
    system.wait_for_status(&too_many, "cancelled").await;
    crate::support::eventually("both notifications are sent", || async {
        let mut sent = 0;
        for order in [&order_id, &too_many] {
            let notes = system
                .get_json(&format!(
                    "{}/v1/notifications?order_id={order}",
                    system.notification.url()
                ))
                .await;
            sent += usize::from(notes[0]["status"] == "sent");
        }
        sent == 2
    })
    .await;
    for url in [
        format!("{}/v1/stock", system.inventory[0].url()),
        format!("{}/admin/dead-letters", system.order.url()),
    ] {
        let response = system.as_admin(system.http.get(&url)).send().await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "{url}: {}",
            response.text().await.unwrap()
        );
    }

    // Log in as the inventory service and try what it must not do. Its account imports none of
    // it, so nothing is even answered, and nothing anywhere changes.
    let tls = || {
        async_nats::ConnectOptions::new()
            .add_root_certificates(pki.ca.clone())
            .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
            .require_tls(true)
    };
    let operator = Login::connect(tls(), &system.nats, "operator", OPERATOR_PASSWORD).await;
    let inventory = Login::connect(
        tls(),
        &system.nats,
        "inventory-service",
        "inventory-secret-2-8d1f6a3c5e",
    )
    .await;
    // Once the stock's marks have settled, nothing writes until the next order.
    let _ = system.stock("SECURE").await;
    let before = operator.streams().await;
    let forged = format!("orders.0.mallory.{}.confirmed", events::OrderId::new());
    for (what, subject, body) in [
        ("announce an order", forged.as_str(), "forged"),
        ("write another's bucket", "$KV.idempotency.forged", "x"),
        (
            "write another's bucket",
            "JS.ORDERFLOW.API.$KV.idempotency.forged",
            "x",
        ),
        (
            "read another's bucket",
            "$JS.API.DIRECT.GET.KV_idempotency",
            "{}",
        ),
        (
            "read another's bucket",
            "JS.ORDERFLOW.API.DIRECT.GET.KV_idempotency",
            "{}",
        ),
        (
            "change a stream it reads",
            "$JS.API.STREAM.UPDATE.ORDERS",
            "{}",
        ),
        (
            "change a stream it reads",
            "JS.ORDERFLOW.API.STREAM.UPDATE.ORDERS",
            "{}",
        ),
        (
            "delete its stream",
            "JS.ORDERFLOW.API.STREAM.DELETE.INVENTORY",
            "{}",
        ),
    ] {
        inventory.unanswered(what, subject, body).await;
    }
    assert_eq!(operator.streams().await, before, "a stream changed");
    // ...nor listen to the order service's replies (its reads of orders and keys): another
    // account's subjects are not its own.
    let mut eavesdrop = inventory
        .client
        .subscribe("_INBOX_order-service.>")
        .await
        .unwrap();
    let _ = system.order(&order_id).await;
    let heard = tokio::time::timeout(Duration::from_millis(500), eavesdrop.next()).await;
    assert!(heard.is_err(), "inventory heard order-service's replies");
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(inventory.client.clone());

    // Dead letters: it may not write under another consumer's name...
    let cancellation = format!("orders.0.sam.{order_id}.cancelled");
    let under_archive = format!("dlq.order-archive.{cancellation}");
    let forged = events::Envelope::new(
        "/forged",
        events::Event::OrderCancelled(
            events::OrderCancelled::builder()
                .order_id(events::OrderId(order_id.parse().unwrap()))
                .customer_id(events::CustomerId::new("sam").unwrap())
                .reason(events::CancelReason::CustomerRequested)
                .reserved(vec![events::ReservedLine {
                    sku: events::Sku::new("SECURE").unwrap(),
                    quantity: 1,
                }])
                .build(),
        ),
    );
    let letter = || forged.to_json().unwrap().into();
    let headers =
        |consumer| testkit::sample::dead_letter_headers(&cancellation, "ORDERS", 1, consumer);
    assert!(
        js.publish_with_headers(under_archive.clone(), headers("order-archive"), letter())
            .await
            .unwrap()
            .await
            .is_err(),
        "a letter under the archive's name was stored"
    );
    // ...and a letter under its own name that launders a cancellation nobody made (a redrive
    // would publish it with order-service's credentials) is refused at redrive, with the reason.
    for claimed in ["inventory", "order-archive"] {
        let sequence = js
            .publish_with_headers(
                format!("dlq.inventory.{cancellation}"),
                headers(claimed),
                letter(),
            )
            .await
            .unwrap()
            .await
            .expect("its own dead-letter subject")
            .sequence;
        let url = format!(
            "{}/admin/dead-letters/{sequence}/redrive",
            system.order.url()
        );
        let refused = system
            .as_admin(system.http.post(&url))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 422, "claiming {claimed}");
        let problem: serde_json::Value = refused.json().await.unwrap();
        assert!(
            problem["type"]
                .as_str()
                .unwrap()
                .ends_with("not-redrivable"),
            "{problem}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains(&sequence.to_string()),
            "{problem}"
        );
    }
    assert_eq!(system.order(&order_id).await["status"], "confirmed");
}

/// The operator's password in these tests.
const OPERATOR_PASSWORD: &str = "operator-secret-4-6a0d3f8b2e";

/// A NATS login, as a service or the operator.
struct Login {
    client: async_nats::Client,
}

impl Login {
    async fn connect(
        options: async_nats::ConnectOptions,
        server: &NatsServer,
        user: &str,
        password: &str,
    ) -> Self {
        let client = options
            .user_and_password(user.into(), password.into())
            .custom_inbox_prefix(events::names::inbox_prefix(user))
            .connect(server.url())
            .await
            .unwrap();
        Self { client }
    }

    /// Sends a request and expects it served by nothing: no answer, or the server's "JetStream
    /// not enabled for account" (a service's account has none of its own).
    async fn unanswered(&self, what: &str, subject: &str, body: &str) {
        let answer = tokio::time::timeout(
            Duration::from_secs(1),
            self.client
                .request(subject.to_owned(), body.to_owned().into()),
        )
        .await;
        if let Ok(Ok(reply)) = answer {
            let text = String::from_utf8_lossy(&reply.payload);
            assert!(
                text.contains("JetStream not enabled for account"),
                "{what}: {subject} answered {text}"
            );
        }
    }

    /// Every stream with its configuration and state (as the operator sees them).
    async fn streams(&self) -> Vec<String> {
        use futures::TryStreamExt as _;
        let js = async_nats::jetstream::new(self.client.clone());
        let mut names: Vec<String> = js.stream_names().try_collect().await.unwrap();
        names.sort();
        let mut streams = Vec::new();
        for name in names {
            let info = js.get_stream(&name).await.unwrap().cached_info().clone();
            streams.push(format!(
                "{name} {} first {} last {} messages {}",
                // Through a Value, whose maps are ordered (the metadata is a HashMap).
                serde_json::to_value(&info.config).unwrap(),
                info.state.first_sequence,
                info.state.last_sequence,
                info.state.messages
            ));
        }
        streams
    }
}

#[tokio::test]
async fn no_service_may_change_purge_or_add_to_its_own_streams_buckets_or_consumers() {
    let permissions = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/permissions.conf");
    let mut server = NatsServer::builder().include(&permissions);
    for (_, variable, password) in USERS {
        server = server.env(variable, password);
    }
    let server = server.env("OPERATOR_PASSWORD", OPERATOR_PASSWORD).start();
    let mut builder = testkit::TestApp::builder()
        .nats(server)
        .provisioner_env("NATS_USER", "operator")
        .provisioner_env("NATS_PASSWORD", OPERATOR_PASSWORD);
    for (service, _, password) in USERS {
        builder = builder
            .service_env(service, "NATS_USER", service.name())
            .service_env(service, "NATS_PASSWORD", password)
            .service_env(service, "NATS_JS_API_PREFIX", IMPORTED_API_PREFIX);
    }
    let app = builder.spawn().await;
    app.set_stock("KEPT", 5).await;
    let order = app.place_order("sam", &[("KEPT", 1)]).await;
    app.wait_for_status(&order, "confirmed").await;

    let owned = [
        (
            "order-service",
            "ORDERS",
            "idempotency",
            "order-saga",
            "INVENTORY",
        ),
        (
            "inventory-service",
            "INVENTORY",
            "stock",
            "inventory",
            "ORDERS",
        ),
        (
            "notification-service",
            "NOTIFICATIONS",
            "webhook_endpoints",
            "notification",
            "ORDERS",
        ),
    ];
    let operator = Login::connect(
        async_nats::ConnectOptions::new(),
        &app.nats,
        "operator",
        OPERATOR_PASSWORD,
    )
    .await;
    // Once the stock's marks have settled, nothing writes until the next order.
    let _ = app.stock("KEPT").await;
    let before = operator.streams().await;
    for (user, stream, bucket, durable, consumed) in owned {
        let (_, _, password) = USERS
            .into_iter()
            .find(|(s, _, _)| s.name() == user)
            .unwrap();
        let login =
            Login::connect(async_nats::ConnectOptions::new(), &app.nats, user, password).await;
        let subjects = format!("{}.>", stream.to_lowercase());
        let update = |change: serde_json::Value| {
            let mut config = serde_json::json!({
                "name": stream, "subjects": [subjects], "storage": "file", "num_replicas": 1,
            });
            config
                .as_object_mut()
                .unwrap()
                .extend(change.as_object().unwrap().clone());
            config.to_string()
        };
        // Each update would purge in effect, or have the server copy events past every
        // permission (a source, a republish); a consumer it could shape would be a push
        // consumer delivering wherever it names. Under the imported prefix and the API's own.
        let mut attempts: Vec<(&str, String, String)> = Vec::new();
        for api in [IMPORTED_API_PREFIX, "$JS.API"] {
            for (what, change) in [
                (
                    "shorten its age",
                    serde_json::json!({"max_age": 1_000_000_000}),
                ),
                ("keep one message", serde_json::json!({"max_msgs": 1})),
                ("seal it", serde_json::json!({"sealed": true})),
                (
                    "source another stream",
                    serde_json::json!({"sources": [{"name": consumed}]}),
                ),
                (
                    "republish it",
                    serde_json::json!({"republish": {"src": ">", "dest": "orders.0.x.y.confirmed"}}),
                ),
            ] {
                attempts.push((
                    what,
                    format!("{api}.STREAM.UPDATE.{stream}"),
                    update(change),
                ));
            }
            attempts.push((
                "create a stream",
                format!("{api}.STREAM.CREATE.EVIL"),
                r#"{"name": "EVIL", "subjects": ["evil.>"]}"#.to_owned(),
            ));
            attempts.push((
                "change its own durable consumer",
                format!("{api}.CONSUMER.CREATE.{consumed}.{durable}"),
                serde_json::json!({"stream_name": consumed, "config": {
                    "durable_name": durable, "deliver_subject": "orders.0.x.y.confirmed",
                    "ack_policy": "explicit"}})
                .to_string(),
            ));
            attempts.push((
                "a push consumer on its own bucket",
                format!("{api}.CONSUMER.CREATE.KV_{bucket}"),
                serde_json::json!({"stream_name": format!("KV_{bucket}"), "config": {
                    "deliver_subject": "orders.0.x.y.confirmed", "ack_policy": "none"}})
                .to_string(),
            ));
            for (what, call) in [
                ("purge its stream", format!("STREAM.PURGE.{stream}")),
                ("delete its stream", format!("STREAM.DELETE.{stream}")),
                ("purge its bucket", format!("STREAM.PURGE.KV_{bucket}")),
                ("delete its bucket", format!("STREAM.DELETE.KV_{bucket}")),
            ] {
                attempts.push((what, format!("{api}.{call}"), "{}".to_owned()));
            }
        }
        futures::future::join_all(attempts.iter().map(|(what, subject, body)| {
            let login = &login;
            let what = format!("{user}: {what}");
            async move { login.unanswered(&what, subject, body).await }
        }))
        .await;
        // What it may ask (a read of its own stream) answered to a reply subject of its
        // choosing: another domain's events, a purge, its own stream's purge. The answer goes
        // back to its own account only, where those subjects lead nowhere.
        let own_read = format!("{IMPORTED_API_PREFIX}.DIRECT.GET.{stream}");
        for reply in [
            "orders.0.mallory.forged.confirmed".to_owned(),
            format!("{IMPORTED_API_PREFIX}.STREAM.PURGE.{stream}"),
            "$JS.API.STREAM.PURGE.ORDERS".to_owned(),
            format!("$KV.{bucket}.forged"),
        ] {
            login
                .client
                .publish_with_reply(own_read.clone(), reply, r#"{"seq": 1}"#.into())
                .await
                .unwrap();
        }
        login.client.flush().await.unwrap();
        // A write it may make, with a rollup header, would purge the whole bucket.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Rollup", "all");
        let rollup = async_nats::jetstream::new(login.client.clone())
            .publish_with_headers(
                format!("{IMPORTED_API_PREFIX}.$KV.{bucket}.rollup"),
                headers,
                "x".into(),
            )
            .await
            .unwrap()
            .await;
        assert!(rollup.is_err(), "{user}: a rollup on {bucket} was accepted");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(operator.streams().await, before, "a stream changed");

    // Nothing changed: the order and the stock are as they were, and the saga goes on.
    assert_eq!(app.order(&order).await["status"], "confirmed");
    assert_eq!(app.stock("KEPT").await.0, 4, "available");
    let another = app.place_order("sam", &[("KEPT", 1)]).await;
    app.wait_for_status(&another, "confirmed").await;
}
