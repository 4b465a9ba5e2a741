//! Stock of one SKU and the only ways it changes. Pure logic: the ledger applies a batch of
//! these to a record and writes it with one compare-and-set.
//!
//! Every unit an order takes or gives back is *marked* in the record with the id of the event
//! that will (or did) record the change: the decision (`inventory.reserved`/`rejected`) for a
//! take, the release (`inventory.released`) for a give-back. A retry finds its mark and changes
//! nothing; once the event is stored, the mark is *settled* against it — dropped if it is the
//! stored event's, undone if it belongs to an attempt whose event lost (a duplicate take of a
//! replayed order, say). Settling rides along in the next write of the record.

use std::collections::BTreeMap;

use events::OrderId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Units an order took or gave back, under the id of the event that records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Units.
    pub quantity: u32,
    /// The event that records the change (a decision, or a release).
    pub event: Uuid,
    /// When the mark was made (Unix seconds), so old ones can be reconciled.
    pub at: i64,
}

/// Stock of one SKU, as stored in the `stock` bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRecord {
    /// Units that can be reserved.
    pub available: u64,
    /// Units held by reservations that have not been released.
    pub reserved: u64,
    /// Takes whose decision is not settled yet, by order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub taking: BTreeMap<OrderId, Mark>,
    /// Give-backs whose release is not settled yet, by order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub returning: BTreeMap<OrderId, Mark>,
}

/// One change to a SKU's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockOp {
    /// Take `quantity` for `order` under decision `event`.
    Take {
        /// The order.
        order: OrderId,
        /// Units.
        quantity: u32,
        /// The decision event that will record the take.
        event: Uuid,
    },
    /// The decision of `order` is stored with id `decision`: settle its take (`keep`: it was
    /// reserved; else rejected, and the units go back).
    SettleTake {
        /// The order.
        order: OrderId,
        /// The stored decision's event id.
        decision: Uuid,
        /// Whether the decision reserved the units.
        keep: bool,
    },
    /// Give back `quantity` that `order` holds, under release `event`.
    Return {
        /// The order.
        order: OrderId,
        /// Units.
        quantity: u32,
        /// The release event that will record the give-back.
        event: Uuid,
    },
    /// The release of `order` is stored with id `release`: settle its give-back.
    SettleReturn {
        /// The order.
        order: OrderId,
        /// The stored release's event id.
        release: Uuid,
    },
    /// Set the units available for new reservations (an operator's stock count).
    SetAvailable(u64),
}

/// What an op did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The units moved now, under the op's event.
    Moved,
    /// An earlier attempt for this order moved them already, under this event.
    AlreadyMoved(Uuid),
    /// Not enough: this much is available.
    Short {
        /// Units available.
        available: u64,
    },
    /// A mark was settled, or there was nothing to settle.
    Settled,
    /// The available units were set.
    Set,
}

impl StockRecord {
    /// Applies `op` at time `now` (Unix seconds); returns what it did and whether the record
    /// changed.
    pub fn apply(&mut self, op: StockOp, now: i64) -> (Applied, bool) {
        match op {
            StockOp::Take {
                order,
                quantity,
                event,
            } => {
                if let Some(mark) = self.taking.get(&order) {
                    return (Applied::AlreadyMoved(mark.event), false);
                }
                let wanted = u64::from(quantity);
                if self.available < wanted {
                    return (
                        Applied::Short {
                            available: self.available,
                        },
                        false,
                    );
                }
                self.available -= wanted;
                self.reserved += wanted;
                self.taking.insert(
                    order,
                    Mark {
                        quantity,
                        event,
                        at: now,
                    },
                );
                (Applied::Moved, true)
            }
            StockOp::SettleTake {
                order,
                decision,
                keep,
            } => {
                let Some(mark) = self.taking.remove(&order) else {
                    return (Applied::Settled, false);
                };
                // A take under another event than the stored decision lost: undo it.
                if !keep || mark.event != decision {
                    self.give_back(mark.quantity);
                }
                (Applied::Settled, true)
            }
            StockOp::Return {
                order,
                quantity,
                event,
            } => {
                if let Some(mark) = self.returning.get(&order) {
                    return (Applied::AlreadyMoved(mark.event), false);
                }
                self.give_back(quantity);
                self.returning.insert(
                    order,
                    Mark {
                        quantity,
                        event,
                        at: now,
                    },
                );
                (Applied::Moved, true)
            }
            StockOp::SettleReturn { order, release } => {
                let Some(mark) = self.returning.remove(&order) else {
                    return (Applied::Settled, false);
                };
                // A give-back under another event than the stored release lost: take it again.
                if mark.event != release {
                    let units = u64::from(mark.quantity);
                    self.available = self.available.saturating_sub(units);
                    self.reserved += units;
                }
                (Applied::Settled, true)
            }
            StockOp::SetAvailable(available) => {
                let changed = self.available != available;
                self.available = available;
                (Applied::Set, changed)
            }
        }
    }

