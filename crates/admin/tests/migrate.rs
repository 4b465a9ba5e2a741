//! `orderflow-admin migrate`: one command brings a deployment's stored data up to this build —
//! the archive's schema, then the streams, buckets and consumers — and changes nothing when
//! run again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser as _;
use orderflow_admin::{Cli, Command};
use testkit::{NatsServer, PostgresServer};

fn migrate_args(nats: &NatsServer, postgres: &PostgresServer) -> orderflow_admin::MigrateArgs {
    let (nats, postgres) = (nats.url(), postgres.url());
    let argv = [
        "orderflow-admin",
        "migrate",
        "--nats-url",
        &nats,
        "--archive-url",
        &postgres,
    ];
    let Command::Migrate(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    args
}

#[tokio::test]
async fn migrate_brings_an_empty_archive_and_nats_to_this_build_and_again_changes_nothing() {
    let (nats, postgres) = (NatsServer::start(), PostgresServer::start());
    let args = migrate_args(&nats, &postgres);
    let first = orderflow_admin::migrate(&args).await.unwrap();
    let newest = archive::MIGRATOR.iter().map(|m| m.version).max().unwrap();
    assert_eq!(first.archive_schema, Some(newest));
    assert_eq!(first.provisioned.layout, events::layout::LAYOUT_VERSION);
    assert!(first.provisioned.streams.contains(&"ORDERS".to_owned()));

    let again = orderflow_admin::migrate(&args).await.unwrap();
    assert_eq!(again.archive_schema, Some(newest));
    assert_eq!(again.provisioned, first.provisioned);
}
