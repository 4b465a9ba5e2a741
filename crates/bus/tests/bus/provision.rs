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
    let mut bucket = KvBucket::new(names::bucket::IDEMPOTENCY);
    let kv = h.bus.provision_bucket(&bucket).await.unwrap();
    kv.put("k", "v".into()).await.unwrap();
    bucket.ttl = Some(Duration::from_secs(600));
    let kv = h.bus.provision_bucket(&bucket).await.unwrap();
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

#[tokio::test]
async fn a_partitioned_layout_has_one_stream_per_partition_and_nats_mapping_agrees_on_the_partition()
 {
    // A producer that does not know the partition count publishes on `orders-in.…`; the
    // server's `{{partition}}` mapping must send each order where the services put it.
    let server = testkit::NatsServer::builder()
        .config(
            r#"mappings: { "orders-in.*.*.*": "orders.{{partition(3,2)}}.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}" }"#,
        )
        .start();
    let bus = crate::support::connect(&server, bus::BusConfig::new("partitioned")).await;
    let h = Harness { server, bus };
    let partitions = events::Partitions::new(3).unwrap();
    h.bus
        .provision_streams(&StreamSettings {
            partitions,
            ..StreamSettings::default()
        })
        .await
        .unwrap();
    for partition in partitions.all() {
        let stream = events::Domain::Orders.stream(partition, partitions);
        assert_eq!(h.stored(&stream).await, 0, "{stream} exists and is empty");
    }
    let mut expected = [0u64; 3];
    for _ in 0..24 {
        let order = events::OrderId::new();
        expected[usize::from(partitions.of(order))] += 1;
        h.bus
            .jetstream()
            .publish(format!("orders-in.alice.{order}.created"), "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    for partition in partitions.all() {
        let stream = events::Domain::Orders.stream(partition, partitions);
        assert_eq!(
            h.stored(&stream).await,
            expected[usize::from(partition)],
            "{stream} holds other orders than the services would put there"
        );
    }
}

#[tokio::test]
async fn a_service_waits_for_streams_not_provisioned_yet_and_refuses_another_layout() {
    let server = testkit::NatsServer::start();
    let bus = crate::support::connect(&server, bus::BusConfig::new("provision")).await;
    let settings = StreamSettings::default();

    let err = bus
        .check_streams(&settings, events::ServiceId::Order)
        .await
        .unwrap_err();
    assert!(matches!(err, bus::ProvisionError::Missing { .. }), "{err}");
    assert!(!err.is_fatal());
    assert!(
        err.to_string().contains("orderflow-admin provision"),
        "{err}"
    );

    bus.provision_streams(&settings).await.unwrap();
    bus.check_streams(&settings, events::ServiceId::Order)
        .await
        .unwrap();

    // A stream from before layouts were recorded: provisioning records it.
    let mut unrecorded = bus.jetstream().get_stream("ORDERS").await.unwrap();
    let mut config = unrecorded.info().await.unwrap().config.clone();
    config.metadata.remove(events::layout::LAYOUT_METADATA);
    bus.jetstream().update_stream(&config).await.unwrap();
    let err = bus
        .check_streams(&settings, events::ServiceId::Order)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, bus::ProvisionError::Unrecorded { stream } if stream == "ORDERS"),
        "{err}"
    );
    bus.provision_streams(&settings).await.unwrap();
    bus.check_streams(&settings, events::ServiceId::Order)
        .await
        .unwrap();

    // A layout this build does not know: neither the service nor provisioning touch it.
    config
        .metadata
        .insert(events::layout::LAYOUT_METADATA.to_owned(), "1".to_owned());
    bus.jetstream().update_stream(&config).await.unwrap();
    let err = bus
        .check_streams(&settings, events::ServiceId::Order)
        .await
        .unwrap_err();
    assert!(err.is_fatal(), "{err}");
    assert!(
        err.to_string().contains("Upgrading the subject layout"),
        "{err}"
    );
    let err = bus.provision_streams(&settings).await.unwrap_err();
    assert!(
        matches!(&err, bus::ProvisionError::Layout { found, .. } if found == "1"),
        "{err}"
    );
}
