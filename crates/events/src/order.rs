//! Events the order service publishes: an order was created, confirmed or cancelled.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::id::{Currency, CustomerId, OrderId, Sku};
use crate::inventory::{ReservedLine, Shortfall};

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LineItem {
    /// What is ordered.
    pub sku: Sku,
    /// How many units.
    pub quantity: u32,
    /// Price of one unit in the minor unit of the order's currency.
    pub unit_price_cents: u64,
}

/// `orders.created` version 1, as the first producers wrote it. Kept so old messages and
/// replays decode forever; upcast to [`OrderCreated`] on read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCreatedV1 {
    /// The new order.
    pub order_id: OrderId,
    /// Who placed it.
    pub customer_id: CustomerId,
    /// What was ordered.
    pub items: Vec<LineItem>,
    /// Currency of every price in the order.
    pub currency: Currency,
}

/// `orders.created` (current: version 2): a customer placed an order. Version 2 adds
/// `total_cents`, so consumers need not recompute it and every consumer agrees on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct OrderCreated {
    /// The new order.
    pub order_id: OrderId,
    /// Who placed it.
    pub customer_id: CustomerId,
    /// What was ordered.
    pub items: Vec<LineItem>,
    /// Currency of every price in the order.
    pub currency: Currency,
    /// Sum of `quantity × unit_price_cents` over all lines.
    pub total_cents: u64,
    /// The request's `Idempotency-Key`, hashed (sha256, hex; per customer when customers are
    /// authenticated), when it had one: the archive answers a retry with it long after the
    /// key's claim has expired. Optional: absent without a key, and in events of earlier
    /// producers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[bon::bon]
impl OrderCreated {
    /// Builds the current version, computing the total; `None` if the total overflows `u64`.
    /// `OrderCreated::builder()`: a field added later with a default changes no producer.
    #[builder]
    pub fn new(
        order_id: OrderId,
        customer_id: CustomerId,
        items: Vec<LineItem>,
        currency: Currency,
        idempotency_key: Option<String>,
    ) -> Option<Self> {
        let total_cents = total_cents(&items)?;
        Some(Self {
            order_id,
            customer_id,
            items,
            currency,
            total_cents,
            idempotency_key,
        })
    }
}

/// Sum of the lines' `quantity × unit_price_cents`; `None` on overflow.
pub fn total_cents(items: &[LineItem]) -> Option<u64> {
    items.iter().try_fold(0u64, |sum, line| {
        line.unit_price_cents
            .checked_mul(u64::from(line.quantity))
            .and_then(|line_total| sum.checked_add(line_total))
    })
}

impl TryFrom<OrderCreatedV1> for OrderCreated {
    type Error = &'static str;

    /// The v1 → v2 upcast: the total is derived from the lines v1 already carried.
    fn try_from(v1: OrderCreatedV1) -> Result<Self, Self::Error> {
        Self::builder()
            .order_id(v1.order_id)
            .customer_id(v1.customer_id)
            .items(v1.items)
            .currency(v1.currency)
            .build()
            .ok_or("order total overflows u64")
    }
}

/// `orders.confirmed`: stock is reserved and the order is confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bon::Builder)]
#[non_exhaustive]
pub struct OrderConfirmed {
    /// The confirmed order.
    pub order_id: OrderId,
    /// Who placed it (the notification recipient).
    pub customer_id: CustomerId,
    /// Order total in minor units.
    pub total_cents: u64,
    /// Currency of the total.
    pub currency: Currency,
}

/// `orders.cancelled`: the order will not be fulfilled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bon::Builder)]
#[non_exhaustive]
pub struct OrderCancelled {
    /// The cancelled order.
    pub order_id: OrderId,
    /// Who placed it (the notification recipient).
    pub customer_id: CustomerId,
    /// Why it was cancelled.
    pub reason: CancelReason,
    /// What inventory holds for the order when a *confirmed* order is cancelled (empty for a
    /// pending one): inventory gives it back even once its own record of the reservation has
    /// left the hot window. Optional: absent in events of earlier producers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[builder(default)]
    pub reserved: Vec<ReservedLine>,
}

/// Why an order was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CancelReason {
    /// Inventory could not reserve every line.
    OutOfStock {
        /// The lines that were short, with what was asked and what was there.
        shortfall: Vec<Shortfall>,
    },
    /// The customer cancelled it.
    CustomerRequested,
}
