//! The archive's projection, on the durable consumers `order-archive` (every order event) and
//! `order-archive-notifications` (every notification's outcome), per partition: folds each
//! event into its order's snapshot in PostgreSQL, so the order — and what its customer was
//! told — outlives the hot window. The hot log must not drop an event before this has archived
//! it: the hot window is sized for it (docs/architecture.md, "Data lifecycle"), and the consumers' lag is
//! alerted on.
//!
//! Idempotent and ordered per order: a snapshot's history names the events folded into it, so
//! a redelivered event changes nothing; an event of an order whose `created` is not archived
//! yet is retried until it is (events arrive in stream order, so that is rare: a retry of the
//! `created`, two replicas, or a notification that overtook its order's events — another
//! stream, another consumer). Events are **group-committed**: every handler hands its event
//! to one writer, which folds whatever arrived together in one transaction (the orders locked,
//! read, folded, written) — at a thousand orders a second one commit per batch, not per event.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::dead_letters::{BoxedReprocess, Reprocess};
use archive::{Archive, ArchivedOrder};
use axum::http::StatusCode;
use bus::{ConsumerSpec, DeadLetter, Delivery, Handler as _, HandlerError, Lease};
use events::{Envelope, Event, OrderId, OrderKey, Partitions};
use platform::problem::Problem;
use tokio::sync::{mpsc, oneshot};

use telemetry::metric;

use crate::order::{Notified, Order, Snapshot};

/// Most events one transaction folds.
const MAX_BATCH: usize = 1024;
/// How long the writer gathers events before it folds them: long enough that an order's
/// `created` and `confirmed` (milliseconds apart) usually share one transaction and one row
/// write, short enough that the archive is never more than moments behind. Without it the
/// batches were 3 events at the median at 1,000 orders/s — a transaction per 3 events, and
/// PostgreSQL took a fifth of the box (BENCHMARKS.md, round four).
const LINGER: Duration = Duration::from_millis(50);

/// The projection's consumer specs: one per partition, with room for a whole batch in flight,
/// tuned like the saga's consumers (`tune`) — but retried for half the hot window: an archive
/// that is away must not turn every event into a dead letter within minutes, and an event still
/// failing after that long is safer in the dead-letter stream (kept 30 days, redrivable) than
/// left to leave the hot log unarchived.
pub fn consumer_specs(
    partitions: Partitions,
    hot_window: Duration,
    tune: impl Fn(ConsumerSpec) -> ConsumerSpec,
) -> Vec<ConsumerSpec> {
    events::topology::ARCHIVE
        .iter()
        .flat_map(|subscription| ConsumerSpec::per_partition(subscription, partitions))
        .map(|spec| {
            let spec = ConsumerSpec {
                // A delivery waits for its batch's transaction, however short the saga's
                // handlers are cut: timing it out sooner would only spend its deliveries (the
                // budget below counts a whole write timeout per delivery).
                handler_timeout: write_timeout(hot_window) + LINGER,
                ..tune(ConsumerSpec {
                    concurrency: MAX_BATCH,
                    max_batch: MAX_BATCH,
                    max_ack_pending: 4 * MAX_BATCH as i64,
                    ..spec
                })
            };
            // Keeping every event in NATS (a zero window), half a day of outage is ridden out.
            let span = if hot_window.is_zero() {
                Duration::from_secs(12 * 3600)
            } else {
                hot_window / 2
            };
            // Each delivery may also spend a whole write timeout before its nak: count it, so
            // the last delivery still comes within the span however the archive fails.
            let max_deliver =
                spec.deliveries_within_spending(span, write_timeout(hot_window) + LINGER);
            ConsumerSpec {
                max_deliver,
                ..spec
            }
        })
        .collect()
}

/// One event waiting for the writer, and where its outcome goes.
struct Pending {
    delivery: Delivery,
    done: oneshot::Sender<Result<(), HandlerError>>,
}

