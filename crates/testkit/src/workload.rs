//! Steady order traffic for fault tests, with a ledger of every attempt, and the system's
//! invariants (docs/architecture.md, "Faults and invariants") checked against that ledger once the faults are
//! over:
//!
//! - I1 every accepted order is confirmed or cancelled;
//! - I2 no order exists that was never attempted;
//! - I3 per SKU, initial stock = available + reserved, reserved = what confirmed orders hold,
//!   nothing left unsettled;
//! - I4 one webhook per order state change (distinct `webhook-id`s; resends counted apart);
//! - I5 a retry with the same `Idempotency-Key` returns the same order;
//! - I6 every event is consumed (no consumer has anything pending) or dead-lettered;
//! - I7 the archive holds every accepted order, with the status and history the API shows.
//!
//! An attempt that times out or meets a refused connection or a 503 is *unknown*, and is
//! retried with the same key until it is accepted or the time is up — as a careful client would.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::system::System;
use crate::webhook::WebhookReceiver;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 202 with this order id.
    Accepted(String),
    /// A 4xx answer: the request itself was refused.
    Rejected(u16),
    /// Never got a definite answer before the time was up.
    Unknown(String),
}

/// One order the workload tried to place.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Its `Idempotency-Key`.
    pub key: String,
    /// Customer.
    pub customer: String,
    /// (SKU, quantity) lines.
    pub lines: Vec<(String, u32)>,
    /// How it ended.
    pub outcome: Outcome,
    /// Requests sent for it.
    pub tries: u32,
    /// Replays that returned a different order than the first acceptance (must stay 0: I5).
    pub replay_mismatches: u32,
}

/// Every attempt of a run.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// In the order they were started.
    pub attempts: Vec<Attempt>,
}

