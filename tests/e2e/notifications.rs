//! Webhook delivery under failure: 5xx is retried with the same `webhook-id` until delivered;
//! 410 Gone disables the endpoint and fails the notification for good.

use serde_json::Value;
use testkit::{System, WebhookReceiver};

use crate::support::{eventually, place, set_stock, wait_for_status, webhook_secret};

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
    let system = System::builder()
        .webhook(receiver.url(), &webhook_secret())
        .start()
        .await;
    set_stock(&system, "RETRY", 1).await;
    let order_id = place(&system, "rita", &[("RETRY", 1)]).await;
    wait_for_status(&system, &order_id, "confirmed").await;

    eventually("the notification is sent", || async {
        notifications(&system, &order_id)
            .await
            .first()
            .is_some_and(|n| n["status"] == "sent")
    })
    .await;
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
    let system = System::builder()
        .webhook(receiver.url(), &webhook_secret())
        .start()
        .await;
    set_stock(&system, "GONE", 2).await;

    let first = place(&system, "gus", &[("GONE", 1)]).await;
    eventually("the first notification fails", || async {
        notifications(&system, &first)
            .await
            .first()
            .is_some_and(|n| n["status"] == "failed")
    })
    .await;
    let second = place(&system, "gus", &[("GONE", 1)]).await;
    eventually("the second notification fails", || async {
        notifications(&system, &second)
            .await
            .first()
            .is_some_and(|n| n["status"] == "failed")
    })
    .await;
    let failed = &notifications(&system, &second).await[0];
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
