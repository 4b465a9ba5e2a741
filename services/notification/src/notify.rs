//! The notification side of the saga, on the durable consumer `notification`
//! (`orders.confirmed`, `orders.cancelled`): deliver each state change once through the
//! configured channel, record the delivery, then publish `notifications.sent` or
//! `notifications.failed`. The record is written before the ack, and a crash between sending
//! and recording resends with the same `webhook-id`, which the receiver dedupes.

use bus::{Change, ConsumerSpec, Delivery as BusDelivery, HandlerError, MsgId, Publisher, Store};
use events::{Channel, EventKind, NotificationKind, names};
use serde_json::json;

use crate::delivery::{Delivery, Status, notification_id};
use crate::webhook::{SendError, Webhook};

/// Durable consumer of order outcomes.
pub const CONSUMER: &str = "notification";

/// The notification service's consumer.
pub fn consumer_specs() -> Vec<ConsumerSpec> {
    vec![ConsumerSpec::new(
        names::stream::ORDERS,
        CONSUMER,
        &[
            names::subject::ORDERS_CONFIRMED,
            names::subject::ORDERS_CANCELLED,
        ],
    )]
}

/// Delivers notifications.
#[derive(Debug, Clone)]
pub struct Notifier {
    pub(crate) deliveries: Store<Delivery>,
    pub(crate) webhook: Option<Webhook>,
    pub(crate) publisher: Publisher,
}

impl bus::Handler for Notifier {
    async fn handle(&self, delivery: BusDelivery) -> Result<(), HandlerError> {
        let cause = &delivery.envelope;
        let (order_id, kind, type_name) = match &cause.event {
            events::Event::OrderConfirmed(e) => (
                e.order_id,
                NotificationKind::OrderConfirmed,
                "order.confirmed",
            ),
            events::Event::OrderCancelled(e) => (
                e.order_id,
                NotificationKind::OrderCancelled,
                "order.cancelled",
            ),
            other => {
                return Err(HandlerError::permanent(format!(
                    "notification-service does not handle {}",
                    other.kind()
                )));
            }
        };
        let id = notification_id(order_id, kind);
        let key = id.to_string();
        let channel = if self.webhook.is_some() {
            Channel::Webhook
        } else {
            Channel::Log
        };
        let record = match self.deliveries.get(&key).await? {
            Some(existing) => existing.value,
            None => Delivery::new(order_id, kind, channel, cause),
        };
        if record.status != Status::Pending {
            return self.publish_outcome(&record).await;
        }

        let body = json!({
            "type": type_name,
            "timestamp": cause.time,
            "data": cause.event,
        });
        let (outcome, settle) = match (&self.webhook, record.channel) {
            (Some(webhook), Channel::Webhook) => {
                let body = serde_json::to_vec(&body).map_err(HandlerError::permanent)?;
                match webhook.send(&key, &body).await {
                    Ok(()) => (Ok(()), true),
                    Err(SendError::CircuitOpen) if !delivery.is_last_attempt => {
                        // Not an attempt at the endpoint: try again later without counting it.
                        return Err(HandlerError::transient(SendError::CircuitOpen));
                    }
                    Err(SendError::Store(e)) => return Err(e.into()),
                    Err(e @ SendError::Retryable(_)) => {
                        (Err(e.to_string()), delivery.is_last_attempt)
                    }
                    Err(e) => (Err(e.to_string()), true),
                }
            }
            _ => {
                tracing::info!(notification_id = %id, %order_id, kind = type_name, body = %body, "notification");
                (Ok(()), true)
            }
        };

        let next = record.attempted(outcome, settle);
        let stored = self
            .deliveries
            .modify(&key, |current| match current {
                // Another replica settled it meanwhile: keep theirs.
                Some(current) if current.status != Status::Pending => Change::Keep(current.clone()),
                _ => Change::Write(next.clone(), next.clone()),
            })
            .await?;
        metrics::counter!(
            "orderflow_notifications_total",
            "channel" => format!("{:?}", stored.channel).to_lowercase(),
            "status" => format!("{:?}", stored.status).to_lowercase(),
        )
        .increment(1);
        if stored.status == Status::Pending {
            return Err(HandlerError::transient(
                stored.last_error.unwrap_or_default(),
            ));
        }
        self.publish_outcome(&stored).await
    }
}

impl Notifier {
    async fn publish_outcome(&self, record: &Delivery) -> Result<(), HandlerError> {
        let Some(event) = record.outcome_event() else {
            return Ok(());
        };
        let kind = match record.status {
            Status::Failed => EventKind::NotificationFailed,
            _ => EventKind::NotificationSent,
        };
        self.publisher
            .publish(&event, &MsgId::new(kind, record.notification_id))
            .await?;
        Ok(())
    }
}
