//! The invariants under faults: real processes, a steady stream of orders, one kind of fault
//! injected while they flow, then every invariant (I1–I7, see testkit's workload) checked once
//! the system is quiet. Each run is a few hundred orders and well under a minute; the same
//! scenarios run long with `cargo build --bins && target/debug/orderflow-faults --long`.
//! The cluster scenarios are in [`crate::cluster`].

use testkit::faults::{self, Fault, Size};

/// Runs `fault` at CI size and fails on any broken invariant.
pub(crate) async fn holds_under(fault: Fault) {
    let outcome = faults::run(fault, Size::SHORT).await;
    eprintln!(
        "{fault:?}: {} faults injected; {}",
        outcome.injected, outcome.report
    );
    let report = &outcome.report;
    if !report.violations.is_empty() {
        let logs = outcome.keep_logs();
        panic!(
            "invariants broken under {fault:?}; service logs in {}",
            logs.display()
        );
    }
    assert!(
        report.confirmed > 0 && report.cancelled > 0,
        "the run proved little: {report}"
    );
    assert!(outcome.injected > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariants_hold_when_each_service_is_killed_and_restarted_in_turn() {
    holds_under(Fault::KillServices).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariants_hold_when_nats_is_killed_and_restarted_on_its_store() {
    holds_under(Fault::KillNats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariants_hold_when_the_archive_is_killed_and_restarted() {
    holds_under(Fault::KillArchive).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariants_hold_when_an_inventory_replica_is_frozen_beyond_ack_wait() {
    holds_under(Fault::FreezeInventory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_on_the_bus_is_dead_lettered_while_valid_orders_flow() {
    holds_under(Fault::Poison).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariants_hold_through_network_latency_and_connection_resets() {
    holds_under(Fault::Network).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariants_hold_with_two_inventory_replicas_racing_on_the_same_skus() {
    holds_under(Fault::Contention).await;
}
