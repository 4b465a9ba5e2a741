//! Dead letters: nothing is dropped. Permanent failures, exhausted retries, ack-timeout deaths,
//! garbage and unknown versions all land in `DLQ` with their reason, payload and headers, and
//! the consumer carries on.

use std::time::Duration;

use async_nats::HeaderMap;
use bus::{Consumer, ConsumerSpec, DeadLetterReason, Delivery, HandlerError};
use events::{OrderId, names};
use futures::StreamExt;

use crate::support::{Harness, Running, fast_spec, fixture, next, order_created, recorder};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Publishes `payload` as it is on the subject of the event it holds (any event subject for
/// bytes that are no event).
async fn publish_raw(h: &Harness, msg_id: &str, payload: Vec<u8>) -> u64 {
    let subject = crate::support::subject_of_bytes(&payload);
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    headers.insert("traceparent", TRACEPARENT);
    h.bus
        .jetstream()
        .publish_with_headers(subject, headers, payload.into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

/// A replica that takes the next message of `durable` and dies before settling it, twice;
/// returns the message's stream sequence.
async fn taken_and_dropped_twice(h: &Harness, stream: &str, durable: &str) -> u64 {
    let raw: async_nats::jetstream::consumer::PullConsumer = h
        .bus
        .jetstream()
        .get_consumer_from_stream(durable, stream)
        .await
        .unwrap();
    let mut sequences = Vec::new();
    for _ in 0..2 {
        let mut batch = raw
            .batch()
            .max_messages(1)
            .expires(Duration::from_secs(3))
            .messages()
            .await
            .unwrap();
        let message = batch.next().await.unwrap().unwrap();
        sequences.push(message.info().unwrap().stream_sequence);
    }
    assert_eq!(
        sequences[0], sequences[1],
        "two different messages were taken"
    );
    sequences[0]
}

#[tokio::test]
async fn a_permanently_failing_handler_lands_in_dlq_with_its_reason_and_original_trace_context() {
    let h = Harness::start().await;
    let payload = order_created(OrderId::new()).to_json().unwrap();
    let subject = crate::support::subject_of_bytes(&payload);
    let sequence = publish_raw(&h, "orders.created:x", payload.clone()).await;
    let handler =
        |_: Delivery| async { Err(HandlerError::permanent("customer cust-1 is blocked")) };
    let run = Running::start(
        &h.bus,
        fast_spec(crate::support::ORDERS, "permanent", &[]),
        handler,
    )
    .await;

    let letter = h.dead_letters(1).await.remove(0);
    assert_eq!(letter.reason, DeadLetterReason::Permanent);
    assert!(
        letter.error.contains("customer cust-1 is blocked"),
        "{}",
        letter.error
    );
    assert_eq!(letter.subject, subject);
    assert_eq!(letter.stream, crate::support::ORDERS);
    assert_eq!(letter.sequence, sequence);
    assert_eq!(letter.consumer, "permanent");
    assert_eq!(
        letter.deliveries, 1,
        "a permanent failure must not be retried"
    );
    assert_eq!(letter.payload.as_ref(), payload.as_slice());
    assert_eq!(
        letter.headers.get("traceparent").map(|v| v.as_str()),
        Some(TRACEPARENT)
    );
    assert_eq!(
        letter
            .headers
            .get("Dlq-Original-Msg-Id")
            .map(|v| v.as_str()),
        Some("orders.created:x")
    );
    run.stop().await;
}

#[tokio::test]
async fn a_transient_failure_on_the_last_delivery_is_dead_lettered_not_dropped() {
    let h = Harness::start().await;
    publish_raw(&h, "m1", order_created(OrderId::new()).to_json().unwrap()).await;
    let handler = |_: Delivery| async { Err(HandlerError::transient("stock store unavailable")) };
    let spec = ConsumerSpec {
        max_deliver: 3,
        ..fast_spec(crate::support::ORDERS, "exhaust", &[])
    };
    let run = Running::start(&h.bus, spec, handler).await;

    let letter = h.dead_letters(1).await.remove(0);
    assert_eq!(letter.reason, DeadLetterReason::RetriesExhausted);
    assert_eq!(letter.deliveries, 3);
    assert!(
        letter.error.contains("stock store unavailable"),
        "{}",
        letter.error
    );
    run.stop().await;
}

#[tokio::test]
async fn a_message_never_acked_until_max_deliver_is_dead_lettered_from_the_advisory() {
    let h = Harness::start().await;
    let sequence = publish_raw(&h, "m2", order_created(OrderId::new()).to_json().unwrap()).await;
    let spec = ConsumerSpec {
        ack_wait: Duration::from_millis(500),
        max_deliver: 2,
        progress_every: Duration::from_millis(200),
        ..fast_spec(crate::support::ORDERS, "crashy", &[])
    };
    let consumer = Consumer::create(&h.bus, spec).await.unwrap();

    assert_eq!(
        taken_and_dropped_twice(&h, crate::support::ORDERS, "crashy").await,
        sequence
    );
    // Let the last ack_wait pass, so the server gives up and emits the advisory while no
    // dead-letter watcher runs: it must be captured and handled later.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let (handler, _rx) = recorder();
    let run = Running::of(consumer, handler);
    let letter = h.dead_letters(1).await.remove(0);
    assert_eq!(letter.reason, DeadLetterReason::AckTimeout);
    assert_eq!(letter.sequence, sequence);
    assert_eq!(letter.deliveries, 2);
    assert_eq!(letter.consumer, "crashy");
    assert_eq!(
        letter.headers.get("traceparent").map(|v| v.as_str()),
        Some(TRACEPARENT)
    );
    run.stop().await;
}

#[tokio::test]
async fn with_partitions_each_ack_timeout_death_is_dead_lettered_from_its_own_stream() {
    let server = testkit::NatsServer::start();
    let bus = crate::support::connect(&server, bus::BusConfig::new("partitioned")).await;
    let h = Harness { server, bus };
    let partitions = events::Partitions::new(2).unwrap();
    h.bus
        .provision_streams(&bus::StreamSettings {
            partitions,
            ..bus::StreamSettings::default()
        })
        .await
        .unwrap();
    // One message per partition stream: both are sequence 1 of their stream.
    let mut published = Vec::new();
    let mut consumers = Vec::new();
    for partition in partitions.all() {
        let stream = events::Domain::Orders.stream(partition, partitions);
        let payload = order_created(OrderId::new()).to_json().unwrap();
        let subject = format!("orders.{partition}.cust-1.{}.created", OrderId::new());
        let ack = h
            .bus
            .jetstream()
            .publish(subject, payload.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(ack.sequence, 1);
        published.push((stream.clone(), payload));
        let spec = ConsumerSpec {
            ack_wait: Duration::from_millis(500),
            max_deliver: 2,
            progress_every: Duration::from_millis(200),
            ..fast_spec(&stream, "crashy", &[])
        };
        consumers.push(Consumer::create(&h.bus, spec).await.unwrap());
        taken_and_dropped_twice(&h, &stream, "crashy").await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // The same durable name runs on both partition streams, each with its own watcher.
    let runs: Vec<_> = consumers
        .into_iter()
        .map(|consumer| Running::of(consumer, recorder().0))
        .collect();
    let mut letters = h.dead_letters(2).await;
    letters.sort_by(|a, b| a.stream.cmp(&b.stream));
    for (letter, (stream, payload)) in letters.iter().zip(&published) {
        assert_eq!(letter.reason, DeadLetterReason::AckTimeout);
        assert_eq!(&letter.stream, stream);
        assert_eq!(letter.sequence, 1);
        assert_eq!(
            letter.payload.as_ref(),
            payload.as_slice(),
            "the dead letter of {stream} holds another stream's message"
        );
    }
    for run in runs {
        run.stop().await;
    }
}

#[tokio::test]
async fn garbage_and_an_unknown_version_land_in_dlq_and_the_consumer_keeps_going() {
    let h = Harness::start().await;
    publish_raw(&h, "garbage", b"\x00\x01 not json {".to_vec()).await;
    let mut future: serde_json::Value =
        serde_json::from_slice(&fixture("orders.created.v2.json")).unwrap();
    future["schemaversion"] = 7.into();
    publish_raw(&h, "v7", serde_json::to_vec(&future).unwrap()).await;
    let valid = order_created(OrderId::new());
    publish_raw(&h, "valid", valid.to_json().unwrap()).await;

    let (handler, mut rx) = recorder();
    let run = Running::start(
        &h.bus,
        fast_spec(crate::support::ORDERS, "poison", &[]),
        handler,
    )
    .await;

    assert_eq!(
        next(&mut rx).await.envelope.id,
        valid.id,
        "the valid event behind the poison was not processed"
    );
    let letters = h.dead_letters(2).await;
    let mut errors: Vec<&str> = letters.iter().map(|l| l.error.as_str()).collect();
    errors.sort();
    assert!(errors[0].starts_with("not a JSON CloudEvent"), "{errors:?}");
    assert!(
        errors[1].contains("unknown schema version 7 of orders.created"),
        "{errors:?}"
    );
    assert!(
        letters
            .iter()
            .all(|l| l.reason == DeadLetterReason::Permanent && l.deliveries == 1)
    );
    run.stop().await;
}

#[tokio::test]
async fn a_message_dead_lettered_twice_is_stored_once_in_the_dead_letter_stream() {
    // The handler road and the advisory road share a msg id; here the same consumer
    // dead-letters the same message twice (its durable state was reset in between).
    let h = Harness::start().await;
    publish_raw(&h, "twice", b"garbage".to_vec()).await;
    for _ in 0..2 {
        let (handler, _rx) = recorder();
        let run = Running::start(
            &h.bus,
            fast_spec(crate::support::ORDERS, "dup", &[]),
            handler,
        )
        .await;
        let stream = h
            .bus
            .jetstream()
            .get_stream(crate::support::ORDERS)
            .await
            .unwrap();
        crate::support::eventually("the garbage message is settled", || async {
            let info = stream.consumer_info("dup").await.unwrap();
            info.ack_floor.stream_sequence == 1
        })
        .await;
        run.stop().await;
        h.bus
            .jetstream()
            .delete_consumer_from_stream("dup", crate::support::ORDERS)
            .await
            .unwrap();
    }
    assert_eq!(h.stored(names::stream::DLQ).await, 1);
}

#[tokio::test]
async fn a_forged_dead_letter_naming_a_kv_bucket_is_not_redriven() {
    // Anyone who may publish to `dlq.>` can write the `Dlq-*` headers; a redrive must not
    // turn them into a write to a bucket (or any subject that is not an event of its stream).
    let h = Harness::start().await;
    let headers =
        testkit::sample::dead_letter_headers("$KV.stock.SKU-1", "KV_stock", 1, "inventory");
    let sequence = testkit::sample::publish_dead_letter(
        h.bus.jetstream(),
        "dlq.forged".into(),
        headers,
        br#"{"available":1000000}"#.to_vec(),
    )
    .await;

    let error = h.bus.redrive(sequence, None).await.unwrap_err();
    assert!(
        matches!(error, bus::DeadLetterError::NotRedrivable { .. }),
        "{error}"
    );
    assert_eq!(
        h.stored(names::stream::DLQ).await,
        1,
        "the letter stays for inspection"
    );
}

#[tokio::test]
async fn a_dead_letter_whose_order_is_older_than_the_hot_window_is_not_published_again() {
    // Its consumers keep the history they decide on for the hot window only: a copy of an older
    // event would look new to them.
    let h = Harness::start().await;
    let placed = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        u64::try_from(chrono::Utc::now().timestamp()).unwrap() - 2 * 3600,
        0,
    ));
    let event = order_created(OrderId(placed));
    let subject = crate::support::subject_of(&event);
    let original = publish_raw(&h, "old-order", event.to_json().unwrap()).await;
    let headers = testkit::sample::dead_letter_headers(
        &subject,
        crate::support::ORDERS,
        original,
        "inventory",
    );
    let sequence = testkit::sample::publish_dead_letter(
        h.bus.jetstream(),
        names::subject::dead_letter("inventory", &subject),
        headers,
        event.to_json().unwrap(),
    )
    .await;

    let window = Duration::from_secs(3600);
    let error = h.bus.redrive(sequence, Some(window)).await.unwrap_err();

    assert!(
        matches!(error, bus::DeadLetterError::TooOld { .. }),
        "{error}"
    );
    assert_eq!(
        h.stored(crate::support::ORDERS).await,
        1,
        "nothing published"
    );
    assert_eq!(h.stored(names::stream::DLQ).await, 1, "the letter stays");
    assert!(
        h.bus.redrive(sequence, None).await.unwrap(),
        "no window: published"
    );
    assert_eq!(h.stored(crate::support::ORDERS).await, 2);
}

#[tokio::test]
async fn a_dead_letter_that_is_no_copy_of_a_message_in_its_stream_is_not_published() {
    // Its headers are claims: a service may publish any of them in its own letters. What is
    // published again must be in the stream already, subject and payload alike.
    let h = Harness::start().await;
    let real = order_created(OrderId::new());
    let subject = crate::support::subject_of(&real);
    let sequence_of_real = publish_raw(&h, "real", real.to_json().unwrap()).await;
    let forged = events::Envelope {
        source: "/forged".into(),
        ..real.clone()
    };
    let headers = testkit::sample::dead_letter_headers(
        &subject,
        crate::support::ORDERS,
        sequence_of_real,
        "inventory",
    );
    let sequence = testkit::sample::publish_dead_letter(
        h.bus.jetstream(),
        names::subject::dead_letter("inventory", &subject),
        headers,
        forged.to_json().unwrap(),
    )
    .await;

    let error = h.bus.redrive(sequence, None).await.unwrap_err();

    assert!(
        matches!(error, bus::DeadLetterError::Unverified { .. }),
        "{error}"
    );
    assert_eq!(
        h.stored(crate::support::ORDERS).await,
        1,
        "nothing published"
    );
}
