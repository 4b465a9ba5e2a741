//! Shared setup: a server, a connected and provisioned bus, sample events, fast consumer specs,
//! and readers for what landed in the dead-letter stream.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bus::{Bus, BusConfig, ConsumerSpec, DeadLetter, Delivery, HandlerError};
use events::{
    CancelReason, Channel, Currency, CustomerId, Envelope, Event, InventoryRejected,
    InventoryReleased, InventoryReserved, LineItem, NotificationFailed, NotificationKind,
    NotificationSent, OrderCancelled, OrderConfirmed, OrderCreated, OrderId, OrderKey, Partitions,
    ReservedLine, Shortfall, names,
};
use futures::StreamExt;
use testkit::NatsServer;
use tokio::sync::mpsc;

/// The order events' stream (one partition).
pub const ORDERS: &str = "ORDERS";

/// The customer of every sample event.
pub const CUSTOMER: &str = "cust-1";

/// Where the order of `envelope` lives: its customer (for order events that name one; else
/// [`CUSTOMER`]) and its id, in one partition.
pub fn key_of(envelope: &Envelope) -> OrderKey {
    let customer = match &envelope.event {
        Event::OrderCreated(e) => e.customer_id.clone(),
        Event::OrderConfirmed(e) => e.customer_id.clone(),
        Event::OrderCancelled(e) => e.customer_id.clone(),
        _ => CustomerId::new(CUSTOMER).unwrap(),
    };
    OrderKey::new(Partitions::ONE, customer, envelope.event.order_id())
}

/// The subject `envelope` is published on.
pub fn subject_of(envelope: &Envelope) -> String {
    key_of(envelope).subject(&envelope.event)
}

/// The subject of the event in `bytes` (a fixture), or of a fresh order's `created` for bytes
/// that do not decode.
pub fn subject_of_bytes(bytes: &[u8]) -> String {
    match Envelope::decode(bytes) {
        Ok(envelope) => subject_of(&envelope),
        Err(_) => subject_of(&order_created(OrderId::new())),
    }
}

pub use testkit::{PATIENCE, eventually, eventually_some};

pub struct Harness {
    pub server: NatsServer,
    pub bus: Bus,
}

impl Harness {
    pub async fn start() -> Self {
        Self::on(NatsServer::start()).await
    }

    pub async fn on(server: NatsServer) -> Self {
        let bus = testkit::sample::bus(&server, "bus-test").await;
        Self { server, bus }
    }

    /// Waits until `n` dead letters are in the `DLQ` stream and returns them in order.
    pub async fn dead_letters(&self, n: usize) -> Vec<DeadLetter> {
        let stream = self
            .bus
            .jetstream()
            .get_stream(names::stream::DLQ)
            .await
            .unwrap();
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut letters = Vec::new();
        while letters.len() < n {
            let message = tokio::time::timeout(PATIENCE, messages.next())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} dead letters arrived", letters.len()))
                .unwrap()
                .unwrap();
            let headers = message.headers.clone().unwrap_or_default();
            letters.push(
                DeadLetter::from_parts(headers, message.payload.clone())
                    .unwrap_or_else(|| panic!("DLQ message without Dlq-* headers: {message:?}")),
            );
            message.ack().await.unwrap();
        }
        letters
    }

    /// Messages stored in a stream right now.
    pub async fn stored(&self, stream: &str) -> u64 {
        self.bus
            .jetstream()
            .get_stream(stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages
    }
}

pub async fn connect(server: &NatsServer, config: BusConfig) -> Bus {
    let bus = Bus::connect(&config.with_url(server.url()))
        .await
        .expect("connect");
    eventually("connected", || async { bus.is_connected() }).await;
    bus
}

/// A spec that retries quickly so tests finish in seconds.
pub fn fast_spec(stream: &str, durable: &str, subjects: &[&str]) -> ConsumerSpec {
    ConsumerSpec {
        ack_wait: Duration::from_secs(2),
        max_deliver: 5,
        nak_delay: Duration::from_millis(50),
        max_nak_delay: Duration::from_millis(400),
        progress_every: Duration::from_millis(500),
        pull_expiry: Duration::from_millis(500),
        concurrency: 8,
        max_batch: 8,
        ..ConsumerSpec::new(stream, durable, subjects)
    }
}

