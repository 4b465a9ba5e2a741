//! Consuming: retries with growing delays, bounded concurrency, and a drain that finishes what
//! it started.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bus::{ConsumerSpec, Delivery, HandlerError, MsgId};
use events::{EventKind, OrderId, names};
use tokio::sync::{Mutex, mpsc};

use crate::support::{Harness, PATIENCE, Running, eventually_some, fast_spec, order_created};

async fn publish_orders(h: &Harness, n: usize) {
    for _ in 0..n {
        let e = order_created(OrderId::new());
        h.bus
            .publisher()
            .publish(
                &crate::support::subject_of(&e),
                &e,
                &MsgId::new(EventKind::OrderCreated, e.correlation_id),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_transiently_failing_handler_is_redelivered_with_growing_delays_then_succeeds() {
    let h = Harness::start().await;
    publish_orders(&h, 1).await;
    let attempts: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let seen = attempts.clone();
    let handler = move |d: Delivery| {
        let (seen, done_tx) = (seen.clone(), done_tx.clone());
        async move {
            seen.lock().await.push((d.attempt, Instant::now()));
            if d.attempt < 4 {
                return Err(HandlerError::transient("downstream unavailable"));
            }
            let _ = done_tx.send(());
            Ok(())
        }
    };
    let spec = ConsumerSpec {
        nak_delay: Duration::from_millis(100),
        max_nak_delay: Duration::from_secs(1),
        ..fast_spec(crate::support::ORDERS, "retry", &[])
    };
    let run = Running::start(&h.bus, spec, handler).await;
    tokio::time::timeout(PATIENCE, done.recv()).await.unwrap();
    run.stop().await;

    let attempts = attempts.lock().await.clone();
    assert_eq!(
        attempts.iter().map(|a| a.0).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1].1 - w[0].1).collect();
    for (gap, at_least) in gaps.iter().zip([100, 200, 400]) {
        assert!(
            *gap >= Duration::from_millis(at_least),
            "redelivered after {gap:?}, expected ≥ {at_least} ms: {gaps:?}"
        );
    }
    assert_eq!(
        h.stored(names::stream::DLQ).await,
        0,
        "a message that succeeded was dead-lettered"
    );
}

#[tokio::test]
async fn at_most_the_configured_number_of_handlers_run_at_once() {
    let h = Harness::start().await;
    publish_orders(&h, 24).await;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let handler = {
        let (running, peak) = (running.clone(), peak.clone());
        move |_: Delivery| {
            let (running, peak, done_tx) = (running.clone(), peak.clone(), done_tx.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                let _ = done_tx.send(());
                Ok(())
            }
        }
    };
    let spec = ConsumerSpec {
        concurrency: 3,
        max_batch: 10,
        ..fast_spec(crate::support::ORDERS, "bounded", &[])
    };
    let run = Running::start(&h.bus, spec, handler).await;
    for _ in 0..24 {
        tokio::time::timeout(PATIENCE, done.recv()).await.unwrap();
    }
    run.stop().await;
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "handlers did not run 3 at a time"
    );
}

#[tokio::test]
async fn drain_finishes_in_flight_handlers_and_acks_them_before_returning() {
    let h = Harness::start().await;
    publish_orders(&h, 2).await;
    let finished = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let handler = {
        let finished = finished.clone();
        move |_: Delivery| {
            let (finished, started_tx) = (finished.clone(), started_tx.clone());
            async move {
                let _ = started_tx.send(());
                tokio::time::sleep(Duration::from_millis(700)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
    };
    let run = Running::start(
        &h.bus,
        fast_spec(crate::support::ORDERS, "drain", &[]),
        handler,
    )
    .await;
    for _ in 0..2 {
        tokio::time::timeout(PATIENCE, started.recv())
            .await
            .unwrap();
    }
    run.stop().await;
    assert_eq!(
        finished.load(Ordering::SeqCst),
        2,
        "run() returned before its handlers finished"
    );

    // The server applies acks asynchronously; they must all land, and nothing be redelivered.
    let info = h
        .bus
        .jetstream()
        .get_stream(crate::support::ORDERS)
        .await
        .unwrap();
    let consumer = eventually_some("every in-flight message is acked", || async {
        let consumer = info.consumer_info("drain").await.unwrap();
        (consumer.num_ack_pending == 0 && consumer.num_pending == 0).then_some(consumer)
    })
    .await;
    assert_eq!(
        consumer.num_redelivered, 0,
        "an in-flight message was redelivered"
    );
}

#[tokio::test]
async fn a_handler_that_hangs_is_timed_out_and_retried_instead_of_held_forever() {
    let h = Harness::start().await;
    publish_orders(&h, 1).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = move |d: Delivery| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(d.attempt);
            if d.attempt == 1 {
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    };
    let spec = ConsumerSpec {
        handler_timeout: Duration::from_millis(300),
        ..fast_spec(crate::support::ORDERS, "hang", &[])
    };
    let run = Running::start(&h.bus, spec, handler).await;
    assert_eq!(
        tokio::time::timeout(PATIENCE, rx.recv()).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        tokio::time::timeout(PATIENCE, rx.recv()).await.unwrap(),
        Some(2)
    );
    run.stop().await;
}

#[tokio::test]
async fn progress_acks_keep_a_handler_longer_than_ack_wait_from_being_redelivered() {
    let h = Harness::start().await;
    publish_orders(&h, 1).await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let handler = {
        let attempts = attempts.clone();
        move |d: Delivery| {
            let (attempts, done_tx) = (attempts.clone(), done_tx.clone());
            async move {
                attempts.fetch_add(1, Ordering::SeqCst);
                // Two and a half ack windows of work.
                tokio::time::sleep(Duration::from_millis(2500)).await;
                assert!(d.lease.is_held(), "progress acks did not keep the lease");
                let _ = done_tx.send(());
                Ok(())
            }
        }
    };
    let spec = ConsumerSpec {
        ack_wait: Duration::from_secs(1),
        progress_every: Duration::from_millis(300),
        ..fast_spec(crate::support::ORDERS, "long-handler", &[])
    };
    let run = Running::start(&h.bus, spec, handler).await;
    tokio::time::timeout(PATIENCE, done.recv()).await.unwrap();
    // Give a redelivery, if any, the time to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    run.stop().await;
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "the message was redelivered while being handled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_handler_frozen_past_ack_wait_does_not_nak_the_delivery_that_replaced_it() {
    // Timeline (ack_wait 3 s): delivery 1 freezes at 0 s; the server hands the message to
    // delivery 2 at 3 s, which works until 5 s (its first progress ack would be due at 5.5 s);
    // delivery 1 wakes at 4 s and fails. Had it nak'd (delay 100 ms), the server would deliver
    // the message a third time at ~4.1 s, while delivery 2 still works on it.
    let h = Harness::start().await;
    publish_orders(&h, 1).await;
    let attempts: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let handler = {
        let attempts = attempts.clone();
        move |d: Delivery| {
            let (attempts, done_tx) = (attempts.clone(), done_tx.clone());
            async move {
                attempts.lock().await.push(d.attempt);
                if d.attempt == 1 {
                    // Frozen: the thread is stuck, so not even a progress ack goes out.
                    std::thread::sleep(Duration::from_secs(4));
                    return Err(HandlerError::transient("woke up after the lease expired"));
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                let _ = done_tx.send(());
                Ok(())
            }
        }
    };
    let spec = ConsumerSpec {
        ack_wait: Duration::from_secs(3),
        progress_every: Duration::from_millis(2500),
        nak_delay: Duration::from_millis(100),
        ..fast_spec(crate::support::ORDERS, "frozen", &[])
    };
    let run = Running::start(&h.bus, spec, handler).await;
    tokio::time::timeout(PATIENCE, done.recv()).await.unwrap();
    // Give a third delivery, if any, the time to show up.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    run.stop().await;
    assert_eq!(
        *attempts.lock().await,
        [1, 2],
        "the stale attempt's nak was applied to the live delivery"
    );
}
