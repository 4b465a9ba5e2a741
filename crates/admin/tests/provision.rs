//! `orderflow-admin provision` is the deployment's provisioning step: it leaves every stream,
//! bucket and consumer the services bind to, changes nothing when run again, and refuses
//! settings that would lose events. A service started before it waits and says why, binds once
//! it has run, and refuses a stream of a subject layout it does not know.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use bus::{Bus, BusConfig};
use clap::Parser as _;
use orderflow_admin::{ProvisionArgs, ProvisionFailed, provision};
use testkit::{NatsServer, eventually};
use tokio_util::sync::CancellationToken;

/// `orderflow-admin provision` settings from `KEY=value` pairs, as its environment would give
/// them, against `server`.
fn args(server: &NatsServer, settings: &[(&str, &str)]) -> ProvisionArgs {
    #[derive(clap::Parser)]
    struct Provision {
        #[command(flatten)]
        args: ProvisionArgs,
    }
    let command = <Provision as clap::CommandFactory>::command();
    let mut argv = vec![
        "provision".to_owned(),
        "--nats-url".to_owned(),
        server.url(),
    ];
    for (key, value) in settings {
        let flag = command
            .get_arguments()
            .find(|arg| arg.get_env().is_some_and(|env| env == *key))
            .and_then(|arg| arg.get_long())
            .unwrap_or_else(|| panic!("no setting {key}"));
        argv.push(format!("--{flag}"));
        argv.push((*value).to_owned());
    }
    Provision::try_parse_from(argv).unwrap().args
}

async fn bus(server: &NatsServer) -> Bus {
    let bus = Bus::connect(&BusConfig::new("admin-test").with_url(server.url()))
        .await
        .unwrap();
    eventually("connected", || async { bus.is_connected() }).await;
    bus
}

#[tokio::test]
async fn provisioning_leaves_every_stream_bucket_and_consumer_and_again_changes_nothing() {
    let server = NatsServer::start();
    let args = args(&server, &[("HOT_WINDOW", "1h")]);
    let first = orderflow_admin::provision_deployment(&args).await.unwrap();
    assert_eq!(
        first.streams,
        ["ORDERS", "INVENTORY", "NOTIFICATIONS", "DLQ", "ADVISORIES"]
    );
    assert_eq!(first.buckets, ["stock", "idempotency", "webhook_endpoints"]);
    for consumer in [
        "INVENTORY/order-saga",
        "ORDERS/order-archive",
        "NOTIFICATIONS/order-archive-notifications",
        "ORDERS/inventory",
        "ORDERS/notification",
    ] {
        assert!(first.consumers.iter().any(|c| c == consumer), "{consumer}");
    }

    let bus = bus(&server).await;
    let js = bus.jetstream();
    let orders = js.get_stream("ORDERS").await.unwrap().cached_info().clone();
    assert_eq!(orders.config.max_age, Duration::from_secs(3600));
    assert_eq!(
        orders.config.metadata.get(events::layout::LAYOUT_METADATA),
        Some(&events::layout::LAYOUT_VERSION.to_string())
    );
    let stock = js
        .get_stream("KV_stock")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert!(
        !stock.config.allow_rollup,
        "a rollup would purge the bucket"
    );
    let consumer: Result<PullConsumer, _> =
        js.get_consumer_from_stream("inventory", "ORDERS").await;
    let created = consumer.unwrap().cached_info().created;

    let again = provision(&bus, &args.nats, args.archive).await.unwrap();
    assert_eq!(again, first);
    let after = js.get_stream("ORDERS").await.unwrap().cached_info().clone();
    assert_eq!(after.config, orders.config);
    assert_eq!(after.created, orders.created);
    let consumer: Result<PullConsumer, _> =
        js.get_consumer_from_stream("inventory", "ORDERS").await;
    assert_eq!(consumer.unwrap().cached_info().created, created);
}

#[tokio::test]
async fn a_hot_window_with_nothing_to_archive_what_leaves_it_is_refused() {
    let server = NatsServer::start();
    let bus = bus(&server).await;
    let args = args(
        &server,
        &[("HOT_WINDOW", "1h"), ("ARCHIVE_CONSUMERS", "false")],
    );
    let err = provision(&bus, &args.nats, args.archive).await.unwrap_err();
    assert!(matches!(err, ProvisionFailed::NoArchive(_)), "{err}");
    assert!(
        bus.jetstream().get_stream("ORDERS").await.is_err(),
        "nothing is provisioned"
    );
}

/// inventory-service in this process against `server`, with `settings`; its URL, and its task.
async fn inventory(
    server: &NatsServer,
    settings: &[&str],
    shutdown: &CancellationToken,
) -> (String, tokio::task::JoinHandle<Result<(), String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut argv = vec!["inventory-service", "--nats-url"];
    let nats_url = server.url();
    argv.push(&nats_url);
    argv.extend(settings);
    let config = inventory_service::Config::try_parse_from(argv).unwrap();
    let shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        inventory_service::run(config, listener, shutdown)
            .await
            .map_err(|e| e.to_string())
    });
    (url, task)
}

