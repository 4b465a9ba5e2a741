//! Events the inventory service publishes: the reserve/reject decision for an order and the
//! release of a reservation.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::id::{OrderId, Sku};

/// A quantity of one SKU held for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReservedLine {
    /// The SKU.
    pub sku: Sku,
    /// Units held.
    pub quantity: u32,
}

/// A line inventory could not cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Shortfall {
    /// The SKU that was short.
    pub sku: Sku,
    /// Units the order asked for.
    pub requested: u32,
    /// Units available when the decision was taken.
    pub available: u32,
}

/// `inventory.reserved`: every line of the order is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bon::Builder)]
#[non_exhaustive]
pub struct InventoryReserved {
    /// The order the stock is held for.
    pub order_id: OrderId,
    /// What is held, per SKU.
    pub lines: Vec<ReservedLine>,
}

/// `inventory.rejected`: the order could not be reserved; nothing is held for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bon::Builder)]
#[non_exhaustive]
pub struct InventoryRejected {
    /// The rejected order.
    pub order_id: OrderId,
    /// The lines that were short (a rejection after a cancel has none).
    pub shortfall: Vec<Shortfall>,
}

/// `inventory.released`: what an order had reserved is available again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bon::Builder)]
#[non_exhaustive]
pub struct InventoryReleased {
    /// The order whose reservation was released.
    pub order_id: OrderId,
    /// What was given back, per SKU.
    pub lines: Vec<ReservedLine>,
}

/// Where an inventory decision's or release's stock changes are in the `stock` bucket: per
/// SKU, the revision of the record that holds the change (written, or read when an earlier
/// attempt had made it). Carried in the [`crate::names::header::STOCK_REVISION`] header as a
/// JSON object, so that a backup can tell, SKU by SKU, whether a copy of the stock record
/// taken at revision *r* holds the change (its revision is at most *r*) or not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StockRevisions(std::collections::BTreeMap<Sku, u64>);

impl StockRevisions {
    /// Notes that the change to `sku` is at `revision` (the highest noted per SKU counts).
    pub fn note(&mut self, sku: &Sku, revision: u64) {
        let at = self.0.entry(sku.clone()).or_default();
        *at = (*at).max(revision);
    }

    /// The revision the change to `sku` is at, if the event changed `sku`.
    pub fn of(&self, sku: &Sku) -> Option<u64> {
        self.0.get(sku).copied()
    }

    /// Each SKU and its revision.
    pub fn iter(&self) -> impl Iterator<Item = (&Sku, u64)> {
        self.0.iter().map(|(sku, revision)| (sku, *revision))
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_default()
    }

    /// Reads a header value.
    pub fn from_header(value: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_revisions_keep_the_highest_per_sku_and_read_back_from_the_header() {
        let (book, mug) = (Sku::new("BOOK").unwrap(), Sku::new("MUG").unwrap());
        let mut revisions = StockRevisions::default();
        revisions.note(&book, 7);
        revisions.note(&book, 5);
        revisions.note(&mug, 9);
        assert_eq!(
            (revisions.of(&book), revisions.of(&mug)),
            (Some(7), Some(9))
        );
        assert_eq!(revisions.to_header(), r#"{"BOOK":7,"MUG":9}"#);
        assert_eq!(
            StockRevisions::from_header(&revisions.to_header()).unwrap(),
            revisions
        );
        assert!(StockRevisions::from_header("7").is_err());
    }
}
