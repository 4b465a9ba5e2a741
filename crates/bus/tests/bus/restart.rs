//! Crash safety: a nats-server killed with SIGKILL mid-stream and restarted on the same store
//! loses nothing it acknowledged, and consumers and publishers resume on their own.

use std::collections::HashSet;
use std::time::Duration;

use bus::MsgId;
use events::{EventKind, OrderId};
use testkit::NatsServer;

use crate::support::{Harness, PATIENCE, Running, fast_spec, order_created, recorder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_nats_is_killed_and_restarted_mid_stream() {
    let mut h = Harness::on(NatsServer::builder().sync_always().start()).await;
    let (handler, mut rx) = recorder();
    let run = Running::start(
        &h.bus,
        fast_spec(crate::support::ORDERS, "survivor", &[]),
        handler,
    )
    .await;

    let mut acknowledged = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for i in 0..200 {
        if i == 100 {
            h.server.restart();
        }
        let order_id = OrderId::new();
        let envelope = order_created(order_id);
        let msg_id = MsgId::new(EventKind::OrderCreated, order_id);
        // A caller that got an error retries with the same msg id, as the services do.
        loop {
            match h
                .bus
                .publisher()
                .publish(&crate::support::subject_of(&envelope), &envelope, &msg_id)
                .await
            {
                Ok(_) => break,
                Err(e) if e.is_transient() => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "publishing never recovered: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
        acknowledged.insert(order_id);
    }

    let mut consumed = HashSet::new();
    while !acknowledged.is_subset(&consumed) {
        let delivery = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} acknowledged events never arrived",
                    acknowledged.difference(&consumed).count()
                )
            })
            .unwrap();
        consumed.insert(delivery.envelope.correlation_id);
    }
    assert_eq!(
        h.stored(crate::support::ORDERS).await,
        200,
        "the server lost or duplicated events"
    );
    run.stop().await;
}

#[tokio::test]
async fn readiness_follows_the_connection() {
    let mut h = Harness::start().await;
    assert!(h.bus.is_connected());
    h.server.kill();
    crate::support::eventually("not ready", || async { !h.bus.is_connected() }).await;
    h.server.start_again();
    crate::support::eventually("ready again", || async { h.bus.is_connected() }).await;
}
