//! Duplicates, replays and overtaking: the same `orders.created` arriving again — republished
//! with a new `Nats-Msg-Id`, so the server does not dedupe it — changes stock once and never
//! flips a decision; a cancellation that overtakes its order keeps it from ever being reserved.

use bus::{Bus, BusConfig, MsgId, Published};
use events::{
    CancelReason, Currency, CustomerId, Envelope, Event, LineItem, OrderCancelled, OrderCreated,
    OrderId, Sku,
};
use testkit::System;

use crate::support::{eventually, place, set_stock, stock, wait_for_status};

fn order_created(order_id: OrderId, customer: &str, sku: &str, quantity: u32) -> OrderCreated {
    OrderCreated::new(
        order_id,
        CustomerId::new(customer).unwrap(),
        vec![LineItem {
            sku: Sku::new(sku).unwrap(),
            quantity,
            unit_price_cents: 100,
        }],
        Currency::new("EUR").unwrap(),
    )
    .unwrap()
}

/// A client of the system's NATS that replays events the way a buggy producer or an operator would.
async fn replayer(system: &System) -> Bus {
    Bus::connect(&BusConfig::new("replayer").with_url(system.nats.url()))
        .await
        .unwrap()
}

/// Publishes `event` (of an order of `customer`) straight to the bus under a msg id nobody used,
/// as a replay would.
async fn publish_fresh(bus: &Bus, customer: &str, event: Event) -> Published {
    let kind = event.kind();
    let envelope = Envelope::new("/test/replay", event);
    bus.publisher()
        .publish(
            &crate::support::subject_of(&envelope, customer),
            &envelope,
            &MsgId::new(kind, format!("replay-{}", envelope.id)),
        )
        .await
        .unwrap()
}

/// Waits until inventory has settled everything up to `published`.
async fn inventory_settled(bus: &Bus, published: &Published) {
    eventually("inventory settled the message", || async {
        let stream = bus.jetstream().get_stream("ORDERS").await.unwrap();
        // The replay is on ORDERS: inventory's consumer of that stream must be past it.
        let info = stream.consumer_info("inventory").await.unwrap();
        info.ack_floor.stream_sequence >= published.sequence
    })
    .await;
}

async fn reservation(system: &System, order_id: OrderId) -> serde_json::Value {
    crate::support::get_json(
        system,
        &format!("{}/v1/reservations/{order_id}", system.inventory[0].url()),
    )
    .await
}

#[tokio::test]
async fn the_same_order_created_delivered_again_takes_stock_once() {
    let system = System::builder().start().await;
    set_stock(&system, "BOOK", 10).await;
    let order_id = place(&system, "ivan", &[("BOOK", 4)]).await;
    wait_for_status(&system, &order_id, "confirmed").await;
    assert_eq!(stock(&system, "BOOK").await, (6, 4, 0));

    let bus = replayer(&system).await;
    let replay = publish_fresh(
        &bus,
        "ivan",
        Event::OrderCreated(order_created(order_id.parse().unwrap(), "ivan", "BOOK", 4)),
    )
    .await;
    assert!(!replay.duplicate);
    inventory_settled(&bus, &replay).await;
    assert_eq!(
        stock(&system, "BOOK").await,
        (6, 4, 0),
        "a replayed order took stock twice"
    );
    assert_eq!(
        crate::support::order(&system, &order_id).await["status"],
        "confirmed"
    );
}

#[tokio::test]
async fn a_replayed_order_keeps_its_first_decision_even_after_stock_arrives() {
    let system = System::builder().start().await;
    set_stock(&system, "RARE", 1).await;
    let order_id = place(&system, "jo", &[("RARE", 2)]).await;
    wait_for_status(&system, &order_id, "cancelled").await;

    set_stock(&system, "RARE", 100).await;
    let bus = replayer(&system).await;
    let replay = publish_fresh(
        &bus,
        "jo",
        Event::OrderCreated(order_created(order_id.parse().unwrap(), "jo", "RARE", 2)),
    )
    .await;
    inventory_settled(&bus, &replay).await;
    assert_eq!(
        stock(&system, "RARE").await,
        (100, 0, 0),
        "the replay reserved stock for a cancelled order"
    );
    assert_eq!(
        reservation(&system, order_id.parse().unwrap()).await["state"],
        "rejected"
    );
}

#[tokio::test]
async fn a_cancellation_that_overtakes_its_order_keeps_the_order_from_being_reserved() {
    let system = System::builder().start().await;
    set_stock(&system, "LATE", 10).await;
    let bus = replayer(&system).await;
    let order_id = OrderId::new();
    let cancelled = Event::OrderCancelled(OrderCancelled {
        order_id,
        customer_id: CustomerId::new("kim").unwrap(),
        reason: CancelReason::CustomerRequested,
    });
    let first = publish_fresh(&bus, "kim", cancelled).await;
    inventory_settled(&bus, &first).await;
    let tombstone = reservation(&system, order_id).await;
    assert_eq!(tombstone["state"], "rejected", "{tombstone}");
    assert_eq!(tombstone["shortfall"], serde_json::json!([]), "{tombstone}");

    let created = publish_fresh(
        &bus,
        "kim",
        Event::OrderCreated(order_created(order_id, "kim", "LATE", 3)),
    )
    .await;
    inventory_settled(&bus, &created).await;
    assert_eq!(reservation(&system, order_id).await["state"], "rejected");
    assert_eq!(
        stock(&system, "LATE").await,
        (10, 0, 0),
        "an order cancelled first took stock"
    );
}

#[tokio::test]
async fn a_cancellation_delivered_again_gives_the_stock_back_once() {
    let system = System::builder().start().await;
    set_stock(&system, "MUG", 10).await;
    let order_id = place(&system, "lea", &[("MUG", 4)]).await;
    wait_for_status(&system, &order_id, "confirmed").await;
    assert!(
        crate::support::cancel(&system, &order_id)
            .await
            .status()
            .is_success()
    );
    let id: OrderId = order_id.parse().unwrap();
    eventually("the reservation is released", || async {
        reservation(&system, id).await["state"] == "released"
    })
    .await;
    assert_eq!(stock(&system, "MUG").await, (10, 0, 0));

    let bus = replayer(&system).await;
    let replay = publish_fresh(
        &bus,
        "lea",
        Event::OrderCancelled(OrderCancelled {
            order_id: id,
            customer_id: CustomerId::new("lea").unwrap(),
            reason: CancelReason::CustomerRequested,
        }),
    )
    .await;
    inventory_settled(&bus, &replay).await;
    assert_eq!(
        stock(&system, "MUG").await,
        (10, 0, 0),
        "a replayed cancellation gave the stock back twice"
    );
}
