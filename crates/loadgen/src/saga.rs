//! The `saga` mode: places orders over `POST /v1/orders` and follows each to its end.
//!
//! Open loop (`--rate`): requests go out on a fixed schedule whatever the system does, and every
//! latency is measured from the *intended* send time, so a stalled system shows up as latency
//! instead of hiding as fewer requests (no coordinated omission). Closed loop (`--concurrency`):
//! each worker places an order and waits for its saga to end before the next.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::sync::Mutex;

use crate::ceiling::Ceiling;
use crate::latency::{Latency, Summary};
use crate::tracker::{Outcome, Tracker};
use crate::traffic::{MessagesPerOrder, ServerTraffic, Traffic};
use crate::writes::WriteCounter;

/// Where the system is and how the load generator talks to it.
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoints {
    /// Base URL of order-service.
    #[arg(long, env = "ORDER_URL", default_value = "http://127.0.0.1:8080")]
    pub order_url: String,
    /// Base URL of inventory-service (to seed stock).
    #[arg(long, env = "INVENTORY_URL", default_value = "http://127.0.0.1:8081")]
    pub inventory_url: String,
    /// Bearer token of the stock admin API (the services' ADMIN_TOKEN).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// How long to wait after the last request for sagas still running.
    #[arg(long, default_value_t = 15.0)]
    pub drain_seconds: f64,
    /// Requests awaiting their answer at most; in an open loop a due request beyond it is
    /// counted as `client_overloaded` instead of being sent late.
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
    /// nats-server's monitoring endpoint (e.g. `http://127.0.0.1:8222`): adds the messages
    /// through the server per order to the report.
    #[arg(long, env = "NATS_MONITOR_URL")]
    pub nats_monitor_url: Option<String>,
    /// Print a line (on stderr) every this many seconds while placing orders: the interval's POST →
    /// confirmed latency, each system process's memory (with `--system-pids`) and how far the
    /// archive's projection is behind — for soaks.
    #[arg(long)]
    pub every: Option<f64>,
    /// The system's processes as `name=pid,…` (on this machine): adds the CPU time per order,
    /// in all of them and in each, to the report.
    #[arg(long, env = "SYSTEM_PIDS", default_value = "")]
    pub system_pids: crate::cpu::Processes,
}

/// The system under load and the shape of the orders placed on it.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Distinct SKUs the orders spread over.
    #[arg(long, default_value_t = 64)]
    pub skus: usize,
    /// Lines (SKUs) per order.
    #[arg(long, default_value_t = 1)]
    pub lines: usize,
    /// Units each SKU is seeded with before the run (0: do not seed).
    #[arg(long, default_value_t = 100_000_000)]
    pub stock: u64,
}

/// Open or closed loop.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// Orders per second on a fixed schedule.
    Open { rate: f64 },
    /// Workers each with one order in flight.
    Closed { concurrency: usize },
    /// `orders` orders as fast as they are accepted: at most `--max-in-flight` requests
    /// awaiting their answer, each followed by the next as soon as it is answered.
    Burst { orders: u64 },
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub load: Load,
    pub seconds: f64,
    pub warmup_seconds: f64,
    pub sent: u64,
    pub accepted: u64,
    pub confirmed: u64,
    pub cancelled: u64,
    pub notified: u64,
    /// Sagas (confirmed + cancelled) ended per second within the measured window.
    pub orders_per_sec: f64,
    /// Seconds from the first request to the last confirmation (in a flash sale: the time to
    /// sell out).
    pub last_confirmed_after_s: Option<f64>,
    pub errors: BTreeMap<String, u64>,
    pub latency_ms: Latencies,
    /// JetStream messages stored (events and KV writes) per accepted order, counted on the server.
    pub writes_per_order: f64,
    /// Messages nats-server received and sent per accepted order (with `--nats-monitor-url`).
    pub server_messages_per_order: Option<MessagesPerOrder>,
    /// CPU time of the system's processes per accepted order (with `--system-pids`).
    pub cpu_per_order: Option<crate::cpu::PerOrder>,
    pub ceiling: Option<Ceiling>,
    /// `orders_per_sec × writes_per_order ÷ raw acked publishes/s`.
    pub r: Option<f64>,
}

/// The three latencies of an order, measured from its intended send time.
#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    pub accept: Summary,
    pub confirmed: Summary,
    pub notified: Summary,
}

