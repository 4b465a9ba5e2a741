//! The order aggregate: its record, its states, and the only transitions allowed —
//! `pending → confirmed | cancelled`, `confirmed → cancelled`. Pure logic, no I/O: the saga
//! applies these decisions with compare-and-set and publishes the event each one produces.
//!
//! Every transition remembers the event that caused it and the id of the event it produced, so
//! a redelivered cause finds its own transition and re-publishes the same event (same id, same
//! `Nats-Msg-Id`) instead of deciding again.

use chrono::{DateTime, Utc};
use events::{
    CancelReason, Currency, CustomerId, Envelope, Event, LineItem, OrderCancelled, OrderConfirmed,
    OrderCreated, OrderId,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// The `source` of every event the order service produces.
pub const SOURCE: &str = "/orderflow/order-service";

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

/// One step of an order's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Transition {
    /// The state entered.
    pub status: Status,
    /// When.
    pub at: DateTime<Utc>,
    /// The event announcing it.
    pub event_id: Uuid,
    /// The event that caused it (absent for creation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause_id: Option<Uuid>,
}

/// An order as stored in the `orders` bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// The order.
    pub order_id: OrderId,
    /// Who placed it.
    pub customer_id: CustomerId,
    /// What was ordered.
    pub items: Vec<LineItem>,
    /// Currency of all prices.
    pub currency: Currency,
    /// Sum of the lines.
    pub total_cents: u64,
    /// Current state.
    pub status: Status,
    /// Why it was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<CancelReason>,
    /// Every state entered, oldest first.
    pub history: Vec<Transition>,
}

/// What applying a cause to an order means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The order changes state: store the record, then publish the event.
    Transition(OrderRecord, Envelope),
    /// This very cause already moved the order: publish the same event again (it may have been
    /// lost to a crash between the store and the publish); the server dedupes it.
    Republish(Envelope),
    /// Nothing to do (the order is already past this point for another reason).
    Ignore,
}

impl OrderRecord {
    /// The record of a newly created order.
    pub fn created(envelope: &Envelope, order: &OrderCreated) -> Self {
        Self {
            order_id: order.order_id,
            customer_id: order.customer_id.clone(),
            items: order.items.clone(),
            currency: order.currency.clone(),
            total_cents: order.total_cents,
            status: Status::Pending,
            reason: None,
            history: vec![Transition {
                status: Status::Pending,
                at: envelope.time,
                event_id: envelope.id,
                cause_id: None,
            }],
        }
    }

