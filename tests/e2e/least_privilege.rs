//! NATS as production should run it: TLS with client certificates, and one user per service
//! with the permissions shipped in `deploy/nats/permissions.conf`. The saga works end to end
//! with them — both outcomes, notifications, the admin reads — and a service's credentials
//! cannot publish another's events, touch another's bucket, change or delete a stream, read
//! another's replies, or write a dead letter under another consumer's name: the server refuses
//! each and says so. A letter it may write, under its own name, cannot launder a forged event
//! through order-service's redrive either.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::{NatsServer, Pki, System};

const USERS: [(&str, &str, &str); 3] = [
    (
        "order-service",
        "ORDER_PASSWORD",
        "order-secret-1-4b7e0c9a2f",
    ),
    (
        "inventory-service",
        "INVENTORY_PASSWORD",
        "inventory-secret-2-8d1f6a3c5e",
    ),
    (
        "notification-service",
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
    server = server.env("OPERATOR_PASSWORD", "operator-secret-4-6a0d3f8b2e");
    let server = server.start();

    let mut builder = System::builder()
        .nats(server)
        .provisioner_env("NATS_USER", "operator")
        .provisioner_env("NATS_PASSWORD", "operator-secret-4-6a0d3f8b2e")
        .env("NATS_TLS_CA", pki.ca.to_str().unwrap())
        .env("NATS_TLS_CERT", pki.client_cert.to_str().unwrap())
        .env("NATS_TLS_KEY", pki.client_key.to_str().unwrap());
    for (user, _, password) in USERS {
        builder = builder.service_env(user, "NATS_USER", user).service_env(
            user,
            "NATS_PASSWORD",
            password,
        );
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

    // Log in as the inventory service and try what it must not do.
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = errors.clone();
    let client = async_nats::ConnectOptions::new()
        .user_and_password(
            "inventory-service".into(),
            "inventory-secret-2-8d1f6a3c5e".into(),
        )
        .custom_inbox_prefix("_INBOX_inventory-service")
        .add_root_certificates(pki.ca.clone())
        .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
        .require_tls(true)
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    seen.lock().unwrap().push(e.to_string().to_lowercase());
                }
            }
        })
        .connect(system.nats.url())
        .await
        .unwrap();
    let refused = |what: &'static str, subject: String| {
        let errors = errors.clone();
        async move {
            let subject = subject.to_lowercase();
            crate::support::eventually(what, || async {
                errors.lock().unwrap().iter().any(|e| {
                    e.contains(&format!("permissions violation for {what}")) && e.contains(&subject)
                })
            })
            .await;
        }
    };

    // It may not announce orders...
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(client.clone());
    let forged = format!("orders.0.mallory.{}.confirmed", events::OrderId::new());
    let stored = js
        .publish(forged.clone(), "forged".into())
        .await
        .unwrap()
        .await;
    assert!(stored.is_err(), "a forged orders.confirmed was stored");
    refused("publish", forged).await;
    // ...nor write or read another service's bucket...
    client
        .publish("$KV.idempotency.forged", "x".into())
        .await
        .unwrap();
    refused("publish", "$KV.idempotency.forged".into()).await;
    let _ = client
        .request("$JS.API.DIRECT.GET.KV_idempotency", "".into())
        .await;
    refused("publish", "$JS.API.DIRECT.GET.KV_idempotency".into()).await;
    // ...nor change or remove a stream, even one it reads (its own: see below)...
    let _ = client
        .request("$JS.API.STREAM.UPDATE.ORDERS", "{}".into())
        .await;
    refused("publish", "$JS.API.STREAM.UPDATE.ORDERS".into()).await;
    let _ = client
        .request("$JS.API.STREAM.DELETE.INVENTORY", "".into())
        .await;
    refused("publish", "$JS.API.STREAM.DELETE.INVENTORY".into()).await;
    // ...nor listen to the order service's replies (its reads of orders and keys).
    let _eavesdrop = client.subscribe("_INBOX_order-service.>").await.unwrap();
    refused("subscription", "_inbox_order-service".into()).await;

    // Dead letters: it may not write under another consumer's name...
    let cancellation = format!("orders.0.sam.{order_id}.cancelled");
    let under_archive = format!("dlq.order-archive.{cancellation}");
    let forged = events::Envelope::new(
        "/forged",
        events::Event::OrderCancelled(events::OrderCancelled {
            order_id: events::OrderId(order_id.parse().unwrap()),
            customer_id: events::CustomerId::new("sam").unwrap(),
            reason: events::CancelReason::CustomerRequested,
            reserved: vec![events::ReservedLine {
                sku: events::Sku::new("SECURE").unwrap(),
                quantity: 1,
            }],
        }),
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
    refused("publish", under_archive).await;
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

/// One service's NATS login, and every error the server sent it (lower case).
struct Login {
    client: async_nats::Client,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Login {
    async fn as_user(server: &NatsServer, user: &str, password: &str) -> Self {
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = errors.clone();
        let client = async_nats::ConnectOptions::new()
            .user_and_password(user.into(), password.into())
            .custom_inbox_prefix(events::names::inbox_prefix(user))
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        seen.lock().unwrap().push(e.to_string().to_lowercase());
                    }
                }
            })
            .connect(server.url())
            .await
            .unwrap();
        Self { client, errors }
    }

    /// Sends a JetStream API request and expects the server to refuse it for permissions.
    async fn refused(&self, what: &str, subject: String, body: serde_json::Value) {
        let answer = tokio::time::timeout(
            Duration::from_secs(1),
            self.client
                .request(subject.clone(), body.to_string().into()),
        )
        .await;
        if let Ok(Ok(reply)) = answer {
            panic!(
                "{what}: {subject} answered {}",
                String::from_utf8_lossy(&reply.payload)
            );
        }
        let wanted = format!(
            "permissions violation for publish to \"{}\"",
            subject.to_lowercase()
        );
        crate::support::eventually(what, || async {
            self.errors
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.contains(&wanted))
        })
        .await;
    }
}

