//! The stock API: read stock, set what is available (admin), and look up an order's
//! reservation. Every error is problem JSON. What the API reads and writes is in [`views`].

mod views;

use axum::Router;
use axum::extract::State;
use axum::middleware;
use axum::routing::get;
use bus::Secret;
use events::{OrderId, Sku};
use platform::problem::{ApiJson, ApiPath, FieldError, Problem};
use platform::service::Started;
use utoipa::OpenApi;

use crate::ledger::LedgerError;
use crate::store::Store;
pub use views::{MAX_AVAILABLE, StockView};
use views::{ReservationView, SetStock};

impl From<LedgerError> for Problem {
    fn from(error: LedgerError) -> Self {
        tracing::warn!(error = %error, "stock unavailable");
        Problem::unavailable(1)
    }
}

/// The API routes; `PUT /v1/stock/{sku}` needs the admin token when one is configured.
pub fn routes(store: Started<Store>, admin_token: Option<Secret>) -> Router {
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
        .with_state(store)
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

fn parse_sku(raw: String) -> Result<Sku, Problem> {
    Sku::new(raw).map_err(|e| Problem::validation(vec![FieldError::new("sku", e.to_string())]))
}

/// List the stock of every SKU.
#[utoipa::path(get, path = "/v1/stock", tag = "stock", responses((status = 200, description = "Every SKU", body = Vec<StockView>)))]
async fn list_stock(
    State(store): State<Started<Store>>,
) -> Result<axum::Json<Vec<StockView>>, Problem> {
    let store = store.get()?;
    let keys = store.ledger().stock().keys().await.map_err(|e| {
        tracing::warn!(error = %e, "cannot list stock keys");
        Problem::unavailable(1)
    })?;
    let mut views = Vec::new();
    for key in keys {
        if let Some(stock) = store.ledger().stock().get(&key).await? {
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
    State(store): State<Started<Store>>,
    ApiPath(sku): ApiPath<String>,
) -> Result<axum::Json<StockView>, Problem> {
    let sku = parse_sku(sku)?;
    let stock = store.get()?.ledger().stock().get(sku.as_str()).await?;
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
    State(store): State<Started<Store>>,
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
    let stock = store.get()?.set_available(&sku, body.available).await?;
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
    State(store): State<Started<Store>>,
    ApiPath(order_id): ApiPath<OrderId>,
) -> Result<axum::Json<ReservationView>, Problem> {
    let reservation = store.get()?.find(order_id).await.map_err(|e| {
        tracing::warn!(error = %e, "reservations unavailable");
        Problem::unavailable(1)
    })?;
    reservation
        .map(|r| axum::Json(ReservationView::from(&r)))
        .ok_or_else(|| Problem::not_found(format!("no reservation for {order_id}")))
}
