//! The order API: create (idempotent), read, list by customer, cancel. Creating and cancelling
//! each append one event to the order's history — the event is the state change — and answer;
//! the saga does the rest. Every error is problem JSON.

use crate::customer_auth::{self, Customers};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use events::{
    CancelReason, Currency, CustomerId, Envelope, Event, LineItem, OrderCreated, OrderId, Sku,
};
use platform::problem::{ApiJson, ApiPath, ApiQuery, FieldError, Problem};
use platform::service::Started;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, OpenApi, ToSchema};

use telemetry::metric;

use crate::order::{Decision, Order, SOURCE, Status};
use crate::store::{Basis, Claim, OrderStoreError, Store, Transitioned};

/// Currencies orders may be placed in.
pub const CURRENCIES: &[&str] = &[
    "EUR", "USD", "GBP", "CHF", "JPY", "SEK", "NOK", "DKK", "PLN", "CZK", "CAD", "AUD",
];
/// Most lines in one order.
pub const MAX_LINES: usize = 100;
/// Most units of one line.
pub const MAX_QUANTITY: u32 = 1_000;
/// Highest unit price, in minor units.
pub const MAX_UNIT_PRICE_CENTS: u64 = 100_000_000;
/// Largest page of a customer's orders.
pub const MAX_PAGE: usize = 100;
/// Longest a create waits for the archive to say whether its `Idempotency-Key` made an order
/// already (only a retry after the key's claim expired needs it).
const ARCHIVE_LOOKUP: std::time::Duration = std::time::Duration::from_millis(250);

/// What the handlers share. The store exists once start-up provisioning is done; until then
/// the API answers 503.
#[derive(Debug, Clone)]
pub struct App {
    pub(crate) store: Started<Store>,
    /// Customer authentication, when on.
    pub(crate) customers: Option<Customers>,
    /// Closed while a store the saga writes is nearly full.
    pub(crate) admission: platform::usage::Admission,
}

impl App {
    fn store(&self) -> Result<&Store, Problem> {
        self.store.get()
    }

    /// The authenticated customer (authentication on), `None` when off; `claimed` is the id
    /// the request names, which must then be the token's.
    async fn caller(
        &self,
        headers: &HeaderMap,
        claimed: Option<&str>,
    ) -> Result<Option<CustomerId>, Problem> {
        customer_auth::customer(self.customers.as_ref(), headers, claimed).await
    }
}

/// Marks the order routes as needing a customer token (authentication on): the `customer`
/// bearer scheme, and `customer_id` no longer required in the body or the query.
pub(crate) fn require_customer_tokens(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    use utoipa::openapi::{RefOr, Required, schema::Schema};
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "customer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A customer's token from the identity provider (RS256 or ES256)",
                ))
                .build(),
        ),
    );
    if let Some(RefOr::T(Schema::Object(create))) = components.schemas.get_mut("CreateOrder") {
        create.required.retain(|field| field != "customer_id");
    }
    for item in doc.paths.paths.values_mut() {
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            operation.security = Some(vec![SecurityRequirement::new(
                "customer",
                Vec::<String>::new(),
            )]);
            for parameter in operation.parameters.iter_mut().flatten() {
                if let RefOr::T(parameter) = parameter
                    && parameter.name == "customer_id"
                {
                    parameter.required = Required::False;
                }
            }
        }
    }
}

impl From<OrderStoreError> for Problem {
    fn from(error: OrderStoreError) -> Self {
        match error {
            OrderStoreError::Append(bus::AppendError::Publish(e)) => e.into(),
            OrderStoreError::Kv(e) => e.into(),
            other => {
                tracing::warn!(error = %other, "order store unavailable");
                Problem::unavailable(1)
            }
        }
    }
}

