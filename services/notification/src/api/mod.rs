//! The notification API: what was sent (or not) for an order; and, for admins, the webhook
//! endpoint's state — a `410 Gone` disables it for every replica until an admin enables it.
//! What the API reads and writes is in [`views`].

mod views;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Router, middleware};
use bus::Secret;
use events::OrderId;
use platform::problem::{ApiQuery, FieldError, Problem};
use platform::service::Started;
use utoipa::OpenApi;

use crate::store::Store;
use views::{NotificationQuery, NotificationView, WebhookView};

/// The API routes; `/admin/webhook*` need the admin token.
pub fn routes(store: Started<Store>, admin_token: Option<Secret>) -> Router {
    let admin = Router::new()
        .route("/admin/webhook", get(webhook_state))
        .route("/admin/webhook/enable", post(enable_webhook))
        .route_layer(middleware::from_fn_with_state(
            admin_token,
            platform::admin::require_token,
        ));
    Router::new()
        .route("/v1/notifications", get(list_notifications))
        .merge(admin)
        .with_state(store)
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow notification-service",
        description = "Notifications sent for orders."
    ),
    paths(list_notifications, webhook_state, enable_webhook),
    components(schemas(NotificationView, WebhookView))
)]
pub struct ApiDoc;

/// The outcomes of an order's notifications (at most one per state change); a notification
/// still being retried has none yet.
#[utoipa::path(
    get,
    path = "/v1/notifications",
    tag = "notifications",
    params(NotificationQuery),
    responses(
        (status = 200, description = "The outcomes of its notifications, oldest first", body = Vec<NotificationView>),
        (status = 422, description = "Not an order id"),
    )
)]
async fn list_notifications(
    State(store): State<Started<Store>>,
    ApiQuery(query): ApiQuery<NotificationQuery>,
) -> Result<axum::Json<Vec<NotificationView>>, Problem> {
    let order_id: OrderId = query.order_id.parse().map_err(|_| {
        Problem::validation(vec![FieldError::new(
            "order_id",
            "must be an order id (UUID)",
        )])
    })?;
    let found = store.get()?.outcomes_of(order_id).await.map_err(|e| {
        tracing::warn!(error = %e, "notifications unavailable");
        Problem::unavailable(1)
    })?;
    Ok(axum::Json(
        found.into_iter().map(NotificationView::from).collect(),
    ))
}

fn webhook_of(store: &Started<Store>) -> Result<&crate::webhook::Webhook, Problem> {
    store
        .get()?
        .webhook
        .as_ref()
        .ok_or_else(|| Problem::not_found("no webhook is configured (WEBHOOK_URL)"))
}

fn unavailable(error: bus::StoreError) -> Problem {
    tracing::warn!(error = %error, "webhook endpoint state unavailable");
    Problem::unavailable(1)
}

/// The webhook endpoint and whether it is disabled.
#[utoipa::path(get, path = "/admin/webhook", tag = "admin", operation_id = "get_webhook", security(("bearer" = [])),
    responses((status = 200, description = "The endpoint", body = WebhookView),
              (status = 404, description = "No webhook configured")))]
async fn webhook_state(
    State(store): State<Started<Store>>,
) -> Result<axum::Json<WebhookView>, Problem> {
    let webhook = webhook_of(&store)?;
    Ok(axum::Json(WebhookView {
        endpoint: webhook.endpoint().to_owned(),
        disabled_because: webhook.disabled().await.map_err(unavailable)?,
    }))
}

/// Send to the webhook endpoint again after it was disabled by a `410 Gone` (for every
/// replica). Notifications that failed while it was disabled stay failed.
#[utoipa::path(post, path = "/admin/webhook/enable", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "The endpoint, enabled", body = WebhookView),
              (status = 404, description = "No webhook configured")))]
async fn enable_webhook(
    State(store): State<Started<Store>>,
) -> Result<axum::Json<WebhookView>, Problem> {
    let webhook = webhook_of(&store)?;
    webhook.enable().await.map_err(unavailable)?;
    Ok(axum::Json(WebhookView {
        endpoint: webhook.endpoint().to_owned(),
        disabled_because: None,
    }))
}
