//! The order API: create (idempotent), read, list by customer, cancel. Creating and cancelling
//! each append one event to the order's history — the event is the state change — and answer;
//! the saga does the rest. Every error is problem JSON. What the API reads and writes is in
//! [`views`], its OpenAPI document in [`openapi`].

pub(crate) mod openapi;
mod views;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use events::{CancelReason, CustomerId, Envelope, Event, OrderId};
use platform::problem::{ApiJson, ApiPath, ApiQuery, FieldError, Problem};
use platform::service::Started;
use sha2::{Digest, Sha256};

use telemetry::metric;

use crate::customer_auth::{self, Customers};
use crate::new_order::{Flaw, NewOrder, parse_customer};
use crate::order::{Order, SOURCE, Status, Step};
use crate::store::{Basis, Claim, OrderStoreError, Store, Transitioned};
use views::{Accepted, CreateOrder, ListQuery, MAX_PAGE};
pub use views::{OrderPage, OrderView};

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

/// 422 naming each flaw of a requested order.
fn invalid(flaws: Vec<Flaw>) -> Problem {
    Problem::validation(
        flaws
            .into_iter()
            .map(|flaw| FieldError::new(flaw.field, flaw.reason))
            .collect(),
    )
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
    let new_order = request.parse().map_err(invalid)?;
    let store = app.store()?;
    // Nothing is taken that might not be stored, or whose saga might not finish: while a
    // store is nearly full, new orders wait (a retry with the same key is the same order).
    app.admission.check()?;
    let key = idempotency_key(&headers, caller.as_ref())?;
    let fresh = OrderId::new();
    let earlier = match &key {
        Some(key) => earlier_order(store, key, fresh, &request, &new_order).await?,
        None => None,
    };
    let (order_id, replayed) = earlier.map_or((fresh, false), |earlier| (earlier, true));
    tracing::Span::current().record("order_id", tracing::field::display(order_id));
    let order_key = store.key(new_order.customer().clone(), order_id);
    // A replay answers with the order its first try created, as it is now — read first, as
    // its events may have left the hot log for the archive, where a create-only append would
    // not see them.
    if replayed && let Some(existing) = store.read(&order_key).await? {
        metrics::counter!(metric::ORDERS_ACCEPTED, "replayed" => "true").increment(1);
        return Ok(accepted(order_id, existing.status, true));
    }
    // Create-only, so a replay whose first try failed before its answer (or is still in
    // flight) finds the order that try created.
    let created = Event::OrderCreated(new_order.created(order_id, key));
    let created = store
        .create(order_key, &Envelope::new(SOURCE, created))
        .await?;
    metrics::counter!(metric::ORDERS_ACCEPTED, "replayed" => replayed.to_string()).increment(1);
    Ok(accepted(order_id, created.status, replayed))
}

/// The order an `Idempotency-Key` made already, if it did — claiming the key for `fresh`
/// otherwise. The claim lives in NATS; a retry that comes after it expired is answered by the
/// archive's memory of the key, asked at once and for a bounded time. The key used for
/// another request is refused (422).
async fn earlier_order(
    store: &Store,
    key: &str,
    fresh: OrderId,
    request: &CreateOrder,
    new_order: &NewOrder,
) -> Result<Option<OrderId>, Problem> {
    let request_hash = hex(&Sha256::digest(
        serde_json::to_vec(request).unwrap_or_default(),
    ));
    let claim = Claim {
        order_id: fresh,
        request_hash,
    };
    let (claimed, archived) = tokio::join!(
        store.claim(key, &claim),
        tokio::time::timeout(ARCHIVE_LOOKUP, store.archived_by_idempotency_key(key))
    );
    let archived = archived.unwrap_or_else(|_| {
        Err(OrderStoreError::Archive(archive::ArchiveError::Timeout(
            ARCHIVE_LOOKUP,
        )))
    });
    match claimed? {
        Some(existing) if existing.request_hash != claim.request_hash => {
            Err(key_reused(existing.order_id))
        }
        // Another retry of this request, which (after the claim had expired) may have claimed
        // a fresh id before pointing the claim at the order the archive knows: the archive's
        // order is the one.
        Some(existing) => match &archived {
            Ok(Some(made)) => Ok(Some(made.key.order)),
            _ => Ok(Some(existing.order_id)),
        },
        None => match archived {
            Ok(Some(made)) if !new_order.is_recorded_by(&made.created) => {
                // Leave no claim for this request behind: the key stays the order's.
                store.release_claim(key).await?;
                Err(key_reused(made.key.order))
            }
            Ok(Some(made)) => {
                // The claim just made points at an order never created: point it at the one
                // the key made, so later retries find it in NATS again.
                let earlier = Claim {
                    order_id: made.key.order,
                    ..claim
                };
                store.reclaim(key, &earlier).await?;
                Ok(Some(made.key.order))
            }
            Ok(None) => Ok(None),
            // A new order rather than none: a retry made during an outage of the archive
            // after its claim expired may make a second order.
            Err(error) => {
                tracing::warn!(
                    %error,
                    "the archive could not say whether this Idempotency-Key made an order"
                );
                Ok(None)
            }
        },
    }
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
        None => parse_customer(query.customer_id.as_deref())
            .map_err(|f| errors.push(FieldError::new(f.field, f.reason)))
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
        Transitioned::Unchanged(Step::Ignore(why), _) => Err(Problem::new(
            StatusCode::CONFLICT,
            "already-cancelled",
            "Order already cancelled",
        )
        .with_detail(why)),
        Transitioned::Unchanged(_, order) => Ok(accepted(order_id, order.status, false)),
    }
}
