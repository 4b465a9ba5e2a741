//! KV stores in keyspaces of one bucket, and atomic batches across them: every write of a
//! batch is stored, or — when one compare-and-set precondition fails — none is.

use bus::{Bucket, KvBucket, Store};

use crate::support::Harness;

async fn atomic_bucket(harness: &Harness) -> Bucket {
    Bucket::open(
        &harness.bus,
        &KvBucket {
            atomic: true,
            ..KvBucket::new("ledger")
        },
    )
    .await
    .expect("open the bucket")
}

async fn value(store: &Store<u64>, key: &str) -> Option<u64> {
    store.get(key).await.unwrap().map(|v| v.value)
}

#[tokio::test]
async fn a_batch_stores_every_write_together() {
    let harness = Harness::start().await;
    let bucket = atomic_bucket(&harness).await;
    let (balances, entries) = (bucket.store::<u64>("balance"), bucket.store::<u64>("entry"));
    let revision = balances.create("alice", &10).await.unwrap().unwrap();

    let mut batch = bucket.batch();
    batch.update(&balances, "alice", &7, revision).unwrap();
    batch.create(&entries, "e1", &3).unwrap();
    assert!(batch.commit().await.unwrap());

    assert_eq!(value(&balances, "alice").await, Some(7));
    assert_eq!(value(&entries, "e1").await, Some(3));
}

#[tokio::test]
async fn a_stale_revision_fails_the_whole_batch() {
    let harness = Harness::start().await;
    let bucket = atomic_bucket(&harness).await;
    let (balances, entries) = (bucket.store::<u64>("balance"), bucket.store::<u64>("entry"));
    let stale = balances.create("bob", &10).await.unwrap().unwrap();
    balances.update("bob", &9, stale).await.unwrap().unwrap();

    let mut batch = bucket.batch();
    batch.create(&entries, "e2", &1).unwrap();
    batch.update(&balances, "bob", &8, stale).unwrap();
    assert!(!batch.commit().await.unwrap());

    assert_eq!(value(&balances, "bob").await, Some(9));
    assert_eq!(value(&entries, "e2").await, None, "half a batch was stored");
}

#[tokio::test]
async fn a_batch_creating_an_existing_key_writes_nothing() {
    let harness = Harness::start().await;
    let bucket = atomic_bucket(&harness).await;
    let (balances, entries) = (bucket.store::<u64>("balance"), bucket.store::<u64>("entry"));
    let revision = balances.create("carol", &10).await.unwrap().unwrap();
    entries.create("e3", &1).await.unwrap().unwrap();

    let mut batch = bucket.batch();
    batch.update(&balances, "carol", &5, revision).unwrap();
    batch.create(&entries, "e3", &5).unwrap();
    assert!(!batch.commit().await.unwrap());

    assert_eq!(value(&balances, "carol").await, Some(10));
    assert_eq!(value(&entries, "e3").await, Some(1));
}

#[tokio::test]
async fn a_store_of_another_bucket_cannot_join_a_batch() {
    let harness = Harness::start().await;
    let bucket = atomic_bucket(&harness).await;
    let other = Store::<u64>::open(&harness.bus, &KvBucket::new("elsewhere"))
        .await
        .unwrap();
    let mut batch = bucket.batch();
    let refused = batch.create(&other, "x", &1);
    assert!(matches!(
        refused,
        Err(bus::StoreError::ForeignBucket { .. })
    ));
}

#[tokio::test]
async fn keys_lists_only_its_own_keyspace() {
    let harness = Harness::start().await;
    let bucket = atomic_bucket(&harness).await;
    let (balances, entries) = (bucket.store::<u64>("balance"), bucket.store::<u64>("entry"));
    balances.create("dave", &1).await.unwrap();
    balances.create("erin", &2).await.unwrap();
    entries.create("e4", &3).await.unwrap();

    let mut keys = balances.keys().await.unwrap();
    keys.sort();
    assert_eq!(keys, ["dave", "erin"]);
}