impl Report {
    /// With the ceiling of the same run: fills in R.
    pub fn against(mut self, ceiling: Option<&Ceiling>) -> Self {
        self.r = ceiling
            .filter(|c| c.acked_publishes_per_sec > 0.0)
            .map(|c| {
                (self.orders_per_sec * self.writes_per_order / c.acked_publishes_per_sec * 1000.0)
                    .round()
                    / 1000.0
            });
        self.ceiling = ceiling.cloned();
        self
    }

    /// Human-readable report.
    pub fn print(&self) {
        match self.load {
            Load::Open { rate } => println!("saga, open loop at {rate:.0} orders/s offered"),
            Load::Closed { concurrency } => {
                println!("saga, closed loop with {concurrency} orders in flight")
            }
            Load::Burst { orders } => println!("saga, {orders} orders as fast as accepted"),
        }
        println!(
            "  {:.0} orders/s ended ({} sent, {} accepted, {} confirmed, {} cancelled, {} notified)",
            self.orders_per_sec,
            self.sent,
            self.accepted,
            self.confirmed,
            self.cancelled,
            self.notified
        );
        println!("  accept             {}", self.latency_ms.accept.line());
        println!("  POST → confirmed   {}", self.latency_ms.confirmed.line());
        println!("  POST → notified    {}", self.latency_ms.notified.line());
        println!("  writes per order   {:.2}", self.writes_per_order);
        if let Some(messages) = self.server_messages_per_order {
            println!(
                "  NATS msgs / order  {:.1} in, {:.1} out",
                messages.inbound, messages.outbound
            );
        }
        if let Some(cpu) = &self.cpu_per_order {
            let each: Vec<String> = cpu
                .by_process_ms
                .iter()
                .map(|(name, ms)| format!("{name} {:.0} µs", ms * 1000.0))
                .collect();
            println!(
                "  CPU / order        {:.3} ms ({})",
                cpu.total_ms,
                each.join(", ")
            );
        }
        if !self.errors.is_empty() {
            let errors: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            println!("  errors             {}", errors.join(", "));
        }
        if let Some(ceiling) = &self.ceiling {
            ceiling.print();
        }
        if let Some(r) = self.r {
            println!("  R = {r:.3}");
        }
    }
}

/// What the server (and the system's processes) counted across a run.
struct OnServer {
    /// Stored messages (events and KV writes).
    writes: u64,
    /// Message counters before and after, when the monitoring endpoint is known.
    traffic: Option<(Traffic, Traffic)>,
    /// CPU of the system's processes before and after, when they are known.
    cpu: Option<(crate::cpu::Sample, crate::cpu::Sample)>,
}

/// A load generator bound to one running system.
pub struct Driver {
    http: reqwest::Client,
    jetstream: async_nats::jetstream::Context,
    target: Target,
    tracker: Arc<Tracker>,
    writes: WriteCounter,
    traffic: Option<ServerTraffic>,
    errors: Mutex<BTreeMap<String, u64>>,
    sequence: AtomicU64,
    in_flight: AtomicUsize,
    progress: bool,
}

