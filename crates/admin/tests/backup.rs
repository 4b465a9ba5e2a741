//! `orderflow-admin backup` and `restore` around a damaged part: a backup whose part was cut
//! short or changed is refused before anything is restored (the round trip under load is in
//! tests/e2e/backup.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser as _;
use orderflow_admin::{Cli, Command};
use testkit::NatsServer;

fn command(words: &[&str]) -> Command {
    let mut argv = vec!["orderflow-admin"];
    argv.extend(words);
    Cli::try_parse_from(argv).unwrap().command
}

#[tokio::test]
async fn a_backup_with_a_damaged_part_is_refused_before_anything_is_restored() {
    let source = NatsServer::start();
    let url = source.url();
    let Command::Provision(provision) =
        command(&["provision", "--nats-url", &url, "--hot-window", "0"])
    else {
        unreachable!()
    };
    orderflow_admin::provision_deployment(&provision)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("b");
    let to = to.to_str().unwrap();
    let Command::Backup(backup) = command(&[
        "backup",
        "--nats-url",
        &url,
        "--hot-window",
        "0",
        "--archive-url",
        "none",
        "--to",
        to,
    ]) else {
        unreachable!()
    };
    let manifest = orderflow_admin::backup(&backup).await.unwrap();
    assert!(manifest.parts.iter().all(|p| !p.file().2.is_empty()));

    // One byte more at the end of a stream's snapshot.
    let damaged = dir.path().join("b/streams/ORDERS.snapshot");
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes.push(0);
    std::fs::write(&damaged, bytes).unwrap();

    let target = NatsServer::start();
    let target_url = target.url();
    let Command::Restore(restore) = command(&[
        "restore",
        "--nats-url",
        &target_url,
        "--hot-window",
        "0",
        "--archive-url",
        "none",
        "--from",
        to,
    ]) else {
        unreachable!()
    };
    let refused = orderflow_admin::restore(&restore)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("ORDERS.snapshot is damaged or incomplete"),
        "{refused}"
    );
    let js = async_nats::jetstream::new(async_nats::connect(target_url).await.unwrap());
    assert!(
        js.get_stream("ORDERS").await.is_err(),
        "a stream was restored"
    );
}
