//! `Idempotency-Key`: a retry returns the same order; the key reused for another request is
//! refused; two racing requests with one key make one order.

use serde_json::Value;
use testkit::TestApp;

use crate::support::{accepted_order_id, order_body};

async fn orders_of(app: &TestApp, customer: &str) -> Vec<Value> {
    let page: Value = app
        .get_json(&format!(
            "{}/v1/orders?customer_id={customer}",
            app.order_url()
        ))
        .await;
    page["orders"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_same_key_and_body_twice_make_one_order() {
    let app = TestApp::builder().spawn().await;
    app.set_stock("PEN", 10).await;
    let body = order_body("erin", &[("PEN", 1)]);
    let first: Value = app
        .post_with_key("key-1", &body)
        .await
        .json()
        .await
        .unwrap();
    let replay = app.post_with_key("key-1", &body).await;
    assert_eq!(replay.status(), 202);
    assert_eq!(replay.headers().get("Idempotent-Replayed").unwrap(), "true");
    let second: Value = replay.json().await.unwrap();
    assert_eq!(first["order_id"], second["order_id"]);

    app.wait_for_status(first["order_id"].as_str().unwrap(), "confirmed")
        .await;
    assert_eq!(orders_of(&app, "erin").await.len(), 1);
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_refused_with_422() {
    let app = TestApp::builder().spawn().await;
    let accepted = app
        .post_with_key("key-2", &order_body("frank", &[("PEN", 1)]))
        .await;
    assert_eq!(accepted.status(), 202);
    let refused = app
        .post_with_key("key-2", &order_body("frank", &[("PEN", 2)]))
        .await;
    assert_eq!(refused.status(), 422);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://orderflow.dev/problems/idempotency-key-reused"
    );
}

#[tokio::test]
async fn racing_requests_with_one_key_make_one_order() {
    let app = TestApp::builder().spawn().await;
    let body = order_body("gina", &[("PEN", 1)]);
    let attempts = (0..8).map(|_| app.post_with_key("key-race", &body));
    let responses = futures::future::join_all(attempts).await;
    let mut ids = Vec::new();
    for response in responses {
        ids.push(accepted_order_id(response).await);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "racing requests made several orders: {ids:?}");
    crate::support::eventually("the order is listed", || async {
        orders_of(&app, "gina").await.len() == 1
    })
    .await;
}

#[tokio::test]
async fn a_customers_orders_are_listed_newest_first_in_pages() {
    let app = TestApp::builder().spawn().await;
    let mut placed = Vec::new();
    for _ in 0..5 {
        placed.push(app.place_order("hana", &[("PEN", 1)]).await);
    }
    placed.reverse();
    let url = format!("{}/v1/orders?customer_id=hana&limit=2", app.order_url());
    let mut seen = Vec::new();
    let mut next = url.clone();
    loop {
        let page: Value = app.get_json(&next).await;
        seen.extend(
            page["orders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["order_id"].as_str().unwrap().to_owned()),
        );
        match page["next_before"].as_str() {
            Some(cursor) => next = format!("{url}&before={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, placed);
}
