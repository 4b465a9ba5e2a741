//! The notification side of the saga, on the durable consumer `notification`
//! (`orders.*.confirmed`, `orders.*.cancelled`, per partition): deliver each state change once
//! through the configured channel, then append its outcome — `sent` or `failed` — create-only.
//! The outcome is appended before the ack, and a crash between sending and appending resends
//! with the same `webhook-id`, which the receiver dedupes. A redelivery first looks for the
//! outcome and sends nothing if there is one.

use bus::{ConsumerSpec, Delivery, HandlerError};
use events::{Channel, Event, NotificationKind, Partitions};
use serde_json::json;

use crate::notification::{self, notification_id};
use crate::store::Store;
use crate::webhook::SendError;

/// The notification service's consumers: one per partition.
pub fn consumer_specs(partitions: Partitions) -> Vec<ConsumerSpec> {
    ConsumerSpec::per_partition(&events::topology::NOTIFICATION, partitions)
}

/// Delivers notifications.
#[derive(Debug, Clone)]
pub struct Saga {
    pub(crate) store: Store,
}

impl bus::Handler for Saga {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let (key, cause) = (&delivery.key, &delivery.envelope);
        let (kind, type_name) = match &cause.event {
            Event::OrderConfirmed(_) => (NotificationKind::OrderConfirmed, "order.confirmed"),
            Event::OrderCancelled(_) => (NotificationKind::OrderCancelled, "order.cancelled"),
            other => {
                return Err(HandlerError::permanent(format!(
                    "notification-service does not handle {}",
                    other.kind()
                )));
            }
        };
        if delivery.is_redelivery() && self.store.outcome(key, kind).await?.is_some() {
            return Ok(());
        }
        let id = notification_id(key.order, kind).to_string();
        let body = json!({
            "type": type_name,
            "timestamp": cause.time,
            "data": cause.event,
        });
        let (channel, result) = match &self.store.webhook {
            Some(webhook) => {
                let body = serde_json::to_vec(&body).map_err(HandlerError::permanent)?;
                let result = match webhook.send(&id, &body).await {
                    Ok(()) => Ok(()),
                    // Not an attempt at the endpoint: try again later.
                    Err(SendError::CircuitOpen) if !delivery.is_last_attempt => {
                        return Err(HandlerError::transient(SendError::CircuitOpen));
                    }
                    Err(SendError::Store(e)) => return Err(e.into()),
                    Err(e @ SendError::Retryable(_)) if !delivery.is_last_attempt => {
                        count(Channel::Webhook, "retry");
                        return Err(HandlerError::transient(e));
                    }
                    Err(e) => Err(e.to_string()),
                };
                (Channel::Webhook, result)
            }
            None => {
                tracing::info!(notification_id = %id, order_id = %key.order, kind = type_name, body = %body, "notification");
                (Channel::Log, Ok(()))
            }
        };
        let status = if result.is_ok() { "sent" } else { "failed" };
        let attempts = u32::try_from(delivery.attempt).unwrap_or(u32::MAX);
        let outcome = notification::outcome(key.order, kind, channel, attempts, result, cause);
        // Another replica may have recorded it first: the first outcome stands.
        if self.store.record(key, kind, &outcome).await? {
            count(channel, status);
            // State change → notification settled: the notification SLO's latency.
            if let Ok(delay) = (chrono::Utc::now() - cause.time).to_std() {
                metrics::histogram!(
                    "orderflow_notification_delay_seconds",
                    "channel" => channel.as_str(),
                    "status" => status
                )
                .record(delay.as_secs_f64());
            }
        }
        Ok(())
    }
}

fn count(channel: Channel, status: &'static str) {
    metrics::counter!("orderflow_notifications_total", "channel" => channel.as_str(), "status" => status)
        .increment(1);
}
