//! The bus in one page: connect, provision, append an event to an order's history (create-only:
//! a retry finds its own event, a second writer is refused), read the history back, consume
//! the event with a handler (ack on success), and keep a counter in KV with compare-and-set.
//!
//! ```sh
//! nats-server -js &                      # ≥ 2.11
//! cargo run -p bus --example quickstart  # NATS_URL=nats://127.0.0.1:4222 by default
//! ```

use std::time::Duration;

use anyhow::Context as _;

use bus::{
    Append, Appended, Bus, BusConfig, Change, Consumer, ConsumerSpec, Delivery, HandlerError,
    KvBucket, KvStore, MsgId, Precondition, StreamSettings,
};
use events::{
    Currency, CustomerId, Domain, Envelope, Event, EventKind, LineItem, OrderCreated, OrderId,
    OrderKey, Partitions, Sku,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let bus = Bus::connect(&BusConfig::new("quickstart").with_url(url)).await?;
    // Every stream of the layout (ORDERS, INVENTORY, NOTIFICATIONS, DLQ, ADVISORIES).
    bus.provision_streams(&StreamSettings::default()).await?;

    // An order's events live under its own subjects; its history is one filter over them.
    let order = OrderId::new();
    let key = OrderKey::new(Partitions::ONE, CustomerId::new("ada")?, order);
    let lines = vec![LineItem {
        sku: Sku::new("MUG")?,
        quantity: 2,
        unit_price_cents: 450,
    }];
    let order_created = OrderCreated::builder()
        .order_id(order)
        .customer_id(CustomerId::new("ada")?)
        .items(lines)
        .currency(Currency::new("EUR")?)
        .build()
        .context("the total overflows")?;
    let created = Envelope::new("/orderflow/quickstart", Event::OrderCreated(order_created));
    let history = key.history(Domain::Orders, Partitions::ONE);
    let subject = key.subject(&created.event);
    let msg_id = MsgId::new(created.kind(), order);

    // Create-only: stored only if nothing was ever appended under the order's subjects.
    let append = |envelope| {
        let (subject, msg_id) = (subject.clone(), msg_id.clone());
        Append::new(
            Precondition::CreateOnly,
            &history,
            subject,
            envelope,
            msg_id,
        )
    };
    let first = bus.events().append(append(&created)).await?;
    println!("appended {subject}: {first:?}");
    // The same append again (a retry, its answer lost) finds its own event: stored, once.
    let retry = bus.events().append(append(&created)).await?;
    println!("retried: {retry:?}");
    // Another writer's event for the same order finds the history moved, and gets it instead.
    let competing = Envelope::new("/orderflow/quickstart", created.event.clone());
    match bus.events().append(append(&competing)).await? {
        Appended::Conflict(events) => {
            println!(
                "second create refused; history has {} event(s)",
                events.len()
            )
        }
        Appended::Stored(_) => anyhow::bail!("a second create-only append was stored"),
    }
    let events = bus.events().read(&history).await?;
    println!(
        "history of {order}: {:?}",
        events.iter().map(|e| &e.subject).collect::<Vec<_>>()
    );

    // A durable pull consumer: Ok acks; a transient error would nak and retry, a permanent one
    // would dead-letter. Here the handler hands the delivery over and the consumer stops.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handler = move |delivery: Delivery| {
        let _ = tx.send(delivery.subject.clone());
        async { Ok::<(), HandlerError>(()) }
    };
    let filter = events::layout::consumer_filter(EventKind::OrderCreated, 0);
    let spec = ConsumerSpec::new(history.stream.as_str(), "quickstart", &[filter.as_str()]);
    let shutdown = bus::CancellationToken::new();
    let consumer = tokio::spawn(
        Consumer::create(&bus, spec)
            .await?
            .run(handler, shutdown.clone()),
    );
    let delivered = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await?;
    println!("consumed {}", delivered.unwrap_or_default());
    shutdown.cancel();
    consumer.await??;

    // KV with compare-and-set: `modify` reads, decides, and writes only over what it read.
    let bucket = KvBucket::new("quickstart");
    bus.provision_bucket(&bucket).await?;
    let counters = KvStore::<u64>::open(&bus, &bucket).await?;
    let count = counters
        .modify("orders", |seen| {
            let next = seen.copied().unwrap_or(0) + 1;
            Change::Write(next, next)
        })
        .await?;
    println!("orders counted: {count}");

    bus.drain().await;
    Ok(())
}