impl Ledger {
    /// Ids of accepted orders.
    pub fn accepted(&self) -> BTreeSet<String> {
        self.attempts
            .iter()
            .filter_map(|a| match &a.outcome {
                Outcome::Accepted(id) => Some(id.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A steady stream of orders against one order API.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Base URL of the order API.
    pub order_url: String,
    /// Orders to attempt.
    pub orders: usize,
    /// Orders started per second.
    pub rate: f64,
    /// SKUs to order from.
    pub skus: Vec<String>,
    /// Prefix of customer ids (one run, one prefix).
    pub run: String,
    /// How long an unknown attempt keeps being retried.
    pub retry_for: Duration,
}

impl Workload {
    /// `orders` orders at `rate`/s for `skus`, customers prefixed with `run`.
    pub fn new(order_url: String, run: &str, orders: usize, rate: f64, skus: &[&str]) -> Self {
        Self {
            order_url,
            orders,
            rate,
            skus: skus.iter().map(|s| (*s).to_owned()).collect(),
            run: run.to_owned(),
            retry_for: Duration::from_secs(60),
        }
    }

    /// The customers this run orders for.
    pub fn customers(&self) -> Vec<String> {
        (0..5).map(|i| format!("{}-c{i}", self.run)).collect()
    }

    /// Places every order (concurrently, paced) and returns the ledger.
    pub async fn drive(self) -> Ledger {
        let client = crate::api::http_client();
        let customers = self.customers();
        let interval = Duration::from_secs_f64(1.0 / self.rate.max(0.1));
        let mut tasks = Vec::with_capacity(self.orders);
        for i in 0..self.orders {
            let sku = self.skus[i % self.skus.len()].clone();
            let mut lines = vec![(sku, 1 + (i % 3) as u32)];
            if i % 4 == 0 && self.skus.len() > 1 {
                lines.push((self.skus[(i + 1) % self.skus.len()].clone(), 1));
            }
            let attempt = Attempt {
                key: format!("{}-{i}", self.run),
                customer: customers[i % customers.len()].clone(),
                lines,
                outcome: Outcome::Unknown("not sent".into()),
                tries: 0,
                replay_mismatches: 0,
            };
            tasks.push(tokio::spawn(place(
                client.clone(),
                self.order_url.clone(),
                attempt,
                self.retry_for,
            )));
            tokio::time::sleep(interval).await;
        }
        let mut ledger = Ledger::default();
        for task in tasks {
            ledger.attempts.push(task.await.expect("attempt task"));
        }
        ledger
    }
}

async fn place(
    client: reqwest::Client,
    order_url: String,
    mut attempt: Attempt,
    retry_for: Duration,
) -> Attempt {
    let items: Vec<Value> = attempt
        .lines
        .iter()
        .map(|(sku, quantity)| json!({ "sku": sku, "quantity": quantity, "unit_price_cents": 100 }))
        .collect();
    let body = json!({ "customer_id": attempt.customer, "items": items, "currency": "EUR" });
    let deadline = Instant::now() + retry_for;
    let mut first: Option<String> = None;
    // Ask again even after an acceptance, once: a replay must return the same order (I5).
    let mut replays_left = 1;
    loop {
        attempt.tries += 1;
        let sent = client
            .post(format!("{order_url}/v1/orders"))
            .header("Idempotency-Key", &attempt.key)
            .timeout(Duration::from_secs(5))
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().as_u16() == 202 => {
                let id = response
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["order_id"].as_str().map(str::to_owned));
                match (&first, id) {
                    (None, Some(id)) => first = Some(id),
                    (Some(first), Some(id)) if *first != id => attempt.replay_mismatches += 1,
                    _ => {}
                }
                if first.is_some() && replays_left == 0 {
                    break;
                }
                if first.is_some() {
                    replays_left -= 1;
                }
            }
            Ok(response) if response.status().is_client_error() => {
                attempt.outcome = Outcome::Rejected(response.status().as_u16());
                return attempt;
            }
            Ok(response) => {
                attempt.outcome = Outcome::Unknown(format!("HTTP {}", response.status()))
            }
            Err(e) => attempt.outcome = Outcome::Unknown(e.to_string()),
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(id) = first {
        attempt.outcome = Outcome::Accepted(id);
    }
    attempt
}

/// What the invariant check found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Orders attempted.
    pub attempted: usize,
    /// Orders accepted (202).
    pub accepted: usize,
    /// Accepted orders that ended confirmed.
    pub confirmed: usize,
    /// Accepted orders that ended cancelled.
    pub cancelled: usize,
    /// Webhook requests received.
    pub webhook_deliveries: usize,
    /// Distinct `webhook-id`s among them.
    pub webhook_ids: usize,
    /// Messages in the dead-letter stream.
    pub dead_letters: u64,
    /// Every broken invariant, one line each.
    pub violations: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "attempted {} accepted {} (confirmed {}, cancelled {}), webhooks {} for {} ids, dead letters {}, violations {}",
            self.attempted,
            self.accepted,
            self.confirmed,
            self.cancelled,
            self.webhook_deliveries,
            self.webhook_ids,
            self.dead_letters,
            self.violations.len()
        )?;
        for violation in &self.violations {
            write!(f, "\n  - {violation}")?;
        }
        Ok(())
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

/// Waits for quiescence (within `patience`), then checks I1–I7 against `ledger`.
/// `initial` is the stock each SKU started with; `expected_dead_letters` the poison injected.
pub async fn check_invariants(
    system: &System,
    ledger: &Ledger,
    workload: &Workload,
    initial: &BTreeMap<String, u64>,
    webhooks: Option<&WebhookReceiver>,
    expected_dead_letters: u64,
    patience: Duration,
) -> Report {
    let client = crate::api::http_client();
    let deadline = Instant::now() + patience;
    let accepted = ledger.accepted();
    let mut report = Report {
        attempted: ledger.attempts.len(),
        accepted: accepted.len(),
        ..Report::default()
    };

    // I5 — from the ledger.
    for attempt in &ledger.attempts {
        if attempt.replay_mismatches > 0 {
            report
                .violations
                .push(format!("I5: key {} returned different orders", attempt.key));
        }
    }

    // I1 — every accepted order settles.
    let mut orders: HashMap<String, Value> = HashMap::new();
    for id in &accepted {
        loop {
            let order = get_json(&client, &format!("{}/v1/orders/{id}", system.order.url())).await;
            let status = order
                .as_ref()
                .and_then(|o| o["status"].as_str())
                .unwrap_or_default()
                .to_owned();
            if status == "confirmed" || status == "cancelled" {
                orders.insert(id.clone(), order.unwrap_or_default());
                break;
            }
            if Instant::now() > deadline {
                report.violations.push(format!(
                    "I1: accepted order {id} never settled (status {status:?})"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    report.confirmed = orders
        .values()
        .filter(|o| o["status"] == "confirmed")
        .count();
    report.cancelled = orders
        .values()
        .filter(|o| o["status"] == "cancelled")
        .count();

    // I2 — nothing exists that was never attempted.
    for customer in workload.customers() {
        let mut url = format!(
            "{}/v1/orders?customer_id={customer}&limit=100",
            system.order.url()
        );
        loop {
            let Some(page) = get_json(&client, &url).await else {
                report
                    .violations
                    .push(format!("I2: cannot list orders of {customer}"));
                break;
            };
            for order in page["orders"].as_array().into_iter().flatten() {
                let id = order["order_id"].as_str().unwrap_or_default();
                if !accepted.contains(id) {
                    report
                        .violations
                        .push(format!("I2: order {id} of {customer} was never accepted"));
                }
            }
            match page["next_before"].as_str() {
                Some(cursor) => {
                    url = format!(
                        "{}/v1/orders?customer_id={customer}&limit=100&before={cursor}",
                        system.order.url()
                    )
                }
                None => break,
            }
        }
    }

    // Why attempts went unanswered: a post-mortem line next to I2's violations.
    let mut unanswered: BTreeMap<String, usize> = BTreeMap::new();
    for attempt in &ledger.attempts {
        match &attempt.outcome {
            Outcome::Accepted(_) => {}
            Outcome::Rejected(status) => {
                *unanswered.entry(format!("HTTP {status}")).or_default() += 1
            }
            Outcome::Unknown(last) => *unanswered.entry(last.clone()).or_default() += 1,
        }
    }
    if !unanswered.is_empty() && report.violations.iter().any(|v| v.starts_with("I2")) {
        report.violations.push(format!(
            "I2: attempts not accepted, by their last answer: {unanswered:?}"
        ));
    }

    // I6 — every consumer drained (waits for quiescence, which I3 and I4 need too).
    let nats = async_nats::connect(system.nats.url()).await;
    match nats {
        Err(e) => report
            .violations
            .push(format!("I6: cannot connect to NATS: {e}")),
        Ok(nats) => {
            let js = async_nats::jetstream::new(nats);
            // Each durable consumes every partition stream of its domain: `ORDERS`, or
            // `ORDERS_0` … `ORDERS_<n-1>` when the streams are partitioned.
            let streams: Vec<String> = js
                .stream_names()
                .filter_map(|n| async { n.ok() })
                .collect()
                .await;
            let of = |base: &str| -> Vec<String> {
                streams
                    .iter()
                    .filter(|s| {
                        *s == base || s.strip_prefix(base).is_some_and(|p| p.starts_with('_'))
                    })
                    .cloned()
                    .collect()
            };
            let archiving = system.postgres.is_some();
            let consumers: Vec<(String, &str)> = events::topology::SUBSCRIPTIONS
                .iter()
                .filter(|sub| crate::system::consumes(sub, archiving))
                .filter_map(|sub| sub.domain().map(|domain| (domain, sub.durable)))
                .flat_map(|(domain, durable)| {
                    of(domain.stream_base())
                        .into_iter()
                        .map(move |s| (s, durable))
                })
                .collect();
            for (stream, durable) in consumers {
                loop {
                    let info = match js.get_stream(&stream).await {
                        Ok(s) => s.consumer_info(durable).await.ok(),
                        Err(_) => None,
                    };
                    if info
                        .as_ref()
                        .is_some_and(|i| i.num_pending == 0 && i.num_ack_pending == 0)
                    {
                        break;
                    }
                    if Instant::now() > deadline {
                        report.violations.push(format!(
                            "I6: consumer {durable} on {stream} never drained ({:?} pending, {:?} unacked)",
                            info.as_ref().map(|i| i.num_pending),
                            info.as_ref().map(|i| i.num_ack_pending)
                        ));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            report.dead_letters = match js.get_stream("DLQ").await {
                Ok(mut dlq) => dlq.info().await.map(|i| i.state.messages).unwrap_or(0),
                Err(_) => 0,
            };
            if report.dead_letters != expected_dead_letters {
                report.violations.push(format!(
                    "I6: {} dead letters, expected {expected_dead_letters}",
                    report.dead_letters
                ));
            }
        }
    }

    // I3 — stock conserved per SKU.
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    for order in orders.values().filter(|o| o["status"] == "confirmed") {
        for item in order["items"].as_array().into_iter().flatten() {
            *held
                .entry(item["sku"].as_str().unwrap_or_default().to_owned())
                .or_default() += item["quantity"].as_u64().unwrap_or(0);
        }
    }
    for (sku, initial) in initial {
        // Marks of stored decisions settle with the SKU's next write, within moments, or —
        // left by a process that died — when the reconciler finds them: wait for that.
        let url = format!("{}/v1/stock/{sku}", system.inventory[0].url());
        let mut stock = get_json(&client, &url).await;
        while stock
            .as_ref()
            .is_some_and(|s| s["unsettled_orders"].as_u64() != Some(0))
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            stock = get_json(&client, &url).await;
        }
        let Some(stock) = stock else {
            report
                .violations
                .push(format!("I3: cannot read stock of {sku}"));
            continue;
        };
        let field = |name: &str| stock[name].as_u64().unwrap_or(u64::MAX);
        let (available, reserved, unsettled) = (
            field("available"),
            field("reserved"),
            field("unsettled_orders"),
        );
        let expected_reserved = held.get(sku).copied().unwrap_or(0);
        if available.saturating_add(reserved) != *initial
            || reserved != expected_reserved
            || unsettled != 0
        {
            report.violations.push(format!(
                "I3: {sku}: available {available} + reserved {reserved} (confirmed orders hold {expected_reserved}), unsettled {unsettled}, initial {initial}"
            ));
        }
    }

    // I4 — one webhook per state change.
    if let Some(webhooks) = webhooks {
        let expected: usize = orders
            .values()
            .map(|o| {
                let history = o["history"].as_array().map(Vec::len).unwrap_or(1);
                history.saturating_sub(1)
            })
            .sum();
        loop {
            let received = webhooks.received();
            let ids: BTreeSet<&str> = received
                .iter()
                .filter_map(|r| r.header("webhook-id"))
                .collect();
            report.webhook_deliveries = received.len();
            report.webhook_ids = ids.len();
            if ids.len() >= expected {
                if ids.len() > expected {
                    report.violations.push(format!(
                        "I4: {} notifications for {expected} state changes",
                        ids.len()
                    ));
                }
                break;
            }
            if Instant::now() > deadline {
                report.violations.push(format!(
                    "I4: {} notifications for {expected} state changes",
                    ids.len()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // I7 — the archive agrees (the projection drained with the other consumers, in I6).
    if let Some(postgres) = &system.postgres {
        let archive = crate::sample::archive(postgres).await;
        for (id, order) in &orders {
            let Ok(order_id) = id.parse::<uuid::Uuid>() else {
                continue;
            };
            match archive.get::<Value>(order_id).await {
                Ok(Some(row)) => {
                    let history = |v: &Value| v["history"].as_array().map_or(0, Vec::len);
                    if row.status != order["status"].as_str().unwrap_or_default()
                        || history(&row.snapshot) != history(order)
                    {
                        report.violations.push(format!(
                            "I7: order {id} is archived {} with {} transitions, the API shows {} with {}",
                            row.status,
                            history(&row.snapshot),
                            order["status"],
                            history(order)
                        ));
                    }
                }
                Ok(None) => report
                    .violations
                    .push(format!("I7: accepted order {id} is not archived")),
                Err(e) => {
                    report
                        .violations
                        .push(format!("I7: cannot read the archive: {e}"));
                    break;
                }
            }
        }
        archive.close().await;
    }
    report
}
