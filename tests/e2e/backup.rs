//! Backup and restore: what a backup needs from the running system, and the round trip.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use events::names::header;
use events::{Envelope, Event, EventKind, StockRevisions};
use futures::StreamExt as _;
use serde_json::Value;
use testkit::{
    Ledger, NatsServer, Outcome, PostgresServer, System, TestApp, WebhookReceiver, Workload,
    check_invariants,
};

/// A backup tells, SKU by SKU, whether its copy of a stock record holds an order's take by
/// comparing revisions: so every decision says where its takes are.
#[tokio::test]
async fn a_reservation_says_which_stock_revision_holds_its_take() {
    let app = TestApp::builder().spawn().await;
    let js = async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let stock = js.get_key_value("stock").await.unwrap();
    let revision_of = |sku: &'static str| {
        let stock = stock.clone();
        async move { stock.entry(sku).await.unwrap().unwrap().revision }
    };
    app.set_stock("BOOK", 10).await;
    app.set_stock("MUG", 10).await;
    let set_at = [revision_of("BOOK").await, revision_of("MUG").await];

    let order_id = app.place_order("ivan", &[("BOOK", 1), ("MUG", 2)]).await;
    app.wait_for_status(&order_id, "confirmed").await;

    let decision = js
        .get_stream("INVENTORY")
        .await
        .unwrap()
        .get_last_raw_message_by_subject(&format!("inventory.*.ivan.{order_id}.reserved"))
        .await
        .unwrap();
    let revisions = decision
        .headers
        .get(header::STOCK_REVISION)
        .map(|v| StockRevisions::from_header(v.as_str()).unwrap())
        .expect("the decision carries its stock revisions");
    for (sku, set_at) in ["BOOK", "MUG"].into_iter().zip(set_at) {
        let taken_at = revisions.of(&events::Sku::new(sku).unwrap()).unwrap();
        // The take is a write of that SKU's record after the stock was set — at most the
        // record's revision now (a settle may have followed).
        let now = revision_of(sku).await;
        assert!(
            set_at < taken_at && taken_at <= now,
            "{sku}: stock set at {set_at}, taken at {taken_at}, record at {now}"
        );
    }
}

/// Every event of the streams of `domain` on `nats`, by stream and sequence, decoded.
async fn events_of(nats: &str, domain: &str) -> Vec<(String, u64, Envelope)> {
    let js = async_nats::jetstream::new(async_nats::connect(nats).await.unwrap());
    let mut events = Vec::new();
    let mut names = js.stream_names();
    let mut streams = Vec::new();
    while let Some(name) = names.next().await {
        let name = name.unwrap();
        if name == domain || name.starts_with(&format!("{domain}_")) {
            streams.push(name);
        }
    }
    for name in streams {
        let mut handle = js.get_stream(&name).await.unwrap();
        let last = handle.info().await.unwrap().state.last_sequence;
        for sequence in 1..=last {
            if let Ok(message) = handle.get_raw_message(sequence).await {
                let envelope = Envelope::decode(&message.payload).unwrap();
                events.push((name.clone(), sequence, envelope));
            }
        }
    }
    events
}

/// Where the backup's part for `stream` ends, and where `stream` stood when it began.
fn bounds(manifest: &Value, stream: &str) -> (u64, u64) {
    let part = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == stream)
        .unwrap_or_else(|| panic!("no part {stream} in {manifest}"));
    (
        part["last_sequence"].as_u64().unwrap(),
        manifest["marks"]["streams"][stream].as_u64().unwrap(),
    )
}

const WEBHOOK_SECRET: &str = "whsec_dGVzdC1iYWNrdXAtc2VjcmV0LTAxMjM0NTY3";

/// Where a backup is restored to.
enum Target {
    /// One fresh server; one partition.
    Single,
    /// A fresh 3-node cluster, R3 streams; three partitions (from a source with three).
    Cluster,
}

