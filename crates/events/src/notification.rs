//! Events the notification service publishes: the outcome of telling a customer about an
//! order's state change.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::id::OrderId;

/// How a notification is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Written to the service log (the default channel).
    Log,
    /// POSTed to the configured webhook, signed per Standard Webhooks.
    Webhook,
}

impl Channel {
    /// The name on the wire (as serialized), for metric labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Webhook => "webhook",
        }
    }
}

/// Which order state change a notification announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// The order was confirmed.
    OrderConfirmed,
    /// The order was cancelled.
    OrderCancelled,
}

/// `notifications.sent`: the recipient got the notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NotificationSent {
    /// Stable per (order, state change): the `webhook-id` the receiver dedupes on.
    pub notification_id: Uuid,
    /// The order it is about.
    pub order_id: OrderId,
    /// The state change it announces.
    pub kind: NotificationKind,
    /// How it was delivered.
    pub channel: Channel,
    /// Delivery attempts it took.
    pub attempts: u32,
}

/// `notifications.failed`: the notification could not be delivered and will not be retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NotificationFailed {
    /// Stable per (order, state change).
    pub notification_id: Uuid,
    /// The order it is about.
    pub order_id: OrderId,
    /// The state change it announces.
    pub kind: NotificationKind,
    /// The channel that failed.
    pub channel: Channel,
    /// Delivery attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channels_label_is_its_name_on_the_wire() {
        for channel in [Channel::Log, Channel::Webhook] {
            assert_eq!(
                serde_json::to_value(channel).unwrap(),
                serde_json::Value::from(channel.as_str())
            );
        }
    }
}
