//! The notification API: what was sent (or not) for an order.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use events::OrderId;
use platform::problem::{ApiQuery, FieldError, Problem};
use platform::service::Started;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::notification::Notification;
use crate::store::Store;

/// The API routes.
pub fn routes(state: Started<Store>) -> Router {
    Router::new()
        .route("/v1/notifications", get(list_notifications))
        .with_state(state)
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow notification-service",
        description = "Notifications sent for orders."
    ),
    paths(list_notifications),
    components(schemas(Problem, FieldError, Notification))
)]
pub struct ApiDoc;

/// Query of `GET /v1/notifications`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    /// The order.
    pub order_id: String,
}

/// The outcomes of an order's notifications (at most one per state change); a notification
/// still being retried has none yet.
#[utoipa::path(
    get,
    path = "/v1/notifications",
    params(NotificationQuery),
    responses(
        (status = 200, description = "The outcomes of its notifications, oldest first", body = Vec<Notification>),
        (status = 422, description = "Not an order id", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_notifications(
    State(state): State<Started<Store>>,
    ApiQuery(query): ApiQuery<NotificationQuery>,
) -> Result<axum::Json<Vec<Notification>>, Problem> {
    let order_id: OrderId = query.order_id.parse().map_err(|_| {
        Problem::validation(vec![FieldError::new(
            "order_id",
            "must be an order id (UUID)",
        )])
    })?;
    let found = state.get()?.outcomes_of(order_id).await.map_err(|e| {
        tracing::warn!(error = %e, "notifications unavailable");
        Problem::unavailable(1)
    })?;
    Ok(axum::Json(found))
}
