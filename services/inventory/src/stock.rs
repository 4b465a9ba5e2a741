//! Stock of one SKU and the only ways it changes. Pure logic: the saga writes each change in
//! the same atomic batch as the reservation record that explains it, so a change is never
//! stored without its reason (and a retry finds the reason and changes nothing).

use serde::{Deserialize, Serialize};

/// Stock of one SKU, as stored under `stock.<sku>` in the `inventory` bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRecord {
    /// Units that can be reserved.
    pub available: u64,
    /// Units held by reservations that have not been released.
    pub reserved: u64,
}

/// Not enough stock for a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short {
    /// Units available.
    pub available: u64,
}

impl StockRecord {
    /// Moves `quantity` from available to reserved, or reports what is available.
    pub fn take(&mut self, quantity: u32) -> Result<(), Short> {
        let wanted = u64::from(quantity);
        if self.available < wanted {
            return Err(Short {
                available: self.available,
            });
        }
        self.available -= wanted;
        self.reserved += wanted;
        Ok(())
    }

    /// Moves `quantity` a reservation held back to available.
    pub fn give_back(&mut self, quantity: u32) {
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
    fn taking_moves_units_from_available_into_reserved() {
        let mut s = stock(10);
        assert_eq!(s.take(4), Ok(()));
        assert_eq!((s.available, s.reserved), (6, 4));
    }

    #[test]
    fn stock_never_goes_negative() {
        let mut s = stock(3);
        assert_eq!(s.take(4), Err(Short { available: 3 }));
        assert_eq!((s.available, s.reserved), (3, 0));
    }

    #[test]
    fn giving_back_restores_what_was_taken() {
        let mut s = stock(10);
        assert_eq!(s.take(4), Ok(()));
        s.give_back(4);
        assert_eq!((s.available, s.reserved), (10, 0));
    }
}
