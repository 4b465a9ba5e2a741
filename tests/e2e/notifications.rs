//! Webhook delivery under failure: 5xx is retried with the same `webhook-id` until delivered;
//! 410 Gone disables the endpoint and fails the notification for good.

use serde_json::Value;
use testkit::{System, WebhookReceiver};

use crate::support::{
    admin_get_json, eventually, place, set_stock, wait_for_status, webhook_secret,
};

/// A system whose notifications go to `receiver`.
async fn notifying(receiver: &WebhookReceiver) -> System {
    System::builder()
        .webhook(receiver.url(), &webhook_secret())
        .start()
        .await
}

/// The first notification outcome of `order_id`, once it has `status`.
async fn notified(system: &System, order_id: &str, status: &str) -> Value {
    eventually(
        &format!("a {status} notification for {order_id}"),
        || async {
            notifications(system, order_id)
                .await
                .first()
                .is_some_and(|n| n["status"] == status)
        },
    )
    .await;
    notifications(system, order_id).await.swap_remove(0)
}

async fn notifications(system: &System, order_id: &str) -> Vec<Value> {
    let body: Value = crate::support::get_json(
        system,
        &format!(
            "{}/v1/notifications?order_id={order_id}",
            system.notification.url()
        ),
    )
    .await;
    body.as_array().unwrap().clone()
}

#[tokio::test]
async fn a_webhook_failing_with_5xx_is_retried_with_the_same_id_until_delivered() {
    let receiver = WebhookReceiver::start().await;
    receiver.respond_with(&[503, 500]);
    let system = notifying(&receiver).await;
    set_stock(&system, "RETRY", 1).await;
    let order_id = place(&system, "rita", &[("RETRY", 1)]).await;
    wait_for_status(&system, &order_id, "confirmed").await;

    notified(&system, &order_id, "sent").await;
    let received = receiver.received();
    assert_eq!(received.len(), 3, "two failures and one success");
    let ids: Vec<_> = received
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "the retries changed the webhook-id: {ids:?}"
    );
    assert_eq!(notifications(&system, &order_id).await[0]["attempts"], 3);
}

#[tokio::test]
async fn a_410_disables_the_endpoint_and_fails_notifications_without_sending_more() {
    let receiver = WebhookReceiver::start().await;
    receiver.respond_with(&[410]);
    let system = notifying(&receiver).await;
    set_stock(&system, "GONE", 2).await;

    let first = place(&system, "gus", &[("GONE", 1)]).await;
    notified(&system, &first, "failed").await;
    let second = place(&system, "gus", &[("GONE", 1)]).await;
    let failed = notified(&system, &second, "failed").await;
    assert!(
        failed["last_error"].as_str().unwrap().contains("disabled"),
        "{failed}"
    );
    assert_eq!(
        receiver.received().len(),
        1,
        "a disabled endpoint was called again"
    );
}

#[tokio::test]
async fn an_admin_enables_a_disabled_endpoint_again_and_notifications_flow() {
    let receiver = WebhookReceiver::start().await;
    receiver.respond_with(&[410]);
    let system = notifying(&receiver).await;
    set_stock(&system, "BACK", 2).await;
    let first = place(&system, "bea", &[("BACK", 1)]).await;
    notified(&system, &first, "failed").await;
    let admin = format!("{}/admin/webhook", system.notification.url());
    let anonymous = system.http.get(&admin).send().await.unwrap();
    assert_eq!(
        anonymous.status(),
        401,
        "the endpoint's state is admin-only"
    );
    let state = admin_get_json(&system, &admin).await;
    assert!(
        state["disabled_because"]
            .as_str()
            .is_some_and(|r| r.contains("410")),
        "{state}"
    );

    let enabled = system
        .as_admin(system.http.post(format!("{admin}/enable")))
        .send()
        .await
        .unwrap();
    assert_eq!(enabled.status(), 200);
    let second = place(&system, "bea", &[("BACK", 1)]).await;
    notified(&system, &second, "sent").await;
    assert_eq!(receiver.received().len(), 2, "the 410, then the delivery");
}
