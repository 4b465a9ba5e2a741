//! What the order API reads and writes, as its OpenAPI document describes it: the request
//! to create an order, the views of an order and of a page of them, the answer to an accepted
//! change, and the list query. The constraints documented here come from the constants the
//! parse checks ([`crate::new_order`]), so the document cannot say other than the code does.

use chrono::{DateTime, Utc};
use events::{CancelReason, CustomerId, OrderId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::new_order::{
    CURRENCIES, Flaw, MAX_LINES, MAX_QUANTITY, MAX_UNIT_PRICE_CENTS, NewOrder, RequestedLine,
};
use crate::order::{Order, Status};

/// Largest page of a customer's orders.
pub const MAX_PAGE: usize = 100;

/// A new order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    /// Who orders: 1–64 of `A-Z a-z 0-9 _ -`. With customer authentication on, the customer
    /// is the token's subject: leave this out, or give that same id.
    #[schema(schema_with = platform::openapi::token_schema, required = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// 1–100 lines, each SKU on one line only.
    #[schema(schema_with = lines_schema)]
    pub items: Vec<OrderLine>,
    /// ISO 4217 code, one of the supported currencies.
    #[schema(schema_with = currency_schema)]
    pub currency: String,
}

/// One line of a new order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    /// 1–64 of `A-Z a-z 0-9 _ -`.
    #[schema(schema_with = platform::openapi::token_schema)]
    pub sku: String,
    /// 1–1000.
    #[schema(schema_with = quantity_schema)]
    #[serde(deserialize_with = "platform::json::whole_number")]
    pub quantity: u32,
    /// Price of one unit in minor units, 1–100000000.
    #[schema(schema_with = unit_price_schema)]
    #[serde(deserialize_with = "platform::json::whole_number")]
    pub unit_price_cents: u64,
}

impl CreateOrder {
    /// The new order this request asks for, or every flaw in it.
    pub(crate) fn parse(&self) -> Result<NewOrder, Vec<Flaw>> {
        let lines: Vec<RequestedLine<'_>> = self
            .items
            .iter()
            .map(|line| RequestedLine {
                sku: &line.sku,
                quantity: line.quantity,
                unit_price_cents: line.unit_price_cents,
            })
            .collect();
        NewOrder::parse(self.customer_id.as_deref(), &lines, &self.currency)
    }
}

// The documented constraints, from the constants `NewOrder::parse` and the handlers check.
fn lines_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    platform::openapi::list_schema("OrderLine", MAX_LINES)
}
fn currency_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    platform::openapi::enum_schema(CURRENCIES)
}
fn quantity_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    platform::openapi::integer_schema(1, MAX_QUANTITY.into())
}
fn unit_price_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    platform::openapi::integer_schema(1, MAX_UNIT_PRICE_CENTS)
}
fn page_size_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    platform::openapi::integer_schema(1, MAX_PAGE as u64)
}

/// The answer to an accepted create or cancel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The order.
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    /// Its state now.
    pub status: Status,
    /// Where to follow it.
    pub href: String,
}

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    /// The order.
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    /// Who placed it.
    #[schema(value_type = String)]
    pub customer_id: CustomerId,
    /// Its state.
    pub status: Status,
    /// The lines.
    pub items: Vec<OrderLine>,
    /// Currency of all prices.
    pub currency: String,
    /// Sum of the lines, in minor units.
    pub total_cents: u64,
    /// Why it was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub reason: Option<CancelReason>,
    /// When it was accepted.
    pub created_at: Option<DateTime<Utc>>,
    /// When it last changed.
    pub updated_at: Option<DateTime<Utc>>,
    /// Every state it entered.
    pub history: Vec<crate::order::Transition>,
    /// What the customer was told about it, oldest first, and whether it reached them
    /// (`GET /v1/orders/{order_id}` only; absent from listings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Vec<crate::order::Notified>>,
}

impl From<Order> for OrderView {
    fn from(record: Order) -> Self {
        Self {
            created_at: record.created_at(),
            updated_at: record.updated_at(),
            order_id: record.created.order_id,
            customer_id: record.created.customer_id,
            status: record.status,
            items: record
                .created
                .items
                .into_iter()
                .map(|l| OrderLine {
                    sku: l.sku.to_string(),
                    quantity: l.quantity,
                    unit_price_cents: l.unit_price_cents,
                })
                .collect(),
            currency: record.created.currency.to_string(),
            total_cents: record.created.total_cents,
            reason: record.reason,
            history: record.history,
            notifications: None,
        }
    }
}

/// A page of a customer's orders.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    /// Newest first.
    pub orders: Vec<OrderView>,
    /// Pass as `before` for the next page; absent on the last page.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub next_before: Option<OrderId>,
}

/// Query of `GET /v1/orders`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Whose orders (with customer authentication on: the token's subject).
    pub customer_id: Option<String>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<usize>,
    /// Only orders older than this order id (the previous page's `next_before`).
    pub before: Option<String>,
}

impl IntoParams for ListQuery {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use platform::openapi::{order_id_schema, parameter, token_schema};
        use utoipa::openapi::path::ParameterIn::Query;
        vec![
            parameter("customer_id", Query, true, "Whose orders", token_schema()),
            parameter(
                "limit",
                Query,
                false,
                "Page size (default 20)",
                page_size_schema(),
            ),
            parameter(
                "before",
                Query,
                false,
                "Only orders older than this order id (the previous page's `next_before`)",
                order_id_schema(),
            ),
        ]
    }
}