/// Handles the projection consumer's deliveries by handing them to the writer.
#[derive(Debug, Clone)]
pub struct Projection {
    writer: mpsc::Sender<Pending>,
}

impl Projection {
    /// The projection into `archive`; its writer runs until every handle to it is dropped.
    pub fn start(archive: Archive, hot_window: Duration) -> Self {
        let (writer, pending) = mpsc::channel(MAX_BATCH);
        tokio::spawn(write(archive, pending, write_timeout(hot_window)));
        Self { writer }
    }
}

impl bus::Handler for Projection {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        if !matches!(
            delivery.envelope.event,
            Event::OrderCreated(_)
                | Event::OrderConfirmed(_)
                | Event::OrderCancelled(_)
                | Event::NotificationSent(_)
                | Event::NotificationFailed(_)
        ) {
            return Err(HandlerError::permanent(format!(
                "the archive does not fold {}",
                delivery.envelope.kind()
            )));
        }
        let (done, outcome) = oneshot::channel();
        self.writer
            .send(Pending { delivery, done })
            .await
            .map_err(|_| HandlerError::transient("the archive writer has stopped"))?;
        outcome
            .await
            .unwrap_or_else(|_| Err(HandlerError::transient("the archive writer has stopped")))
    }
}

/// Takes the archive consumers' dead letters back on redrive: each is folded into the archive
/// here, never published again — a copy of an order event would reach inventory and
/// notification too, and after the hot window they could not tell it from a new one (stock
/// reserved twice, a customer notified twice). Empty until the projection starts.
#[derive(Debug, Clone, Default)]
pub struct TakeBack(Arc<OnceLock<Projection>>);

impl TakeBack {
    /// From now on, letters are folded by `projection`.
    pub fn serve(&self, projection: Projection) {
        let _ = self.0.set(projection);
    }
}

impl Reprocess for TakeBack {
    fn handles(&self, consumer: &str) -> bool {
        takes_back(consumer)
    }

    fn reprocess(&self, letter: DeadLetter) -> BoxedReprocess<'_> {
        Box::pin(async move {
            let projection = self.0.get().ok_or_else(|| {
                Problem::unavailable(1).with_detail("the archive's projection is not running")
            })?;
            take_back(projection, letter)
                .await
                .map_err(|error| match error {
                    TakeBackError::Unusable(why) => Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "not-redrivable",
                        "This dead letter cannot be redriven",
                    )
                    .with_detail(why),
                    TakeBackError::Later(_) => {
                        Problem::unavailable(5).with_detail(error.to_string())
                    }
                })
        })
    }
}

/// Whether `consumer`'s dead letters are taken back into the archive rather than published
/// again: the projection's consumers.
pub fn takes_back(consumer: &str) -> bool {
    events::topology::ARCHIVE
        .iter()
        .any(|subscription| subscription.durable == consumer)
}

/// Why a dead letter of the projection was not taken back.
#[derive(Debug, thiserror::Error)]
pub enum TakeBackError {
    /// It never can be: not an event, no order in its subject, a snapshot that does not
    /// decode.
    #[error("{0}")]
    Unusable(String),
    /// The archive did not take it now.
    #[error("the archive did not take it, retry later: {0}")]
    Later(String),
}

/// Folds a dead letter of the projection into the archive through `projection`, as a
/// redelivery of its event (what an earlier attempt did is read before anything is written).
pub async fn take_back(projection: &Projection, letter: DeadLetter) -> Result<(), TakeBackError> {
    let envelope = Envelope::decode(&letter.payload)
        .map_err(|e| TakeBackError::Unusable(format!("its payload is not an event: {e}")))?;
    let (key, _) = OrderKey::parse(&letter.subject)
        .map_err(|e| TakeBackError::Unusable(format!("its subject names no order: {e}")))?;
    let delivery = Delivery {
        envelope,
        key,
        subject: letter.subject,
        stream_sequence: letter.sequence,
        attempt: letter.deliveries.saturating_add(1),
        is_last_attempt: false,
        lease: Lease::unbounded(),
    };
    projection
        .handle(delivery)
        .await
        .map_err(|error| match error {
            HandlerError::Permanent(_) => TakeBackError::Unusable(error.to_string()),
            HandlerError::Transient(_) | HandlerError::Wait { .. } => {
                TakeBackError::Later(error.to_string())
            }
        })
}

