//! Fault scenarios, shared by the fault tests (a few hundred orders, seconds) and the
//! `orderflow-faults` tool (`--long`: thousands of orders, minutes): start a system, drive a
//! steady stream of orders, inject one kind of fault while they flow, then check every
//! invariant once the system is quiet.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;

use crate::nats::NatsServer;
use crate::proxy::FaultProxy;
use crate::system::{System, SystemBuilder};
use crate::webhook::WebhookReceiver;
use crate::workload::{Report, Workload, check_invariants};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL each service in turn, restart it.
    KillServices,
    /// SIGKILL nats-server (fsync always), restart it on its port and store.
    KillNats,
    /// SIGSTOP one of two inventory replicas beyond `ack_wait`, then SIGCONT.
    FreezeInventory,
    /// Garbage, unknown versions and wrong types published straight to the bus.
    Poison,
    /// Latency and connection resets between the services and NATS.
    Network,
    /// A 3-node cluster with R3 streams, one node restarted after another.
    ClusterRestarts,
    /// The same, with the services' default consumer settings (30 s ack window, 20
    /// deliveries) instead of the short ones the other scenarios use to provoke redeliveries:
    /// what a deployment that changed nothing gets.
    ClusterRestartsDefaults,
    /// Two inventory replicas racing on the same SKUs at twice the rate: compare-and-set
    /// conflicts are the fault.
    Contention,
    /// SIGKILL the archive's PostgreSQL, restart it after a few seconds: the saga runs on, the
    /// projection catches up.
    KillArchive,
}

impl Fault {
    /// Every fault, in the order the tool runs them.
    pub const ALL: [Fault; 9] = [
        Fault::KillServices,
        Fault::KillNats,
        Fault::KillArchive,
        Fault::FreezeInventory,
        Fault::Poison,
        Fault::Network,
        Fault::ClusterRestarts,
        Fault::ClusterRestartsDefaults,
        Fault::Contention,
    ];

    /// Whether the scenario runs on a 3-node cluster.
    fn is_cluster(self) -> bool {
        matches!(
            self,
            Fault::ClusterRestarts | Fault::ClusterRestartsDefaults
        )
    }
}

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Orders attempted.
    pub orders: usize,
    /// Orders started per second.
    pub rate: f64,
    /// Faults injected (rounds).
    pub rounds: usize,
}

impl Size {
    /// A few hundred orders, a few faults: for CI.
    pub const SHORT: Size = Size {
        orders: 200,
        rate: 40.0,
        rounds: 2,
    };
    /// Thousands of orders over minutes: for RELIABILITY.md.
    pub const LONG: Size = Size {
        orders: 3000,
        rate: 25.0,
        rounds: 12,
    };
}

/// What a scenario did and found.
#[derive(Debug)]
pub struct Outcome {
    /// The fault.
    pub fault: Fault,
    /// Faults injected.
    pub injected: usize,
    /// The invariant report.
    pub report: Report,
    /// From the end of the traffic to quiescence with every invariant checked.
    pub recovery: Duration,
    /// Where the services logged.
    pub logs: std::path::PathBuf,
    system: System,
}

impl Outcome {
    /// Keeps the logs past the end of the run (for a failed run's post-mortem).
    pub fn keep_logs(mut self) -> std::path::PathBuf {
        self.system.keep_logs()
    }
}

const STOCK: [(&str, u64); 3] = [("F-ALPHA", 120), ("F-BETA", 120), ("F-GAMMA", 40)];

fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([0x5a; 32])
    )
}

/// The hot window of every scenario on a single server.
pub const HOT_WINDOW: &str = "60s";

