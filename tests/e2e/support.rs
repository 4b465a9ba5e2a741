//! Shared steps: stock a SKU, place an order, wait for its outcome, read stock.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use testkit::System;

pub use testkit::{PATIENCE, eventually};

/// The webhook signing key every test system uses.
pub const WEBHOOK_KEY: [u8; 32] = [0x5a; 32];

/// `WEBHOOK_SECRET` for [`WEBHOOK_KEY`].
pub fn webhook_secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(WEBHOOK_KEY)
    )
}

/// The subject `envelope` is published on, for an order of `customer` (one partition).
pub fn subject_of(envelope: &events::Envelope, customer: &str) -> String {
    events::OrderKey::new(
        events::Partitions::ONE,
        events::CustomerId::new(customer).unwrap(),
        envelope.event.order_id(),
    )
    .subject(&envelope.event)
}

/// GETs `url` and parses the JSON answer.
pub async fn get_json(system: &System, url: &str) -> Value {
    let response = system.http.get(url).send().await.unwrap();
    response.json().await.unwrap()
}

/// GETs an admin URL with the admin token and parses the JSON answer.
pub async fn admin_get_json(system: &System, url: &str) -> Value {
    let response = system.as_admin(system.http.get(url)).send().await.unwrap();
    response.json().await.unwrap()
}

/// The OpenAPI document the order service serves.
pub async fn order_openapi(system: &System) -> Value {
    system
        .http
        .get(format!("{}/openapi.json", system.order.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The Prometheus exposition of one service's `/metrics`.
pub async fn metrics(system: &System, service: &testkit::ServiceProcess) -> String {
    system
        .http
        .get(format!("{}/metrics", service.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Sets the available stock of `sku`.
pub async fn set_stock(system: &System, sku: &str, available: u64) {
    let response = system
        .as_admin(
            system
                .http
                .put(format!("{}/v1/stock/{sku}", system.inventory[0].url())),
        )
        .json(&json!({ "available": available }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// `(available, reserved, unsettled orders)` of `sku`, once the marks of stored decisions
/// have settled (they ride along with the SKU's next write, or are written within moments):
/// a mark still there after [`PATIENCE`] is reported.
pub async fn stock(system: &System, sku: &str) -> (u64, u64, u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let body: Value = get_json(
            system,
            &format!("{}/v1/stock/{sku}", system.inventory[0].url()),
        )
        .await;
        let field = |name: &str| {
            body[name]
                .as_u64()
                .unwrap_or_else(|| panic!("no {name} in {body}"))
        };
        let stock = (
            field("available"),
            field("reserved"),
            field("unsettled_orders"),
        );
        if stock.2 == 0 || tokio::time::Instant::now() > deadline {
            return stock;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The body of an order for `lines` of (sku, quantity) at 1.00 each.
pub fn order_body(customer: &str, lines: &[(&str, u32)]) -> Value {
    let items: Vec<Value> = lines
        .iter()
        .map(|(sku, quantity)| json!({ "sku": sku, "quantity": quantity, "unit_price_cents": 100 }))
        .collect();
    json!({ "customer_id": customer, "items": items, "currency": "EUR" })
}

/// Places an order and returns its id (asserting 202).
pub async fn place(system: &System, customer: &str, lines: &[(&str, u32)]) -> String {
    let response = system
        .http
        .post(format!("{}/v1/orders", system.order.url()))
        .json(&order_body(customer, lines))
        .send()
        .await
        .unwrap();
    accepted_order_id(response).await
}

/// The order id of a `202 Accepted` answer to `POST /v1/orders` (asserting the 202).
pub async fn accepted_order_id(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 202, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["order_id"].as_str().unwrap().to_owned()
}

/// Asks to cancel the order.
pub async fn cancel(system: &System, order_id: &str) -> reqwest::Response {
    system
        .http
        .post(format!(
            "{}/v1/orders/{order_id}/cancel",
            system.order.url()
        ))
        .send()
        .await
        .unwrap()
}

/// The order as the API shows it.
pub async fn order(system: &System, order_id: &str) -> Value {
    get_json(
        system,
        &format!("{}/v1/orders/{order_id}", system.order.url()),
    )
    .await
}

/// Waits until the order reaches `status` and returns it.
pub async fn wait_for_status(system: &System, order_id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let order = order(system, order_id).await;
        if order["status"] == status {
            return order;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {order_id} never became {status}: {order}\nlogs in {}",
            system.log_dir().display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs `body` as `content_type` to the order API: (status, JSON body or null, content type).
pub async fn post_raw(
    system: &System,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value, String) {
    let response = system
        .http
        .post(format!("{}/v1/orders", system.order.url()))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        content_type,
    )
}
