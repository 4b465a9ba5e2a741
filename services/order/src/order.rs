//! The order aggregate: folded from its events, and the only transitions allowed —
//! `pending → confirmed | cancelled`, `confirmed → cancelled`. Pure logic, no I/O: the store
//! reads the events, the saga and the API append what a [`Step`] says, conditionally on the
//! history it was decided on.
//!
//! There is no record besides the events: `orders.<p>.<customer>.<order>.created`, then at most
//! one `confirmed` and one `cancelled`. A cause that already moved the order is found in the
//! history (each transition names the event that caused it), so a redelivery decides nothing
//! twice — and nothing needs re-publishing, because the stored event *is* the publication.

use bus::Recorded;
use chrono::{DateTime, Utc};
use events::{
    CancelReason, Channel, Envelope, Event, NotificationKind, OrderCancelled, OrderConfirmed,
    OrderCreated, OrderKey, ReservedLine,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// The `source` of every event the order service produces.
pub const SOURCE: &str = events::ServiceId::Order.source();

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted, waiting for inventory's decision.
    Pending,
    /// Stock is reserved.
    Confirmed,
    /// Will not be fulfilled (final).
    Cancelled,
}

impl Status {
    /// As in JSON (and in the archive's `status` column).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One step of an order's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Transition {
    /// The state entered.
    pub status: Status,
    /// When.
    pub at: DateTime<Utc>,
    /// The event that recorded it.
    pub event_id: Uuid,
    /// The event that caused it (absent for creation and customer cancellations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause_id: Option<Uuid>,
}

/// What became of one notification about the order: the customer was told (`sent`), or could
/// not be (`failed`, after every attempt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Notified {
    /// The state change it announced: `order_confirmed` or `order_cancelled`.
    #[schema(value_type = String, example = "order_confirmed")]
    pub kind: NotificationKind,
    /// `sent` or `failed`.
    pub outcome: NotifiedOutcome,
    /// How: `log` or `webhook`.
    #[schema(value_type = String, example = "webhook")]
    pub channel: Channel,
    /// Delivery attempts it took.
    pub attempts: u32,
    /// When the outcome was recorded.
    pub at: DateTime<Utc>,
    /// The event that recorded it.
    pub event_id: Uuid,
}

/// Whether a notification reached the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifiedOutcome {
    /// Delivered.
    Sent,
    /// Not delivered, and not retried any more.
    Failed,
}

impl Notified {
    /// The outcome a notification event records; `None` for any other event.
    pub fn of(envelope: &Envelope) -> Option<Self> {
        let (kind, outcome, channel, attempts) = match &envelope.event {
            Event::NotificationSent(sent) => (
                sent.kind,
                NotifiedOutcome::Sent,
                sent.channel,
                sent.attempts,
            ),
            Event::NotificationFailed(failed) => (
                failed.kind,
                NotifiedOutcome::Failed,
                failed.channel,
                failed.attempts,
            ),
            _ => return None,
        };
        Some(Self {
            kind,
            outcome,
            channel,
            attempts,
            at: envelope.time,
            event_id: envelope.id,
        })
    }
}

/// An order, as its events say it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Where its events live.
    pub key: OrderKey,
    /// What was ordered.
    pub created: OrderCreated,
    /// Current state.
    pub status: Status,
    /// Why it was cancelled.
    pub reason: Option<CancelReason>,
    /// Every state entered, oldest first.
    pub history: Vec<Transition>,
    /// What the customer was told, oldest first (from notification-service's events, which
    /// the order's own events do not fold: see [`Order::notified`]).
    pub notifications: Vec<Notified>,
    /// The sequence of its last event: the precondition of its next one.
    pub last_sequence: u64,
}

/// An order as the archive keeps it: everything its events said, without where they live in
/// the hot log. Fields are only ever added (with defaults), so every snapshot ever written
/// still reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What was ordered.
    pub created: OrderCreated,
    /// Current state.
    pub status: Status,
    /// Why it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<CancelReason>,
    /// Every state entered, oldest first.
    pub history: Vec<Transition>,
    /// What the customer was told, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Notified>,
}

/// The step a cause takes an order: what [`Order::confirm`] and [`Order::cancel`] decide, for
/// the store to take. (A *decision* is inventory's: reserved or rejected, a stored fact.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Append this event, on the condition that the history has not moved (boxed: an event is
    /// far larger than the other answers).
    Append(Box<Envelope>),
    /// This very cause already moved the order: nothing to do.
    Done,
    /// Nothing to do: the order is past this point for another reason.
    Ignore(&'static str),
}