/// The API routes.
pub fn routes(app: App) -> Router {
    Router::new()
        .route("/v1/orders", post(create_order).get(list_orders))
        .route("/v1/orders/{order_id}", get(get_order))
        .route("/v1/orders/{order_id}/cancel", post(cancel_order))
        .with_state(app)
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow order-service",
        description = "Create, read, list and cancel orders."
    ),
    paths(create_order, get_order, list_orders, cancel_order)
)]
pub struct ApiDoc;

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

// The documented constraints, from the constants `validate` checks against.
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

fn accepted(order_id: OrderId, status: Status, replayed: bool) -> Response {
    let href = format!("/v1/orders/{order_id}");
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(Accepted {
            order_id,
            status,
            href: href.clone(),
        }),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&href) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if replayed {
        response
            .headers_mut()
            .insert("Idempotent-Replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Checks a new order and turns it into the event payload (without its id).
fn validate(request: &CreateOrder) -> Result<(CustomerId, Vec<LineItem>, Currency), Problem> {
    let mut errors = Vec::new();
    let customer = claimed_customer(request.customer_id.as_deref())
        .map_err(|e| errors.push(e))
        .ok();
    let currency = match Currency::new(request.currency.clone()) {
        Ok(c) if CURRENCIES.contains(&c.as_str()) => Some(c),
        _ => {
            errors.push(FieldError::new(
                "currency",
                format!("must be one of {}", CURRENCIES.join(", ")),
            ));
            None
        }
    };
    if request.items.is_empty() || request.items.len() > MAX_LINES {
        errors.push(FieldError::new(
            "items",
            format!("must have 1 to {MAX_LINES} lines"),
        ));
    }
    let mut lines = Vec::with_capacity(request.items.len());
    for (i, line) in request.items.iter().enumerate() {
        let sku = Sku::new(line.sku.clone())
            .map_err(|e| errors.push(FieldError::new(format!("items[{i}].sku"), e.to_string())))
            .ok();
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            errors.push(FieldError::new(
                format!("items[{i}].quantity"),
                format!("must be 1 to {MAX_QUANTITY}"),
            ));
        }
        if !(1..=MAX_UNIT_PRICE_CENTS).contains(&line.unit_price_cents) {
            errors.push(FieldError::new(
                format!("items[{i}].unit_price_cents"),
                format!("must be 1 to {MAX_UNIT_PRICE_CENTS}"),
            ));
        }
        if let Some(sku) = sku {
            if lines.iter().any(|l: &LineItem| l.sku == sku) {
                errors.push(FieldError::new(
                    format!("items[{i}].sku"),
                    "each SKU may appear on one line only",
                ));
            }
            lines.push(LineItem {
                sku,
                quantity: line.quantity,
                unit_price_cents: line.unit_price_cents,
            });
        }
    }
    match (customer, currency) {
        (Some(customer), Some(currency)) if errors.is_empty() => Ok((customer, lines, currency)),
        _ => Err(Problem::validation(errors)),
    }
}

/// The customer a request names (customer authentication off), or the field error.
fn claimed_customer(claimed: Option<&str>) -> Result<CustomerId, FieldError> {
    let claimed = claimed.ok_or_else(|| FieldError::new("customer_id", "is required"))?;
    CustomerId::new(claimed).map_err(|e| FieldError::new("customer_id", e.to_string()))
}

/// The storage key of an `Idempotency-Key` header, or a problem if the header is unusable. With
/// customer authentication on, keys are per customer (`owner`), so one customer's key never
/// answers for another; off, the request's customer id is the caller's say-so, and keys stay
/// global (stored as before, so an upgrade does not forget the keys of in-flight retries).
fn idempotency_key(
    headers: &HeaderMap,
    owner: Option<&CustomerId>,
) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("Idempotency-Key") else {
        return Ok(None);
    };
    // Visible ASCII without spaces, as the document's pattern says.
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-idempotency-key",
                "Invalid Idempotency-Key",
            )
            .with_detail("must be 1 to 255 visible ASCII characters")
        })?;
    let mut digest = Sha256::new();
    if let Some(owner) = owner {
        digest.update(owner.as_str().as_bytes());
        digest.update(b"\n");
    }
    digest.update(key.as_bytes());
    Ok(Some(hex(&digest.finalize())))
}