/// The whole round trip, under load: a backup taken while orders flow, restored into a fresh
/// NATS and PostgreSQL, holds every invariant — every order of the backup settles (those in
/// flight finish), those settled before it read the same, stock is conserved, and no webhook
/// the backup records as sent is sent again.
async fn round_trip(target: Target) {
    let partitions = match target {
        Target::Single => "1",
        Target::Cluster => "3",
    };
    let webhooks = WebhookReceiver::start().await;
    let source = System::builder()
        .webhook(webhooks.url(), WEBHOOK_SECRET)
        .env("STREAM_PARTITIONS", partitions)
        .start()
        .await;
    let initial: BTreeMap<String, u64> = [("BACKUP-A", 150), ("BACKUP-B", 150), ("BACKUP-C", 40)]
        .into_iter()
        .map(|(sku, units)| (sku.to_owned(), units))
        .collect();
    for (sku, units) in &initial {
        source.set_stock(sku, *units).await;
    }
    let skus: Vec<&str> = initial.keys().map(String::as_str).collect();
    let workload = Workload::new(source.order.url(), "backup", 400, 100.0, &skus);
    let driver = tokio::spawn(workload.clone().drive());

    // Inventory stalls for a moment, so that orders are in flight when the backup begins,
    // and takes them up while it runs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    source.inventory[0].pause();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let postgres = source.postgres.as_ref().unwrap();
    let env = vec![
        ("NATS_URL".to_owned(), source.nats.url()),
        ("STREAM_PARTITIONS".to_owned(), partitions.to_owned()),
        ("ARCHIVE_URL".to_owned(), postgres.url()),
        (
            "PG_DUMP".to_owned(),
            postgres.tool("pg_dump").display().to_string(),
        ),
    ];
    let to = dir.path().to_str().unwrap().to_owned();
    let backup = tokio::task::spawn_blocking(move || {
        testkit::admin(&["--json", "backup", "--to", &to], &env)
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    source.inventory[0].resume();
    let manifest: Value = serde_json::from_str(&backup.await.unwrap()).unwrap();
    let ledger = driver.await.unwrap();
    // Every order and customer is in it: only its owner may read any of it.
    for file in [
        "manifest.json",
        "archive.pgdump",
        "streams/ORDERS_0.snapshot",
        "streams/ORDERS.snapshot",
    ] {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(metadata) = std::fs::metadata(dir.path().join(file)) {
            assert_eq!(
                metadata.permissions().mode() & 0o077,
                0,
                "{file} is readable by others"
            );
        }
    }
    assert!(dir.path().join("archive.pgdump").exists());

    // What the backup holds, read from the source (which keeps running).
    let orders = events_of(&source.nats.url(), "ORDERS").await;
    let created: BTreeSet<String> = orders
        .iter()
        .filter(|(stream, seq, e)| {
            *seq <= bounds(&manifest, stream).0 && e.kind() == EventKind::OrderCreated
        })
        .map(|(_, _, e)| e.correlation_id.to_string())
        .collect();
    let settled_before: BTreeSet<String> = orders
        .iter()
        .filter(|(stream, seq, e)| {
            *seq <= bounds(&manifest, stream).1 && e.kind() != EventKind::OrderCreated
        })
        .map(|(_, _, e)| e.correlation_id.to_string())
        .collect();
    let in_flight = created.len() - settled_before.len();
    assert!(
        !settled_before.is_empty() && in_flight > 0,
        "the backup should fall mid-load: {} settled before it, {in_flight} in flight",
        settled_before.len()
    );

    let sent_before_restore = webhooks.received().len();
    let mut nodes = match target {
        Target::Single => vec![NatsServer::start()],
        Target::Cluster => NatsServer::cluster(3),
    };
    let urls = nodes
        .iter()
        .map(NatsServer::url)
        .collect::<Vec<_>>()
        .join(",");
    let replicas = nodes.len().to_string();
    let target_postgres = PostgresServer::start();
    let restored = testkit::admin(
        &["--json", "restore", "--from", dir.path().to_str().unwrap()],
        &[
            ("NATS_URL".into(), urls.clone()),
            ("STREAM_PARTITIONS".into(), partitions.into()),
            ("STREAM_REPLICAS".into(), replicas.clone()),
            ("ARCHIVE_URL".into(), target_postgres.url()),
            ("ARCHIVE_CONSUMERS".into(), "true".into()),
            (
                "PG_RESTORE".into(),
                target_postgres.tool("pg_restore").display().to_string(),
            ),
        ],
    );
    let restored: Value = serde_json::from_str(&restored).unwrap();
    assert_eq!(restored["archive"], true, "{restored}");
    eprintln!("restored: {restored}");
    let target = System::builder()
        .webhook(webhooks.url(), WEBHOOK_SECRET)
        .nats(nodes.remove(0))
        .nats_url(&urls)
        .env("STREAM_PARTITIONS", partitions)
        .env("STREAM_REPLICAS", &replicas)
        .postgres(target_postgres)
        .start()
        .await;

    // Every order of the backup settles on the restored deployment, stock is conserved,
    // nothing is pending or dead-lettered, the archive agrees.
    let restored_ledger = Ledger {
        attempts: ledger
            .attempts
            .iter()
            .filter(|a| matches!(&a.outcome, Outcome::Accepted(id) if created.contains(id)))
            .cloned()
            .collect(),
    };
    assert_eq!(
        restored_ledger.accepted(),
        created,
        "every order of the backup was accepted"
    );
    let report = check_invariants(
        &target,
        &restored_ledger,
        &workload,
        &initial,
        None,
        0,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        report.violations.is_empty(),
        "{report}\nrestore: {restored}"
    );

    // Orders settled before the backup began read the same — their status, lines and history.
    // What their customer was told may differ: a notification sent after the backup took
    // NOTIFICATIONS is sent again (same webhook-id), and recorded again; the webhook check
    // below is about those the backup holds.
    let without_notifications = |mut order: Value| {
        order.as_object_mut().map(|o| o.remove("notifications"));
        order
    };
    for id in &settled_before {
        assert_eq!(
            without_notifications(source.order(id).await),
            without_notifications(target.order(id).await),
            "order {id}"
        );
    }

    // No webhook the backup records as sent went out again.
    let recorded: Vec<String> = events_of(&target.nats.url(), "NOTIFICATIONS")
        .await
        .into_iter()
        .filter(|(stream, seq, _)| *seq <= bounds(&manifest, stream).0)
        .filter_map(|(_, _, e)| match e.event {
            Event::NotificationSent(sent) => Some(sent.notification_id.to_string()),
            _ => None,
        })
        .collect();
    assert!(!recorded.is_empty());
    let received = webhooks.received();
    for id in &recorded {
        let delivered = |webhooks: &[testkit::ReceivedWebhook]| {
            webhooks
                .iter()
                .filter(|w| w.header("webhook-id") == Some(id.as_str()))
                .count()
        };
        let (deliveries, after) = (
            delivered(&received),
            delivered(&received[sent_before_restore..]),
        );
        assert_eq!(
            deliveries, 1,
            "webhook {id} was delivered {deliveries} times, {after} after the restore"
        );
    }
    drop(nodes);
}

#[tokio::test]
async fn a_backup_taken_under_load_restores_into_a_fresh_server_with_every_invariant() {
    round_trip(Target::Single).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_into_a_fresh_cluster_with_every_invariant() {
    round_trip(Target::Cluster).await;
}
