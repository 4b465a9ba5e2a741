//! What the stock API reads and writes, as its OpenAPI document describes it: the stock of a
//! SKU and the request that sets it, and an order's reservation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::reservation::{Decision, Reservation, Status};
use crate::stock::StockRecord;

/// Highest stock one SKU may be set to.
pub const MAX_AVAILABLE: u64 = 1_000_000_000;

/// Stock of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StockView {
    /// The SKU.
    pub sku: String,
    /// Units that can be reserved.
    pub available: u64,
    /// Units held by live reservations.
    pub reserved: u64,
    /// Orders whose change to this SKU is not settled yet (normally 0).
    pub unsettled_orders: usize,
}

impl StockView {
    pub(crate) fn new(sku: &str, stock: &StockRecord) -> Self {
        Self {
            sku: sku.to_owned(),
            available: stock.available,
            reserved: stock.reserved,
            unsettled_orders: stock.unsettled(),
        }
    }
}

/// Body of `PUT /v1/stock/{sku}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStock {
    /// Units available for new reservations, 0–1000000000.
    #[schema(schema_with = available_schema)]
    #[serde(deserialize_with = "platform::json::whole_number")]
    pub available: u64,
}

fn available_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    platform::openapi::integer_schema(0, MAX_AVAILABLE)
}

/// A reservation as `GET /v1/reservations/{order_id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReservationView {
    /// The order.
    pub order_id: String,
    /// Where it stands.
    pub status: Status,
    /// What is (or was) held.
    pub lines: Vec<LineView>,
    /// What was short, if rejected for lack of stock.
    pub shortfall: Vec<ShortfallView>,
    /// When it last changed.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A held line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineView {
    /// The SKU.
    pub sku: String,
    /// Units.
    pub quantity: u32,
}

/// A line that could not be covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShortfallView {
    /// The SKU.
    pub sku: String,
    /// Units asked for.
    pub requested: u32,
    /// Units there were.
    pub available: u32,
}

impl From<&Reservation> for ReservationView {
    fn from(reservation: &Reservation) -> Self {
        let (lines, shortfall) = match &reservation.decision {
            Some(Decision::Reserved { lines, .. }) => (lines.as_slice(), &[][..]),
            Some(Decision::Rejected { shortfall, .. }) => (&[][..], shortfall.as_slice()),
            None => (&[][..], &[][..]),
        };
        Self {
            order_id: reservation.order_id.to_string(),
            status: reservation.status(),
            lines: lines
                .iter()
                .map(|l| LineView {
                    sku: l.sku.to_string(),
                    quantity: l.quantity,
                })
                .collect(),
            shortfall: shortfall
                .iter()
                .map(|s| ShortfallView {
                    sku: s.sku.to_string(),
                    requested: s.requested,
                    available: s.available,
                })
                .collect(),
            updated_at: reservation.updated_at,
        }
    }
}