impl Order {
    /// The order right after its `created` event at `sequence`.
    pub fn created(key: OrderKey, envelope: &Envelope, sequence: u64) -> Option<Self> {
        let Event::OrderCreated(created) = &envelope.event else {
            return None;
        };
        Some(Self {
            key,
            created: created.clone(),
            status: Status::Pending,
            reason: None,
            history: vec![Transition {
                status: Status::Pending,
                at: envelope.time,
                event_id: envelope.id,
                cause_id: None,
            }],
            notifications: Vec::new(),
            last_sequence: sequence,
        })
    }

    /// Folds an order's events, oldest first. `None` while it has no `created` event. An event
    /// seen twice (a redriven copy) counts once.
    pub fn fold(key: OrderKey, events: &[Recorded]) -> Option<Self> {
        let created = events
            .iter()
            .find(|e| matches!(e.envelope.event, Event::OrderCreated(_)))?;
        let mut order = Self::created(key, &created.envelope, created.sequence)?;
        for recorded in events {
            order.last_sequence = order.last_sequence.max(recorded.sequence);
            order.apply(&recorded.envelope);
        }
        Some(order)
    }

    /// Folds `events` (oldest first) from the hot log over `archived`, the order as the archive
    /// has it. Events leave the hot log oldest first, so while it holds the order's `created`
    /// it holds the whole history and the archive is not needed; once `created` has left, the
    /// archive holds the beginning. The precondition of the next append is the last sequence
    /// *in the hot log* (0 when every event has left it). `None` if neither has the order.
    pub fn fold_over(archived: Option<Order>, key: OrderKey, events: &[Recorded]) -> Option<Self> {
        let has_created = events
            .iter()
            .any(|e| matches!(e.envelope.event, Event::OrderCreated(_)));
        if has_created {
            return Self::fold(key, events);
        }
        let mut order = archived?;
        order.last_sequence = 0;
        for recorded in events {
            order.last_sequence = order.last_sequence.max(recorded.sequence);
            // The archive may be ahead of what is left here, or behind it.
            order.absorb(&recorded.envelope);
        }
        Some(order)
    }

