//! One notification per order state change, recorded in the `notifications` bucket. Its id is
//! derived from (order, change), so every replica and every redelivery agrees on it — it is the
//! `webhook-id` the receiver dedupes on. The record says whether the notification was sent or
//! failed for good; a redelivery of a settled one re-publishes the outcome instead of sending
//! again.

use chrono::{DateTime, Utc};
use events::{
    Channel, Envelope, Event, NotificationFailed, NotificationKind, NotificationSent, OrderId,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// The `source` of every event the notification service produces.
pub const SOURCE: &str = "/orderflow/notification-service";

/// Namespace of notification ids (UUID v5).
const NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7266_6c6f_772d_6e6f_7469_6679);

/// The id of the notification announcing `kind` for `order`: the same everywhere, always.
pub fn notification_id(order: OrderId, kind: NotificationKind) -> Uuid {
    let kind = match kind {
        NotificationKind::OrderConfirmed => "order_confirmed",
        NotificationKind::OrderCancelled => "order_cancelled",
    };
    Uuid::new_v5(&NAMESPACE, format!("{order}:{kind}").as_bytes())
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not delivered yet; attempts may have failed.
    Pending,
    /// Delivered.
    Sent,
    /// Given up on.
    Failed,
}

/// A notification and its delivery, as stored and as `GET /v1/notifications` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// Stable id (the `webhook-id`).
    pub notification_id: Uuid,
    /// The order.
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    /// The change announced.
    #[schema(value_type = String)]
    pub kind: NotificationKind,
    /// How it is delivered.
    #[schema(value_type = String)]
    pub channel: Channel,
    /// Where it stands.
    pub status: Status,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was first attempted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The outcome event, kept so a re-publish is the same event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_event_id: Option<Uuid>,
    /// The event that caused the notification.
    pub cause_id: Uuid,
}

impl Delivery {
    /// A new, unattempted delivery caused by `cause`.
    pub fn new(
        order_id: OrderId,
        kind: NotificationKind,
        channel: Channel,
        cause: &Envelope,
    ) -> Self {
        let now = Utc::now();
        Self {
            notification_id: notification_id(order_id, kind),
            order_id,
            kind,
            channel,
            status: Status::Pending,
            attempts: 0,
            last_error: None,
            created_at: now,
            updated_at: now,
            outcome_event_id: None,
            cause_id: cause.id,
        }
    }

    /// This delivery after one more attempt ending in `outcome` (`Ok` sent, `Err` error text)
    /// and, if `settle`, settled as sent or failed.
    pub fn attempted(&self, outcome: Result<(), String>, settle: bool) -> Self {
        let mut next = self.clone();
        next.attempts += 1;
        next.updated_at = Utc::now();
        match outcome {
            Ok(()) => {
                next.status = Status::Sent;
                next.last_error = None;
            }
            Err(error) => {
                next.last_error = Some(error);
                if settle {
                    next.status = Status::Failed;
                }
            }
        }
        if next.status != Status::Pending {
            next.outcome_event_id = Some(Uuid::now_v7());
        }
        next
    }

    /// The `notifications.sent` or `notifications.failed` event of a settled delivery.
    pub fn outcome_event(&self) -> Option<Envelope> {
        let event = match self.status {
            Status::Pending => return None,
            Status::Sent => Event::NotificationSent(NotificationSent {
                notification_id: self.notification_id,
                order_id: self.order_id,
                kind: self.kind,
                channel: self.channel,
                attempts: self.attempts,
            }),
            Status::Failed => Event::NotificationFailed(NotificationFailed {
                notification_id: self.notification_id,
                order_id: self.order_id,
                kind: self.kind,
                channel: self.channel,
                attempts: self.attempts,
                error: self.last_error.clone().unwrap_or_default(),
            }),
        };
        let mut envelope = Envelope::new(SOURCE, event);
        envelope.id = self.outcome_event_id?;
        envelope.time = self.updated_at;
        envelope.causation_id = Some(self.cause_id);
        Some(envelope)
    }
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
}
