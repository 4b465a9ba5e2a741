//! The remembered-entry cache of a store: a first guess only — a write decided on it is still
//! compare-and-set, a decision to keep is never taken on it — so another process's write is
//! never lost or ignored, while a key this process keeps writing costs one round trip.

use std::sync::atomic::Ordering;

use bus::{Bus, BusConfig, Change, KvBucket, KvStore};

use crate::support::{Harness, connect};

/// The same bucket as seen by this process (with a cache) and by another one (without).
async fn two_processes(harness: &Harness) -> (KvStore<u64>, KvStore<u64>, Bus) {
    let other = connect(&harness.server, BusConfig::new("other-process")).await;
    let bucket = KvBucket::new("counters");
    harness.bus.provision_bucket(&bucket).await.unwrap();
    let cached = KvStore::open(&harness.bus, &bucket)
        .await
        .unwrap()
        .with_cache(16);
    let uncached = KvStore::open(&other, &bucket).await.unwrap();
    (cached, uncached, other)
}

fn increment(current: Option<&u64>) -> Change<u64, u64> {
    let next = current.copied().unwrap_or(0) + 1;
    Change::Write(next, next)
}

#[tokio::test]
async fn a_write_on_a_stale_cached_entry_is_redone_on_the_current_value() {
    let harness = Harness::start().await;
    let (cached, other, _bus) = two_processes(&harness).await;
    assert_eq!(cached.modify("hits", increment).await.unwrap(), 1);
    let revision = other.get("hits").await.unwrap().unwrap().revision;
    other.update("hits", &10, revision).await.unwrap().unwrap();

    assert_eq!(cached.modify("hits", increment).await.unwrap(), 11);
    assert_eq!(other.get("hits").await.unwrap().unwrap().value, 11);
}

#[tokio::test]
async fn a_decision_to_keep_is_never_taken_on_a_cached_entry() {
    let harness = Harness::start().await;
    let (cached, other, _bus) = two_processes(&harness).await;
    cached.create("level", &10).await.unwrap().unwrap();
    let revision = other.get("level").await.unwrap().unwrap().revision;
    other.update("level", &3, revision).await.unwrap().unwrap();

    // On the remembered 10 this would keep; on the real 3 it must write.
    let topped_up = cached
        .modify("level", |current| match current.copied() {
            Some(level) if level >= 10 => Change::Keep(level),
            level => Change::Write(10, level.unwrap_or(0)),
        })
        .await
        .unwrap();
    assert_eq!(topped_up, 3);
    assert_eq!(other.get("level").await.unwrap().unwrap().value, 10);
}

#[tokio::test]
async fn a_key_seen_absent_is_created_only_if_it_still_is() {
    let harness = Harness::start().await;
    let (cached, other, _bus) = two_processes(&harness).await;
    assert!(cached.get("late").await.unwrap().is_none());
    other.create("late", &7).await.unwrap().unwrap();

    assert_eq!(cached.modify("late", increment).await.unwrap(), 8);
}

#[tokio::test]
async fn a_key_this_process_just_wrote_is_changed_in_one_round_trip() {
    let harness = Harness::start().await;
    let (cached, _other, _bus) = two_processes(&harness).await;
    cached.modify("fast", increment).await.unwrap();
    let statistics = harness.bus.client().statistics();
    let before = statistics.out_messages.load(Ordering::Relaxed);

    assert_eq!(cached.modify("fast", increment).await.unwrap(), 2);
    assert_eq!(
        statistics.out_messages.load(Ordering::Relaxed) - before,
        1,
        "a cached modify should send only its compare-and-set"
    );
}

#[tokio::test]
async fn a_bucket_at_its_bound_refuses_new_records_as_full_and_keeps_the_old_ones() {
    let harness = Harness::start().await;
    let bucket = KvBucket {
        max_bytes: Some(2048),
        ..KvBucket::new("small")
    };
    harness.bus.provision_bucket(&bucket).await.unwrap();
    let store: KvStore<String> = KvStore::open(&harness.bus, &bucket).await.unwrap();
    let value = "x".repeat(200);
    let mut written = Vec::new();
    let refused = loop {
        let key = format!("key-{}", written.len());
        match store.create(&key, &value).await {
            Ok(_) => written.push(key),
            Err(e) => break e,
        }
        assert!(
            written.len() < 100,
            "a 2 KiB bucket took 100 records of 200 bytes"
        );
    };
    assert!(refused.is_store_full(), "{refused}");
    assert!(refused.is_transient(), "room may come back");
    for key in &written {
        assert_eq!(store.get(key).await.unwrap().unwrap().value, value, "{key}");
    }
}