/// 422: the key made another order (with another request).
fn key_reused(order: OrderId) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
        "Idempotency-Key already used for a different request",
    )
    .with_detail(format!("the key belongs to order {order}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Create an order.
///
/// Accepts the order and starts its saga; follow it at `Location`. With an `Idempotency-Key`,
/// retrying the same request returns the same order, and reusing the key for a different
/// request is refused with 422 (per the IETF Idempotency-Key draft).
#[utoipa::path(
    post,
    path = "/v1/orders",
    tag = "orders",
    request_body = CreateOrder,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$", description = "Makes retries safe: same key and body, same order. 1–255 visible ASCII characters")),
    responses(
        (status = 202, description = "Accepted; the saga runs", body = Accepted, headers(
            ("Location" = String, description = "The order's URL"),
            ("Idempotent-Replayed" = String, description = "`true` when this answers a retry of an earlier request with the same Idempotency-Key"),
        )),
        (status = 400, description = "Malformed JSON or header"),
        (status = 413, description = "Body too large"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "Invalid order, or Idempotency-Key reused for another request"),
        (status = 503, description = "Event bus unavailable, or a store nearly full (`store-full`); nothing was accepted: retry after `Retry-After` with the same Idempotency-Key"),
    )
)]
#[tracing::instrument(name = "create order", skip_all, fields(order_id = tracing::field::Empty))]
async fn create_order(
    State(app): State<App>,
    headers: HeaderMap,
    ApiJson(mut request): ApiJson<CreateOrder>,
) -> Result<Response, Problem> {
    let caller = app.caller(&headers, request.customer_id.as_deref()).await?;
    if let Some(caller) = &caller {
        request.customer_id = Some(caller.to_string());
    }
    let (customer_id, items, currency) = validate(&request)?;
    let store = app.store()?;
    // Nothing is taken that might not be stored, or whose saga might not finish: while a
    // store is nearly full, new orders wait (a retry with the same key is the same order).
    app.admission.check()?;
    let mut order_id = OrderId::new();
    let mut replayed = false;
    let key = idempotency_key(&headers, caller.as_ref())?;
    if let Some(key) = &key {
        let request_hash = hex(&Sha256::digest(
            serde_json::to_vec(&request).unwrap_or_default(),
        ));
        let claim = Claim {
            order_id,
            request_hash,
        };
        // The claim in NATS, and — for a retry that comes after the claim expired — the
        // archive's memory of the key, asked at once and for a bounded time.
        let (claimed, archived) = tokio::join!(
            store.claim(key, &claim),
            tokio::time::timeout(ARCHIVE_LOOKUP, store.archived_by_idempotency_key(key))
        );
        let archived = archived.unwrap_or_else(|_| {
            Err(OrderStoreError::Archive(archive::ArchiveError::Timeout(
                ARCHIVE_LOOKUP,
            )))
        });
        let earlier = match claimed? {
            Some(existing) if existing.request_hash != claim.request_hash => {
                return Err(key_reused(existing.order_id));
            }
            // Another retry of this request, which (after the claim had expired) may have
            // claimed a fresh id before pointing the claim at the order the archive knows:
            // the archive's order is the one.
            Some(existing) => match &archived {
                Ok(Some(made)) => Some(made.key.order),
                _ => Some(existing.order_id),
            },
            None => match archived {
                Ok(Some(made)) => {
                    let same = made.created.customer_id == customer_id
                        && made.created.items == items
                        && made.created.currency == currency;
                    if !same {
                        // Leave no claim for this request behind: the key stays the order's.
                        store.release_claim(key).await?;
                        return Err(key_reused(made.key.order));
                    }
                    // The claim just made points at an order never created: point it at the
                    // one the key made, so later retries find it in NATS again.
                    let earlier = Claim {
                        order_id: made.key.order,
                        ..claim
                    };
                    store.reclaim(key, &earlier).await?;
                    Some(made.key.order)
                }
                Ok(None) => None,
                // A new order rather than none: a retry made during an outage of the
                // archive after its claim expired may make a second order.
                Err(error) => {
                    tracing::warn!(%error, "the archive could not say whether this Idempotency-Key made an order");
                    None
                }
            },
        };
        if let Some(earlier) = earlier {
            order_id = earlier;
            replayed = true;
        }
    }
    tracing::Span::current().record("order_id", tracing::field::display(order_id));
    let mut order = OrderCreated::new(order_id, customer_id, items, currency).ok_or_else(|| {
        Problem::validation(vec![FieldError::new(
            "items",
            "the order total is too large",
        )])
    })?;
    order.idempotency_key = key;
    let key = store.key(order.customer_id.clone(), order_id);
    // A replay answers with the order its first try created, as it is now — read first, as
    // its events may have left the hot log for the archive, where a create-only append would
    // not see them.
    if replayed && let Some(existing) = store.read(&key).await? {
        metrics::counter!(metric::ORDERS_ACCEPTED, "replayed" => "true").increment(1);
        return Ok(accepted(order_id, existing.status, true));
    }
    // Create-only, so a replay whose first try failed before its answer (or is still in
    // flight) finds the order that try created.
    let created = store
        .create(key, &Envelope::new(SOURCE, Event::OrderCreated(order)))
        .await?;
    metrics::counter!(metric::ORDERS_ACCEPTED, "replayed" => replayed.to_string()).increment(1);
    Ok(accepted(order_id, created.status, replayed))
}

