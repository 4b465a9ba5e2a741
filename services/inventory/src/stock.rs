//! Stock of one SKU and the only ways it changes. Each change an order makes is remembered in
//! the record itself (`pending`) until the order's reservation record says how it ended, so a
//! change retried after a crash — between this write and the reservation write — changes
//! nothing the second time. Pure logic; the saga writes the results with compare-and-set.

use std::collections::BTreeMap;

use events::OrderId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What an order did to this SKU and has not yet settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Pending {
    /// `quantity` was taken from `available` for the order.
    Reserve {
        /// Units.
        quantity: u32,
    },
    /// `quantity` was given back to `available` from the order.
    Release {
        /// Units.
        quantity: u32,
    },
}

/// Stock of one SKU, as stored in the `stock` bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRecord {
    /// Units that can be reserved.
    pub available: u64,
    /// Units held by reservations that have not been released.
    pub reserved: u64,
    /// Changes of orders whose reservation record has not been settled yet.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<OrderId, Pending>,
}

/// The result of trying to reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    /// Taken now; write the record.
    Taken,
    /// Already taken by an earlier attempt for this order; nothing to write.
    AlreadyTaken,
    /// Not enough: this much is available.
    Short {
        /// Units available.
        available: u64,
    },
}

impl StockRecord {
    /// Takes `quantity` for `order` if available and not taken already.
    pub fn reserve(&mut self, order: OrderId, quantity: u32) -> Reserve {
        if matches!(self.pending.get(&order), Some(Pending::Reserve { .. })) {
            return Reserve::AlreadyTaken;
        }
        let wanted = u64::from(quantity);
        if self.available < wanted {
            return Reserve::Short {
                available: self.available,
            };
        }
        self.available -= wanted;
        self.reserved += wanted;
        self.pending.insert(order, Pending::Reserve { quantity });
        Reserve::Taken
    }

    /// Gives back what `order` took here if its reservation was rejected after all; `false` if
    /// there was nothing to give back.
    pub fn undo_reserve(&mut self, order: OrderId) -> bool {
        let Some(Pending::Reserve { quantity }) = self.pending.get(&order).copied() else {
            return false;
        };
        self.return_units(quantity);
        self.pending.remove(&order);
        true
    }

    /// Gives back `quantity` that `order` holds; `false` if already given back.
    pub fn release(&mut self, order: OrderId, quantity: u32) -> bool {
        if matches!(self.pending.get(&order), Some(Pending::Release { .. })) {
            return false;
        }
        self.return_units(quantity);
        self.pending.insert(order, Pending::Release { quantity });
        true
    }

    /// Forgets the pending change of `order` once its reservation record is settled; `false`
    /// if there was none of that kind.
    pub fn settle(&mut self, order: OrderId, release: bool) -> bool {
        let matches = match self.pending.get(&order) {
            Some(Pending::Reserve { .. }) => !release,
            Some(Pending::Release { .. }) => release,
            None => false,
        };
        if matches {
            self.pending.remove(&order);
        }
        matches
    }

    fn return_units(&mut self, quantity: u32) {
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

    #[test]
    fn a_reservation_takes_from_available_into_reserved() {
        let mut s = stock(10);
        assert_eq!(s.reserve(OrderId::new(), 4), Reserve::Taken);
        assert_eq!((s.available, s.reserved), (6, 4));
    }

    #[test]
    fn a_retried_reservation_takes_nothing_more() {
        let (mut s, order) = (stock(10), OrderId::new());
        s.reserve(order, 4);
        assert_eq!(s.reserve(order, 4), Reserve::AlreadyTaken);
        assert_eq!(s.available, 6);
    }

    #[test]
    fn stock_never_goes_negative() {
        let mut s = stock(3);
        assert_eq!(
            s.reserve(OrderId::new(), 4),
            Reserve::Short { available: 3 }
        );
        assert_eq!((s.available, s.reserved), (3, 0));
    }

    #[test]
    fn a_release_applied_twice_returns_the_units_once() {
        let (mut s, order) = (stock(10), OrderId::new());
        s.reserve(order, 4);
        s.settle(order, false);
        assert!(s.release(order, 4));
        assert!(!s.release(order, 4));
        assert_eq!((s.available, s.reserved), (10, 0));
    }

    #[test]
    fn undoing_a_reservation_restores_the_stock_once() {
        let (mut s, order) = (stock(10), OrderId::new());
        s.reserve(order, 4);
        assert!(s.undo_reserve(order));
        assert!(!s.undo_reserve(order));
        assert_eq!((s.available, s.reserved), (10, 0));
    }

    #[test]
    fn settling_forgets_only_the_matching_change() {
        let (mut s, order) = (stock(10), OrderId::new());
        s.reserve(order, 4);
        assert!(!s.settle(order, true));
        assert!(s.settle(order, false));
        assert!(s.pending.is_empty());
    }
}
