//! Publishing: typed events in, PubAck out; the server dedupes on `Nats-Msg-Id`; the breaker
//! fails fast while NATS is down and closes again when it is back.

use std::collections::HashMap;
use std::time::Duration;

use bus::{BusConfig, MsgId, PublishError, PublishPolicy};
use events::{EventKind, OrderId};

use crate::support::{
    self, Harness, Running, fast_spec, next, one_of_each_event, order_created, recorder,
};

#[tokio::test]
async fn every_event_type_round_trips_through_jetstream_unchanged() {
    let h = Harness::start().await;
    let sent = one_of_each_event();
    for envelope in &sent {
        let ack = h
            .bus
            .publisher()
            .publish(
                &crate::support::subject_of(envelope),
                envelope,
                &MsgId::new(envelope.kind(), envelope.id),
            )
            .await
            .unwrap();
        assert!(!ack.duplicate);
    }
    let (handler, mut rx) = recorder();
    let mut consumers = Vec::new();
    for domain in events::Domain::ALL {
        let stream = domain.stream_base();
        let spec = fast_spec(stream, &format!("all-{stream}"), &[]);
        consumers.push(Running::start(&h.bus, spec, handler.clone()).await);
    }
    let mut received = HashMap::new();
    while received.len() < sent.len() {
        let delivery = next(&mut rx).await;
        assert_eq!(delivery.subject, support::subject_of(&delivery.envelope));
        assert_eq!(delivery.key, support::key_of(&delivery.envelope));
        received.insert(delivery.envelope.id, delivery.envelope);
    }
    for envelope in sent {
        assert_eq!(
            received.get(&envelope.id),
            Some(&envelope),
            "{} changed in transit",
            envelope.kind()
        );
    }
    for consumer in consumers {
        consumer.stop().await;
    }
}

#[tokio::test]
async fn a_v1_order_created_from_an_old_producer_arrives_upcast_to_v2() {
    let h = Harness::start().await;
    h.bus
        .jetstream()
        .publish(
            support::subject_of_bytes(&support::fixture("orders.created.v1.json")),
            support::fixture("orders.created.v1.json").into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let (handler, mut rx) = recorder();
    let run = Running::start(
        &h.bus,
        fast_spec(crate::support::ORDERS, "upcast", &[]),
        handler,
    )
    .await;
    let delivery = next(&mut rx).await;
    let events::Event::OrderCreated(order) = delivery.envelope.event else {
        panic!("not an order")
    };
    assert_eq!(
        order.total_cents, 4490,
        "v2's total was not derived from v1's lines"
    );
    run.stop().await;
}

#[tokio::test]
async fn the_same_msg_id_published_twice_is_stored_once() {
    let h = Harness::start().await;
    let order_id = OrderId::new();
    let msg_id = MsgId::new(EventKind::OrderCreated, order_id);
    let first = h
        .bus
        .publisher()
        .publish(
            &crate::support::subject_of(&order_created(order_id)),
            &order_created(order_id),
            &msg_id,
        )
        .await
        .unwrap();
    // A retry builds a new envelope (new event id) for the same cause: still one message.
    let second = h
        .bus
        .publisher()
        .publish(
            &crate::support::subject_of(&order_created(order_id)),
            &order_created(order_id),
            &msg_id,
        )
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(second.sequence, first.sequence);
    assert_eq!(h.stored(crate::support::ORDERS).await, 1);
}

#[tokio::test]
async fn publishing_while_nats_is_down_fails_fast_once_the_breaker_opens_and_recovers_after() {
    let mut server = testkit::NatsServer::start();
    let policy = PublishPolicy {
        deadline: Duration::from_millis(300),
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        ack_timeout: Duration::from_millis(500),
        breaker_failures: 3,
        breaker_open_for: Duration::from_millis(500),
    };
    let bus = support::connect(
        &server,
        BusConfig {
            publish: policy,
            ..BusConfig::new("breaker")
        },
    )
    .await;
    bus.provision_streams(&bus::StreamSettings::default())
        .await
        .unwrap();
    server.kill();
    support::eventually("disconnected", || async { !bus.is_connected() }).await;

    let envelope = order_created(OrderId::new());
    let msg_id = MsgId::new(EventKind::OrderCreated, envelope.correlation_id);
    let first = bus
        .publisher()
        .publish(&crate::support::subject_of(&envelope), &envelope, &msg_id)
        .await
        .unwrap_err();
    assert!(first.is_transient(), "{first}");
    let second = bus
        .publisher()
        .publish(&crate::support::subject_of(&envelope), &envelope, &msg_id)
        .await
        .unwrap_err();
    assert!(
        matches!(second, PublishError::CircuitOpen),
        "breaker did not open: {second}"
    );

    server.start_again();
    support::eventually("reconnected", || async { bus.is_connected() }).await;
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    loop {
        match bus
            .publisher()
            .publish(&crate::support::subject_of(&envelope), &envelope, &msg_id)
            .await
        {
            Ok(ack) => {
                assert!(!ack.duplicate);
                break;
            }
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("publishing did not recover: {e}"),
        }
    }
}

#[tokio::test]
async fn a_stream_at_its_bound_refuses_new_events_as_store_full_and_keeps_the_old_ones() {
    let server = testkit::NatsServer::start();
    let bus = support::connect(&server, BusConfig::new("full")).await;
    bus.provision_streams(&bus::StreamSettings {
        bounds: bus::Bounds {
            events: bus::Bounds::LEAST,
            ..bus::Bounds::default()
        },
        ..bus::StreamSettings::default()
    })
    .await
    .unwrap();
    let mut stored = 0u64;
    let refused = loop {
        let envelope = order_created(OrderId::new());
        let msg_id = MsgId::new(EventKind::OrderCreated, envelope.correlation_id);
        match bus
            .publisher()
            .publish(&crate::support::subject_of(&envelope), &envelope, &msg_id)
            .await
        {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 1000, "16 KiB took 1,000 events");
    };
    assert!(refused.is_store_full(), "{refused}");
    assert!(refused.is_transient(), "a full store may have room later");
    let mut orders = bus.jetstream().get_stream("ORDERS").await.unwrap();
    let state = orders.info().await.unwrap().state.clone();
    assert_eq!((state.first_sequence, state.messages), (1, stored));
}
