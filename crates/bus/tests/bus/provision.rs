//! Provisioning converges: run it twice, or with changed settings, and the streams and buckets
//! end up as configured.

use std::time::Duration;

use bus::{KvBucket, StreamSettings};
use events::names;

use crate::support::Harness;

#[tokio::test]
async fn provisioning_again_is_idempotent_and_applies_changed_settings() {
    let h = Harness::start().await;
    let changed = StreamSettings {
        max_age: Duration::from_secs(3600),
        ..StreamSettings::default()
    };
    h.bus.provision_streams(&changed).await.unwrap();
    h.bus.provision_streams(&changed).await.unwrap();
    let streams = events::Domain::ALL
        .map(|d| (d.stream_base(), format!("{}.>", d.token())))
        .into_iter()
        .chain(names::stream::SUPPORT.map(|(n, s)| (n, s.to_owned())));
    for (name, subjects) in streams {
        let info = h
            .bus
            .jetstream()
            .get_stream(name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.config.subjects, vec![subjects]);
        assert!(
            info.config.allow_direct,
            "{name} cannot be read by direct get"
        );
        assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
        if name == crate::support::ORDERS {
            assert_eq!(info.config.max_age, Duration::from_secs(3600));
        }
    }
}

#[tokio::test]
async fn a_kv_bucket_is_created_once_and_its_ttl_can_change() {
    let h = Harness::start().await;
    let mut bucket = KvBucket::new("idempotency");
    let kv = h.bus.key_value(&bucket).await.unwrap();
    kv.put("k", "v".into()).await.unwrap();
    bucket.ttl = Some(Duration::from_secs(600));
    let kv = h.bus.key_value(&bucket).await.unwrap();
    assert_eq!(
        kv.get("k").await.unwrap().as_deref(),
        Some(&b"v"[..]),
        "re-provisioning lost data"
    );
    let status = kv.status().await.unwrap();
    assert_eq!(status.max_age(), Duration::from_secs(600));
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_before_reaching_the_server() {
    let h = Harness::start().await;
    let err = h
        .bus
        .provision_streams(&StreamSettings {
            replicas: 0,
            ..StreamSettings::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("replicas"), "{err}");
}