impl Driver {
    /// Connects the HTTP client and starts following the saga's end events.
    pub async fn new(
        client: &async_nats::Client,
        target: Target,
        progress: bool,
    ) -> anyhow::Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(usize::MAX)
            .build()
            .context("building the HTTP client")?;
        let tracker = Arc::new(Tracker::default());
        tracker.follow(client).await?;
        let traffic = target
            .endpoints
            .nats_monitor_url
            .as_deref()
            .map(|url| ServerTraffic::new(http.clone(), url));
        Ok(Arc::new(Self {
            http,
            jetstream: async_nats::jetstream::new(client.clone()),
            target,
            tracker,
            writes: WriteCounter::new(client),
            traffic,
            errors: Mutex::default(),
            sequence: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            progress,
        }))
    }

    /// The stock of SKU number `sku` as the inventory reports it, once its unsettled changes
    /// have settled (or after the drain time): `(available, reserved, unsettled orders)`.
    pub async fn stock(&self, sku: usize) -> anyhow::Result<(u64, u64, u64)> {
        let url = format!(
            "{}/v1/stock/{}",
            self.target.endpoints.inventory_url,
            sku_name(sku)
        );
        let deadline =
            Instant::now() + Duration::from_secs_f64(self.target.endpoints.drain_seconds);
        loop {
            let body: serde_json::Value = self
                .http
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?
                .json()
                .await
                .with_context(|| format!("GET {url}: not JSON"))?;
            let field = |name: &str| body[name].as_u64().unwrap_or(u64::MAX);
            let stock = (
                field("available"),
                field("reserved"),
                field("unsettled_orders"),
            );
            if stock.2 == 0 || Instant::now() > deadline {
                return Ok(stock);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Gives every SKU the configured stock (skipped when `--stock 0`).
    pub async fn seed(&self) -> anyhow::Result<()> {
        if self.target.stock == 0 {
            return Ok(());
        }
        for sku in 0..self.target.skus.max(1) {
            let url = format!(
                "{}/v1/stock/{}",
                self.target.endpoints.inventory_url,
                sku_name(sku)
            );
            let mut request = self
                .http
                .put(&url)
                .json(&serde_json::json!({ "available": self.target.stock }));
            if let Some(token) = &self.target.endpoints.admin_token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.with_context(|| format!("PUT {url}"))?;
            anyhow::ensure!(
                response.status().is_success(),
                "seeding stock: PUT {url} answered {}",
                response.status()
            );
        }
        Ok(())
    }

    /// Places orders for `seconds` (the first `warmup` of them not measured), waits for the
    /// sagas to end, and reports.
    pub async fn run(
        self: &Arc<Self>,
        load: Load,
        seconds: f64,
        warmup: f64,
    ) -> anyhow::Result<Report> {
        let writes_before = self.writes.total().await?;
        let traffic_before = self.traffic_now().await?;
        let cpu_before = self.cpu_now()?;
        let counters = &self.tracker.counters;
        for counter in [
            &counters.sent,
            &counters.accepted,
            &counters.errors,
            &counters.ended,
            &counters.notified,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        self.errors_by_kind().clear();
        let bar = self.progress_bar(load, seconds);
        let ticker = {
            let driver = Arc::clone(self);
            let bar = bar.clone();
            tokio::spawn(async move {
                loop {
                    driver.show(&bar);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };

        let start = Instant::now() + Duration::from_millis(20);
        let end = start + Duration::from_secs_f64(seconds);
        let intervals = self.target.endpoints.every.map(|every| {
            let driver = Arc::clone(self);
            tokio::spawn(async move { driver.every(Duration::from_secs_f64(every), start).await })
        });
        let end = match load {
            Load::Open { rate } => {
                self.open_loop(rate, start, end).await;
                end
            }
            Load::Closed { concurrency } => {
                self.closed_loop(concurrency, end).await;
                end
            }
            Load::Burst { orders } => {
                tokio::time::sleep_until(start.into()).await;
                self.burst(orders).await;
                Instant::now()
            }
        };
        self.drain().await;
        ticker.abort();
        if let Some(intervals) = intervals {
            intervals.abort();
        }
        self.show(&bar);
        bar.finish_and_clear();

        let on_server = OnServer {
            writes: self.writes.total().await?.saturating_sub(writes_before),
            traffic: traffic_before.zip(self.traffic_now().await?),
            cpu: cpu_before.zip(self.cpu_now()?),
        };
        let seconds = end.saturating_duration_since(start).as_secs_f64();
        let measured_from = start + Duration::from_secs_f64(warmup.clamp(0.0, seconds));
        Ok(self.report(
            load,
            seconds,
            warmup,
            (start, measured_from, end),
            on_server,
        ))
    }

    /// Prints one line per `every` (see `--every`) until aborted.
    async fn every(&self, every: Duration, start: Instant) {
        let mut ticks = tokio::time::interval_at((start + every).into(), every);
        let mut accepted_before = 0;
        loop {
            ticks.tick().await;
            let accepted = self.tracker.counters.accepted.load(Ordering::Relaxed);
            let confirmed = self.tracker.take_interval().summary();
            let memory = crate::soak::resident_mb(&self.target.endpoints.system_pids);
            let lag = crate::soak::archive_lag(&self.jetstream)
                .await
                .ok()
                .flatten();
            // Beside the progress display (stderr), never in a `--json` report (stdout).
            eprintln!(
                "{}",
                crate::soak::line(
                    start.elapsed(),
                    accepted.saturating_sub(accepted_before),
                    &confirmed,
                    &memory,
                    lag
                )
            );
            accepted_before = accepted;
        }
    }

    fn cpu_now(&self) -> anyhow::Result<Option<crate::cpu::Sample>> {
        let processes = &self.target.endpoints.system_pids;
        if processes.is_empty() {
            return Ok(None);
        }
        processes.sample().map(Some)
    }

    async fn traffic_now(&self) -> anyhow::Result<Option<Traffic>> {
        match &self.traffic {
            Some(traffic) => Ok(Some(traffic.sample().await?)),
            None => Ok(None),
        }
    }

    async fn open_loop(self: &Arc<Self>, rate: f64, start: Instant, end: Instant) {
        let rate = rate.max(0.001);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0u64.. {
            let intended = start + Duration::from_secs_f64(i as f64 / rate);
            if intended >= end {
                break;
            }
            tokio::time::sleep_until(intended.into()).await;
            while tasks.try_join_next().is_some() {}
            if self.in_flight.load(Ordering::Relaxed) >= self.target.endpoints.max_in_flight {
                self.error("client_overloaded");
                continue;
            }
            let driver = Arc::clone(self);
            tasks.spawn(async move {
                let _ = driver.place(intended).await;
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn burst(self: &Arc<Self>, orders: u64) {
        let slots = Arc::new(tokio::sync::Semaphore::new(
            self.target.endpoints.max_in_flight.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..orders {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            while tasks.try_join_next().is_some() {}
            let driver = Arc::clone(self);
            tasks.spawn(async move {
                let _ = driver.place(Instant::now()).await;
                drop(slot);
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn closed_loop(self: &Arc<Self>, concurrency: usize, end: Instant) {
        let drain = Duration::from_secs_f64(self.target.endpoints.drain_seconds);
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let driver = Arc::clone(self);
            workers.spawn(async move {
                while Instant::now() < end {
                    let Some(ended) = driver.place(Instant::now()).await else {
                        // Do not spin on a refusing system.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    if tokio::time::timeout(drain, ended).await.is_err() {
                        break;
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
    }

    /// Sends one order; on 202 returns the signal of its saga's end.
    async fn place(&self, intended: Instant) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.tracker.counters.sent.fetch_add(1, Ordering::Relaxed);
        let result = self.post(intended).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(ended) => Some(ended),
            Err(kind) => {
                self.error(&kind);
                None
            }
        }
    }

    async fn post(&self, intended: Instant) -> Result<tokio::sync::oneshot::Receiver<()>, String> {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let skus = self.target.skus.max(1) as u64;
        let lines: Vec<serde_json::Value> = (0..self.target.lines.clamp(1, skus as usize) as u64)
            .map(|l| {
                serde_json::json!({
                    "sku": sku_name(((n + l) % skus) as usize),
                    "quantity": 1,
                    "unit_price_cents": 1999,
                })
            })
            .collect();
        let body = serde_json::json!({
            "customer_id": format!("loadgen-{}", n % 10_000),
            "items": lines,
            "currency": "EUR",
        });
        let response = self
            .http
            .post(format!("{}/v1/orders", self.target.endpoints.order_url))
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "http_timeout".to_owned()
                } else if e.is_connect() {
                    "http_connect".to_owned()
                } else {
                    "http_transport".to_owned()
                }
            })?;
        let status = response.status();
        if status != reqwest::StatusCode::ACCEPTED {
            return Err(format!("http_{}", status.as_u16()));
        }
        let at = Instant::now();
        #[derive(serde::Deserialize)]
        struct Accepted {
            order_id: uuid::Uuid,
        }
        let accepted: Accepted = response
            .json()
            .await
            .map_err(|_| "bad_response".to_owned())?;
        Ok(self.tracker.accepted(accepted.order_id, intended, at))
    }

    /// Counts a failed request by kind (and for the progress display).
    fn error(&self, kind: &str) {
        self.tracker.counters.errors.fetch_add(1, Ordering::Relaxed);
        *self.errors_by_kind().entry(kind.to_owned()).or_default() += 1;
    }

    fn errors_by_kind(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        // Only counters inside; a panic mid-update cannot leave them inconsistent.
        self.errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until every accepted order has ended and been notified, or the drain time is up.
    async fn drain(&self) {
        let deadline =
            Instant::now() + Duration::from_secs_f64(self.target.endpoints.drain_seconds);
        let counters = &self.tracker.counters;
        while Instant::now() < deadline {
            let accepted = counters.accepted.load(Ordering::Relaxed);
            if counters.ended.load(Ordering::Relaxed) >= accepted
                && counters.notified.load(Ordering::Relaxed) >= accepted
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn report(
        &self,
        load: Load,
        seconds: f64,
        warmup: f64,
        (start, measured_from, end): (Instant, Instant, Instant),
        on_server: OnServer,
    ) -> Report {
        let mut last_confirmed: Option<Instant> = None;
        let orders = self.tracker.take();
        let mut accept = Latency::new();
        let mut confirmed_latency = Latency::new();
        let mut notified_latency = Latency::new();
        let (mut confirmed, mut cancelled, mut notified, mut ended_in_window) = (0, 0, 0, 0u64);
        let mut errors = self.errors_by_kind().clone();
        for order in &orders {
            let (Some(intended), Some(accepted)) = (order.intended, order.accepted) else {
                continue;
            };
            let measured = intended >= measured_from;
            if measured {
                accept.record(accepted - intended);
            }
            match order.outcome {
                Some((outcome, at)) => {
                    if outcome == Outcome::Confirmed {
                        confirmed += 1;
                        last_confirmed = last_confirmed.max(Some(at));
                        if measured {
                            confirmed_latency.record(at.saturating_duration_since(intended));
                        }
                    } else {
                        cancelled += 1;
                    }
                    if at >= measured_from && at <= end {
                        ended_in_window += 1;
                    }
                }
                None => *errors.entry("not_ended_in_time".into()).or_default() += 1,
            }
            match order.notified {
                Some(at) => {
                    notified += 1;
                    if order.notify_failed {
                        *errors.entry("notification_failed".into()).or_default() += 1;
                    } else if measured {
                        notified_latency.record(at.saturating_duration_since(intended));
                    }
                }
                None => *errors.entry("not_notified_in_time".into()).or_default() += 1,
            }
        }
        let window = end.saturating_duration_since(measured_from).as_secs_f64();
        let accepted = orders.len() as u64;
        Report {
            mode: "saga",
            load,
            seconds,
            warmup_seconds: warmup,
            sent: self.tracker.counters.sent.load(Ordering::Relaxed),
            accepted,
            confirmed,
            cancelled,
            notified,
            orders_per_sec: if window > 0.0 {
                (ended_in_window as f64 / window).round()
            } else {
                0.0
            },
            last_confirmed_after_s: last_confirmed.map(|at| {
                (at.saturating_duration_since(start).as_secs_f64() * 1000.0).round() / 1000.0
            }),
            errors,
            latency_ms: Latencies {
                accept: accept.summary(),
                confirmed: confirmed_latency.summary(),
                notified: notified_latency.summary(),
            },
            writes_per_order: if accepted > 0 {
                (on_server.writes as f64 / accepted as f64 * 100.0).round() / 100.0
            } else {
                0.0
            },
            server_messages_per_order: on_server
                .traffic
                .and_then(|(before, after)| before.per_order(after, accepted)),
            cpu_per_order: on_server
                .cpu
                .and_then(|(before, after)| before.per_order(&after, accepted)),
            ceiling: None,
            r: None,
        }
    }

    fn progress_bar(&self, load: Load, seconds: f64) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = match load {
            Load::Open { rate } => ProgressBar::new((rate * seconds) as u64),
            Load::Burst { orders } => ProgressBar::new(orders),
            Load::Closed { .. } => ProgressBar::new_spinner(),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} sent  {msg}",
        ) {
            bar.set_style(style);
        }
        bar
    }

    fn show(&self, bar: &ProgressBar) {
        let c = &self.tracker.counters;
        bar.set_position(c.sent.load(Ordering::Relaxed));
        bar.set_message(format!(
            "{} accepted, {} ended, {} notified, {} errors",
            c.accepted.load(Ordering::Relaxed),
            c.ended.load(Ordering::Relaxed),
            c.notified.load(Ordering::Relaxed),
            c.errors.load(Ordering::Relaxed)
        ));
    }
}

fn sku_name(n: usize) -> String {
    format!("LOADGEN-{n:04}")
}
