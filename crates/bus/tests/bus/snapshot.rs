//! Stream snapshots: what is restored is the stream as it was — every message at its
//! sequence, with its subject, headers and body, and the gaps where messages were deleted.

use bus::{Bus, BusConfig, MsgId};
use testkit::NatsServer;

use crate::support::{Harness, ORDERS, order_created, subject_of};

async fn bare_bus(server: &NatsServer) -> Bus {
    Bus::connect(&BusConfig::new("restorer").with_url(server.url()))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_restored_stream_holds_every_message_at_its_sequence() {
    let h = Harness::start().await;
    for _ in 0..300 {
        let envelope = order_created(events::OrderId::new());
        h.bus
            .publisher()
            .publish(
                &subject_of(&envelope),
                &envelope,
                &MsgId::new(envelope.kind(), envelope.id),
            )
            .await
            .unwrap();
    }
    let source = h.bus.jetstream().get_stream(ORDERS).await.unwrap();
    source.delete_message(7).await.unwrap();

    let mut archive = Vec::new();
    let snapshot = h.bus.snapshot_stream(ORDERS, &mut archive).await.unwrap();
    assert_eq!(snapshot.last_sequence(), 300);
    assert_eq!(snapshot.bytes, archive.len() as u64);

    let target = NatsServer::start();
    let bus = bare_bus(&target).await;
    let state = bus
        .restore_stream(&snapshot.config, &mut archive.as_slice())
        .await
        .unwrap();
    assert_eq!(state["messages"], 299, "{state}");
    let restored = bus.jetstream().get_stream(ORDERS).await.unwrap();
    for sequence in 1..=300 {
        let (original, copy) = (
            source.get_raw_message(sequence).await,
            restored.get_raw_message(sequence).await,
        );
        match (original, copy) {
            (Ok(original), Ok(copy)) => {
                assert_eq!(original.subject, copy.subject);
                assert_eq!(original.payload, copy.payload);
                assert_eq!(original.headers, copy.headers);
                assert_eq!(original.time, copy.time);
            }
            (Err(_), Err(_)) => assert_eq!(sequence, 7),
            (original, copy) => panic!("{sequence}: {original:?} restored as {copy:?}"),
        }
    }
}

#[tokio::test]
async fn a_restore_never_overwrites_a_stream_that_exists() {
    let h = Harness::start().await;
    let mut archive = Vec::new();
    let snapshot = h.bus.snapshot_stream(ORDERS, &mut archive).await.unwrap();
    let refused = h
        .bus
        .restore_stream(&snapshot.config, &mut archive.as_slice())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("ORDERS"), "{refused}");
    assert!(refused.to_string().contains("in use"), "{refused}");
}
