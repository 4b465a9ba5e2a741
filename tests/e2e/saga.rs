//! The saga's outcomes: confirmed with stock taken and one signed webhook; cancelled for lack
//! of stock with nothing taken; a customer cancel giving the stock back.

use testkit::{TestApp, WebhookReceiver};

use crate::support::{WEBHOOK_KEY, eventually, webhook_secret};

async fn app_with_webhook() -> (TestApp, WebhookReceiver) {
    let receiver = WebhookReceiver::start().await;
    let app = TestApp::builder()
        .webhook(receiver.url(), &webhook_secret())
        .spawn()
        .await;
    (app, receiver)
}

#[tokio::test]
async fn an_order_in_stock_is_confirmed_takes_its_stock_and_sends_one_signed_webhook() {
    let (app, receiver) = app_with_webhook().await;
    app.set_stock("MUG", 10).await;
    let order_id = app.place_order("alice", &[("MUG", 2)]).await;

    let order = app.wait_for_status(&order_id, "confirmed").await;
    assert_eq!(order["total_cents"], 200);
    assert_eq!(app.stock("MUG").await, (8, 2, 0));

    eventually("the webhook arrives", || async {
        !receiver.received().is_empty()
    })
    .await;
    let webhooks = receiver.received();
    assert_eq!(webhooks.len(), 1, "{webhooks:?}");
    let webhook = &webhooks[0];
    assert!(
        webhook.signature_is_valid(&WEBHOOK_KEY),
        "signature does not verify: {webhook:?}"
    );
    assert!(
        webhook.header("traceparent").is_some(),
        "no trace context on the webhook"
    );
    let body = webhook.json();
    assert_eq!(body["type"], "order.confirmed");
    assert_eq!(body["data"]["order_id"], order_id.as_str());
    let expected_id = notification_service::notification_id(
        order_id.parse().unwrap(),
        events::NotificationKind::OrderConfirmed,
    );
    assert_eq!(
        webhook.header("webhook-id"),
        Some(expected_id.to_string().as_str())
    );

    // The delivery is recorded right after the webhook is answered.
    let url = format!(
        "{}/v1/notifications?order_id={order_id}",
        app.notification_url()
    );
    eventually("the delivery is recorded as sent", || async {
        app.get_json(&url).await[0]["status"] == "sent"
    })
    .await;
    let notifications = app.get_json(&url).await;
    assert_eq!(notifications[0]["attempts"], 1);
}

#[tokio::test]
async fn an_order_short_of_stock_is_cancelled_with_the_shortfall_and_takes_nothing() {
    let app = TestApp::builder().spawn().await;
    app.set_stock("LAMP", 1).await;
    let order_id = app.place_order("bob", &[("LAMP", 3)]).await;

    let order = app.wait_for_status(&order_id, "cancelled").await;
    assert_eq!(order["reason"]["kind"], "out_of_stock");
    assert_eq!(
        order["reason"]["shortfall"],
        serde_json::json!([{ "sku": "LAMP", "requested": 3, "available": 1 }])
    );
    assert_eq!(app.stock("LAMP").await, (1, 0, 0));
}

#[tokio::test]
async fn a_multi_sku_order_with_one_line_short_is_cancelled_and_leaves_no_sku_reserved() {
    let app = TestApp::builder().spawn().await;
    app.set_stock("A-PLENTY", 100).await;
    app.set_stock("B-SCARCE", 1).await;
    app.set_stock("C-PLENTY", 100).await;
    let order_id = app
        .place_order(
            "carol",
            &[("A-PLENTY", 5), ("B-SCARCE", 2), ("C-PLENTY", 5)],
        )
        .await;

    let order = app.wait_for_status(&order_id, "cancelled").await;
    assert_eq!(order["reason"]["shortfall"][0]["sku"], "B-SCARCE");
    for sku in ["A-PLENTY", "C-PLENTY"] {
        eventually("untouched stock", || async {
            app.stock(sku).await == (100, 0, 0)
        })
        .await;
    }
    assert_eq!(app.stock("B-SCARCE").await, (1, 0, 0));
}

#[tokio::test]
async fn cancelling_a_confirmed_order_restores_its_stock_and_notifies_once() {
    let (app, receiver) = app_with_webhook().await;
    app.set_stock("CHAIR", 4).await;
    let order_id = app.place_order("dave", &[("CHAIR", 3)]).await;
    app.wait_for_status(&order_id, "confirmed").await;

    let response = app.cancel(&order_id).await;
    assert_eq!(response.status(), 202);
    let order = app.wait_for_status(&order_id, "cancelled").await;
    assert_eq!(order["reason"]["kind"], "customer_requested");
    let statuses: Vec<&str> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["pending", "confirmed", "cancelled"]);
    eventually("stock restored", || async {
        app.stock("CHAIR").await == (4, 0, 0)
    })
    .await;

    eventually("two webhooks", || async { receiver.received().len() >= 2 }).await;
    let types: Vec<String> = receiver
        .received()
        .iter()
        .map(|w| w.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["order.confirmed", "order.cancelled"]);

    let again = app.cancel(&order_id).await;
    assert_eq!(again.status(), 409, "a second cancel must be refused");
}