/// Read an order.
#[utoipa::path(
    get,
    path = "/v1/orders/{order_id}",
    tag = "orders",
    params(("order_id" = uuid::Uuid, Path, description = "The order id")),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 400, description = "Not an order id"),
        (status = 404, description = "No such order"),
    )
)]
async fn get_order(
    State(app): State<App>,
    headers: HeaderMap,
    ApiPath(order_id): ApiPath<OrderId>,
) -> Result<axum::Json<OrderView>, Problem> {
    let caller = app.caller(&headers, None).await?;
    let store = app.store()?;
    let order = store
        .find(order_id)
        .await?
        .filter(|order| visible_to(order, caller.as_ref()))
        .ok_or_else(|| Problem::not_found(format!("no order {order_id}")))?;
    Ok(axum::Json(view_with_notifications(store, order).await?))
}

/// `order` as one order is shown: with what its customer was told.
pub(crate) async fn view_with_notifications(
    store: &Store,
    order: Order,
) -> Result<OrderView, OrderStoreError> {
    let order = store.notified(order).await?;
    let notifications = order.notifications.clone();
    Ok(OrderView {
        notifications: Some(notifications),
        ..OrderView::from(order)
    })
}

/// Whether `caller` may see `order`: anyone when customer authentication is off; else only its
/// customer — to anyone else another customer's order does not exist (404, not 403).
fn visible_to(order: &Order, caller: Option<&CustomerId>) -> bool {
    caller.is_none_or(|caller| *caller == order.created.customer_id)
}

/// List a customer's orders, newest first.
#[utoipa::path(
    get,
    path = "/v1/orders",
    tag = "orders",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = 400, description = "Bad query"),
        (status = 422, description = "Invalid customer id or limit"),
    )
)]
async fn list_orders(
    State(app): State<App>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<axum::Json<OrderPage>, Problem> {
    let caller = app.caller(&headers, query.customer_id.as_deref()).await?;
    let mut errors = Vec::new();
    let customer = match caller {
        Some(caller) => Some(caller),
        None => claimed_customer(query.customer_id.as_deref())
            .map_err(|e| errors.push(e))
            .ok(),
    };
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_PAGE).contains(&limit) {
        errors.push(FieldError::new("limit", format!("must be 1 to {MAX_PAGE}")));
    }
    let before = match query
        .before
        .as_deref()
        .map(str::parse::<OrderId>)
        .transpose()
    {
        Ok(before) => before,
        Err(_) => {
            errors.push(FieldError::new(
                "before",
                "must be an order id from `next_before`",
            ));
            None
        }
    };
    let Some(customer) = customer.filter(|_| errors.is_empty()) else {
        return Err(Problem::validation(errors));
    };
    let (orders, next_before) = app
        .store()?
        .list_for_customer(&customer, before, limit)
        .await?;
    Ok(axum::Json(OrderPage {
        orders: orders.into_iter().map(OrderView::from).collect(),
        next_before,
    }))
}