#[tokio::test]
async fn no_service_may_change_purge_or_add_to_its_own_streams_buckets_or_consumers() {
    let permissions = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/permissions.conf");
    let mut server = NatsServer::builder().include(&permissions);
    for (_, variable, password) in USERS {
        server = server.env(variable, password);
    }
    let server = server
        .env("OPERATOR_PASSWORD", "operator-secret-4-6a0d3f8b2e")
        .start();
    let mut builder = testkit::TestApp::builder()
        .nats(server)
        .provisioner_env("NATS_USER", "operator")
        .provisioner_env("NATS_PASSWORD", "operator-secret-4-6a0d3f8b2e");
    for (user, _, password) in USERS {
        builder = builder.service_env(user, "NATS_USER", user).service_env(
            user,
            "NATS_PASSWORD",
            password,
        );
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
    for (user, stream, bucket, durable, consumed) in owned {
        let (_, _, password) = USERS.into_iter().find(|(u, _, _)| *u == user).unwrap();
        let login = Login::as_user(&app.nats, user, password).await;
        let subjects = format!("{}.>", stream.to_lowercase());
        let update = |change: serde_json::Value| {
            let mut config = serde_json::json!({
                "name": stream, "subjects": [subjects], "storage": "file", "num_replicas": 1,
            });
            config
                .as_object_mut()
                .unwrap()
                .extend(change.as_object().unwrap().clone());
            config
        };
        let update_subject = format!("$JS.API.STREAM.UPDATE.{stream}");
        // Each update would purge in effect, or have the server copy events past every
        // permission (a source, a republish).
        let mut attempts: Vec<(&str, String, serde_json::Value)> = vec![
            (
                "shorten its age",
                update_subject.clone(),
                update(serde_json::json!({"max_age": 1_000_000_000})),
            ),
            (
                "keep one message",
                update_subject.clone(),
                update(serde_json::json!({"max_msgs": 1})),
            ),
            (
                "seal it",
                update_subject.clone(),
                update(serde_json::json!({"sealed": true})),
            ),
            (
                "source another stream",
                update_subject.clone(),
                update(serde_json::json!({"sources": [{"name": consumed}]})),
            ),
            (
                "republish it",
                update_subject.clone(),
                update(
                    serde_json::json!({"republish": {"src": ">", "dest": "orders.0.x.y.confirmed"}}),
                ),
            ),
            (
                "create a stream",
                "$JS.API.STREAM.CREATE.EVIL".into(),
                serde_json::json!({"name": "EVIL", "subjects": ["evil.>"]}),
            ),
            // A consumer it could shape would be a push consumer delivering wherever it names.
            (
                "change its own durable consumer",
                format!("$JS.API.CONSUMER.CREATE.{consumed}.{durable}"),
                serde_json::json!({"stream_name": consumed, "config": {
                    "durable_name": durable, "deliver_subject": "orders.0.x.y.confirmed",
                    "ack_policy": "explicit"}}),
            ),
            (
                "a push consumer on its own bucket",
                format!("$JS.API.CONSUMER.CREATE.KV_{bucket}"),
                serde_json::json!({"stream_name": format!("KV_{bucket}"), "config": {
                    "deliver_subject": "orders.0.x.y.confirmed", "ack_policy": "none"}}),
            ),
        ];
        for (what, subject) in [
            ("purge its stream", format!("$JS.API.STREAM.PURGE.{stream}")),
            (
                "delete its stream",
                format!("$JS.API.STREAM.DELETE.{stream}"),
            ),
            (
                "purge its bucket",
                format!("$JS.API.STREAM.PURGE.KV_{bucket}"),
            ),
            (
                "delete its bucket",
                format!("$JS.API.STREAM.DELETE.KV_{bucket}"),
            ),
        ] {
            attempts.push((what, subject, serde_json::json!({})));
        }
        futures::future::join_all(attempts.into_iter().map(|(what, subject, body)| {
            let login = &login;
            async move {
                login
                    .refused(&format!("{user}: {what}"), subject, body)
                    .await
            }
        }))
        .await;
        // A write it may make, with a rollup header, would purge the whole bucket.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Rollup", "all");
        let rollup = async_nats::jetstream::new(login.client.clone())
            .publish_with_headers(format!("$KV.{bucket}.rollup"), headers, "x".into())
            .await
            .unwrap()
            .await;
        assert!(rollup.is_err(), "{user}: a rollup on {bucket} was accepted");
    }

    // Nothing changed: the order and the stock are as they were, and the saga goes on.
    assert_eq!(app.order(&order).await["status"], "confirmed");
    assert_eq!(app.stock("KEPT").await.0, 4, "available");
    let another = app.place_order("sam", &[("KEPT", 1)]).await;
    app.wait_for_status(&another, "confirmed").await;
}
