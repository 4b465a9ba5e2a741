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

impl NotificationKind {
    /// Every kind.
    pub const ALL: [Self; 2] = [Self::OrderConfirmed, Self::OrderCancelled];

    /// The name on the wire (as serialized): `order_confirmed`, `order_cancelled`. (Which
    /// order event it announces: [`NotificationKind::announces`].)
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OrderConfirmed => "order_confirmed",
            Self::OrderCancelled => "order_cancelled",
        }
    }
}

/// `notifications.sent`: the recipient got the notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bon::Builder)]
#[non_exhaustive]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bon::Builder)]
#[non_exhaustive]
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
    use serde_json::json;

    use super::*;

    #[test]
    fn a_channels_and_a_kinds_label_is_its_name_on_the_wire() {
        let channels = [Channel::Log, Channel::Webhook].map(|c| (json!(c), c.as_str()));
        let kinds = NotificationKind::ALL.map(|k| (json!(k), k.as_str()));
        for (wire, label) in channels.into_iter().chain(kinds) {
            assert_eq!(wire, json!(label));
        }
    }

    #[test]
    fn each_kind_announces_the_order_event_it_is_named_for() {
        for kind in NotificationKind::ALL {
            let announced = kind.announces();
            assert_eq!(NotificationKind::announcing(announced), Some(kind));
            let verb = crate::layout::verb(announced);
            assert_eq!(kind.as_str(), format!("order_{verb}"));
        }
        assert_eq!(
            NotificationKind::announcing(crate::EventKind::OrderCreated),
            None
        );
    }
}
