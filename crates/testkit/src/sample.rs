//! Sample events and deliveries for tests that call a handler directly: an order of a few
//! lines, an event caused by another, a first delivery of it (redeliveries and stale attempts
//! by struct update), and a bus whose streams exist — everything a handler test needs around
//! a real nats-server, and nothing a consumer would add.

use bus::{Bus, BusConfig, Delivery, Lease, StreamSettings};
use events::{
    Currency, CustomerId, Envelope, Event, LineItem, OrderCreated, OrderId, OrderKey, Partitions,
    Sku,
};

use crate::nats::NatsServer;
use crate::postgres::PostgresServer;
use crate::wait::eventually;

/// The `source` of every sample event.
const SOURCE: &str = "/orderflow/test";

/// A SKU (panics on an invalid one: a test's own typo).
pub fn sku(sku: &str) -> Sku {
    Sku::new(sku).expect("a valid SKU")
}

/// A customer id.
pub fn customer(id: &str) -> CustomerId {
    CustomerId::new(id).expect("a valid customer id")
}

/// Where `customer`'s `order` lives, in one partition.
pub fn key(customer_id: &str, order: OrderId) -> OrderKey {
    OrderKey::new(Partitions::ONE, customer(customer_id), order)
}

/// `orders.created` of `order` by `customer_id`: `lines` of (SKU, quantity) at 1.00 each.
pub fn order_created(order: OrderId, customer_id: &str, lines: &[(&str, u32)]) -> Envelope {
    let items = lines
        .iter()
        .map(|(sku_name, quantity)| LineItem {
            sku: sku(sku_name),
            quantity: *quantity,
            unit_price_cents: 100,
        })
        .collect();
    let created = OrderCreated::builder()
        .order_id(order)
        .customer_id(customer(customer_id))
        .items(items)
        .currency(Currency::new("EUR").expect("EUR"))
        .build()
        .expect("a valid order");
    Envelope::new(SOURCE, Event::OrderCreated(created))
}

/// `event`, caused by `cause` (same correlation, `cause` as its causation).
pub fn caused_by(event: Event, cause: &Envelope) -> Envelope {
    Envelope::new(SOURCE, event).caused_by(cause)
}

/// The first delivery of `envelope` about the order under `key`, its lease held; a redelivery
/// is `Delivery { attempt: 2, ..delivery(..) }`, a frozen attempt `lease: Lease::expired()`.
pub fn delivery(key: &OrderKey, envelope: Envelope) -> Delivery {
    Delivery {
        subject: key.subject(&envelope.event),
        key: key.clone(),
        envelope,
        stream_sequence: 1,
        attempt: 1,
        is_last_attempt: false,
        lease: Lease::unbounded(),
    }
}

/// A bus connected to `server` as `name`, with every stream and bucket provisioned (one
/// partition), as the provisioning step leaves a deployment.
pub async fn bus(server: &NatsServer, name: &str) -> Bus {
    let bus = Bus::connect(&BusConfig::new(name).with_url(server.url()))
        .await
        .expect("connect to NATS");
    eventually("the bus is connected", || async { bus.is_connected() }).await;
    let settings = StreamSettings::default();
    bus.provision_streams(&settings)
        .await
        .expect("provision the streams");
    for bucket in settings.buckets() {
        bus.provision_bucket(&bucket)
            .await
            .expect("provision the buckets");
    }
    bus
}

/// The user order-service's projection writes the archive as in tests: the migrations'
/// grants and nothing else.
pub const ARCHIVE_WRITER: &str = "orderflow_projection";
/// The user order-service's API reads the archive as in tests (granted only SELECT).
pub const ARCHIVE_READER: &str = "orderflow_reader";

/// The archive on `server`, migrated by its owner, with the projection's and the reader's
/// roles allowed to log in (trust authentication on loopback: no passwords).
pub async fn archive(server: &PostgresServer) -> archive::Archive {
    let archive = archive::Archive::from_args(&archive::ArchiveArgs {
        archive_url: bus::Secret::new(server.url()),
        ..archive::ArchiveArgs::default()
    })
    .expect("archive settings")
    .expect("an archive");
    archive.migrate().await.expect("migrate the archive");
    let owner = sqlx::PgPool::connect(&server.url())
        .await
        .expect("connect to the archive as its owner");
    for role in [ARCHIVE_WRITER, ARCHIVE_READER] {
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER ROLE {role} LOGIN")))
            .execute(&owner)
            .await
            .expect("let the archive's roles log in");
    }
    owner.close().await;
    archive
}

/// What the hot window does to `key`'s events in `domain` (one partition) once they are old
/// enough: they leave the stream.
pub async fn expire(bus: &Bus, domain: events::Domain, key: &OrderKey) {
    let history = key.history(domain, Partitions::ONE);
    bus.jetstream()
        .get_stream(&history.stream)
        .await
        .expect("the stream exists")
        .purge()
        .filter(history.filter)
        .await
        .expect("purge the order's events");
}

/// The `Dlq-*` headers of a dead letter that says `consumer` gave up on message
/// `stream_sequence` of `stream`, first published on `subject` — what any service that may
/// publish a dead letter can write, true or not.
pub fn dead_letter_headers(
    subject: &str,
    stream: &str,
    stream_sequence: u64,
    consumer: &str,
) -> async_nats::HeaderMap {
    use events::names::header;
    let mut headers = async_nats::HeaderMap::new();
    let sequence = stream_sequence.to_string();
    for (name, value) in [
        (header::DLQ_SUBJECT, subject),
        (header::DLQ_STREAM, stream),
        (header::DLQ_SEQUENCE, sequence.as_str()),
        (header::DLQ_CONSUMER, consumer),
        (header::DLQ_DELIVERIES, "1"),
        (header::DLQ_REASON, "permanent"),
        (header::DLQ_ERROR, "forged"),
        (header::DLQ_TIME, "2026-12-02T00:00:00Z"),
    ] {
        headers.insert(name, value);
    }
    headers
}

/// Publishes a dead letter on `subject` as anyone allowed to write there could: `headers` (see
/// [`dead_letter_headers`]) and `payload`; its sequence in the `DLQ` stream.
pub async fn publish_dead_letter(
    jetstream: &async_nats::jetstream::Context,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: Vec<u8>,
) -> u64 {
    jetstream
        .publish_with_headers(subject, headers, payload.into())
        .await
        .expect("publish a dead letter")
        .await
        .expect("the DLQ stores it")
        .sequence
}
