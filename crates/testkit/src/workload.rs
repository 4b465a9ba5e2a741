//! Steady order traffic for fault tests, with a ledger of every attempt, and the system's
//! invariants I1–I7 — defined once, in docs/architecture.md ("The invariants") — checked
//! against that ledger once the faults are over, one function each (`i1_…` to `i7_…`), every
//! wait for quiescence through [`crate::wait::until`] under one shared deadline.
//!
//! An attempt that times out or meets a refused connection or a 503 is *unknown*, and is
//! retried with the same key until it is accepted or the time is up — as a careful client would.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};

use inventory_service::StockView;
use order_service::{OrderPage, OrderView, Status};

use crate::system::System;
use crate::wait::{self, TimedOut};
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

async fn get<T: serde::de::DeserializeOwned>(client: &reqwest::Client, url: &str) -> Option<T> {
    client.get(url).send().await.ok()?.json().await.ok()
}

/// What the invariants see of the system: the accepted orders as the API shows them once
/// settled, an HTTP client, and the one deadline every wait for quiescence shares.
struct Observed<'a> {
    system: &'a System,
    client: reqwest::Client,
    deadline: tokio::time::Instant,
    /// Each accepted order that settled, as `GET /v1/orders/{id}` shows it.
    orders: BTreeMap<String, OrderView>,
}

impl Observed<'_> {
    fn settled(&self, status: Status) -> impl Iterator<Item = &OrderView> {
        self.orders.values().filter(move |o| o.status == status)
    }
}

/// Waits for quiescence (within `patience`), then checks I1–I7 (docs/architecture.md, "The
/// invariants") against `ledger`, one function each. `initial` is the stock each SKU started
/// with; `expected_dead_letters` the poison injected.
pub async fn check_invariants(
    system: &System,
    ledger: &Ledger,
    workload: &Workload,
    initial: &BTreeMap<String, u64>,
    webhooks: Option<&WebhookReceiver>,
    expected_dead_letters: u64,
    patience: Duration,
) -> Report {
    let accepted = ledger.accepted();
    let mut observed = Observed {
        system,
        client: crate::api::http_client(),
        deadline: tokio::time::Instant::now() + patience,
        orders: BTreeMap::new(),
    };
    let mut report = Report {
        attempted: ledger.attempts.len(),
        accepted: accepted.len(),
        ..Report::default()
    };
    report
        .violations
        .extend(i5_a_retry_returns_the_same_order(ledger));
    report
        .violations
        .extend(i1_every_accepted_order_settles(&mut observed, &accepted).await);
    report.confirmed = observed.settled(Status::Confirmed).count();
    report.cancelled = observed.settled(Status::Cancelled).count();
    report
        .violations
        .extend(i2_nothing_exists_that_was_never_attempted(&observed, workload, ledger).await);
    // I6 first of the rest: it waits for the consumers to drain, which I3, I4 and I7 need.
    let (dead_letters, drained) =
        i6_every_event_is_consumed_or_dead_lettered(&observed, expected_dead_letters).await;
    report.dead_letters = dead_letters;
    report.violations.extend(drained);
    report
        .violations
        .extend(i3_stock_is_conserved(&observed, initial).await);
    if let Some(webhooks) = webhooks {
        let (deliveries, ids, once) = i4_one_webhook_per_state_change(&observed, webhooks).await;
        (report.webhook_deliveries, report.webhook_ids) = (deliveries, ids);
        report.violations.extend(once);
    }
    report
        .violations
        .extend(i7_the_archive_holds_every_order_as_the_api_shows_it(&observed).await);
    report
}

/// I5 — every retry with the same key returned the same order (from the ledger).
fn i5_a_retry_returns_the_same_order(ledger: &Ledger) -> Vec<String> {
    ledger
        .attempts
        .iter()
        .filter(|attempt| attempt.replay_mismatches > 0)
        .map(|attempt| format!("I5: key {} returned different orders", attempt.key))
        .collect()
}

