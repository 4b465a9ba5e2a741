//! `orderflow-admin dead-letters`: the operator lists any consumer's dead letters, redrives one
//! once its cause is fixed (once: a second redrive finds it gone), discards one handled some
//! other way, and is refused — with where to go instead — for the archive projection's letters,
//! which order-service takes back itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bus::{Bus, BusConfig, MsgId};
use clap::Parser as _;
use events::{
    Currency, CustomerId, Envelope, Event, InventoryReserved, LineItem, OrderCreated, OrderId,
    OrderKey, Partitions, ReservedLine, Sku,
};
use orderflow_admin::{Cli, Command, Outcome};
use testkit::TestApp;

/// `orderflow-admin dead-letters --nats-url <app's> <action...>`.
async fn dead_letters(app: &TestApp, action: &[&str]) -> Outcome {
    let mut argv = vec!["orderflow-admin", "dead-letters"];
    let url = app.nats.url();
    argv.extend(["--nats-url", url.as_str()]);
    // As the archive's owner, or with no archive.
    let archive = app
        .postgres
        .as_ref()
        .map_or_else(|| "none".to_owned(), testkit::PostgresServer::url);
    argv.extend(["--archive-url", archive.as_str()]);
    argv.extend(action);
    let Command::DeadLetters(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    orderflow_admin::dead_letters(&args).await.unwrap()
}

async fn publish(app: &TestApp, event: Event) -> Envelope {
    let bus = Bus::connect(&BusConfig::new("test").with_url(app.nats.url()))
        .await
        .unwrap();
    let envelope = Envelope::new("/test", event);
    let order = envelope.event.order_id();
    let key = OrderKey::new(Partitions::ONE, CustomerId::new("restored").unwrap(), order);
    bus.publisher()
        .publish(
            &key.subject(&envelope.event),
            &envelope,
            &MsgId::new(envelope.kind(), order),
        )
        .await
        .unwrap();
    envelope
}

/// `orders.created` of `order_id` (customer `restored`, one `DLQ-SKU`).
fn created(order_id: OrderId) -> Event {
    Event::OrderCreated(
        OrderCreated::builder()
            .order_id(order_id)
            .customer_id(CustomerId::new("restored").unwrap())
            .items(vec![LineItem {
                sku: Sku::new("DLQ-SKU").unwrap(),
                quantity: 1,
                unit_price_cents: 100,
            }])
            .currency(Currency::new("EUR").unwrap())
            .build()
            .unwrap(),
    )
}

fn line() -> ReservedLine {
    ReservedLine {
        sku: Sku::new("DLQ-SKU").unwrap(),
        quantity: 1,
    }
}

/// A reservation for an order order-service never recorded: retried, then dead-lettered by
/// `order-saga` (and by the archive's projection).
async fn orphan_reservation(app: &TestApp) -> (OrderId, u64) {
    let order_id = OrderId::new();
    publish(
        app,
        Event::InventoryReserved(
            InventoryReserved::builder()
                .order_id(order_id)
                .lines(vec![line()])
                .build(),
        ),
    )
    .await;
    let sequence = testkit::eventually_some("the reservation is dead-lettered", || async {
        dead_letters(app, &["list", "--consumer", "order-saga"])
            .await
            .letters
            .first()
            .map(|l| l.sequence)
    })
    .await;
    (order_id, sequence)
}

async fn app() -> TestApp {
    TestApp::builder()
        .env("CONSUMER_ACK_WAIT_MS", "1000")
        .env("CONSUMER_MAX_DELIVER", "2")
        .spawn()
        .await
}

#[tokio::test]
async fn a_letter_of_any_consumer_is_listed_and_redriven_once_its_cause_is_fixed() {
    let app = app().await;
    let (order_id, sequence) = orphan_reservation(&app).await;
    let listed = dead_letters(&app, &["list", "--consumer", "order-saga"]).await;
    let letter = &listed.letters[0];
    assert_eq!(
        (
            letter.reason.as_str(),
            letter.deliveries,
            letter.from_its_consumer
        ),
        ("retries_exhausted", 2, true)
    );
    assert!(letter.subject.ends_with(&format!("{order_id}.reserved")));
    assert!(
        dead_letters(&app, &["list", "--consumer", "no-such-consumer"])
            .await
            .letters
            .is_empty()
    );

    // The cause is fixed: the missing order's `created` is restored.
    publish(&app, created(order_id)).await;
    let seq = sequence.to_string();
    let redriven = dead_letters(&app, &["redrive", &seq]).await;
    assert_eq!((redriven.done, redriven.refused), (vec![sequence], vec![]));
    app.wait_for_status(&order_id.to_string(), "confirmed")
        .await;
    assert_eq!(
        dead_letters(&app, &["redrive", &seq]).await.gone,
        [sequence],
        "redriven twice"
    );
}

#[tokio::test]
async fn the_projections_letters_are_folded_into_the_archive_and_never_published() {
    let app = app().await;
    // A letter of the archive's projection, as order-service would write it.
    let created = publish(&app, created(OrderId::new())).await;
    let key = OrderKey::new(
        Partitions::ONE,
        CustomerId::new("restored").unwrap(),
        created.event.order_id(),
    );
    let subject = key.subject(&created.event);
    let js = async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let sequence = testkit::sample::publish_dead_letter(
        &js,
        events::names::subject::dead_letter("order-archive", &subject),
        testkit::sample::dead_letter_headers(&subject, "ORDERS", 1, "order-archive"),
        created.to_json().unwrap(),
    )
    .await;
    let redriven = dead_letters(&app, &["redrive", &sequence.to_string()]).await;
    assert_eq!((redriven.done, redriven.refused), (vec![sequence], vec![]));
    // The only `created` of the order is the one first published (no copy was).
    let orders = js.get_stream("ORDERS").await.unwrap();
    let last = orders
        .get_last_raw_message_by_subject(&subject)
        .await
        .unwrap();
    assert_eq!(
        last.sequence, 1,
        "a letter of the projection was published again"
    );
}

#[tokio::test]
async fn a_discarded_letter_is_gone() {
    let app = app().await;
    let (_, sequence) = orphan_reservation(&app).await;
    let seq = sequence.to_string();
    assert_eq!(
        dead_letters(&app, &["discard", &seq]).await.done,
        [sequence]
    );
    assert!(
        dead_letters(&app, &["list"])
            .await
            .letters
            .iter()
            .all(|l| l.sequence != sequence)
    );
    assert_eq!(
        dead_letters(&app, &["discard", &seq]).await.gone,
        [sequence]
    );
}
