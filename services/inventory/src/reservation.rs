//! What inventory decided for an order, as its events say: `inventory.<p>.<customer>.<order>.`
//! `reserved` or `rejected` (at most one of them: appended create-only, so a redelivered
//! `orders.created` finds the decision and never decides again — a stock change between
//! attempts cannot flip it), then at most one `released`. A cancellation that overtakes its
//! order appends the rejection itself (with no shortfall), so the late `orders.created` finds
//! the order decided and reserves nothing. Pure logic, no I/O.

use bus::Recorded;
use chrono::{DateTime, Utc};
use events::{
    Envelope, Event, InventoryRejected, InventoryReleased, InventoryReserved, OrderId,
    ReservedLine, Shortfall,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// The `source` of every event the inventory service produces.
pub const SOURCE: &str = events::ServiceId::Inventory.source();

/// The stored decision on an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every line is held, under the decision event `event`.
    Reserved {
        /// The `inventory.reserved` event (the id its stock marks carry).
        event: Uuid,
        /// What is held.
        lines: Vec<ReservedLine>,
    },
    /// Nothing is held.
    Rejected {
        /// The `inventory.rejected` event.
        event: Uuid,
        /// What was short (empty when the order was cancelled before it was decided).
        shortfall: Vec<Shortfall>,
    },
}

impl Decision {
    /// The decision event's id.
    pub fn event(&self) -> Uuid {
        match self {
            Self::Reserved { event, .. } | Self::Rejected { event, .. } => *event,
        }
    }

    /// Whether it holds the units it took.
    pub fn keeps(&self) -> bool {
        matches!(self, Self::Reserved { .. })
    }
}

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Inventory has not decided yet.
    Undecided,
    /// Every line is held.
    Reserved,
    /// Nothing is held (short, or cancelled before it was decided).
    Rejected,
    /// What was held was given back.
    Released,
}

/// An order's reservation, folded from its inventory events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The order.
    pub order_id: OrderId,
    /// The decision, once there is one.
    pub decision: Option<Decision>,
    /// The release event, once the stock was given back.
    pub released: Option<Uuid>,
    /// When it last changed.
    pub updated_at: Option<DateTime<Utc>>,
    /// The sequence of its last event: the precondition of the next one (0: none yet).
    pub last_sequence: u64,
}

impl Reservation {
    /// Folds an order's inventory events, oldest first.
    pub fn fold(order_id: OrderId, events: &[Recorded]) -> Self {
        let mut reservation = Self {
            order_id,
            decision: None,
            released: None,
            updated_at: None,
            last_sequence: 0,
        };
        for recorded in events {
            reservation.last_sequence = reservation.last_sequence.max(recorded.sequence);
            reservation.updated_at = Some(recorded.envelope.time);
            let id = recorded.envelope.id;
            match &recorded.envelope.event {
                Event::InventoryReserved(e) if reservation.decision.is_none() => {
                    reservation.decision = Some(Decision::Reserved {
                        event: id,
                        lines: e.lines.clone(),
                    });
                }
                Event::InventoryRejected(e) if reservation.decision.is_none() => {
                    reservation.decision = Some(Decision::Rejected {
                        event: id,
                        shortfall: e.shortfall.clone(),
                    });
                }
                Event::InventoryReleased(_) if reservation.released.is_none() => {
                    reservation.released = Some(id);
                }
                _ => {}
            }
        }
        reservation
    }

    /// Where it stands.
    pub fn status(&self) -> Status {
        match (&self.decision, self.released) {
            (None, _) => Status::Undecided,
            (Some(Decision::Reserved { .. }), None) => Status::Reserved,
            (Some(Decision::Reserved { .. }), Some(_)) => Status::Released,
            (Some(Decision::Rejected { .. }), _) => Status::Rejected,
        }
    }
}

/// The `inventory.reserved` event of a decision whose stock marks carry `id`.
pub fn reserved(
    order_id: OrderId,
    lines: Vec<ReservedLine>,
    id: Uuid,
    cause: &Envelope,
) -> Envelope {
    with_id(
        Event::InventoryReserved(
            InventoryReserved::builder()
                .order_id(order_id)
                .lines(lines)
                .build(),
        ),
        id,
        cause,
    )
}

/// The `inventory.rejected` event of a decision (stock marks of lines taken before the short
/// one carry `id`).
pub fn rejected(
    order_id: OrderId,
    shortfall: Vec<Shortfall>,
    id: Uuid,
    cause: &Envelope,
) -> Envelope {
    with_id(
        Event::InventoryRejected(
            InventoryRejected::builder()
                .order_id(order_id)
                .shortfall(shortfall)
                .build(),
        ),
        id,
        cause,
    )
}

/// The `inventory.released` event whose give-back marks carry `id`.
pub fn released(
    order_id: OrderId,
    lines: Vec<ReservedLine>,
    id: Uuid,
    cause: &Envelope,
) -> Envelope {
    with_id(
        Event::InventoryReleased(
            InventoryReleased::builder()
                .order_id(order_id)
                .lines(lines)
                .build(),
        ),
        id,
        cause,
    )
}

fn with_id(event: Event, id: Uuid, cause: &Envelope) -> Envelope {
    let mut envelope = Envelope::new(SOURCE, event).caused_by(cause);
    envelope.id = id;
    envelope
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::{CustomerId, Partitions, Sku};

    fn cause(order_id: OrderId) -> Envelope {
        Envelope::new(
            "/test",
            Event::InventoryReleased(
                InventoryReleased::builder()
                    .order_id(order_id)
                    .lines(vec![])
                    .build(),
            ),
        )
    }

    fn recorded(sequence: u64, envelope: Envelope) -> Recorded {
        let key = events::OrderKey::new(
            Partitions::ONE,
            CustomerId::new("c").unwrap(),
            envelope.event.order_id(),
        );
        Recorded {
            sequence,
            subject: key.subject(&envelope.event),
            envelope,
        }
    }

    fn lines() -> Vec<ReservedLine> {
        vec![ReservedLine {
            sku: Sku::new("A").unwrap(),
            quantity: 2,
        }]
    }

    #[test]
    fn an_order_without_events_is_undecided() {
        let reservation = Reservation::fold(OrderId::new(), &[]);
        assert_eq!(reservation.decision, None);
        assert_eq!(reservation.status(), Status::Undecided);
        assert_eq!(reservation.last_sequence, 0);
    }

    #[test]
    fn a_reserved_then_released_order_holds_nothing() {
        let order = OrderId::new();
        let decision = Uuid::now_v7();
        let events = [
            recorded(3, reserved(order, lines(), decision, &cause(order))),
            recorded(9, released(order, lines(), Uuid::now_v7(), &cause(order))),
        ];
        let reservation = Reservation::fold(order, &events);
        assert_eq!(
            reservation.decision.as_ref().map(Decision::event),
            Some(decision)
        );
        assert_eq!(reservation.status(), Status::Released);
        assert_eq!(reservation.last_sequence, 9);
    }

    #[test]
    fn only_the_first_decision_counts() {
        let order = OrderId::new();
        let first = Uuid::now_v7();
        let events = [
            recorded(1, rejected(order, vec![], first, &cause(order))),
            recorded(2, reserved(order, lines(), Uuid::now_v7(), &cause(order))),
        ];
        let reservation = Reservation::fold(order, &events);
        assert_eq!(reservation.decision.map(|d| d.event()), Some(first));
    }
}