    /// When the order was created.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.history.first().map(|t| t.at)
    }

    /// When it last changed.
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.history.last().map(|t| t.at)
    }

    /// Inventory reserved the stock: `pending → confirmed`.
    pub fn confirm(&self, cause: &Envelope) -> Decision {
        match self.status {
            Status::Pending => self.transition(Status::Confirmed, None, cause),
            _ => self.republish_if_caused_by(cause, Status::Confirmed),
        }
    }

    /// Cancel for `reason`: allowed from `pending` and `confirmed` (a confirmed order's stock
    /// is then released by inventory).
    pub fn cancel(&self, reason: CancelReason, cause: &Envelope) -> Decision {
        match self.status {
            Status::Pending | Status::Confirmed => {
                self.transition(Status::Cancelled, Some(reason), cause)
            }
            Status::Cancelled => self.republish_if_caused_by(cause, Status::Cancelled),
        }
    }

    fn transition(
        &self,
        status: Status,
        reason: Option<CancelReason>,
        cause: &Envelope,
    ) -> Decision {
        let mut next = self.clone();
        next.status = status;
        if reason.is_some() {
            next.reason = reason;
        }
        next.history.push(Transition {
            status,
            at: Utc::now(),
            event_id: Uuid::now_v7(),
            cause_id: Some(cause.id),
        });
        match next.announcement(next.history.len() - 1) {
            Some(envelope) => Decision::Transition(next, envelope),
            None => Decision::Ignore,
        }
    }

    fn republish_if_caused_by(&self, cause: &Envelope, status: Status) -> Decision {
        let own = self
            .history
            .iter()
            .position(|t| t.status == status && t.cause_id == Some(cause.id));
        match own.and_then(|index| self.announcement(index)) {
            Some(envelope) => Decision::Republish(envelope),
            None => Decision::Ignore,
        }
    }

    /// The event that announced the transition at `index` of the history, rebuilt exactly
    /// (same id and time) so a re-publish is byte-for-byte the same decision.
    pub fn announcement(&self, index: usize) -> Option<Envelope> {
        let step = self.history.get(index)?;
        let event = match step.status {
            Status::Pending => return None,
            Status::Confirmed => Event::OrderConfirmed(OrderConfirmed {
                order_id: self.order_id,
                customer_id: self.customer_id.clone(),
                total_cents: self.total_cents,
                currency: self.currency.clone(),
            }),
            Status::Cancelled => Event::OrderCancelled(OrderCancelled {
                order_id: self.order_id,
                customer_id: self.customer_id.clone(),
                reason: self
                    .reason
                    .clone()
                    .unwrap_or(CancelReason::CustomerRequested),
            }),
        };
        let mut envelope = Envelope::new(SOURCE, event);
        envelope.id = step.event_id;
        envelope.time = step.at;
        envelope.causation_id = step.cause_id;
        Some(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::{Shortfall, Sku};

    fn created() -> (Envelope, OrderRecord) {
        let order = OrderCreated::new(
            OrderId::new(),
            CustomerId::new("c").unwrap(),
            vec![LineItem {
                sku: Sku::new("A").unwrap(),
                quantity: 1,
                unit_price_cents: 10,
            }],
            Currency::new("EUR").unwrap(),
        )
        .unwrap();
        let envelope = Envelope::new(SOURCE, Event::OrderCreated(order.clone()));
        let record = OrderRecord::created(&envelope, &order);
        (envelope, record)
    }

    fn cause() -> Envelope {
        created().0
    }

    fn applied(decision: Decision) -> (OrderRecord, Envelope) {
        match decision {
            Decision::Transition(record, envelope) => (record, envelope),
            other => panic!("expected a transition, got {other:?}"),
        }
    }

    #[test]
    fn a_pending_order_is_confirmed_and_announces_it() {
        let (_, order) = created();
        let reserved = cause();
        let (confirmed, event) = applied(order.confirm(&reserved));
        assert_eq!(confirmed.status, Status::Confirmed);
        assert_eq!(event.causation_id, Some(reserved.id));
        assert!(matches!(event.event, Event::OrderConfirmed(_)));
    }

    #[test]
    fn the_same_cause_delivered_again_republishes_the_same_event() {
        let (_, order) = created();
        let reserved = cause();
        let (confirmed, first) = applied(order.confirm(&reserved));
        assert_eq!(confirmed.confirm(&reserved), Decision::Republish(first));
    }

    #[test]
    fn a_cancelled_order_is_not_confirmed_by_a_late_reservation() {
        let (_, order) = created();
        let (cancelled, _) = applied(order.cancel(CancelReason::CustomerRequested, &cause()));
        assert_eq!(cancelled.confirm(&cause()), Decision::Ignore);
    }

    #[test]
    fn a_confirmed_order_can_be_cancelled_by_the_customer() {
        let (_, order) = created();
        let (confirmed, _) = applied(order.confirm(&cause()));
        let (cancelled, event) =
            applied(confirmed.cancel(CancelReason::CustomerRequested, &cause()));
        assert_eq!(cancelled.status, Status::Cancelled);
        assert_eq!(cancelled.history.len(), 3);
        assert!(matches!(event.event, Event::OrderCancelled(_)));
    }

    #[test]
    fn a_second_cancellation_for_another_reason_changes_nothing() {
        let (_, order) = created();
        let (cancelled, _) = applied(order.cancel(CancelReason::CustomerRequested, &cause()));
        let shortfall = vec![Shortfall {
            sku: Sku::new("A").unwrap(),
            requested: 1,
            available: 0,
        }];
        assert_eq!(
            cancelled.cancel(CancelReason::OutOfStock { shortfall }, &cause()),
            Decision::Ignore
        );
        assert_eq!(cancelled.reason, Some(CancelReason::CustomerRequested));
    }
}
