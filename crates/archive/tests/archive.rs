//! The archive against a real PostgreSQL server: every query the crate has, run for real.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use archive::{Archive, ArchiveArgs, ArchiveError, ArchivedOrder, Schema};
use bus::Secret;
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use testkit::PostgresServer;
use uuid::Uuid;

/// A stand-in snapshot: the events folded so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Folded {
    events: Vec<String>,
}

fn archive_of(server: &PostgresServer) -> Archive {
    Archive::from_args(&ArchiveArgs {
        archive_url: Secret::new(server.url()),
        ..ArchiveArgs::default()
    })
    .unwrap()
    .unwrap()
}

async fn migrated(server: &PostgresServer) -> Archive {
    let archive = archive_of(server);
    archive.migrate().await.unwrap();
    archive
}

fn order(customer: &str, id: Uuid, events: &[&str]) -> ArchivedOrder<Folded> {
    ArchivedOrder {
        order_id: id,
        customer_id: customer.into(),
        status: "pending".into(),
        placed_at: Utc::now(),
        updated_at: Utc::now(),
        idempotency_key: None,
        snapshot: Folded {
            events: events.iter().map(|e| (*e).to_owned()).collect(),
        },
    }
}

/// Appends `event` to the order's snapshot (creating it), as a projection does.
async fn append(archive: &Archive, customer: &str, id: Uuid, event: &str) {
    archive
        .update(
            &[id],
            |mut existing: HashMap<Uuid, ArchivedOrder<Folded>>| {
                let mut row = existing
                    .remove(&id)
                    .unwrap_or_else(|| order(customer, id, &[]));
                row.snapshot.events.push(event.to_owned());
                vec![row]
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_fresh_database_is_behind_until_migrated_and_migrating_again_changes_nothing() {
    let server = PostgresServer::start();
    let archive = archive_of(&server);
    assert!(matches!(
        archive.schema().await.unwrap(),
        Schema::Behind { applied: 0, .. }
    ));
    let error = archive.get::<Folded>(Uuid::now_v7()).await.unwrap_err();
    assert!(error.to_string().contains("archive migrate"), "{error}");

    let version = archive.migrate().await.unwrap();
    assert_eq!(archive.migrate().await.unwrap(), version);
    assert_eq!(archive.schema().await.unwrap(), Schema::Current(version));
}

#[tokio::test]
async fn a_schema_migrated_by_a_newer_build_is_refused() {
    let server = PostgresServer::start();
    let archive = migrated(&server).await;
    let pool = sqlx::PgPool::connect(&server.url()).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the future', true, '\\x00', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();

    let schema = archive_of(&server).schema().await.unwrap();
    assert!(
        matches!(&schema, Schema::Unknown { reason } if reason.contains("99990101000000")),
        "{schema:?}"
    );
    let error = archive_of(&server)
        .get::<Folded>(Uuid::now_v7())
        .await
        .unwrap_err();
    assert!(matches!(error, ArchiveError::Schema(_)), "{error}");
    drop(archive);
}

#[tokio::test]
async fn an_order_written_is_read_back_and_a_second_write_replaces_it() {
    let server = PostgresServer::start();
    let archive = migrated(&server).await;
    let id = Uuid::now_v7();

    append(&archive, "alice", id, "created").await;
    append(&archive, "alice", id, "confirmed").await;

    let read = archive.get::<Folded>(id).await.unwrap().unwrap();
    assert_eq!(read.customer_id, "alice");
    assert_eq!(read.snapshot.events, ["created", "confirmed"]);
    assert!(
        archive
            .get::<Folded>(Uuid::now_v7())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn writers_of_one_order_at_once_each_see_the_others_write() {
    let server = PostgresServer::start();
    let archive = migrated(&server).await;
    let id = Uuid::now_v7();
    append(&archive, "alice", id, "created").await;

    let writes = (0..16).map(|i| {
        let archive = archive.clone();
        async move { append(&archive, "alice", id, &format!("event-{i}")).await }
    });
    futures_join_all(writes).await;

    let read = archive.get::<Folded>(id).await.unwrap().unwrap();
    assert_eq!(read.snapshot.events.len(), 17, "{:?}", read.snapshot.events);
}

async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_customers_page_is_newest_first_and_continues_before_the_cursor() {
    let server = PostgresServer::start();
    let archive = migrated(&server).await;
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    for id in &ids {
        append(&archive, "alice", *id, "created").await;
    }
    append(&archive, "bob", Uuid::now_v7(), "created").await;

    let first = archive.page::<Folded>("alice", None, 2).await.unwrap();
    let first: Vec<Uuid> = first.iter().map(|o| o.order_id).collect();
    assert_eq!(first, [ids[4], ids[3]]);
    let rest = archive
        .page::<Folded>("alice", Some(ids[3]), 10)
        .await
        .unwrap();
    let rest: Vec<Uuid> = rest.iter().map(|o| o.order_id).collect();
    assert_eq!(rest, [ids[2], ids[1], ids[0]]);
}

#[tokio::test]
async fn retention_deletes_only_orders_placed_before_the_cutoff() {
    let server = PostgresServer::start();
    let archive = migrated(&server).await;
    let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
    archive
        .update(&[old, new], |_: HashMap<Uuid, ArchivedOrder<Folded>>| {
            let mut aged = order("alice", old, &["created"]);
            aged.placed_at = Utc::now() - Duration::days(4000);
            vec![aged, order("alice", new, &["created"])]
        })
        .await
        .unwrap();

    let deleted = archive
        .purge_placed_before(Utc::now() - Duration::days(3650))
        .await
        .unwrap();

    assert_eq!(deleted, 1);
    assert!(archive.get::<Folded>(old).await.unwrap().is_none());
    assert!(archive.get::<Folded>(new).await.unwrap().is_some());
}

#[tokio::test]
async fn an_order_is_found_by_the_idempotency_key_it_was_created_with() {
    let server = PostgresServer::start();
    let archive = migrated(&server).await;
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    archive
        .update(
            &[first, second],
            |_: HashMap<Uuid, ArchivedOrder<Folded>>| {
                let keyed = |id| ArchivedOrder {
                    idempotency_key: Some("k-1".to_owned()),
                    ..order("alice", id, &["created"])
                };
                vec![keyed(second), keyed(first)]
            },
        )
        .await
        .unwrap();

    let found = archive
        .find_by_idempotency_key::<Folded>("k-1")
        .await
        .unwrap();
    assert_eq!(
        found.map(|o| o.order_id),
        Some(first),
        "the first order made with it"
    );
    assert!(
        archive
            .find_by_idempotency_key::<Folded>("k-2")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_archive_that_does_not_answer_is_a_transient_error() {
    let server = PostgresServer::start();
    let archive = migrated(&server).await;
    drop(server);

    let error = archive.get::<Folded>(Uuid::now_v7()).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(!archive.is_reachable().await);
}

#[tokio::test]
async fn a_restarted_server_is_used_again_without_a_new_archive() {
    let mut server = PostgresServer::start();
    let archive = migrated(&server).await;
    let id = Uuid::now_v7();
    append(&archive, "alice", id, "created").await;

    server.restart();

    let read = archive.get::<Folded>(id).await.unwrap().unwrap();
    assert_eq!(read.snapshot.events, ["created"]);
}

#[tokio::test]
async fn the_projection_writes_the_reader_only_reads_and_neither_may_change_the_schema() {
    let server = PostgresServer::start();
    testkit::sample::archive(&server).await;
    let args = ArchiveArgs {
        archive_url: Secret::new(server.url_as(testkit::sample::ARCHIVE_WRITER)),
        archive_reader_user: Some(testkit::sample::ARCHIVE_READER.into()),
        ..ArchiveArgs::default()
    };
    let writer = Archive::from_args(&args).unwrap().unwrap();
    let reader = Archive::reader_from_args(&args).unwrap().unwrap();
    let id = Uuid::now_v7();

    append(&writer, "alice", id, "created").await;
    let read = reader.get::<Folded>(id).await.unwrap().unwrap();
    assert_eq!(read.snapshot.events, ["created"]);

    let refused = reader
        .update(&[id], |_: HashMap<Uuid, ArchivedOrder<Folded>>| {
            vec![order("alice", id, &["forged"])]
        })
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
    for user in [
        testkit::sample::ARCHIVE_WRITER,
        testkit::sample::ARCHIVE_READER,
    ] {
        let pool = sqlx::PgPool::connect(&server.url_as(user)).await.unwrap();
        for ddl in ["DROP TABLE orders", "ALTER TABLE orders ADD COLUMN x int"] {
            let error = sqlx::query(ddl).execute(&pool).await.unwrap_err();
            assert!(
                error.to_string().contains("owner"),
                "{user}: {ddl}: {error}"
            );
        }
        pool.close().await;
    }
}

#[test]
fn the_reader_connects_where_the_writer_does_as_its_own_user() {
    let args = ArchiveArgs {
        archive_url: Secret::new("postgres://writer@db.internal:6432/shop?sslmode=require"),
        archive_reader_user: Some("reader".into()),
        archive_reader_password: Some(Secret::new("r3ad-9f2c7e41b8d0a5")),
        ..ArchiveArgs::default()
    };
    let options = args.reader_options().unwrap().unwrap();
    assert_eq!(options.get_username(), "reader");
    assert_eq!(options.get_host(), "db.internal");
    assert_eq!(options.get_port(), 6432);
    assert_eq!(options.get_database(), Some("shop"));

    let without_user = ArchiveArgs {
        archive_reader_user: None,
        ..args
    };
    assert!(without_user.reader_options().is_err());
}