/// I1 — every accepted order ends `confirmed` or `cancelled`; the settled ones are kept for
/// the checks that follow.
async fn i1_every_accepted_order_settles(
    observed: &mut Observed<'_>,
    accepted: &BTreeSet<String>,
) -> Vec<String> {
    let mut violations = Vec::new();
    for id in accepted {
        let url = format!("{}/v1/orders/{id}", observed.system.order.url());
        let last = RefCell::new(None);
        let settled = wait::until(observed.deadline, || async {
            let order: Option<OrderView> = get(&observed.client, &url).await;
            *last.borrow_mut() = order.as_ref().map(|o| o.status);
            order.filter(|o| o.status != Status::Pending)
        })
        .await;
        let last = last.into_inner();
        match settled {
            Ok(order) => {
                observed.orders.insert(id.clone(), order);
            }
            Err(TimedOut) => violations.push(format!(
                "I1: accepted order {id} never settled (status {last:?})"
            )),
        }
    }
    violations
}

/// I2 — no order exists that was never attempted: every order of every workload customer,
/// page by page, is one the ledger saw accepted. When some is not, why attempts went
/// unanswered, as a post-mortem line beside it.
async fn i2_nothing_exists_that_was_never_attempted(
    observed: &Observed<'_>,
    workload: &Workload,
    ledger: &Ledger,
) -> Vec<String> {
    let accepted = ledger.accepted();
    let mut violations = Vec::new();
    for customer in workload.customers() {
        let list = format!(
            "{}/v1/orders?customer_id={customer}&limit=100",
            observed.system.order.url()
        );
        let mut url = list.clone();
        loop {
            let Some(page) = get::<OrderPage>(&observed.client, &url).await else {
                violations.push(format!("I2: cannot list orders of {customer}"));
                break;
            };
            for order in &page.orders {
                if !accepted.contains(&order.order_id.to_string()) {
                    violations.push(format!(
                        "I2: order {} of {customer} was never accepted",
                        order.order_id
                    ));
                }
            }
            match page.next_before {
                Some(cursor) => url = format!("{list}&before={cursor}"),
                None => break,
            }
        }
    }
    if !violations.is_empty() {
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
        if !unanswered.is_empty() {
            violations.push(format!(
                "I2: attempts not accepted, by their last answer: {unanswered:?}"
            ));
        }
    }
    violations
}

/// I6 — every consumer drained (nothing pending, nothing unacked — the archive's projection
/// included), and the dead letters are the poison injected: (dead letters, violations).
async fn i6_every_event_is_consumed_or_dead_lettered(
    observed: &Observed<'_>,
    expected_dead_letters: u64,
) -> (u64, Vec<String>) {
    let js = match async_nats::connect(observed.system.nats.url()).await {
        Ok(nats) => async_nats::jetstream::new(nats),
        Err(e) => return (0, vec![format!("I6: cannot connect to NATS: {e}")]),
    };
    // Each durable consumes every partition stream of its domain: `ORDERS`, or `ORDERS_0` …
    // `ORDERS_<n-1>` when the streams are partitioned.
    let streams: Vec<String> = js
        .stream_names()
        .filter_map(|n| async { n.ok() })
        .collect()
        .await;
    let partitions_of = |base: &str| -> Vec<String> {
        streams
            .iter()
            .filter(|s| *s == base || s.strip_prefix(base).is_some_and(|p| p.starts_with('_')))
            .cloned()
            .collect()
    };
    let archiving = observed.system.postgres.is_some();
    let consumers: Vec<(String, &str)> = events::topology::SUBSCRIPTIONS
        .iter()
        .filter(|sub| crate::system::consumes(sub, archiving))
        .filter_map(|sub| sub.domain().map(|domain| (domain, sub.durable)))
        .flat_map(|(domain, durable)| {
            partitions_of(domain.stream_base())
                .into_iter()
                .map(move |stream| (stream, durable))
        })
        .collect();
    let mut violations = Vec::new();
    for (stream, durable) in consumers {
        let last = RefCell::new(None);
        let drained = wait::until(observed.deadline, || async {
            let info = match js.get_stream(&stream).await {
                Ok(s) => s.consumer_info(durable).await.ok(),
                Err(_) => None,
            };
            *last.borrow_mut() = info.as_ref().map(|i| (i.num_pending, i.num_ack_pending));
            info.filter(|i| i.num_pending == 0 && i.num_ack_pending == 0)
        })
        .await;
        let last = last.into_inner();
        if drained.is_err() {
            violations.push(format!(
                "I6: consumer {durable} on {stream} never drained ((pending, unacked): {last:?})"
            ));
        }
    }
    let dead_letters = match js.get_stream(events::names::stream::DLQ).await {
        Ok(mut dlq) => dlq.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    };
    if dead_letters != expected_dead_letters {
        violations.push(format!(
            "I6: {dead_letters} dead letters, expected {expected_dead_letters}"
        ));
    }
    (dead_letters, violations)
}

