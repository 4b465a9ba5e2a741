//! The notification side of the saga, on the durable consumer `notification`
//! (`orders.*.confirmed`, `orders.*.cancelled`, per partition): deliver each state change once
//! through the configured channel, then append its outcome — `sent` or `failed` — create-only.
//! The outcome is appended before the ack, and a crash between sending and appending resends
//! with the same `webhook-id`, which the receiver dedupes. A redelivery first looks for the
//! outcome and sends nothing if there is one.

use bus::{Appended, ConsumerSpec, Delivery, HandlerError};
use events::{Channel, NotificationKind, Partitions, ServiceId};
use serde_json::json;

use telemetry::metric;

use crate::notification::{self, notification_id, webhook_type};
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
        let Some(kind) = NotificationKind::announcing(cause.kind()) else {
            return Err(HandlerError::permanent(format!(
                "{} does not handle {}",
                ServiceId::Notification,
                cause.kind()
            )));
        };
        let type_name = webhook_type(kind);
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
        if let Appended::Stored(_) = self.store.record(key, kind, &outcome).await? {
            count(channel, status);
            // State change → notification settled: the notification SLO's latency.
            if let Ok(delay) = (chrono::Utc::now() - cause.time).to_std() {
                metrics::histogram!(
                    metric::NOTIFICATION_DELAY,
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
    metrics::counter!(metric::NOTIFICATIONS, "channel" => channel.as_str(), "status" => status)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bus::{Bus, Handler as _, KvBucket, KvStore, Secret};
    use events::{Envelope, Event, OrderConfirmed, OrderId, OrderKey};
    use testkit::{NatsServer, WebhookReceiver, sample};

    use super::*;
    use crate::egress::Egress;
    use crate::notification::Status;
    use crate::webhook::Webhook;

    /// A server, a webhook receiver, and the saga on them.
    async fn saga() -> (NatsServer, WebhookReceiver, Saga) {
        let server = NatsServer::start();
        let receiver = WebhookReceiver::start().await;
        let bus = sample::bus(&server, "notification-saga-test").await;
        let saga = saga_on(&bus, &receiver).await;
        (server, receiver, saga)
    }

    /// Another saga (a replica) over `bus`, sending to `receiver`.
    async fn saga_on(bus: &Bus, receiver: &WebhookReceiver) -> Saga {
        let endpoints = KvStore::open(
            bus,
            &KvBucket::new(events::names::bucket::WEBHOOK_ENDPOINTS),
        )
        .await
        .unwrap();
        let webhook = Webhook::new(
            &Secret::new(receiver.url()),
            // 24 bytes, base64: the shortest secret a webhook accepts.
            &Secret::new("whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"),
            Duration::from_secs(5),
            Egress {
                allow_private: true,
                allow_http: true,
            },
            endpoints,
        )
        .unwrap();
        Saga {
            store: Store::new(bus, Partitions::ONE, Some(webhook)),
        }
    }

    /// The first delivery of a confirmation of a new order of carol's.
    fn confirmed() -> Delivery {
        let id = OrderId::new();
        let created = sample::order_created(id, "carol", &[("MUG", 1)]);
        let event = Event::OrderConfirmed(
            OrderConfirmed::builder()
                .order_id(id)
                .customer_id(sample::customer("carol"))
                .total_cents(100)
                .currency(events::Currency::new("EUR").unwrap())
                .build(),
        );
        sample::delivery(
            &sample::key("carol", id),
            sample::caused_by(event, &created),
        )
    }

    async fn outcome(saga: &Saga, key: &OrderKey) -> crate::notification::Notification {
        saga.store
            .outcome(key, NotificationKind::OrderConfirmed)
            .await
            .unwrap()
            .expect("an outcome is recorded")
    }

    fn webhook_ids(receiver: &WebhookReceiver) -> Vec<String> {
        receiver
            .received()
            .iter()
            .filter_map(|w| w.header("webhook-id").map(str::to_owned))
            .collect()
    }

    #[tokio::test]
    async fn a_confirmation_is_sent_once_and_its_outcome_recorded() {
        let (_server, receiver, saga) = saga().await;
        let delivery = confirmed();

        saga.handle(delivery.clone()).await.unwrap();

        let notification = outcome(&saga, &delivery.key).await;
        assert_eq!(notification.status, Status::Sent);
        assert_eq!(notification.attempts, 1);
        assert_eq!(
            webhook_ids(&receiver),
            [notification_id(delivery.key.order, NotificationKind::OrderConfirmed).to_string()]
        );
    }

    #[tokio::test]
    async fn a_redelivery_after_the_outcome_sends_nothing_again() {
        let (_server, receiver, saga) = saga().await;
        let delivery = confirmed();
        saga.handle(delivery.clone()).await.unwrap();

        saga.handle(Delivery {
            attempt: 2,
            ..delivery.clone()
        })
        .await
        .unwrap();

        assert_eq!(webhook_ids(&receiver).len(), 1);
        assert_eq!(outcome(&saga, &delivery.key).await.attempts, 1);
    }

    #[tokio::test]
    async fn two_replicas_that_both_send_record_one_outcome_under_one_webhook_id() {
        let (server, receiver, saga) = saga().await;
        let replica = saga_on(&sample::bus(&server, "replica").await, &receiver).await;
        let delivery = confirmed();

        let (first, second) = tokio::join!(
            saga.handle(delivery.clone()),
            replica.handle(delivery.clone())
        );
        first.unwrap();
        second.unwrap();

        let outcomes = saga.store.outcomes_of(delivery.key.order).await.unwrap();
        assert_eq!(outcomes.len(), 1, "{outcomes:?}");
        // Both may have sent: the receiver dedupes by the one id they share.
        let ids = webhook_ids(&receiver);
        assert!(
            !ids.is_empty() && ids.iter().all(|id| *id == ids[0]),
            "{ids:?}"
        );
    }

    #[tokio::test]
    async fn an_event_notifications_do_not_handle_is_refused_for_good() {
        let (_server, _receiver, saga) = saga().await;
        let delivery = confirmed();
        let created: Envelope = sample::order_created(delivery.key.order, "carol", &[("MUG", 1)]);

        let outcome = saga.handle(sample::delivery(&delivery.key, created)).await;

        assert!(
            matches!(outcome, Err(HandlerError::Permanent(_))),
            "{outcome:?}"
        );
    }
}
