//! One notification per order state change, and its outcome as an event:
//! `notifications.<p>.<customer>.<order>.<confirmed|cancelled>.sent` or `.failed`,
//! appended create-only, so there is at most one outcome per notification. The notification's
//! id is derived from (order, change), so every replica and every redelivery agrees on it — it
//! is the `webhook-id` the receiver dedupes on. Pure logic, no I/O.

use bus::Recorded;
use chrono::{DateTime, Utc};
use events::{
    Channel, Envelope, Event, NotificationFailed, NotificationKind, NotificationSent, OrderId,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// The `source` of every event the notification service produces.
pub const SOURCE: &str = events::ServiceId::Notification.source();

/// Namespace of notification ids (UUID v5).
const NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7266_6c6f_772d_6e6f_7469_6679);

/// The id of the notification announcing `kind` for `order`: the same everywhere, always.
pub fn notification_id(order: OrderId, kind: NotificationKind) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("{order}:{}", kind.as_str()).as_bytes())
}

/// The `type` a webhook receiver (and the log) is told: `order.confirmed`, `order.cancelled`
/// — part of the webhook's contract with its receivers.
pub const fn webhook_type(kind: NotificationKind) -> &'static str {
    match kind {
        NotificationKind::OrderConfirmed => "order.confirmed",
        NotificationKind::OrderCancelled => "order.cancelled",
    }
}

/// How a notification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Delivered.
    Sent,
    /// Given up on.
    Failed,
}

/// A notification's outcome, as its event records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Stable id (the `webhook-id`).
    pub notification_id: Uuid,
    /// The order.
    pub order_id: OrderId,
    /// The change announced.
    pub kind: NotificationKind,
    /// How it was delivered.
    pub channel: Channel,
    /// How it ended.
    pub status: Status,
    /// Delivery attempts it took.
    pub attempts: u32,
    /// Why it failed.
    pub last_error: Option<String>,
    /// When it ended.
    pub updated_at: DateTime<Utc>,
}

impl Notification {
    /// The outcome an event records; `None` for events that are not outcomes.
    pub fn from_event(recorded: &Recorded) -> Option<Self> {
        let at = recorded.envelope.time;
        Some(match &recorded.envelope.event {
            Event::NotificationSent(e) => Self {
                notification_id: e.notification_id,
                order_id: e.order_id,
                kind: e.kind,
                channel: e.channel,
                status: Status::Sent,
                attempts: e.attempts,
                last_error: None,
                updated_at: at,
            },
            Event::NotificationFailed(e) => Self {
                notification_id: e.notification_id,
                order_id: e.order_id,
                kind: e.kind,
                channel: e.channel,
                status: Status::Failed,
                attempts: e.attempts,
                last_error: Some(e.error.clone()),
                updated_at: at,
            },
            _ => return None,
        })
    }
}

/// The outcome event of notification `kind` of `order` after `attempts` deliveries:
/// `notifications.sent` for `Ok`, `notifications.failed` with the error for `Err`.
pub fn outcome(
    order: OrderId,
    kind: NotificationKind,
    channel: Channel,
    attempts: u32,
    result: Result<(), String>,
    cause: &Envelope,
) -> Envelope {
    let notification_id = notification_id(order, kind);
    let event = match result {
        Ok(()) => Event::NotificationSent(
            NotificationSent::builder()
                .notification_id(notification_id)
                .order_id(order)
                .kind(kind)
                .channel(channel)
                .attempts(attempts)
                .build(),
        ),
        Err(error) => Event::NotificationFailed(
            NotificationFailed::builder()
                .notification_id(notification_id)
                .order_id(order)
                .kind(kind)
                .channel(channel)
                .attempts(attempts)
                .error(error)
                .build(),
        ),
    };
    Envelope::new(SOURCE, event).caused_by(cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_the_same_for_the_same_change_and_differs_between_changes() {
        let order = OrderId::new();
        assert_eq!(
            notification_id(order, NotificationKind::OrderConfirmed),
            notification_id(order, NotificationKind::OrderConfirmed)
        );
        assert_ne!(
            notification_id(order, NotificationKind::OrderConfirmed),
            notification_id(order, NotificationKind::OrderCancelled)
        );
    }

    #[test]
    fn the_id_never_changes_between_builds() {
        // Receivers dedupe on it across releases: this value is a contract.
        let order = OrderId(Uuid::from_u128(1));
        let id = notification_id(order, NotificationKind::OrderConfirmed);
        assert_eq!(id.to_string(), "478cf067-5463-53c3-849a-2ac229662f6e");
    }

    #[test]
    fn the_webhook_type_names_the_order_event_announced() {
        for kind in NotificationKind::ALL {
            let verb = events::layout::verb(kind.announces());
            assert_eq!(webhook_type(kind), format!("order.{verb}"));
        }
    }

    #[test]
    fn a_failed_outcome_reads_back_with_its_error() {
        let order = OrderId::new();
        let cause = Envelope::new(
            "/test",
            Event::NotificationSent(
                NotificationSent::builder()
                    .notification_id(Uuid::nil())
                    .order_id(order)
                    .kind(NotificationKind::OrderConfirmed)
                    .channel(Channel::Log)
                    .attempts(1)
                    .build(),
            ),
        );
        let event = outcome(
            order,
            NotificationKind::OrderCancelled,
            Channel::Webhook,
            3,
            Err("HTTP 400".into()),
            &cause,
        );
        let recorded = Recorded {
            sequence: 1,
            subject: String::new(),
            envelope: event,
        };
        let notification = Notification::from_event(&recorded).unwrap();
        assert_eq!(notification.status, Status::Failed);
        assert_eq!(notification.attempts, 3);
        assert_eq!(notification.last_error.as_deref(), Some("HTTP 400"));
        assert_eq!(
            notification.notification_id,
            notification_id(order, NotificationKind::OrderCancelled)
        );
    }
}
