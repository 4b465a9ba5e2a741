//! The `footprint` mode: what keeping orders costs nats-server. Every order leaves four events
//! on four subjects of its own (created, reserved, confirmed, notification sent — the event
//! layout puts the order in the subject), and the server indexes every subject in memory. This
//! publishes the events of `--orders` orders — real envelopes, on the layout's subjects under a
//! scratch prefix — into a scratch stream, pipelined, then reports the subjects and bytes the
//! stream holds and how much the server's resident memory grew, per million orders. The scratch
//! stream is removed afterwards.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use events::{
    Channel, Currency, CustomerId, Envelope, Event, InventoryReserved, LineItem, NotificationKind,
    NotificationSent, OrderConfirmed, OrderCreated, OrderId, OrderKey, Partitions, ReservedLine,
    Sku,
};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};

const STREAM: &str = "LOADGEN_FOOTPRINT";
const PREFIX: &str = "footprint";
/// Publishes awaiting their ack at once.
const WINDOW: usize = 512;

/// What the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Footprint {
    pub orders: u64,
    pub messages: u64,
    pub subjects: u64,
    pub stream_bytes: u64,
    pub server_rss_before_mb: f64,
    pub server_rss_after_mb: f64,
    /// Growth of the server's resident memory per million orders, in MB.
    pub rss_mb_per_million_orders: f64,
    /// Bytes on disk per million orders, in MB.
    pub stream_mb_per_million_orders: f64,
}

impl Footprint {
    /// Human-readable lines.
    pub fn print(&self) {
        println!(
            "footprint: {} orders, {} messages on {} subjects, {:.1} MB stored",
            self.orders,
            self.messages,
            self.subjects,
            self.stream_bytes as f64 / 1e6
        );
        println!(
            "  server RSS {:.1} → {:.1} MB: {:.0} MB per million orders (stored: {:.0} MB per million)",
            self.server_rss_before_mb,
            self.server_rss_after_mb,
            self.rss_mb_per_million_orders,
            self.stream_mb_per_million_orders
        );
    }
}

#[derive(Deserialize)]
struct Varz {
    mem: u64,
}

async fn server_rss(http: &reqwest::Client, monitor_url: &str) -> anyhow::Result<u64> {
    let url = format!("{}/varz", monitor_url.trim_end_matches('/'));
    let varz: Varz = http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))?
        .json()
        .await
        .with_context(|| format!("reading {url}"))?;
    Ok(varz.mem)
}

/// The four events an order that is confirmed and notified leaves, with their subjects.
fn events_of(n: u64) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let order_id = OrderId::new();
    let customer = CustomerId::new(format!("customer-{}", n % 100_000))?;
    let sku = Sku::new(format!("SKU-{:05}", n % 10_000))?;
    let currency = Currency::new("EUR")?;
    let created = OrderCreated::builder()
        .order_id(order_id)
        .customer_id(customer.clone())
        .items(vec![LineItem {
            sku: sku.clone(),
            quantity: 1,
            unit_price_cents: 1999,
        }])
        .currency(currency.clone())
        .build()
        .context("an order total")?;
    let key = OrderKey::new(Partitions::ONE, customer.clone(), order_id);
    [
        Event::OrderCreated(created),
        Event::InventoryReserved(
            InventoryReserved::builder()
                .order_id(order_id)
                .lines(vec![ReservedLine { sku, quantity: 1 }])
                .build(),
        ),
        Event::OrderConfirmed(
            OrderConfirmed::builder()
                .order_id(order_id)
                .customer_id(customer)
                .total_cents(1999)
                .currency(currency)
                .build(),
        ),
        Event::NotificationSent(
            NotificationSent::builder()
                .notification_id(uuid::Uuid::now_v7())
                .order_id(order_id)
                .kind(NotificationKind::OrderConfirmed)
                .channel(Channel::Webhook)
                .attempts(1)
                .build(),
        ),
    ]
    .into_iter()
    .map(|event| {
        let subject = format!("{PREFIX}.{}", key.subject(&event));
        let json = Envelope::new("/loadgen", event).to_json()?;
        Ok((subject, json))
    })
    .collect()
}

/// Publishes the events of `orders` orders and measures what the server keeps.
pub async fn measure(
    client: &async_nats::Client,
    monitor_url: &str,
    orders: u64,
) -> anyhow::Result<Footprint> {
    let http = reqwest::Client::new();
    let js = jetstream::new(client.clone());
    let _ = js.delete_stream(STREAM).await;
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{PREFIX}.>")],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .context("creating the scratch stream")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = server_rss(&http, monitor_url).await?;
    let mut in_flight = FuturesUnordered::new();
    let mut messages = 0u64;
    for n in 0..orders {
        for (subject, payload) in events_of(n)? {
            if in_flight.len() >= WINDOW
                && let Some(ack) = in_flight.next().await
            {
                ack?;
            }
            let ack = js
                .publish(subject, payload.into())
                .await
                .context("publishing")?;
            in_flight.push(async move { ack.await.context("awaiting a publish ack") });
            messages += 1;
        }
    }
    while let Some(ack) = in_flight.next().await {
        ack?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server_rss(&http, monitor_url).await?;
    let info = js
        .get_stream(STREAM)
        .await
        .context("reading the scratch stream")?
        .info()
        .await
        .context("reading the scratch stream")?
        .clone();
    let _ = js.delete_stream(STREAM).await;
    let per_million = |bytes: f64| (bytes / 1e6 * 1e6 / orders.max(1) as f64).round();
    Ok(Footprint {
        orders,
        messages,
        subjects: info.state.subjects_count,
        stream_bytes: info.state.bytes,
        server_rss_before_mb: (before as f64 / 1e5).round() / 10.0,
        server_rss_after_mb: (after as f64 / 1e5).round() / 10.0,
        rss_mb_per_million_orders: per_million(after.saturating_sub(before) as f64),
        stream_mb_per_million_orders: per_million(info.state.bytes as f64),
    })
}
