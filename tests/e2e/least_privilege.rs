//! NATS as production should run it: TLS with client certificates, and one user per service
//! with the permissions in `deploy/nats/permissions.conf`. The saga works end to end with them
//! (each service receiving replies under its own inbox prefix), a service publishing outside its
//! permissions is refused, and one cannot listen to another's replies — and the server says so.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::{NatsServer, Pki, System};

use crate::support::{place, set_stock, wait_for_status};

const USERS: [(&str, &str, &str); 3] = [
    ("order-service", "ORDER_PASSWORD", "order-secret-1"),
    (
        "inventory-service",
        "INVENTORY_PASSWORD",
        "inventory-secret-2",
    ),
    (
        "notification-service",
        "NOTIFICATION_PASSWORD",
        "notification-secret-3",
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
    let server = server.start();

    let mut builder = System::builder()
        .nats(server)
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

    set_stock(&system, "SECURE", 3).await;
    let order_id = place(&system, "sam", &[("SECURE", 1)]).await;
    wait_for_status(&system, &order_id, "confirmed").await;
    crate::support::eventually("the notification is sent", || async {
        let notes = crate::support::get_json(
            &system,
            &format!(
                "{}/v1/notifications?order_id={order_id}",
                system.notification.url()
            ),
        )
        .await;
        notes[0]["status"] == "sent"
    })
    .await;

    // The inventory's credentials may not announce orders.
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = errors.clone();
    let client = async_nats::ConnectOptions::new()
        .user_and_password("inventory-service".into(), "inventory-secret-2".into())
        .custom_inbox_prefix("_INBOX_inventory-service")
        .add_root_certificates(pki.ca.clone())
        .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
        .require_tls(true)
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    seen.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(system.nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(client.clone());
    let refused = js
        .publish(
            format!("orders.0.mallory.{}.confirmed", events::OrderId::new()),
            "forged".into(),
        )
        .await
        .unwrap()
        .await;
    assert!(refused.is_err(), "a forged orders.confirmed was stored");
    crate::support::eventually("the server reports the violation", || async {
        errors.lock().unwrap().iter().any(|e| {
            e.to_lowercase()
                .contains("permissions violation for publish")
        })
    })
    .await;

    // Nor may they listen to the order service's replies (its reads of orders and keys).
    let _eavesdrop = client.subscribe("_INBOX_order-service.>").await.unwrap();
    crate::support::eventually("the server refuses the subscription", || async {
        errors.lock().unwrap().iter().any(|e| {
            let e = e.to_lowercase();
            e.contains("permissions violation for subscription")
                && e.contains("_inbox_order-service")
        })
    })
    .await;
}
