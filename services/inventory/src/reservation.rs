//! What inventory decided for each order, in the `reservations` bucket: written create-only
//! before the decision is published, so a redelivered `orders.created` re-publishes the
//! recorded decision instead of deciding again — a stock change between attempts can never
//! flip the outcome. A cancellation that overtakes its order leaves a tombstone, so the late
//! `orders.created` is rejected instead of reserving stock nobody will release.

use chrono::{DateTime, Utc};
use events::{
    Envelope, Event, InventoryRejected, InventoryReleased, InventoryReserved, OrderId,
    ReservedLine, Shortfall,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `source` of every event the inventory service produces.
pub const SOURCE: &str = "/orderflow/inventory-service";

/// Where an order's reservation stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// The order was cancelled before inventory saw it: it must never be reserved.
    CancelledFirst,
    /// Every line is held.
    Reserved {
        /// What is held.
        lines: Vec<ReservedLine>,
    },
    /// Nothing is held.
    Rejected {
        /// What was short (empty when rejected because it was cancelled first).
        shortfall: Vec<Shortfall>,
    },
    /// A cancellation is giving the stock back.
    Releasing {
        /// What is being given back.
        lines: Vec<ReservedLine>,
    },
    /// The stock was given back.
    Released {
        /// What was given back.
        lines: Vec<ReservedLine>,
    },
}

/// The identity of a published event, kept so that a re-publish is the same event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    /// Its id.
    pub id: Uuid,
    /// Its time.
    pub at: DateTime<Utc>,
    /// The event that caused it.
    pub cause: Uuid,
}

impl EventRef {
    fn new(cause: &Envelope) -> Self {
        Self {
            id: Uuid::now_v7(),
            at: Utc::now(),
            cause: cause.id,
        }
    }
}

/// An order's reservation, as stored in the `reservations` bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The order.
    pub order_id: OrderId,
    /// Where it stands.
    #[serde(flatten)]
    pub state: State,
    /// The `inventory.reserved` / `inventory.rejected` event announcing the decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<EventRef>,
    /// The `inventory.released` event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<EventRef>,
}

impl Reservation {
    /// A decision taken for `cause` (an `orders.created`).
    pub fn decided(order_id: OrderId, state: State, cause: &Envelope) -> Self {
        Self {
            order_id,
            state,
            decision: Some(EventRef::new(cause)),
            release: None,
        }
    }

    /// The tombstone left by a cancellation that arrived first.
    pub fn cancelled_first(order_id: OrderId) -> Self {
        Self {
            order_id,
            state: State::CancelledFirst,
            decision: None,
            release: None,
        }
    }

    /// The tombstone turned into the rejection of the late `orders.created`.
    pub fn reject_after_cancel(&self, cause: &Envelope) -> Self {
        Self::decided(
            self.order_id,
            State::Rejected {
                shortfall: Vec::new(),
            },
            cause,
        )
    }

    /// A reserved order starting to give its stock back for `cause` (an `orders.cancelled`).
    pub fn releasing(&self, cause: &Envelope) -> Option<Self> {
        let State::Reserved { lines } = &self.state else {
            return None;
        };
        Some(Self {
            state: State::Releasing {
                lines: lines.clone(),
            },
            release: Some(EventRef::new(cause)),
            ..self.clone()
        })
    }

    /// Released, once every line was given back.
    pub fn released(&self) -> Option<Self> {
        let State::Releasing { lines } = &self.state else {
            return None;
        };
        Some(Self {
            state: State::Released {
                lines: lines.clone(),
            },
            ..self.clone()
        })
    }

    /// The decision event, rebuilt exactly as first published.
    pub fn decision_event(&self) -> Option<Envelope> {
        let event = match &self.state {
            State::Reserved { lines } | State::Releasing { lines } | State::Released { lines } => {
                Event::InventoryReserved(InventoryReserved {
                    order_id: self.order_id,
                    lines: lines.clone(),
                })
            }
            State::Rejected { shortfall } => Event::InventoryRejected(InventoryRejected {
                order_id: self.order_id,
                shortfall: shortfall.clone(),
            }),
            State::CancelledFirst => return None,
        };
        Some(envelope(event, self.decision.as_ref()?))
    }

    /// The release event, rebuilt exactly as first published.
    pub fn release_event(&self) -> Option<Envelope> {
        let (State::Releasing { lines } | State::Released { lines }) = &self.state else {
            return None;
        };
        let event = Event::InventoryReleased(InventoryReleased {
            order_id: self.order_id,
            lines: lines.clone(),
        });
        Some(envelope(event, self.release.as_ref()?))
    }
}

fn envelope(event: Event, reference: &EventRef) -> Envelope {
    let mut envelope = Envelope::new(SOURCE, event);
    envelope.id = reference.id;
    envelope.time = reference.at;
    envelope.causation_id = Some(reference.cause);
    envelope
}
