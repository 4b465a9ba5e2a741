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
async fn a_service_creates_only_its_own_streams_and_finds_those_it_reads_once_their_owner_has() {
    let server = testkit::NatsServer::start();
    let bus = crate::support::connect(&server, bus::BusConfig::new("provision")).await;
    let settings = StreamSettings::default();
    let exists = |name: &'static str| {
        let js = bus.jetstream().clone();
        async move { js.get_stream(name).await.is_ok() }
    };

    bus.provision_streams_of(&settings, "inventory-service")
        .await
        .unwrap();
    assert!(exists("INVENTORY").await);
    let err = bus
        .streams_used_by_exist(&settings, "inventory-service")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, bus::ProvisionError::Missing { stream, owner: "order-service", .. } if stream == "ORDERS"),
        "{err}"
    );

    bus.provision_streams_of(&settings, "order-service")
        .await
        .unwrap();
    bus.streams_used_by_exist(&settings, "inventory-service")
        .await
        .unwrap();
    for stream in [
        "ORDERS",
        "INVENTORY",
        names::stream::DLQ,
        names::stream::ADVISORIES,
    ] {
        assert!(exists(stream).await, "{stream}");
    }
    assert!(
        !exists("NOTIFICATIONS").await,
        "only notification-service creates its stream"
    );
}