/// I3 — per SKU: initial stock = available + reserved, reserved = what confirmed orders
/// hold, nothing left unsettled.
async fn i3_stock_is_conserved(
    observed: &Observed<'_>,
    initial: &BTreeMap<String, u64>,
) -> Vec<String> {
    let mut held: BTreeMap<&str, u64> = BTreeMap::new();
    for order in observed.settled(Status::Confirmed) {
        for line in &order.items {
            *held.entry(line.sku.as_str()).or_default() += u64::from(line.quantity);
        }
    }
    let mut violations = Vec::new();
    for (sku, initial) in initial {
        // Marks of stored decisions settle with the SKU's next write, within moments, or —
        // left by a process that died — when the reconciler finds them: wait for that.
        let url = format!("{}/v1/stock/{sku}", observed.system.inventory[0].url());
        let last = RefCell::new(None::<StockView>);
        let _ = wait::until(observed.deadline, || async {
            let stock: Option<StockView> = get(&observed.client, &url).await;
            let settled = stock.as_ref().is_some_and(|s| s.unsettled_orders == 0);
            *last.borrow_mut() = stock;
            settled.then_some(())
        })
        .await;
        let Some(stock) = last.into_inner() else {
            violations.push(format!("I3: cannot read stock of {sku}"));
            continue;
        };
        let expected = held.get(sku.as_str()).copied().unwrap_or(0);
        if stock.available.saturating_add(stock.reserved) != *initial
            || stock.reserved != expected
            || stock.unsettled_orders != 0
        {
            violations.push(format!(
                "I3: {sku}: available {} + reserved {} (confirmed orders hold {expected}), \
                 unsettled {}, initial {initial}",
                stock.available, stock.reserved, stock.unsettled_orders
            ));
        }
    }
    violations
}

/// I4 — exactly one notification per order state change at the webhook receiver (distinct
/// `webhook-id`s = state changes): (deliveries, distinct ids, violations).
async fn i4_one_webhook_per_state_change(
    observed: &Observed<'_>,
    webhooks: &WebhookReceiver,
) -> (usize, usize, Vec<String>) {
    // Every settled order's changes after it was placed.
    let expected: usize = observed
        .orders
        .values()
        .map(|o| o.history.len().saturating_sub(1))
        .sum();
    let ids = || {
        let received = webhooks.received();
        let ids: BTreeSet<String> = received
            .iter()
            .filter_map(|r| r.header("webhook-id").map(str::to_owned))
            .collect();
        (received.len(), ids.len())
    };
    let _ = wait::until(observed.deadline, || async {
        let (_, distinct) = ids();
        (distinct >= expected).then_some(())
    })
    .await;
    let (deliveries, distinct) = ids();
    let violations = match distinct == expected {
        true => Vec::new(),
        false => vec![format!(
            "I4: {distinct} notifications for {expected} state changes"
        )],
    };
    (deliveries, distinct, violations)
}

/// The part of an archived order's snapshot I7 compares.
#[derive(serde::Deserialize)]
struct ArchivedHistory {
    history: Vec<Value>,
}

/// I7 — the archive holds every accepted order, with the status and the number of
/// transitions the API shows (its projection drained with the other consumers, in I6).
async fn i7_the_archive_holds_every_order_as_the_api_shows_it(
    observed: &Observed<'_>,
) -> Vec<String> {
    let Some(postgres) = &observed.system.postgres else {
        return Vec::new();
    };
    let archive = crate::sample::archive(postgres).await;
    let mut violations = Vec::new();
    for (id, order) in &observed.orders {
        match archive.get::<ArchivedHistory>(order.order_id.0).await {
            Ok(Some(row)) => {
                if row.status != order.status.as_str()
                    || row.snapshot.history.len() != order.history.len()
                {
                    violations.push(format!(
                        "I7: order {id} is archived {} with {} transitions, the API shows {:?} \
                         with {}",
                        row.status,
                        row.snapshot.history.len(),
                        order.status,
                        order.history.len()
                    ));
                }
            }
            Ok(None) => violations.push(format!("I7: accepted order {id} is not archived")),
            Err(e) => {
                violations.push(format!("I7: cannot read the archive: {e}"));
                break;
            }
        }
    }
    archive.close().await;
    violations
}
