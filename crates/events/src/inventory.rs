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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryReserved {
    /// The order the stock is held for.
    pub order_id: OrderId,
    /// What is held, per SKU.
    pub lines: Vec<ReservedLine>,
}

/// `inventory.rejected`: the order could not be reserved; nothing is held for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryRejected {
    /// The rejected order.
    pub order_id: OrderId,
    /// The lines that were short (a rejection after a cancel has none).
    pub shortfall: Vec<Shortfall>,
}

/// `inventory.released`: what an order had reserved is available again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryReleased {
    /// The order whose reservation was released.
    pub order_id: OrderId,
    /// What was given back, per SKU.
    pub lines: Vec<ReservedLine>,
}