/// Longest a transaction may take before the batch counts as failed (and is retried): a hung
/// connection must not stall the projection, and `orderflow_archive_available` must say so.
/// 30 s, or an eighth of a shorter hot window, so that even a hung write on every delivery
/// leaves the last one (and the dead letter) within half the window.
pub fn write_timeout(hot_window: Duration) -> Duration {
    const LONGEST: Duration = Duration::from_secs(30);
    if hot_window.is_zero() {
        LONGEST
    } else {
        LONGEST.min(hot_window / 8)
    }
}

/// How long the writer may sit idle before it checks the archive still answers, so that
/// `orderflow_archive_available` says so even when no order comes.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// The writer: takes whatever events are waiting (up to [`MAX_BATCH`]) and folds them in one
/// transaction, until the channel closes.
async fn write(archive: Archive, mut pending: mpsc::Receiver<Pending>, timeout: Duration) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        match tokio::time::timeout(IDLE_CHECK, pending.recv_many(&mut batch, MAX_BATCH)).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => {
                let up = archive.is_reachable().await;
                metrics::gauge!(metric::ARCHIVE_AVAILABLE).set(if up { 1.0 } else { 0.0 });
                continue;
            }
        }
        let linger = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(linger, pending.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        metrics::histogram!(metric::ARCHIVE_BATCH_SIZE).record(batch.len() as f64);
        let outcomes = fold(&archive, batch.iter().map(|p| &p.delivery), timeout).await;
        for (pending, outcome) in batch.drain(..).zip(outcomes) {
            let _ = pending.done.send(outcome);
        }
    }
}

/// Folds `deliveries` into their orders' snapshots in one transaction; the outcome of each. An
/// order whose archived snapshot does not decode fails alone (its deliveries are dead-lettered
/// with the reason): the batch is folded again without it.
async fn fold<'a>(
    archive: &Archive,
    deliveries: impl Iterator<Item = &'a Delivery>,
    timeout: Duration,
) -> Vec<Result<(), HandlerError>> {
    let deliveries: Vec<&Delivery> = deliveries.collect();
    let mut corrupt: HashMap<OrderId, String> = HashMap::new();
    loop {
        let live: Vec<&Delivery> = deliveries
            .iter()
            .copied()
            .filter(|d| !corrupt.contains_key(&d.key.order))
            .collect();
        let (written, orphans) = fold_once(archive, &live, timeout).await;
        let outcome = match written {
            Ok(()) => Ok(()),
            Err(archive::ArchiveError::Corrupt { order, source }) => {
                let why =
                    format!("the archived snapshot of order {order} does not decode: {source}");
                if corrupt.insert(OrderId(order), why).is_none() {
                    continue;
                }
                Err(HandlerError::transient("the archive refused a batch twice"))
            }
            Err(error) => {
                tracing::warn!(%error, events = live.len(), "archiving failed; retrying");
                Err(HandlerError::transient(error.to_string()))
            }
        };
        archive.record_reachable(outcome.is_ok());
        metrics::gauge!(metric::ARCHIVE_AVAILABLE).set(if outcome.is_ok() { 1.0 } else { 0.0 });
        return deliveries
            .iter()
            .map(|delivery| {
                if let Some(why) = corrupt.get(&delivery.key.order) {
                    return Err(HandlerError::permanent(why.clone()));
                }
                match &outcome {
                    Err(error) => Err(HandlerError::transient(error.to_string())),
                    // Its `created` comes through the other consumer, which may be catching up
                    // with a backlog: retrying at once would spend the deliveries in a second.
                    // Wait what a delivery is budgeted (consumer_specs counts it), so the
                    // last one still comes within half the hot window.
                    Ok(()) if orphans.contains(&place(delivery)) => Err(HandlerError::wait(
                        timeout + LINGER,
                        format!(
                            "order {} is not archived yet: its {} waits for its created event",
                            delivery.key.order,
                            delivery.envelope.kind()
                        ),
                    )),
                    Ok(()) => Ok(()),
                }
            })
            .collect();
    }
}