/// One 3-node cluster scenario at a time per process: two clusters that start together (six
/// nats-servers, beside the other tests) were seen to take more than 5 s per stream creation
/// on a 2-core CI machine, and the services' start-up ran out of time.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `fault` at `size` and checks the invariants.
pub async fn run(fault: Fault, size: Size) -> Outcome {
    let _cluster = if fault.is_cluster() {
        Some(ONE_CLUSTER_AT_A_TIME.lock().await)
    } else {
        None
    };
    let receiver = WebhookReceiver::start().await;
    let mut builder: SystemBuilder = System::builder()
        .webhook(receiver.url(), &secret())
        .env("HTTP_RATE_LIMIT", "0")
        .env("HTTP_MAX_CONNECTIONS_PER_CLIENT", "0");
    if fault.is_cluster() {
        if fault != Fault::ClusterRestartsDefaults {
            // Short ack windows so redeliveries happen within the run; enough deliveries that
            // no loss of a node exhausts them (a leader election takes seconds).
            builder = builder
                .env("CONSUMER_ACK_WAIT_MS", "2000")
                .env("CONSUMER_MAX_DELIVER", "30");
        }
    } else {
        // Short ack windows (and handler timeouts) so redeliveries happen within the run, and
        // the shortest hot window they allow (a message's 8 deliveries and the delays between
        // them take ~48 s): in a
        // long run the first orders leave NATS while the faults go on, and are read, listed
        // and checked from the archive.
        builder = builder
            .env("CONSUMER_ACK_WAIT_MS", "2000")
            .env("CONSUMER_HANDLER_TIMEOUT_MS", "2000")
            .env("CONSUMER_MAX_DELIVER", "8")
            .env("HOT_WINDOW", HOT_WINDOW);
    }
    let mut cluster = Vec::new();
    let mut proxy = None;
    match fault {
        Fault::KillNats => builder = builder.nats(NatsServer::builder().sync_always().start()),
        Fault::FreezeInventory | Fault::Contention => builder = builder.inventory_replicas(2),
        Fault::Network => {
            let nats = NatsServer::start();
            let fault_proxy = FaultProxy::start(nats.port()).await;
            builder = builder.nats(nats).nats_url(&fault_proxy.url());
            proxy = Some(fault_proxy);
        }
        Fault::ClusterRestarts | Fault::ClusterRestartsDefaults => {
            cluster = NatsServer::cluster(3);
            let urls = cluster
                .iter()
                .map(NatsServer::url)
                .collect::<Vec<_>>()
                .join(",");
            // The partitioned layout, as a cluster would run it: three partition streams per
            // domain, each with its own leader.
            builder = builder
                .nats(cluster.remove(0))
                .nats_url(&urls)
                .env("STREAM_REPLICAS", "3")
                .env("STREAM_PARTITIONS", "3");
        }
        Fault::KillServices | Fault::Poison | Fault::KillArchive => {}
    }
    let mut system = builder.start().await;
    // Stock in proportion to the run, so most orders confirm and the short SKU still runs out.
    let scale = (size.orders / Size::SHORT.orders).max(1) as u64;
    let stock: Vec<(&str, u64)> = STOCK
        .iter()
        .map(|(sku, units)| (*sku, units * scale))
        .collect();
    for &(sku, units) in &stock {
        system.set_stock(sku, units).await;
    }
    let initial: BTreeMap<String, u64> = stock.iter().map(|(s, u)| ((*s).to_owned(), *u)).collect();
    let skus: Vec<&str> = STOCK.iter().map(|(s, _)| *s).collect();
    let run_name = format!("{fault:?}").to_lowercase();
    let rate = if fault == Fault::Contention {
        size.rate * 2.0
    } else {
        size.rate
    };
    let workload = Workload::new(system.order.url(), &run_name, size.orders, rate, &skus);
    let traffic = Duration::from_secs_f64(size.orders as f64 / rate);
    let pause = traffic / (size.rounds as u32 * 3 + 1);
    let driver = tokio::spawn(workload.clone().drive());

    let mut injected = 0;
    let mut expected_dead_letters = 0;
    for round in 0..size.rounds {
        match fault {
            Fault::KillServices => {
                for victim in 0..3 {
                    tokio::time::sleep(pause).await;
                    let service = match victim {
                        0 => &mut system.order,
                        1 => &mut system.inventory[0],
                        _ => &mut system.notification,
                    };
                    service.kill();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    service.restart().await;
                    injected += 1;
                }
            }
            Fault::KillNats => {
                tokio::time::sleep(pause * 3).await;
                system.nats.kill();
                tokio::time::sleep(Duration::from_millis(500)).await;
                system.nats.start_again();
                injected += 1;
            }
            Fault::KillArchive => {
                let Some(postgres) = system.postgres.as_mut() else {
                    break;
                };
                tokio::time::sleep(pause * 2).await;
                postgres.kill();
                tokio::time::sleep(pause).await;
                postgres.start_again();
                injected += 1;
            }
            Fault::FreezeInventory => {
                tokio::time::sleep(pause * 2).await;
                let replica = &system.inventory[round % 2];
                replica.pause();
                tokio::time::sleep(Duration::from_secs(4)).await;
                replica.resume();
                injected += 1;
            }
            Fault::Poison => {
                let (published, dead_letters) = publish_poison(&system, pause).await;
                injected += published;
                expected_dead_letters += dead_letters;
            }
            Fault::Network => {
                let Some(proxy) = &proxy else { break };
                tokio::time::sleep(pause).await;
                proxy.set_latency(Duration::from_millis(40));
                tokio::time::sleep(pause).await;
                proxy.reset_all();
                proxy.set_latency(Duration::ZERO);
                tokio::time::sleep(pause).await;
                proxy.reset_all();
                injected += 2;
            }
            Fault::Contention => {
                // The fault is the race itself; count the conflicts the replicas resolved.
                tokio::time::sleep(pause * 3).await;
                injected = 1;
            }
            Fault::ClusterRestarts | Fault::ClusterRestartsDefaults => {
                tokio::time::sleep(pause * 3).await;
                match round % 3 {
                    0 => system.nats.restart(),
                    i => cluster[i - 1].restart(),
                }
                injected += 1;
            }
        }
    }
    let ledger = driver.await.expect("workload");
    let quiet = Instant::now();
    let report = check_invariants(
        &system,
        &ledger,
        &workload,
        &initial,
        Some(&receiver),
        expected_dead_letters,
        // An upper bound, reached only when something is stuck: after repeated node loss the
        // backoffs (nak delays up to 30 s, breaker open up to 32 s) dominate recovery.
        Duration::from_secs(300),
    )
    .await;
    let recovery = quiet.elapsed();
    let logs = system.log_dir().to_path_buf();
    drop(cluster);
    Outcome {
        fault,
        injected,
        report,
        recovery,
        logs,
        system,
    }
}

