//! The three services' HTTP APIs as a test sees them: typed steps (stock a SKU, place an
//! order, wait for its outcome, read stock) on top of a plain HTTP client. The same for
//! services in this process ([`crate::TestApp`]) and as processes ([`crate::System`]), which
//! both dereference to an [`ApiClient`].

use std::time::Duration;

use serde_json::{Value, json};

use crate::wait::PATIENCE;

/// The base URLs of the services and a client for them, with the admin token if they have one.
#[derive(Debug, Clone)]
pub struct ApiClient {
    /// A client for the APIs.
    pub http: reqwest::Client,
    order: String,
    inventory: String,
    notification: String,
    admin_token: Option<String>,
    /// Where to look when something never happens (the services' logs), for failure messages.
    post_mortem: String,
}

impl ApiClient {
    pub(crate) fn new(
        [order, inventory, notification]: [String; 3],
        admin_token: Option<String>,
        post_mortem: String,
    ) -> Self {
        Self {
            http: http_client(),
            order,
            inventory,
            notification,
            admin_token,
            post_mortem,
        }
    }

    /// order-service's base URL.
    pub fn order_url(&self) -> &str {
        &self.order
    }

    /// The (first) inventory-service's base URL.
    pub fn inventory_url(&self) -> &str {
        &self.inventory
    }

    /// notification-service's base URL.
    pub fn notification_url(&self) -> &str {
        &self.notification
    }

    /// `request` with the admin token, if the services have one.
    pub fn as_admin(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.admin_token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// GETs `url` and parses the JSON answer.
    pub async fn get_json(&self, url: &str) -> Value {
        let response = self.http.get(url).send().await.expect("GET");
        response.json().await.expect("a JSON answer")
    }

    /// GETs an admin URL with the admin token and parses the JSON answer.
    pub async fn admin_get_json(&self, url: &str) -> Value {
        let response = self.as_admin(self.http.get(url)).send().await.expect("GET");
        response.json().await.expect("a JSON answer")
    }

    /// The OpenAPI document order-service serves.
    pub async fn order_openapi(&self) -> Value {
        self.get_json(&format!("{}/openapi.json", self.order)).await
    }

    /// Sets the available stock of `sku` (asserting 200).
    pub async fn set_stock(&self, sku: &str, available: u64) {
        let response = self
            .as_admin(self.http.put(format!("{}/v1/stock/{sku}", self.inventory)))
            .json(&json!({ "available": available }))
            .send()
            .await
            .expect("PUT stock");
        let status = response.status();
        assert_eq!(status, 200, "{}", response.text().await.unwrap_or_default());
    }

    /// `(available, reserved, unsettled orders)` of `sku`, once the marks of stored decisions
    /// have settled (they ride along with the SKU's next write, or are written within
    /// moments): a mark still there after [`PATIENCE`] is reported.
    pub async fn stock(&self, sku: &str) -> (u64, u64, u64) {
        let url = format!("{}/v1/stock/{sku}", self.inventory);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let body = self.get_json(&url).await;
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

    /// Places an order of `lines` (sku, quantity) for `customer` and returns its id
    /// (asserting 202).
    pub async fn place_order(&self, customer: &str, lines: &[(&str, u32)]) -> String {
        let response = self
            .http
            .post(format!("{}/v1/orders", self.order))
            .json(&order_body(customer, lines))
            .send()
            .await
            .expect("POST order");
        accepted_order_id(response).await
    }

    /// POSTs `body` as `content_type` to the order API: its [`answer`].
    pub async fn post_order_raw(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value, String) {
        let request = self
            .http
            .post(format!("{}/v1/orders", self.order))
            .header("content-type", content_type)
            .body(body);
        answer(request).await
    }

    /// POSTs the order `body` with an `Idempotency-Key`.
    pub async fn post_with_key(&self, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/orders", self.order))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("POST an order")
    }

    /// Asks to cancel the order.
    pub async fn cancel(&self, order_id: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/orders/{order_id}/cancel", self.order))
            .send()
            .await
            .expect("POST cancel")
    }

    /// The order as the API shows it.
    pub async fn order(&self, order_id: &str) -> Value {
        self.get_json(&format!("{}/v1/orders/{order_id}", self.order))
            .await
    }

    /// Waits until the order reaches `status` and returns it.
    pub async fn wait_for_status(&self, order_id: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let order = self.order(order_id).await;
            if order["status"] == status {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {order_id} never became {status}: {order}\n{}",
                self.post_mortem
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl ApiClient {
    /// Waits until the order shows `count` notification outcomes and returns it.
    pub async fn wait_for_notifications(&self, order_id: &str, count: usize) -> Value {
        crate::eventually_some(
            &format!("order {order_id} to show {count} notifications"),
            || async {
                let order = self.order(order_id).await;
                let shown = order["notifications"].as_array().map_or(0, Vec::len);
                (shown == count).then_some(order)
            },
        )
        .await
    }
}

/// An HTTP client for tests (installs the TLS provider reqwest is built without).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build HTTP client")
}

/// Sends `request` and returns its answer: (status, JSON body or null, content type).
pub async fn answer(request: reqwest::RequestBuilder) -> (u16, Value, String) {
    let response = request.send().await.expect("an HTTP answer");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        content_type,
    )
}

/// The body of an order for `lines` of (sku, quantity) at 1.00 each.
pub fn order_body(customer: &str, lines: &[(&str, u32)]) -> Value {
    let items: Vec<Value> = lines
        .iter()
        .map(|(sku, quantity)| json!({ "sku": sku, "quantity": quantity, "unit_price_cents": 100 }))
        .collect();
    json!({ "customer_id": customer, "items": items, "currency": "EUR" })
}

/// The order id of a `202 Accepted` answer to `POST /v1/orders` (asserting the 202).
pub async fn accepted_order_id(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.expect("the answer's body");
    assert_eq!(status, 202, "{body}");
    let body: Value = serde_json::from_str(&body).expect("a JSON answer");
    body["order_id"]
        .as_str()
        .expect("an order_id in the answer")
        .to_owned()
}
