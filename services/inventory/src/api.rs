//! The stock API: read stock, set what is available (admin), and look up an order's
//! reservation. Every error is problem JSON.

use axum::Router;
use axum::extract::State as AxumState;
use axum::middleware;
use axum::routing::get;
use bus::Secret;
use events::{OrderId, Sku};
use platform::problem::{ApiJson, ApiPath, FieldError, Problem};
use platform::service::Started;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::ledger::LedgerError;
use crate::reservation::ReservationView;
use crate::stock::StockRecord;
use crate::store::Store;

/// Highest stock one SKU may be set to.
pub const MAX_AVAILABLE: u64 = 1_000_000_000;

type Stores = Store;

impl From<LedgerError> for Problem {
    fn from(error: LedgerError) -> Self {
        tracing::warn!(error = %error, "stock unavailable");
        Problem::unavailable(1)
    }
}

/// The API routes; `PUT /v1/stock/{sku}` needs the admin token when one is configured.
pub fn routes(stores: Started<Stores>, admin_token: Option<Secret>) -> Router {
    let admin = Router::new()
        .route("/v1/stock/{sku}", axum::routing::put(set_stock))
        .route_layer(middleware::from_fn_with_state(
            admin_token,
            platform::admin::require_token,
        ));
    Router::new()
        .route("/v1/stock", get(list_stock))
        .route("/v1/stock/{sku}", get(get_stock))
        .route("/v1/reservations/{order_id}", get(get_reservation))
        .merge(admin)
        .with_state(stores)
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow inventory-service",
        description = "Stock per SKU and reservations per order."
    ),
    paths(list_stock, get_stock, set_stock, get_reservation),
    components(schemas(ReservationView))
)]
pub struct ApiDoc;

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

fn parse_sku(raw: String) -> Result<Sku, Problem> {
    Sku::new(raw).map_err(|e| Problem::validation(vec![FieldError::new("sku", e.to_string())]))
}

/// List the stock of every SKU.
#[utoipa::path(get, path = "/v1/stock", tag = "stock", responses((status = 200, description = "Every SKU", body = Vec<StockView>)))]
async fn list_stock(
    AxumState(stores): AxumState<Started<Stores>>,
) -> Result<axum::Json<Vec<StockView>>, Problem> {
    let stores = stores.get()?;
    let keys = stores.ledger().stock().keys().await.map_err(|e| {
        tracing::warn!(error = %e, "cannot list stock keys");
        Problem::unavailable(1)
    })?;
    let mut views = Vec::new();
    for key in keys {
        if let Some(stock) = stores.ledger().stock().get(&key).await? {
            views.push(StockView::new(&key, &stock.value));
        }
    }
    views.sort_by(|a, b| a.sku.cmp(&b.sku));
    Ok(axum::Json(views))
}

/// Read the stock of one SKU.
#[utoipa::path(
    get,
    path = "/v1/stock/{sku}",
    tag = "stock",
    params(platform::openapi::SkuPath),
    responses(
        (status = 200, description = "Its stock", body = StockView),
        (status = 404, description = "Never stocked"),
        (status = 422, description = "Not a valid SKU"),
    )
)]
async fn get_stock(
    AxumState(stores): AxumState<Started<Stores>>,
    ApiPath(sku): ApiPath<String>,
) -> Result<axum::Json<StockView>, Problem> {
    let sku = parse_sku(sku)?;
    let stock = stores.get()?.ledger().stock().get(sku.as_str()).await?;
    stock
        .map(|s| axum::Json(StockView::new(sku.as_str(), &s.value)))
        .ok_or_else(|| Problem::not_found(format!("no stock for {sku}")))
}

/// Set the units available for new reservations (admin).
///
/// Units held by reservations are not touched.
#[utoipa::path(
    put,
    path = "/v1/stock/{sku}",
    tag = "stock",
    params(platform::openapi::SkuPath),
    request_body = SetStock,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new stock", body = StockView),
        (status = 401, description = "No admin token"),
        (status = 403, description = "Wrong admin token"),
        (status = 422, description = "Invalid SKU or amount"),
    )
)]
#[tracing::instrument(name = "set stock", skip_all, fields(sku = %sku))]
async fn set_stock(
    AxumState(stores): AxumState<Started<Stores>>,
    ApiPath(sku): ApiPath<String>,
    ApiJson(body): ApiJson<SetStock>,
) -> Result<axum::Json<StockView>, Problem> {
    let sku = parse_sku(sku)?;
    if body.available > MAX_AVAILABLE {
        return Err(Problem::validation(vec![FieldError::new(
            "available",
            format!("must be at most {MAX_AVAILABLE}"),
        )]));
    }
    let stock = stores.get()?.set_available(&sku, body.available).await?;
    tracing::info!(available = body.available, "stock set");
    Ok(axum::Json(StockView::new(sku.as_str(), &stock)))
}

/// Read the reservation of an order.
#[utoipa::path(
    get,
    path = "/v1/reservations/{order_id}",
    tag = "reservations",
    params(("order_id" = uuid::Uuid, Path, description = "The order id")),
    responses(
        (status = 200, description = "The reservation", body = ReservationView),
        (status = 404, description = "Inventory has not seen this order"),
    )
)]
async fn get_reservation(
    AxumState(stores): AxumState<Started<Stores>>,
    ApiPath(order_id): ApiPath<OrderId>,
) -> Result<axum::Json<ReservationView>, Problem> {
    let reservation = stores.get()?.find(order_id).await.map_err(|e| {
        tracing::warn!(error = %e, "reservations unavailable");
        Problem::unavailable(1)
    })?;
    reservation
        .map(|r| axum::Json(r.view()))
        .ok_or_else(|| Problem::not_found(format!("no reservation for {order_id}")))
}
