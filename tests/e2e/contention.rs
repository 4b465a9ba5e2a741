//! Two inventory replicas, one SKU, many concurrent orders: compare-and-set conflicts are
//! retried, never overwritten — exactly the stock is sold, nothing more.

use testkit::TestApp;

use crate::support::{accepted_order_id, order_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_orders_for_fifty_units_confirm_exactly_fifty() {
    // Two hundred concurrent connections from one address: no per-client cap here.
    let app = TestApp::builder()
        .inventory_replicas(2)
        .env("HTTP_MAX_CONNECTIONS_PER_CLIENT", "0")
        .spawn()
        .await;
    app.set_stock("HOT", 50).await;
    let url = format!("{}/v1/orders", app.order_url());
    let posts = (0..200).map(|i| {
        let (http, url) = (app.http.clone(), url.clone());
        async move {
            let response = http
                .post(url)
                .json(&order_body(&format!("c{i}"), &[("HOT", 1)]))
                .send()
                .await
                .unwrap();
            accepted_order_id(response).await
        }
    });
    let order_ids = futures::future::join_all(posts).await;

    let (mut confirmed, mut cancelled) = (0, 0);
    for order_id in &order_ids {
        let settled = wait_for_settled(&app, order_id).await;
        match settled.as_str() {
            "confirmed" => confirmed += 1,
            "cancelled" => cancelled += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((confirmed, cancelled), (50, 150));
    assert_eq!(app.stock("HOT").await, (0, 50, 0));
}

async fn wait_for_settled(app: &TestApp, order_id: &str) -> String {
    let what = format!("order {order_id} is confirmed or cancelled");
    testkit::eventually_some(&what, || async {
        let order = app.order(order_id).await;
        let status = order["status"].as_str().unwrap_or_default();
        matches!(status, "confirmed" | "cancelled").then(|| status.to_owned())
    })
    .await
}
