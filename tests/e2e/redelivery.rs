//! Duplicates, replays and overtaking: the same `orders.created` arriving again — republished
//! with a new `Nats-Msg-Id`, so the server does not dedupe it — changes stock once and never
//! flips a decision; a cancellation that overtakes its order keeps it from ever being reserved.

use bus::{Bus, BusConfig, MsgId, Published};
use events::{
    CancelReason, Currency, CustomerId, Envelope, Event, LineItem, OrderCancelled, OrderCreated,
    OrderId, Sku,
};
use testkit::TestApp;

use crate::support::eventually;

fn order_created(order_id: OrderId, customer: &str, sku: &str, quantity: u32) -> OrderCreated {
    OrderCreated::builder()
        .order_id(order_id)
        .customer_id(CustomerId::new(customer).unwrap())
        .items(vec![LineItem {
            sku: Sku::new(sku).unwrap(),
            quantity,
            unit_price_cents: 100,
        }])
        .currency(Currency::new("EUR").unwrap())
        .build()
        .unwrap()
}

/// A client of the system's NATS that replays events the way a buggy producer or an operator would.
async fn replayer(app: &TestApp) -> Bus {
    Bus::connect(&BusConfig::new("replayer").with_url(app.nats.url()))
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

async fn reservation(app: &TestApp, order_id: OrderId) -> serde_json::Value {
    app.get_json(&format!(
        "{}/v1/reservations/{order_id}",
        app.inventory_url()
    ))
    .await
}

#[tokio::test]
async fn the_same_order_created_delivered_again_takes_stock_once() {
    let app = TestApp::builder().spawn().await;
    app.set_stock("BOOK", 10).await;
    let order_id = app.place_order("ivan", &[("BOOK", 4)]).await;
    app.wait_for_status(&order_id, "confirmed").await;
    assert_eq!(app.stock("BOOK").await, (6, 4, 0));

    let bus = replayer(&app).await;
    let replay = publish_fresh(
        &bus,
        "ivan",
        Event::OrderCreated(order_created(order_id.parse().unwrap(), "ivan", "BOOK", 4)),
    )
    .await;
    assert!(!replay.duplicate);
    inventory_settled(&bus, &replay).await;
    assert_eq!(
        app.stock("BOOK").await,
        (6, 4, 0),
        "a replayed order took stock twice"
    );
    assert_eq!(app.order(&order_id).await["status"], "confirmed");
}

#[tokio::test]
async fn a_replayed_order_keeps_its_first_decision_even_after_stock_arrives() {
    let app = TestApp::builder().spawn().await;
    app.set_stock("RARE", 1).await;
    let order_id = app.place_order("jo", &[("RARE", 2)]).await;
    app.wait_for_status(&order_id, "cancelled").await;

    app.set_stock("RARE", 100).await;
    let bus = replayer(&app).await;
    let replay = publish_fresh(
        &bus,
        "jo",
        Event::OrderCreated(order_created(order_id.parse().unwrap(), "jo", "RARE", 2)),
    )
    .await;
    inventory_settled(&bus, &replay).await;
    assert_eq!(
        app.stock("RARE").await,
        (100, 0, 0),
        "the replay reserved stock for a cancelled order"
    );
    assert_eq!(
        reservation(&app, order_id.parse().unwrap()).await["status"],
        "rejected"
    );
}

#[tokio::test]
async fn a_cancellation_that_overtakes_its_order_keeps_the_order_from_being_reserved() {
    let app = TestApp::builder().spawn().await;
    app.set_stock("LATE", 10).await;
    let bus = replayer(&app).await;
    let order_id = OrderId::new();
    let cancelled = Event::OrderCancelled(
        OrderCancelled::builder()
            .order_id(order_id)
            .customer_id(CustomerId::new("kim").unwrap())
            .reason(CancelReason::CustomerRequested)
            .reserved(Vec::new())
            .build(),
    );
    let first = publish_fresh(&bus, "kim", cancelled).await;
    inventory_settled(&bus, &first).await;
    let tombstone = reservation(&app, order_id).await;
    assert_eq!(tombstone["status"], "rejected", "{tombstone}");
    assert_eq!(tombstone["shortfall"], serde_json::json!([]), "{tombstone}");

    let created = publish_fresh(
        &bus,
        "kim",
        Event::OrderCreated(order_created(order_id, "kim", "LATE", 3)),
    )
    .await;
    inventory_settled(&bus, &created).await;
    assert_eq!(reservation(&app, order_id).await["status"], "rejected");
    assert_eq!(
        app.stock("LATE").await,
        (10, 0, 0),
        "an order cancelled first took stock"
    );
}

#[tokio::test]
async fn a_cancellation_delivered_again_gives_the_stock_back_once() {
    let app = TestApp::builder().spawn().await;
    app.set_stock("MUG", 10).await;
    let order_id = app.place_order("lea", &[("MUG", 4)]).await;
    app.wait_for_status(&order_id, "confirmed").await;
    assert!(app.cancel(&order_id).await.status().is_success());
    let id: OrderId = order_id.parse().unwrap();
    eventually("the reservation is released", || async {
        reservation(&app, id).await["status"] == "released"
    })
    .await;
    assert_eq!(app.stock("MUG").await, (10, 0, 0));

    let bus = replayer(&app).await;
    let replay = publish_fresh(
        &bus,
        "lea",
        Event::OrderCancelled(
            OrderCancelled::builder()
                .order_id(id)
                .customer_id(CustomerId::new("lea").unwrap())
                .reason(CancelReason::CustomerRequested)
                .reserved(Vec::new())
                .build(),
        ),
    )
    .await;
    inventory_settled(&bus, &replay).await;
    assert_eq!(
        app.stock("MUG").await,
        (10, 0, 0),
        "a replayed cancellation gave the stock back twice"
    );
}
