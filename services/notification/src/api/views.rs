//! What the notification API reads and writes, as its OpenAPI document describes it: the
//! query by order, a notification's outcome, and the webhook endpoint as admins see it.

use chrono::{DateTime, Utc};
use events::{Channel, NotificationKind, OrderId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::notification::{Notification, Status};

/// Query of `GET /v1/notifications`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    /// The order.
    pub order_id: String,
}

impl IntoParams for NotificationQuery {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        vec![platform::openapi::parameter(
            "order_id",
            utoipa::openapi::path::ParameterIn::Query,
            true,
            "The order",
            platform::openapi::order_id_schema(),
        )]
    }
}

/// A notification's outcome, as `GET /v1/notifications` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct NotificationView {
    /// Stable id (the `webhook-id`).
    pub notification_id: Uuid,
    /// The order.
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    /// The change announced.
    #[schema(value_type = String)]
    pub kind: NotificationKind,
    /// How it was delivered.
    #[schema(value_type = String)]
    pub channel: Channel,
    /// How it ended.
    pub status: Status,
    /// Delivery attempts it took.
    pub attempts: u32,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it ended.
    pub updated_at: DateTime<Utc>,
}

impl From<Notification> for NotificationView {
    fn from(n: Notification) -> Self {
        Self {
            notification_id: n.notification_id,
            order_id: n.order_id,
            kind: n.kind,
            channel: n.channel,
            status: n.status,
            attempts: n.attempts,
            last_error: n.last_error,
            updated_at: n.updated_at,
        }
    }
}

/// The webhook endpoint as admins see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookView {
    /// Scheme, host and port of the endpoint (the rest of the URL is kept secret).
    pub endpoint: String,
    /// Why it is disabled; absent while notifications are sent to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_because: Option<String>,
}
