//! Duplicates and replays: the same `orders.created` arriving again — republished with a new
//! `Nats-Msg-Id`, so the server does not dedupe it — changes stock once.

use bus::{Bus, BusConfig, MsgId};
use events::{Currency, CustomerId, Envelope, Event, EventKind, LineItem, OrderCreated, Sku};
use testkit::System;

use crate::support::{eventually, place, set_stock, stock, wait_for_status};

#[tokio::test]
async fn the_same_order_created_delivered_again_takes_stock_once() {
    let system = System::builder().start().await;
    set_stock(&system, "BOOK", 10).await;
    let order_id = place(&system, "ivan", &[("BOOK", 4)]).await;
    wait_for_status(&system, &order_id, "confirmed").await;
    assert_eq!(stock(&system, "BOOK").await, (6, 4, 0));

    // An operator's replay: the same order, a new event id and a msg id nobody used.
    let order = OrderCreated::new(
        order_id.parse().unwrap(),
        CustomerId::new("ivan").unwrap(),
        vec![LineItem {
            sku: Sku::new("BOOK").unwrap(),
            quantity: 4,
            unit_price_cents: 100,
        }],
        Currency::new("EUR").unwrap(),
    )
    .unwrap();
    let bus = Bus::connect(&BusConfig::new("replayer").with_url(system.nats.url()))
        .await
        .unwrap();
    let replay = Envelope::new("/test/replay", Event::OrderCreated(order));
    let stored = bus
        .publisher()
        .publish(
            &replay,
            &MsgId::new(EventKind::OrderCreated, format!("replay-{}", replay.id)),
        )
        .await
        .unwrap();
    assert!(!stored.duplicate);

    eventually("inventory settled the replay", || async {
        let stream = bus.jetstream().get_stream("ORDERS").await.unwrap();
        let info = stream.consumer_info("inventory").await.unwrap();
        info.ack_floor.stream_sequence >= stored.sequence
    })
    .await;
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
