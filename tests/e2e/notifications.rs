//! Webhook delivery under failure: 5xx is retried with the same `webhook-id` until delivered;
//! 410 Gone disables the endpoint and fails the notification for good.

use serde_json::Value;
use testkit::{TestApp, WebhookReceiver};

use crate::support::{eventually, webhook_secret};

/// A system whose notifications go to `receiver`.
async fn notifying(receiver: &WebhookReceiver) -> TestApp {
    TestApp::builder()
        .webhook(receiver.url(), &webhook_secret())
        .spawn()
        .await
}

/// The first notification outcome of `order_id`, once it has `status`.
async fn notified(app: &TestApp, order_id: &str, status: &str) -> Value {
    eventually(
        &format!("a {status} notification for {order_id}"),
        || async {
            notifications(app, order_id)
                .await
                .first()
                .is_some_and(|n| n["status"] == status)
        },
    )
    .await;
    notifications(app, order_id).await.swap_remove(0)
}

async fn notifications(app: &TestApp, order_id: &str) -> Vec<Value> {
    let body: Value = app
        .get_json(&format!(
            "{}/v1/notifications?order_id={order_id}",
            app.notification_url()
        ))
        .await;
    body.as_array().unwrap().clone()
}

#[tokio::test]
async fn a_webhook_failing_with_5xx_is_retried_with_the_same_id_until_delivered() {
    let receiver = WebhookReceiver::start().await;
    receiver.respond_with(&[503, 500]);
    let app = notifying(&receiver).await;
    app.set_stock("RETRY", 1).await;
    let order_id = app.place_order("rita", &[("RETRY", 1)]).await;
    app.wait_for_status(&order_id, "confirmed").await;

    notified(&app, &order_id, "sent").await;
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
    assert_eq!(notifications(&app, &order_id).await[0]["attempts"], 3);
}

#[tokio::test]
async fn a_410_disables_the_endpoint_and_fails_notifications_without_sending_more() {
    let receiver = WebhookReceiver::start().await;
    receiver.respond_with(&[410]);
    let app = notifying(&receiver).await;
    app.set_stock("GONE", 2).await;

    let first = app.place_order("gus", &[("GONE", 1)]).await;
    notified(&app, &first, "failed").await;
    let second = app.place_order("gus", &[("GONE", 1)]).await;
    let failed = notified(&app, &second, "failed").await;
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
    let app = notifying(&receiver).await;
    app.set_stock("BACK", 2).await;
    let first = app.place_order("bea", &[("BACK", 1)]).await;
    notified(&app, &first, "failed").await;
    let admin = format!("{}/admin/webhook", app.notification_url());
    let anonymous = app.http.get(&admin).send().await.unwrap();
    assert_eq!(
        anonymous.status(),
        401,
        "the endpoint's state is admin-only"
    );
    let state = app.admin_get_json(&admin).await;
    assert!(
        state["disabled_because"]
            .as_str()
            .is_some_and(|r| r.contains("410")),
        "{state}"
    );

    let enabled = app
        .as_admin(app.http.post(format!("{admin}/enable")))
        .send()
        .await
        .unwrap();
    assert_eq!(enabled.status(), 200);
    let second = app.place_order("bea", &[("BACK", 1)]).await;
    notified(&app, &second, "sent").await;
    assert_eq!(receiver.received().len(), 2, "the 410, then the delivery");
}