    /// Orders with a mark older than `before` (Unix seconds): their events should be stored
    /// by now, and the marks settled.
    pub fn marked_before(&self, before: i64) -> impl Iterator<Item = OrderId> + '_ {
        self.taking
            .iter()
            .chain(&self.returning)
            .filter(move |(_, mark)| mark.at < before)
            .map(|(order, _)| *order)
    }

    /// How many orders have a change here that is not settled yet.
    pub fn unsettled(&self) -> usize {
        self.taking.len() + self.returning.len()
    }

    /// Moves `quantity` from available to reserved, as a take does (the caller checked it is
    /// available).
    pub(crate) fn take_back(&mut self, quantity: u32) {
        let units = u64::from(quantity);
        self.available = self.available.saturating_sub(units);
        self.reserved += units;
    }

    pub(crate) fn give_back(&mut self, quantity: u32) {
        let units = u64::from(quantity);
        self.available += units;
        self.reserved = self.reserved.saturating_sub(units);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock(available: u64) -> StockRecord {
        StockRecord {
            available,
            ..StockRecord::default()
        }
    }

    fn take(order: OrderId, quantity: u32, event: Uuid) -> StockOp {
        StockOp::Take {
            order,
            quantity,
            event,
        }
    }

    #[test]
    fn a_take_moves_units_from_available_to_reserved() {
        let mut s = stock(10);
        assert_eq!(
            s.apply(take(OrderId::new(), 4, Uuid::now_v7()), 0),
            (Applied::Moved, true)
        );
        assert_eq!((s.available, s.reserved), (6, 4));
    }

    #[test]
    fn a_retried_take_finds_the_first_one_and_moves_nothing() {
        let (mut s, order, first) = (stock(10), OrderId::new(), Uuid::now_v7());
        s.apply(take(order, 4, first), 0);
        assert_eq!(
            s.apply(take(order, 4, Uuid::now_v7()), 0),
            (Applied::AlreadyMoved(first), false)
        );
        assert_eq!(s.available, 6);
    }

    #[test]
    fn stock_never_goes_negative() {
        let mut s = stock(3);
        assert_eq!(
            s.apply(take(OrderId::new(), 4, Uuid::now_v7()), 0),
            (Applied::Short { available: 3 }, false)
        );
        assert_eq!((s.available, s.reserved), (3, 0));
    }

    #[test]
    fn settling_a_take_against_its_reservation_keeps_the_units() {
        let (mut s, order, decision) = (stock(10), OrderId::new(), Uuid::now_v7());
        s.apply(take(order, 4, decision), 0);
        s.apply(
            StockOp::SettleTake {
                order,
                decision,
                keep: true,
            },
            0,
        );
        assert_eq!((s.available, s.reserved, s.unsettled()), (6, 4, 0));
    }

    #[test]
    fn settling_a_take_against_a_rejection_gives_the_units_back() {
        let (mut s, order, decision) = (stock(10), OrderId::new(), Uuid::now_v7());
        s.apply(take(order, 4, decision), 0);
        s.apply(
            StockOp::SettleTake {
                order,
                decision,
                keep: false,
            },
            0,
        );
        assert_eq!((s.available, s.reserved, s.unsettled()), (10, 0, 0));
    }

    #[test]
    fn a_take_under_another_event_than_the_stored_decision_is_undone() {
        // A replayed order taken again after its first take was settled: the stored decision
        // is the first attempt's, so this take lost.
        let (mut s, order) = (stock(10), OrderId::new());
        s.apply(take(order, 4, Uuid::now_v7()), 0);
        s.apply(
            StockOp::SettleTake {
                order,
                decision: Uuid::now_v7(),
                keep: true,
            },
            0,
        );
        assert_eq!((s.available, s.reserved), (10, 0));
    }

    #[test]
    fn a_give_back_applied_twice_returns_the_units_once() {
        let (mut s, order, release) = (stock(6), OrderId::new(), Uuid::now_v7());
        s.reserved = 4;
        let give_back = StockOp::Return {
            order,
            quantity: 4,
            event: release,
        };
        assert_eq!(s.apply(give_back, 0), (Applied::Moved, true));
        assert_eq!(
            s.apply(give_back, 0),
            (Applied::AlreadyMoved(release), false)
        );
        s.apply(StockOp::SettleReturn { order, release }, 0);
        assert_eq!((s.available, s.reserved, s.unsettled()), (10, 0, 0));
    }

    #[test]
    fn settling_twice_changes_nothing_the_second_time() {
        let (mut s, order, decision) = (stock(10), OrderId::new(), Uuid::now_v7());
        s.apply(take(order, 4, decision), 0);
        let settle = StockOp::SettleTake {
            order,
            decision,
            keep: false,
        };
        assert!(s.apply(settle, 0).1);
        assert!(!s.apply(settle, 0).1);
        assert_eq!(s.available, 10);
    }

    #[test]
    fn old_marks_are_listed_for_reconciliation() {
        let (mut s, old, new) = (stock(10), OrderId::new(), OrderId::new());
        s.apply(take(old, 1, Uuid::now_v7()), 100);
        s.apply(take(new, 1, Uuid::now_v7()), 200);
        assert_eq!(s.marked_before(150).collect::<Vec<_>>(), [old]);
    }
}