/// Where a delivery is stored: its stream (a notification's or an order's) and sequence there.
fn place(delivery: &Delivery) -> (bool, u16, u64) {
    (
        is_notification(delivery),
        delivery.key.partition,
        delivery.stream_sequence,
    )
}

fn is_notification(delivery: &Delivery) -> bool {
    Notified::of(&delivery.envelope).is_some()
}

/// One transaction over `deliveries`, bounded by `timeout`; also returns the
/// [`place`]s of the deliveries that found no archived order to fold into (and no `created`
/// before them).
async fn fold_once(
    archive: &Archive,
    deliveries: &[&Delivery],
    timeout: Duration,
) -> (Result<(), archive::ArchiveError>, HashSet<(bool, u16, u64)>) {
    let mut ids: Vec<uuid::Uuid> = deliveries.iter().map(|d| d.key.order.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut orphans = HashSet::new();
    let update = archive.update(
        &ids,
        |mut existing: HashMap<uuid::Uuid, ArchivedOrder<Snapshot>>| {
            let mut folded: HashMap<OrderId, (Order, bool)> = HashMap::new();
            // Stream order within the batch: a `created` before what follows it, and an order's
            // events before the notifications about it (another stream, other sequences).
            let mut by_sequence: Vec<&Delivery> = deliveries.to_vec();
            by_sequence.sort_by_key(|d| place(d));
            for delivery in by_sequence {
                let key = &delivery.key;
                let entry = match folded.entry(key.order) {
                    Entry::Occupied(entry) => Some(entry.into_mut()),
                    Entry::Vacant(slot) => {
                        let archived = existing
                            .remove(&key.order.0)
                            .map(|row| Order::restore(key.clone(), row.snapshot));
                        match archived {
                            Some(order) => Some(slot.insert((order, false))),
                            None => Order::created(
                                key.clone(),
                                &delivery.envelope,
                                delivery.stream_sequence,
                            )
                            .map(|order| slot.insert((order, true))),
                        }
                    }
                };
                match entry {
                    Some((order, changed)) => *changed |= order.absorb(&delivery.envelope),
                    None => {
                        orphans.insert(place(delivery));
                    }
                }
            }
            folded
                .into_values()
                .filter(|(_, changed)| *changed)
                .filter_map(|(order, _)| row(&order))
                .collect()
        },
    );
    let written = match tokio::time::timeout(timeout, update).await {
        Ok(written) => written.map(|_| ()),
        Err(_) => Err(archive::ArchiveError::Timeout(timeout)),
    };
    (written, orphans)
}

/// The archive row of `order`.
fn row(order: &Order) -> Option<ArchivedOrder<Snapshot>> {
    Some(ArchivedOrder {
        order_id: order.created.order_id.0,
        customer_id: order.created.customer_id.to_string(),
        status: order.status.as_str().to_owned(),
        placed_at: order.created_at()?,
        updated_at: order.updated_at()?,
        idempotency_key: order.created.idempotency_key.clone(),
        snapshot: order.snapshot(),
    })
}

#[cfg(test)]
mod tests {
    use bus::Handler as _;
    use events::{OrderKey, Partitions};
    use testkit::{PostgresServer, sample};

    use super::*;
    use crate::order::{Status, Step};

    /// A projection into a fresh archive.
    async fn projection() -> (PostgresServer, Archive, Projection) {
        let server = PostgresServer::start();
        let archive = sample::archive(&server).await;
        let projection = Projection::start(archive.clone(), Duration::ZERO);
        (server, archive, projection)
    }

    /// An order's `created` and `confirmed`, as deliveries at stream sequences 1 and 2.
    fn placed_and_confirmed() -> (OrderKey, Delivery, Delivery) {
        let id = OrderId::new();
        let key = sample::key("alice", id);
        let created = sample::order_created(id, "alice", &[("MUG", 2)]);
        let order = Order::created(key.clone(), &created, 1).unwrap();
        let Step::Append(confirmed) = order.confirm(&created) else {
            panic!("a pending order is confirmed")
        };
        let first = sample::delivery(&key, created);
        let second = Delivery {
            stream_sequence: 2,
            ..sample::delivery(&key, *confirmed)
        };
        (key, first, second)
    }

    async fn archived(archive: &Archive, key: &OrderKey) -> Option<Order> {
        archive
            .get::<Snapshot>(key.order.0)
            .await
            .unwrap()
            .map(|row| Order::restore(key.clone(), row.snapshot))
    }

    #[test]
    fn the_projection_gives_up_within_half_the_hot_window_however_slowly_the_archive_fails() {
        for window in [24 * 3600, 3600, 60, 15].map(Duration::from_secs) {
            for spec in consumer_specs(Partitions::ONE, window, |spec| spec) {
                // Every delivery hangs for a whole write, then waits its nak delay.
                let each = write_timeout(window) + LINGER;
                let worst = each * u32::try_from(spec.max_deliver).unwrap() + spec.retry_budget();
                assert!(
                    worst <= window / 2 || spec.max_deliver == 1,
                    "{window:?}: {worst:?}"
                );
                if window.as_secs() >= 24 * 3600 {
                    assert!(spec.max_deliver > 100, "an outage of hours is ridden out");
                }
            }
        }
    }

    #[tokio::test]
    async fn an_orders_events_are_folded_into_its_archived_snapshot() {
        let (_server, archive, projection) = projection().await;
        let (key, created, confirmed) = placed_and_confirmed();

        projection.handle(created).await.unwrap();
        projection.handle(confirmed).await.unwrap();

        let order = archived(&archive, &key).await.unwrap();
        assert_eq!(order.status, Status::Confirmed);
        assert_eq!(order.history.len(), 2);
        let row = archive.page::<Snapshot>("alice", None, 10).await.unwrap();
        assert_eq!(row[0].status, "confirmed");
    }

    #[tokio::test]
    async fn an_event_delivered_again_changes_nothing() {
        let (_server, archive, projection) = projection().await;
        let (key, created, confirmed) = placed_and_confirmed();
        projection.handle(created.clone()).await.unwrap();
        projection.handle(confirmed.clone()).await.unwrap();
        let before = archive.get::<Snapshot>(key.order.0).await.unwrap();

        for delivery in [created, confirmed] {
            projection
                .handle(Delivery {
                    attempt: 2,
                    ..delivery
                })
                .await
                .unwrap();
        }

        assert_eq!(archive.get::<Snapshot>(key.order.0).await.unwrap(), before);
    }

    #[tokio::test]
    async fn an_event_that_comes_before_its_orders_created_is_retried_until_it_follows_it() {
        let (_server, archive, projection) = projection().await;
        let (key, created, confirmed) = placed_and_confirmed();

        let early = projection.handle(confirmed.clone()).await;
        assert!(matches!(early, Err(HandlerError::Wait { .. })), "{early:?}");
        projection.handle(created).await.unwrap();
        projection.handle(confirmed).await.unwrap();

        let order = archived(&archive, &key).await.unwrap();
        assert_eq!(order.status, Status::Confirmed);
    }

    /// notification-service's record that the customer was told of `confirmed`, stored at
    /// sequence 1 of its own stream (as the order's `created` is of the order's).
    fn told_of(key: &OrderKey, confirmed: &Delivery) -> Delivery {
        let sent = events::NotificationSent::builder()
            .notification_id(uuid::Uuid::now_v7())
            .order_id(key.order)
            .kind(events::NotificationKind::OrderConfirmed)
            .channel(events::Channel::Webhook)
            .attempts(2)
            .build();
        let envelope = sample::caused_by(Event::NotificationSent(sent), &confirmed.envelope);
        sample::delivery(key, envelope)
    }

    #[tokio::test]
    async fn what_the_customer_was_told_is_folded_into_the_order_once() {
        let (_server, archive, projection) = projection().await;
        let (key, created, confirmed) = placed_and_confirmed();
        let told = told_of(&key, &confirmed);

        // The notification overtook the order's events (another stream): retried, then folded.
        let early = projection.handle(told.clone()).await;
        assert!(matches!(early, Err(HandlerError::Wait { .. })), "{early:?}");
        let (created, confirmed, told_with_them) = tokio::join!(
            projection.handle(created),
            projection.handle(confirmed),
            projection.handle(told.clone()),
        );
        created.unwrap();
        confirmed.unwrap();
        if told_with_them.is_err() {
            projection.handle(told.clone()).await.unwrap();
        }
        projection
            .handle(Delivery { attempt: 2, ..told })
            .await
            .unwrap();

        let order = archived(&archive, &key).await.unwrap();
        assert_eq!(order.status, Status::Confirmed);
        assert_eq!(order.notifications.len(), 1, "{:?}", order.notifications);
        assert_eq!(order.notifications[0].attempts, 2);
    }

    #[tokio::test]
    async fn events_of_many_orders_arriving_at_once_are_all_folded() {
        let (_server, archive, projection) = projection().await;
        let orders: Vec<_> = (0..20).map(|_| placed_and_confirmed()).collect();

        let handles = orders.iter().flat_map(|(_, created, confirmed)| {
            // Each confirmation first: a batch that holds both folds its created first.
            [confirmed.clone(), created.clone()].map(|delivery| {
                let projection = projection.clone();
                async move { projection.handle(delivery).await }
            })
        });
        let outcomes = futures::future::join_all(handles).await;

        // Each confirmation was either folded with its created or retried alone: none is lost.
        for ((key, _, confirmed), pair) in orders.iter().zip(outcomes.chunks(2)) {
            if pair[0].is_err() {
                projection.handle(confirmed.clone()).await.unwrap();
            }
            assert_eq!(
                archived(&archive, key).await.unwrap().status,
                Status::Confirmed
            );
        }
    }

    #[tokio::test]
    async fn an_order_whose_archived_snapshot_does_not_decode_fails_alone() {
        let (server, archive, projection) = projection().await;
        let (broken, created, confirmed) = placed_and_confirmed();
        projection.handle(created).await.unwrap();
        let pool = sqlx::PgPool::connect(&server.url()).await.unwrap();
        sqlx::query("UPDATE orders SET snapshot = '{\"not\": \"an order\"}' WHERE order_id = $1")
            .bind(broken.order.0)
            .execute(&pool)
            .await
            .unwrap();
        let (healthy, other_created, _) = placed_and_confirmed();

        let (broken_outcome, healthy_outcome) = tokio::join!(
            projection.handle(confirmed),
            projection.handle(other_created)
        );

        assert!(
            matches!(broken_outcome, Err(HandlerError::Permanent(_))),
            "{broken_outcome:?}"
        );
        healthy_outcome.unwrap();
        assert!(archived(&archive, &healthy).await.is_some());
    }

    #[tokio::test]
    async fn an_archive_that_does_not_answer_makes_every_delivery_a_retry() {
        let (server, _archive, projection) = projection().await;
        drop(server);
        let (_, created, _) = placed_and_confirmed();

        let outcome = projection.handle(created).await;

        assert!(
            matches!(outcome, Err(HandlerError::Transient(_))),
            "{outcome:?}"
        );
    }
}
