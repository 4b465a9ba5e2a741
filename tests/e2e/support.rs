//! Shared pieces of the end-to-end tests; the typed steps (stock a SKU, place an order, wait
//! for its outcome) are `testkit::ApiClient`'s.

use base64::Engine as _;

use testkit::System;

pub use testkit::{PATIENCE, accepted_order_id, eventually, order_body};

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
