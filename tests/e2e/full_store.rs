//! A full store loses nothing: every stream and bucket has a byte bound at which it refuses
//! new writes and keeps what it holds, and order-service refuses new orders (503 `store-full`,
//! `Retry-After`) before any store the saga writes is full — so every order it accepted still
//! finishes, and none is accepted that could not be stored.

use serde_json::Value;
use testkit::TestApp;

use crate::support::order_body;

#[tokio::test]
async fn a_nearly_full_store_refuses_new_orders_and_every_accepted_order_still_finishes() {
    let app = TestApp::builder()
        .without_archive()
        .env("EVENTS_MAX_BYTES", "256KiB")
        .env("ADMISSION_LIMIT", "0.5")
        .env("HTTP_RATE_LIMIT", "0")
        .spawn()
        .await;
    app.set_stock("FULL", 100_000).await;
    let url = format!("{}/v1/orders", app.order_url());

    // One order at a time, each settled before the next, until the service refuses one
    // (bounded: 256 KiB hold a few hundred orders' events at most).
    let mut accepted = Vec::new();
    let mut refusal = None;
    for n in 0..1000 {
        let response = app
            .http
            .post(&url)
            .header("idempotency-key", format!("full-{n}"))
            .json(&order_body("fay", &[("FULL", 1)]))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            202 => {
                let order = crate::support::accepted_order_id(response).await;
                app.wait_for_status(&order, "confirmed").await;
                accepted.push(order);
            }
            503 => {
                refusal = Some(response);
                break;
            }
            other => panic!("order {n}: {other} {}", response.text().await.unwrap()),
        }
    }
    let refusal = refusal.expect("1,000 orders into 256 KiB were never refused");
    assert!(refusal.headers().contains_key("retry-after"));
    let problem: Value = refusal.json().await.unwrap();
    assert!(
        problem["type"].as_str().unwrap().ends_with("/store-full"),
        "{problem}"
    );
    assert!(
        accepted.len() > 10,
        "refused after {} orders",
        accepted.len()
    );

    // Every accepted order is as it was, and the stock took exactly their units.
    for order in &accepted {
        assert_eq!(app.order(order).await["status"], "confirmed");
    }
    let (available, reserved, unsettled) = app.stock("FULL").await;
    assert_eq!((reserved, unsettled), (accepted.len() as u64, 0));
    assert_eq!(available, 100_000 - accepted.len() as u64);

    // Nothing stored was dropped to make room: the stream still begins at its first event.
    let js = async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let mut orders = js.get_stream("ORDERS").await.unwrap();
    let state = orders.info().await.unwrap().state.clone();
    assert_eq!(state.first_sequence, 1);
    assert_eq!(state.messages, state.last_sequence);
    assert!(state.bytes <= 256 << 10);

    // A retry of the refused request is refused the same way, and creates nothing.
    let again = app
        .http
        .post(&url)
        .header("idempotency-key", format!("full-{}", accepted.len()))
        .json(&order_body("fay", &[("FULL", 1)]))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 503);
    assert_eq!(
        orders.info().await.unwrap().state.last_sequence,
        state.last_sequence
    );
}

/// The idempotency bucket full before the usage watch says so (it looks twice a second): the
/// claim is refused, and the order with it — 503 `store-full`, nothing created, every order
/// accepted before it still finishes.
#[tokio::test]
async fn a_full_idempotency_bucket_refuses_the_order_as_store_full_and_creates_nothing() {
    let app = TestApp::builder()
        .without_archive()
        .env("IDEMPOTENCY_MAX_BYTES", "16KiB")
        .env("ADMISSION_LIMIT", "0.99")
        .env("HTTP_RATE_LIMIT", "0")
        .spawn()
        .await;
    app.set_stock("FULL", 1000).await;
    let url = format!("{}/v1/orders", app.order_url());
    let mut accepted = Vec::new();
    let mut refusal = None;
    for n in 0..400 {
        let response = app
            .http
            .post(&url)
            .header("idempotency-key", format!("claim-{n}"))
            .json(&order_body("gil", &[("FULL", 1)]))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            202 => accepted.push(crate::support::accepted_order_id(response).await),
            503 => {
                refusal = Some(response);
                break;
            }
            other => panic!("order {n}: {other} {}", response.text().await.unwrap()),
        }
    }
    let refusal = refusal.expect("400 claims into 16 KiB were never refused");
    assert!(refusal.headers().contains_key("retry-after"));
    let problem: Value = refusal.json().await.unwrap();
    assert!(
        problem["type"].as_str().unwrap().ends_with("/store-full"),
        "{problem}"
    );
    assert_eq!(
        problem["detail"], "the idempotency store is full",
        "{problem}"
    );
    for order in &accepted {
        app.wait_for_status(order, "confirmed").await;
    }
    let (_, reserved, _) = app.stock("FULL").await;
    assert_eq!(
        reserved,
        accepted.len() as u64,
        "an order was made for a refused claim"
    );
}