/// How many of the system's consumers receive what is published on `subject`: the saga's
/// readers of its event, and the archive's projection when the system archives.
fn consumers_of(system: &System, subject: &str) -> u64 {
    let Ok((_, kind)) = events::OrderKey::parse(subject) else {
        return 0;
    };
    events::topology::readers(kind)
        .filter(|s| crate::system::consumes(s, system.postgres.is_some()))
        .count() as u64
}

/// Publishes one of each kind of poison; returns (messages, dead letters they must cause).
async fn publish_poison(system: &System, pause: Duration) -> (usize, u64) {
    let nats = async_nats::connect(system.nats.url())
        .await
        .expect("connect for poison");
    let js = async_nats::jetstream::new(nats);
    let valid = json!({
        "specversion": "1.0", "id": "0194a1b2-0001-7000-8000-000000000002", "source": "/poison",
        "type": "orders.created", "subject": "x", "time": "2026-01-15T10:30:00Z",
        "datacontenttype": "application/json", "schemaversion": 2,
        "correlationid": "0194a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "data": { "order_id": "0194a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "customer_id": "p",
                  "items": [], "currency": "EUR", "total_cents": 0 }
    });
    let mut unknown_version = valid.clone();
    unknown_version["schemaversion"] = json!(9);
    let mut wrong_types = valid.clone();
    wrong_types["type"] = json!("inventory.reserved");
    wrong_types["schemaversion"] = json!(1);
    wrong_types["data"] = json!({ "order_id": 7, "lines": "many" });
    // (subject, payload): each is an event subject of the layout, so exactly the consumers of
    // that event get it — and each dead-letters it.
    let order = "0194a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    let poison: [(String, Vec<u8>); 4] = [
        (
            format!("orders.0.p.{order}.created"),
            b"\xffgarbage".to_vec(),
        ),
        (
            format!("orders.0.p.{order}.created"),
            serde_json::to_vec(&unknown_version).unwrap_or_default(),
        ),
        (
            format!("inventory.0.p.{order}.reserved"),
            serde_json::to_vec(&wrong_types).unwrap_or_default(),
        ),
        (
            format!("orders.0.p.{order}.confirmed"),
            b"{\"not\": \"an event\"}".to_vec(),
        ),
    ];
    let mut dead_letters = 0;
    for (subject, payload) in poison.iter() {
        tokio::time::sleep(pause / 2).await;
        js.publish(subject.clone(), payload.clone().into())
            .await
            .expect("publish poison")
            .await
            .expect("poison stored");
        dead_letters += consumers_of(system, subject);
    }
    (poison.len(), dead_letters)
}
