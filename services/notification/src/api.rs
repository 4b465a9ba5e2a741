//! The notification API: what was sent (or not) for an order.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use events::{NotificationKind, OrderId};
use platform::problem::{ApiQuery, FieldError, Problem};
use platform::service::Started;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::delivery::{Delivery, notification_id};

/// The API routes.
pub fn routes(state: Started<crate::State>) -> Router {
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
    components(schemas(Problem, FieldError, Delivery))
)]
pub struct ApiDoc;

/// Query of `GET /v1/notifications`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    /// The order.
    pub order_id: String,
}

/// The notifications of an order (at most one per state change).
#[utoipa::path(
    get,
    path = "/v1/notifications",
    params(NotificationQuery),
    responses(
        (status = 200, description = "Its notifications, confirmation first", body = Vec<Delivery>),
        (status = 422, description = "Not an order id", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_notifications(
    State(state): State<Started<crate::State>>,
    ApiQuery(query): ApiQuery<NotificationQuery>,
) -> Result<axum::Json<Vec<Delivery>>, Problem> {
    let order_id: OrderId = query.order_id.parse().map_err(|_| {
        Problem::validation(vec![FieldError::new(
            "order_id",
            "must be an order id (UUID)",
        )])
    })?;
    let deliveries = &state.get()?.deliveries;
    let mut found = Vec::new();
    for kind in [
        NotificationKind::OrderConfirmed,
        NotificationKind::OrderCancelled,
    ] {
        let record = deliveries
            .get(&notification_id(order_id, kind).to_string())
            .await?;
        found.extend(record.map(|r| r.value));
    }
    Ok(axum::Json(found))
}