/// Cancel an order.
///
/// Cancels a pending or confirmed order at once; inventory then releases whatever was reserved
/// and the customer is notified.
#[utoipa::path(
    post,
    path = "/v1/orders/{order_id}/cancel",
    tag = "orders",
    params(("order_id" = uuid::Uuid, Path, description = "The order id")),
    responses(
        (status = 202, description = "Cancelled; the stock release and the notification follow", body = Accepted, headers(
            ("Location" = String, description = "The order's URL"),
        )),
        (status = 404, description = "No such order"),
        (status = 409, description = "Already cancelled"),
        (status = 503, description = "Event bus unavailable; retry"),
    )
)]
#[tracing::instrument(name = "cancel order", skip_all, fields(order_id = %order_id))]
async fn cancel_order(
    State(app): State<App>,
    headers: HeaderMap,
    ApiPath(order_id): ApiPath<OrderId>,
) -> Result<Response, Problem> {
    let caller = app.caller(&headers, None).await?;
    let store = app.store()?;
    let not_found = || Problem::not_found(format!("no order {order_id}"));
    let order = store
        .find(order_id)
        .await?
        .filter(|order| visible_to(order, caller.as_ref()))
        .ok_or_else(not_found)?;
    let key = order.key.clone();
    let transitioned = store
        .transition(&key, Basis::Known(Box::new(order)), |order| {
            order.cancel(CancelReason::CustomerRequested, None)
        })
        .await?
        .ok_or_else(not_found)?;
    match transitioned {
        Transitioned::Appended(_, order) => Ok(accepted(order_id, order.status, false)),
        Transitioned::Unchanged(Decision::Ignore(why), _) => Err(Problem::new(
            StatusCode::CONFLICT,
            "already-cancelled",
            "Order already cancelled",
        )
        .with_detail(why)),
        Transitioned::Unchanged(_, order) => Ok(accepted(order_id, order.status, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CreateOrder {
        CreateOrder {
            customer_id: Some("c-1".into()),
            items: vec![OrderLine {
                sku: "SKU-1".into(),
                quantity: 1,
                unit_price_cents: 100,
            }],
            currency: "EUR".into(),
        }
    }

    fn fields(problem: Problem) -> Vec<String> {
        problem.errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_valid_order_passes() {
        assert!(validate(&request()).is_ok());
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let mut bad = request();
        bad.customer_id = Some("a.b".into());
        bad.currency = "XXX".into();
        bad.items[0].quantity = 0;
        bad.items[0].unit_price_cents = 0;
        let problem = validate(&bad).unwrap_err();
        assert_eq!(problem.status, 422);
        assert_eq!(
            fields(problem),
            [
                "customer_id",
                "currency",
                "items[0].quantity",
                "items[0].unit_price_cents"
            ]
        );
    }

    #[test]
    fn a_sku_on_two_lines_is_refused() {
        let mut bad = request();
        bad.items.push(bad.items[0].clone());
        assert_eq!(fields(validate(&bad).unwrap_err()), ["items[1].sku"]);
    }

    #[test]
    fn an_empty_order_is_refused() {
        let mut bad = request();
        bad.items.clear();
        assert_eq!(fields(validate(&bad).unwrap_err()), ["items"]);
    }
}