    /// The order as the archive keeps it.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            created: self.created.clone(),
            status: self.status,
            reason: self.reason.clone(),
            history: self.history.clone(),
            notifications: self.notifications.clone(),
        }
    }

    /// The order an archived snapshot describes, as if none of its events were in the hot log.
    pub fn restore(key: OrderKey, snapshot: Snapshot) -> Self {
        Self {
            key,
            created: snapshot.created,
            status: snapshot.status,
            reason: snapshot.reason,
            history: snapshot.history,
            notifications: snapshot.notifications,
            last_sequence: 0,
        }
    }

    /// Adds the outcomes the notification `events` record (each event once, oldest first);
    /// whether any was new.
    pub fn notified<'a>(&mut self, events: impl IntoIterator<Item = &'a Envelope>) -> bool {
        let before = self.notifications.len();
        for notified in events.into_iter().filter_map(Notified::of) {
            if !self
                .notifications
                .iter()
                .any(|n| n.event_id == notified.event_id)
            {
                self.notifications.push(notified);
            }
        }
        self.notifications.sort_by_key(|n| n.at);
        self.notifications.len() != before
    }

    /// Applies one more event, which may come out of order (the archive's projection retries
    /// a failed event after later ones of the same order went through); whether the order
    /// changed. A redelivered or already folded event changes nothing. A `confirmed` that
    /// finds the order cancelled without one was appended before the cancellation — the log
    /// only ever appends `confirmed` to a pending order, and nothing after `cancelled` — so it
    /// takes its place in the history before the cancellation, not nowhere.
    pub fn absorb(&mut self, envelope: &Envelope) -> bool {
        if Notified::of(envelope).is_some() {
            return self.notified([envelope]);
        }
        let before = self.history.len();
        let confirmed_late = matches!(envelope.event, Event::OrderConfirmed(_))
            && self.status == Status::Cancelled
            && !self
                .history
                .iter()
                .any(|t| t.status == Status::Confirmed || t.event_id == envelope.id);
        if confirmed_late {
            let at = self
                .history
                .iter()
                .position(|t| t.status == Status::Cancelled)
                .unwrap_or(self.history.len());
            self.history.insert(
                at,
                Transition {
                    status: Status::Confirmed,
                    at: envelope.time,
                    event_id: envelope.id,
                    cause_id: envelope.causation_id,
                },
            );
        } else {
            self.apply(envelope);
        }
        self.history.len() != before
    }

    fn apply(&mut self, envelope: &Envelope) {
        if self.history.iter().any(|t| t.event_id == envelope.id) {
            return;
        }
        let status = match &envelope.event {
            Event::OrderConfirmed(_) if self.status == Status::Pending => Status::Confirmed,
            Event::OrderCancelled(cancelled) if self.status != Status::Cancelled => {
                self.reason = Some(cancelled.reason.clone());
                Status::Cancelled
            }
            _ => return,
        };
        self.status = status;
        self.history.push(Transition {
            status,
            at: envelope.time,
            event_id: envelope.id,
            cause_id: envelope.causation_id,
        });
    }

    /// The order after `envelope` was appended at `sequence`.
    pub fn appended(mut self, envelope: &Envelope, sequence: u64) -> Self {
        self.apply(envelope);
        self.last_sequence = sequence;
        self
    }

    /// When the order was placed.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.history.first().map(|t| t.at)
    }

    /// When it last changed.
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.history.last().map(|t| t.at)
    }

    /// What inventory holds for the order: every line, once it is confirmed (inventory
    /// reserves all of an order or none of it); nothing before.
    fn reserved(&self) -> Vec<ReservedLine> {
        if self.status != Status::Confirmed {
            return Vec::new();
        }
        let mut lines: Vec<ReservedLine> = self
            .created
            .items
            .iter()
            .map(|line| ReservedLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
            })
            .collect();
        lines.sort_by(|a, b| a.sku.cmp(&b.sku));
        lines
    }

    fn caused_by(&self, cause: &Envelope) -> bool {
        self.history.iter().any(|t| t.cause_id == Some(cause.id))
    }

    /// Inventory reserved the stock: `pending → confirmed`.
    pub fn confirm(&self, cause: &Envelope) -> Step {
        match self.status {
            Status::Pending => Step::Append(Box::new(
                Envelope::new(
                    SOURCE,
                    Event::OrderConfirmed(
                        OrderConfirmed::builder()
                            .order_id(self.created.order_id)
                            .customer_id(self.created.customer_id.clone())
                            .total_cents(self.created.total_cents)
                            .currency(self.created.currency.clone())
                            .build(),
                    ),
                )
                .caused_by(cause),
            )),
            _ if self.caused_by(cause) => Step::Done,
            Status::Confirmed => Step::Ignore("already confirmed"),
            Status::Cancelled => Step::Ignore("cancelled before it could be confirmed"),
        }
    }

    /// Cancel for `reason`, caused by `cause` (`None`: the customer asked): allowed from
    /// `pending` and `confirmed` (a confirmed order's stock is then released by inventory —
    /// the event names it, as inventory may have forgotten its reservation by then).
    pub fn cancel(&self, reason: CancelReason, cause: Option<&Envelope>) -> Step {
        match self.status {
            Status::Pending | Status::Confirmed => {
                let event = Envelope::new(
                    SOURCE,
                    Event::OrderCancelled(
                        OrderCancelled::builder()
                            .order_id(self.created.order_id)
                            .customer_id(self.created.customer_id.clone())
                            .reason(reason)
                            .reserved(self.reserved())
                            .build(),
                    ),
                );
                Step::Append(Box::new(match cause {
                    Some(cause) => event.caused_by(cause),
                    None => event,
                }))
            }
            Status::Cancelled if cause.is_some_and(|c| self.caused_by(c)) => Step::Done,
            Status::Cancelled => Step::Ignore("already cancelled"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use events::{Currency, CustomerId, LineItem, OrderId, Partitions, Shortfall, Sku};

    /// A just-placed order of one line (for tests elsewhere in the crate too).
    pub(crate) fn placed() -> Order {
        let order = OrderCreated::builder()
            .order_id(OrderId::new())
            .customer_id(CustomerId::new("c").unwrap())
            .items(vec![LineItem {
                sku: Sku::new("A").unwrap(),
                quantity: 1,
                unit_price_cents: 10,
            }])
            .currency(Currency::new("EUR").unwrap())
            .build()
            .unwrap();
        let key = OrderKey::new(Partitions::ONE, order.customer_id.clone(), order.order_id);
        let envelope = Envelope::new(SOURCE, Event::OrderCreated(order));
        Order::created(key, &envelope, 1).unwrap()
    }

    /// An event from elsewhere that causes a transition (its payload does not matter here).
    fn cause() -> Envelope {
        Envelope::new("/test", Event::OrderCreated(placed().created))
    }

    /// Applies `step`, which must be an append, as if stored at the next sequence.
    fn applied(order: &Order, step: Step) -> (Order, Envelope) {
        let Step::Append(event) = step else {
            panic!("expected an append, got {step:?}")
        };
        let next = order.clone().appended(&event, order.last_sequence + 1);
        (next, *event)
    }

    #[test]
    fn every_snapshot_a_released_build_archived_still_reads() {
        // The archive keeps an order's snapshot for as long as it keeps the order: each file
        // is one as a released build wrote it, and every later build must read it. (The
        // 0.1.0 files were written by the build after it, whose snapshot is 0.1.0's shape.)
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/snapshots");
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let snapshot: Snapshot = serde_json::from_value(json.clone())
                .unwrap_or_else(|e| panic!("{} no longer reads: {e}", path.display()));
            assert_eq!(json!(snapshot.status), json["status"], "{}", path.display());
            read += 1;
        }
        assert!(read >= 2, "no snapshots in {}", dir.display());
    }

    #[test]
    fn a_pending_order_is_confirmed_by_an_event_caused_by_the_reservation() {
        let order = placed();
        let reserved = cause();
        let (confirmed, event) = applied(&order, order.confirm(&reserved));
        assert_eq!(confirmed.status, Status::Confirmed);
        assert_eq!(event.causation_id, Some(reserved.id));
        assert_eq!(confirmed.last_sequence, 2);
    }

    #[test]
    fn the_same_cause_delivered_again_is_done_already() {
        let order = placed();
        let reserved = cause();
        let (confirmed, _) = applied(&order, order.confirm(&reserved));
        assert_eq!(confirmed.confirm(&reserved), Step::Done);
    }

    #[test]
    fn a_cancelled_order_is_not_confirmed_by_a_late_reservation() {
        let order = placed();
        let (cancelled, _) = applied(&order, order.cancel(CancelReason::CustomerRequested, None));
        assert!(matches!(cancelled.confirm(&cause()), Step::Ignore(_)));
    }

    #[test]
    fn a_confirmed_order_can_be_cancelled_by_the_customer() {
        let order = placed();
        let (confirmed, _) = applied(&order, order.confirm(&cause()));
        let (cancelled, _) = applied(
            &confirmed,
            confirmed.cancel(CancelReason::CustomerRequested, None),
        );
        assert_eq!(cancelled.status, Status::Cancelled);
        assert_eq!(cancelled.history.len(), 3);
    }

    #[test]
    fn cancelling_a_confirmed_order_names_what_inventory_holds_and_a_pending_one_nothing() {
        let order = placed();
        let reserved = |step: Step| match step {
            Step::Append(event) => match event.event {
                Event::OrderCancelled(cancelled) => cancelled.reserved,
                other => panic!("not a cancellation: {other:?}"),
            },
            other => panic!("not an append: {other:?}"),
        };
        assert!(reserved(order.cancel(CancelReason::CustomerRequested, None)).is_empty());
        let (confirmed, _) = applied(&order, order.confirm(&cause()));
        let held = reserved(confirmed.cancel(CancelReason::CustomerRequested, None));
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].quantity, 1);
    }

    #[test]
    fn a_second_cancellation_for_another_reason_changes_nothing() {
        let order = placed();
        let (cancelled, _) = applied(&order, order.cancel(CancelReason::CustomerRequested, None));
        let shortfall = vec![Shortfall {
            sku: Sku::new("A").unwrap(),
            requested: 1,
            available: 0,
        }];
        let rejected = cause();
        assert!(matches!(
            cancelled.cancel(CancelReason::OutOfStock { shortfall }, Some(&rejected)),
            Step::Ignore(_)
        ));
        assert_eq!(cancelled.reason, Some(CancelReason::CustomerRequested));
    }

    #[test]
    fn folding_the_events_gives_the_order_they_describe_and_a_copy_counts_once() {
        let order = placed();
        let created = Envelope {
            event: Event::OrderCreated(order.created.clone()),
            ..cause()
        };
        let (confirmed, event) = applied(&order, order.confirm(&cause()));
        let recorded = |sequence, envelope: &Envelope| Recorded {
            sequence,
            subject: order.key.subject(&envelope.event),
            envelope: envelope.clone(),
        };
        let events = [
            recorded(1, &created),
            recorded(2, &event),
            recorded(7, &event),
        ];
        let folded = Order::fold(order.key.clone(), &events).unwrap();
        assert_eq!(folded.status, Status::Confirmed);
        assert_eq!(folded.history.len(), confirmed.history.len());
        assert_eq!(folded.last_sequence, 7);
    }

    #[test]
    fn the_hot_events_left_after_created_expired_fold_over_the_archived_order() {
        let order = placed();
        let (confirmed, event) = applied(&order, order.confirm(&cause()));
        let archived = Order::restore(order.key.clone(), order.snapshot());
        let recorded = Recorded {
            sequence: 9,
            subject: order.key.subject(&event.event),
            envelope: event,
        };

        let folded =
            Order::fold_over(Some(archived.clone()), order.key.clone(), &[recorded]).unwrap();

        assert_eq!(folded.status, Status::Confirmed);
        assert_eq!(folded.history, confirmed.history);
        assert_eq!(folded.last_sequence, 9, "the precondition is the hot log's");
        let gone = Order::fold_over(Some(archived), order.key.clone(), &[]).unwrap();
        assert_eq!(
            gone.last_sequence, 0,
            "nothing left in the hot log: create-only"
        );
        assert_eq!(Order::fold_over(None, order.key, &[]), None);
    }

    #[test]
    fn a_snapshot_restores_the_order_it_was_taken_of() {
        let order = placed();
        let (confirmed, _) = applied(&order, order.confirm(&cause()));
        let json = serde_json::to_value(confirmed.snapshot()).unwrap();
        let restored = Order::restore(confirmed.key.clone(), serde_json::from_value(json).unwrap());
        assert_eq!(restored.snapshot(), confirmed.snapshot());
    }

    #[test]
    fn an_event_absorbed_twice_changes_the_order_once() {
        let mut order = placed();
        let Step::Append(confirmed) = order.confirm(&cause()) else {
            panic!("not an append")
        };
        assert!(order.absorb(&confirmed));
        assert!(!order.absorb(&confirmed));
        assert_eq!(order.history.len(), 2);
    }

    #[test]
    fn a_confirmation_absorbed_after_the_cancellation_that_followed_it_keeps_its_place() {
        let order = placed();
        let (confirmed, confirmation) = applied(&order, order.confirm(&cause()));
        let (cancelled, cancellation) = applied(
            &confirmed,
            confirmed.cancel(CancelReason::CustomerRequested, None),
        );
        let mut archived = order.clone();

        assert!(archived.absorb(&cancellation));
        assert!(archived.absorb(&confirmation));
        assert!(!archived.absorb(&confirmation));

        assert_eq!(archived.status, Status::Cancelled);
        assert_eq!(archived.history, cancelled.history);
    }

    #[test]
    fn notification_outcomes_are_kept_once_each_oldest_first_and_survive_a_snapshot() {
        let mut order = placed();
        let order_id = order.created.order_id;
        let outcome = |kind, at_offset: i64| {
            let failed = events::NotificationFailed::builder()
                .notification_id(Uuid::now_v7())
                .order_id(order_id)
                .kind(kind)
                .channel(Channel::Webhook)
                .attempts(5)
                .error("HTTP 500".into())
                .build();
            Envelope {
                time: Utc::now() + chrono::Duration::seconds(at_offset),
                ..Envelope::new("/test", Event::NotificationFailed(failed))
            }
        };
        let later = outcome(NotificationKind::OrderCancelled, 10);
        let earlier = outcome(NotificationKind::OrderConfirmed, 0);

        assert!(order.notified([&later, &earlier, &later]));
        assert!(!order.absorb(&earlier));

        let kinds: Vec<_> = order.notifications.iter().map(|n| n.kind).collect();
        assert_eq!(
            kinds,
            [
                NotificationKind::OrderConfirmed,
                NotificationKind::OrderCancelled
            ]
        );
        assert_eq!(order.notifications[0].outcome, NotifiedOutcome::Failed);
        let json = serde_json::to_value(order.snapshot()).unwrap();
        let restored = Order::restore(order.key.clone(), serde_json::from_value(json).unwrap());
        assert_eq!(restored.notifications, order.notifications);
    }

    #[test]
    fn a_snapshot_archived_before_notifications_were_kept_still_reads() {
        let order = placed();
        let mut json = serde_json::to_value(order.snapshot()).unwrap();
        json.as_object_mut().unwrap().remove("notifications");
        let snapshot: Snapshot = serde_json::from_value(json).unwrap();
        assert!(snapshot.notifications.is_empty());
    }

    #[test]
    fn events_without_a_created_fold_to_nothing() {
        assert_eq!(Order::fold(placed().key, &[]), None);
    }
}
