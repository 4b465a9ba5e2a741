//! The invariants under faults: real processes, a steady stream of orders, a fault injected
//! while they flow, then every invariant (I1–I6, see testkit's workload) checked once the
//! system is quiet. Each run is a few hundred orders and bounded in time.

use std::collections::BTreeMap;
use std::time::Duration;

use testkit::{NatsServer, System, SystemBuilder, WebhookReceiver, Workload, check_invariants};

use crate::support::{set_stock, webhook_secret};

const STOCK: [(&str, u64); 3] = [("F-ALPHA", 120), ("F-BETA", 120), ("F-GAMMA", 40)];

/// A system tuned for faults: short ack windows so redeliveries happen within the test, and
/// enough deliveries that a crash never exhausts them.
fn faulty(builder: SystemBuilder, receiver: &WebhookReceiver) -> SystemBuilder {
    builder
        .webhook(receiver.url(), &webhook_secret())
        .env("CONSUMER_ACK_WAIT_MS", "2000")
        .env("CONSUMER_MAX_DELIVER", "30")
}

async fn stock_up(system: &System) -> BTreeMap<String, u64> {
    for (sku, units) in STOCK {
        set_stock(system, sku, units).await;
    }
    STOCK
        .iter()
        .map(|(sku, units)| ((*sku).to_owned(), *units))
        .collect()
}

fn workload(system: &System, run: &str, orders: usize) -> Workload {
    let skus: Vec<&str> = STOCK.iter().map(|(sku, _)| *sku).collect();
    Workload::new(system.order.url(), run, orders, 40.0, &skus)
}