/// `/readyz`: the status, and the problem's detail when not ready.
async fn readiness(url: &str) -> (u16, String) {
    let response = testkit::http_client()
        .get(format!("{url}/readyz"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (
        status,
        body["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn a_service_started_before_provisioning_waits_says_why_and_binds_once_it_has_run() {
    let server = NatsServer::start();
    let shutdown = CancellationToken::new();
    let (url, task) = inventory(&server, &["--hot-window", "0"], &shutdown).await;
    eventually("readiness says it waits for provisioning", || async {
        let (status, detail) = readiness(&url).await;
        status == 503 && detail.contains("orderflow-admin provision")
    })
    .await;

    orderflow_admin::provision_deployment(&args(&server, &[("HOT_WINDOW", "0")]))
        .await
        .unwrap();
    eventually("ready once provisioned", || async {
        readiness(&url).await.0 == 200
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_consumer_provisioned_with_other_settings_keeps_the_service_waiting_and_says_which() {
    let server = NatsServer::start();
    orderflow_admin::provision_deployment(&args(
        &server,
        &[("HOT_WINDOW", "0"), ("CONSUMER_ACK_WAIT_MS", "10000")],
    ))
    .await
    .unwrap();
    let shutdown = CancellationToken::new();
    let (url, task) = inventory(&server, &["--hot-window", "0"], &shutdown).await;
    eventually("readiness names the difference", || async {
        let (status, detail) = readiness(&url).await;
        status == 503 && detail.contains("is provisioned with ack wait 10s, not 30s")
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_service_refuses_to_start_on_a_stream_of_a_subject_layout_it_does_not_know() {
    let server = NatsServer::start();
    orderflow_admin::provision_deployment(&args(&server, &[("HOT_WINDOW", "0")]))
        .await
        .unwrap();
    let bus = bus(&server).await;
    let mut config = bus
        .jetstream()
        .get_stream("ORDERS")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    config
        .metadata
        .insert(events::layout::LAYOUT_METADATA.to_owned(), "4".to_owned());
    bus.jetstream().update_stream(&config).await.unwrap();

    let shutdown = CancellationToken::new();
    let (_, task) = inventory(&server, &["--hot-window", "0"], &shutdown).await;
    let outcome = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("it stops by itself")
        .unwrap();
    let err = outcome.unwrap_err();
    assert!(err.contains("holds subject layout \"4\""), "{err}");
    assert!(err.contains("Upgrading the subject layout"), "{err}");
}

#[tokio::test]
async fn usage_lists_every_store_against_its_bound_as_json() {
    let server = NatsServer::start();
    orderflow_admin::provision_deployment(&args(&server, &[("HOT_WINDOW", "0")]))
        .await
        .unwrap();
    let output = std::process::Command::new(testkit::service_binary("orderflow-admin"))
        .args(["usage", "--json"])
        .env("NATS_URL", server.url())
        .env("HOT_WINDOW", "0")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let usage: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let bounds: Vec<(String, u64)> = usage
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["store"].as_str().unwrap().to_owned(),
                s["max_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    let defaults = bus::Bounds::default();
    for (store, bound) in [
        ("ORDERS", defaults.events),
        ("DLQ", defaults.dlq),
        ("ADVISORIES", defaults.advisories),
        ("KV_idempotency", defaults.idempotency),
        ("KV_stock", defaults.stock),
        ("KV_webhook_endpoints", defaults.webhook_endpoints),
    ] {
        assert!(
            bounds.contains(&(store.to_owned(), bound)),
            "{store}: {bounds:?}"
        );
    }
}

/// An `ORDERS` made by hand (or by a build before layouts were recorded), holding one event on
/// `subject`.
async fn unrecorded_orders_with(server: &NatsServer, subject: &str) {
    let bus = bus(server).await;
    bus.jetstream()
        .create_stream(async_nats::jetstream::stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    bus.jetstream()
        .publish(subject.to_owned(), "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn provisioning_records_the_layout_of_an_unrecorded_stream_only_if_its_events_are_in_it() {
    let older = NatsServer::start();
    unrecorded_orders_with(&older, "orders.created").await;
    let refused = orderflow_admin::provision_deployment(&args(&older, &[("HOT_WINDOW", "0")]))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("records no subject layout"), "{refused}");
    assert!(refused.contains("orders.created"), "{refused}");

    let current = NatsServer::start();
    let order = events::OrderId::new();
    unrecorded_orders_with(&current, &format!("orders.0.ann.{order}.created")).await;
    orderflow_admin::provision_deployment(&args(&current, &[("HOT_WINDOW", "0")]))
        .await
        .unwrap();
    let orders = bus(&current)
        .await
        .jetstream()
        .get_stream("ORDERS")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    assert_eq!(
        orders.metadata.get(events::layout::LAYOUT_METADATA),
        Some(&events::layout::LAYOUT_VERSION.to_string())
    );
}

#[test]
fn secrets_on_the_command_line_are_refused_and_in_the_environment_taken() {
    use clap::CommandFactory as _;
    let parse = |argv: &[&str]| {
        orderflow_admin::Cli::command()
            .try_get_matches_from(argv)
            .unwrap()
    };
    let refused = orderflow_admin::secrets_on_command_line(&parse(&[
        "orderflow-admin",
        "backup",
        "--to",
        "/tmp/b",
        "--nats-password",
        "s3cret-Passw0rd-xyz",
        "--archive-url",
        "postgres://app:pw@db/orderflow",
    ]));
    assert_eq!(
        refused,
        ["--nats-password", "--archive-url (with a password in it)"]
    );
    let usage = parse(&[
        "orderflow-admin",
        "usage",
        "--nats-token",
        "t0ken-Xyz-123456",
    ]);
    assert_eq!(
        orderflow_admin::secrets_on_command_line(&usage),
        ["--nats-token"]
    );
    let clean = parse(&[
        "orderflow-admin",
        "dead-letters",
        "--archive-url",
        "postgres://app@db/orderflow",
        "list",
    ]);
    assert!(orderflow_admin::secrets_on_command_line(&clean).is_empty());
}