/// A handler that forwards every delivery to the returned receiver and acks it.
pub fn recorder() -> (
    impl Fn(Delivery) -> futures::future::Ready<Result<(), HandlerError>>
    + Clone
    + Send
    + Sync
    + 'static,
    mpsc::UnboundedReceiver<Delivery>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = move |delivery: Delivery| {
        let _ = tx.send(delivery);
        futures::future::ready(Ok(()))
    };
    (handler, rx)
}

pub async fn next(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Delivery {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("no delivery in time")
        .expect("handler dropped")
}

pub use testkit::sample::sku;

pub fn order_created(order_id: OrderId) -> Envelope {
    let order = OrderCreated::builder()
        .order_id(order_id)
        .customer_id(CustomerId::new(CUSTOMER).unwrap())
        .items(vec![LineItem {
            sku: sku("SKU-1"),
            quantity: 2,
            unit_price_cents: 500,
        }])
        .currency(Currency::new("EUR").unwrap())
        .build()
        .unwrap();
    Envelope::new("/orderflow/test", Event::OrderCreated(order))
}

/// One envelope of every event type, all about one order.
pub fn one_of_each_event() -> Vec<Envelope> {
    let order_id = OrderId::new();
    let customer_id = CustomerId::new(CUSTOMER).unwrap();
    let notification_id = uuid::Uuid::now_v7();
    let lines = vec![ReservedLine {
        sku: sku("SKU-1"),
        quantity: 2,
    }];
    let shortfall = vec![Shortfall {
        sku: sku("SKU-1"),
        requested: 2,
        available: 1,
    }];
    let currency = Currency::new("EUR").unwrap();
    let created = order_created(order_id);
    [
        created.event.clone(),
        Event::OrderConfirmed(
            OrderConfirmed::builder()
                .order_id(order_id)
                .customer_id(customer_id.clone())
                .total_cents(1000)
                .currency(currency)
                .build(),
        ),
        Event::OrderCancelled(
            OrderCancelled::builder()
                .order_id(order_id)
                .customer_id(customer_id)
                .reason(CancelReason::OutOfStock {
                    shortfall: shortfall.clone(),
                })
                .reserved(Vec::new())
                .build(),
        ),
        Event::InventoryReserved(
            InventoryReserved::builder()
                .order_id(order_id)
                .lines(lines.clone())
                .build(),
        ),
        Event::InventoryRejected(
            InventoryRejected::builder()
                .order_id(order_id)
                .shortfall(shortfall)
                .build(),
        ),
        Event::InventoryReleased(
            InventoryReleased::builder()
                .order_id(order_id)
                .lines(lines)
                .build(),
        ),
        Event::NotificationSent(
            NotificationSent::builder()
                .notification_id(notification_id)
                .order_id(order_id)
                .kind(NotificationKind::OrderConfirmed)
                .channel(Channel::Webhook)
                .attempts(1)
                .build(),
        ),
        Event::NotificationFailed(
            NotificationFailed::builder()
                .notification_id(notification_id)
                .order_id(order_id)
                .kind(NotificationKind::OrderCancelled)
                .channel(Channel::Webhook)
                .attempts(3)
                .error("503".into())
                .build(),
        ),
    ]
    .into_iter()
    .map(|event| Envelope::new("/orderflow/test", event).caused_by(&created))
    .collect()
}

/// Bytes of a golden fixture of the events crate.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A consumer running a handler in the background until [`Running::stop`].
pub struct Running {
    shutdown: bus::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), bus::ConsumeError>>,
}

impl Running {
    /// Creates the durable consumer of `spec` and runs `handler` on it.
    pub async fn start(bus: &Bus, spec: ConsumerSpec, handler: impl bus::Handler) -> Self {
        let consumer = bus::Consumer::create(bus, spec)
            .await
            .expect("create consumer");
        Self::of(consumer, handler)
    }

    /// Runs `handler` on an already created consumer.
    pub fn of(consumer: bus::Consumer, handler: impl bus::Handler) -> Self {
        let shutdown = bus::CancellationToken::new();
        let task = tokio::spawn(consumer.run(handler, shutdown.clone()));
        Self { shutdown, task }
    }

    /// Cancels the consumer and waits until it has drained and returned.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("consumer did not drain in time")
            .expect("consumer task panicked")
            .expect("consumer failed");
    }
}