async fn assert_invariants(
    system: &System,
    ledger: &testkit::Ledger,
    workload: &Workload,
    initial: &BTreeMap<String, u64>,
    receiver: &WebhookReceiver,
    dead_letters: u64,
) {
    let report = check_invariants(
        system,
        ledger,
        workload,
        initial,
        Some(receiver),
        dead_letters,
        Duration::from_secs(90),
    )
    .await;
    eprintln!("{report}");
    assert!(
        report.violations.is_empty(),
        "invariants broken: {report}\nlogs in {}",
        system.log_dir().display()
    );
    assert!(
        report.accepted > 0 && report.confirmed > 0 && report.cancelled > 0,
        "the run proved little: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariants_hold_when_each_service_is_killed_and_restarted_in_turn() {
    let receiver = WebhookReceiver::start().await;
    let mut system = faulty(System::builder(), &receiver).start().await;
    let initial = stock_up(&system).await;
    let load = workload(&system, "kill", 200);
    let driver = tokio::spawn(load.clone().drive());
    for round in 0..2 {
        for victim in 0..3 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let service = match victim {
                0 => &mut system.order,
                1 => &mut system.inventory[0],
                _ => &mut system.notification,
            };
            eprintln!("round {round}: SIGKILL service {victim}");
            service.kill();
            tokio::time::sleep(Duration::from_millis(300)).await;
            service.restart().await;
        }
    }
    let ledger = driver.await.unwrap();
    assert_invariants(&system, &ledger, &load, &initial, &receiver, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariants_hold_when_nats_is_killed_and_restarted_on_its_store() {
    let receiver = WebhookReceiver::start().await;
    let nats = NatsServer::builder().sync_always().start();
    let mut system = faulty(System::builder().nats(nats), &receiver)
        .start()
        .await;
    let initial = stock_up(&system).await;
    let load = workload(&system, "natskill", 200);
    let driver = tokio::spawn(load.clone().drive());
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        eprintln!("SIGKILL nats-server");
        system.nats.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        system.nats.start_again();
    }
    let ledger = driver.await.unwrap();
    assert_invariants(&system, &ledger, &load, &initial, &receiver, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariants_hold_when_an_inventory_replica_is_frozen_beyond_ack_wait() {
    let receiver = WebhookReceiver::start().await;
    let system = faulty(System::builder().inventory_replicas(2), &receiver)
        .start()
        .await;
    let initial = stock_up(&system).await;
    let load = workload(&system, "freeze", 200);
    let driver = tokio::spawn(load.clone().drive());
    tokio::time::sleep(Duration::from_millis(800)).await;
    eprintln!("SIGSTOP inventory replica 0 for 4s (ack_wait 2s)");
    system.inventory[0].pause();
    tokio::time::sleep(Duration::from_secs(4)).await;
    system.inventory[0].resume();
    let ledger = driver.await.unwrap();
    assert_invariants(&system, &ledger, &load, &initial, &receiver, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_on_the_bus_is_dead_lettered_while_valid_orders_flow() {
    let receiver = WebhookReceiver::start().await;
    let system = faulty(System::builder(), &receiver).start().await;
    let initial = stock_up(&system).await;
    let load = workload(&system, "poison", 200);
    let driver = tokio::spawn(load.clone().drive());

    // About 1%: two of each kind of poison, on subjects with one or two consumers.
    let nats = async_nats::connect(system.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let mut unknown_version: serde_json::Value = serde_json::from_str(include_str!(
        "../../crates/events/fixtures/orders.created.v2.json"
    ))
    .unwrap();
    unknown_version["schemaversion"] = 9.into();
    let mut wrong_types = unknown_version.clone();
    wrong_types["schemaversion"] = 2.into();
    wrong_types["data"]["items"] = "many".into();
    let poison: [(&str, Vec<u8>, u64); 4] = [
        ("orders.created", b"\xffgarbage".to_vec(), 2),
        (
            "orders.created",
            serde_json::to_vec(&unknown_version).unwrap(),
            2,
        ),
        (
            "inventory.reserved",
            serde_json::to_vec(&wrong_types).unwrap(),
            1,
        ),
        ("orders.confirmed", b"{\"not\": \"an event\"}".to_vec(), 1),
    ];
    let mut expected = 0;
    for round in 0..2 {
        for (subject, payload, consumers) in &poison {
            tokio::time::sleep(Duration::from_millis(300)).await;
            js.publish(*subject, payload.clone().into())
                .await
                .unwrap()
                .await
                .unwrap();
            expected += consumers;
            let _ = round;
        }
    }
    let ledger = driver.await.unwrap();
    assert_invariants(&system, &ledger, &load, &initial, &receiver, expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariants_hold_through_network_latency_and_connection_resets() {
    let receiver = WebhookReceiver::start().await;
    let nats = NatsServer::start();
    let proxy = testkit::FaultProxy::start(nats.port()).await;
    let system = faulty(
        System::builder().nats(nats).nats_url(&proxy.url()),
        &receiver,
    )
    .start()
    .await;
    let initial = stock_up(&system).await;
    let load = workload(&system, "netfault", 200);
    let driver = tokio::spawn(load.clone().drive());
    tokio::time::sleep(Duration::from_millis(700)).await;
    eprintln!("40 ms latency on every chunk");
    proxy.set_latency(Duration::from_millis(40));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..3 {
        eprintln!("resetting every NATS connection");
        proxy.reset_all();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    proxy.set_latency(Duration::ZERO);
    let ledger = driver.await.unwrap();
    assert_invariants(&system, &ledger, &load, &initial, &receiver, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariants_hold_on_a_three_node_cluster_with_r3_streams_while_nodes_restart() {
    let receiver = WebhookReceiver::start().await;
    let mut nodes = NatsServer::cluster(3);
    let urls = nodes
        .iter()
        .map(NatsServer::url)
        .collect::<Vec<_>>()
        .join(",");
    let first = nodes.remove(0);
    let mut system = faulty(
        System::builder()
            .nats(first)
            .nats_url(&urls)
            .env("STREAM_REPLICAS", "3"),
        &receiver,
    )
    .start()
    .await;
    let initial = stock_up(&system).await;
    let load = workload(&system, "cluster", 200);
    let driver = tokio::spawn(load.clone().drive());
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        eprintln!("restarting cluster node {round}");
        match round {
            0 => system.nats.restart(),
            i => nodes[i - 1].restart(),
        }
    }
    let ledger = driver.await.unwrap();
    assert_invariants(&system, &ledger, &load, &initial, &receiver, 0).await;
}
