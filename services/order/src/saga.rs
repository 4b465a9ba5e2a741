//! The order's side of the saga, on the durable consumer `order-saga` (`inventory.*.reserved`,
//! `inventory.*.rejected`, per partition): confirm or cancel the order.
//!
//! The step is one conditional append to the order's history — the event is the state
//! change, so there is nothing to store first and publish after. On a first delivery the
//! append is decided on the order as this process last saw it (usually: it just created it),
//! and its precondition alone proves that view current; a redelivery reads first, finds its own
//! transition if an earlier attempt made it, and does nothing.

use bus::{ConsumerSpec, Delivery, HandlerError};
use events::{CancelReason, Event, Partitions, ServiceId};

use telemetry::metric;

use crate::order::Step;
use crate::store::{Basis, Store, Transitioned};

/// The consumer specs of the order service: one per partition.
pub fn consumer_specs(partitions: Partitions) -> Vec<ConsumerSpec> {
    ConsumerSpec::per_partition(&events::topology::ORDER_SAGA, partitions)
}

/// Handles every event the order service consumes.
#[derive(Debug, Clone)]
pub struct Saga {
    pub(crate) store: Store,
}

impl bus::Handler for Saga {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let cause = &delivery.envelope;
        let reason = match &cause.event {
            Event::InventoryReserved(_) => None,
            Event::InventoryRejected(rejected) => Some(CancelReason::OutOfStock {
                shortfall: rejected.shortfall.clone(),
            }),
            other => {
                return Err(HandlerError::permanent(format!(
                    "{} does not handle {}",
                    ServiceId::Order,
                    other.kind()
                )));
            }
        };
        let basis = if delivery.is_redelivery() {
            Basis::Read
        } else {
            Basis::Remembered
        };
        let key = &delivery.key;
        let transitioned = self
            .store
            .transition(key, basis, |order| match &reason {
                None => order.confirm(cause),
                Some(reason) => order.cancel(reason.clone(), Some(cause)),
            })
            .await?;
        match transitioned {
            // Inventory decided on the order's `created`, so it exists: a replica that answered
            // the read has not applied it yet.
            None => Err(HandlerError::transient(format!(
                "order {} has no events yet",
                key.order
            ))),
            Some(Transitioned::Unchanged(step, _)) => {
                let why = match step {
                    Step::Ignore(why) => why,
                    _ => "already done",
                };
                tracing::info!(order_id = %key.order, cause = %cause.kind(), why, "no state change");
                Ok(())
            }
            Some(Transitioned::Appended(event, order)) => {
                tracing::info!(order_id = %key.order, event = %event.kind(), "order state changed");
                if let Some(took) = order
                    .created_at()
                    .and_then(|created| (event.time - created).to_std().ok())
                {
                    // Accepted → settled, the latency a customer feels.
                    metrics::histogram!(metric::SAGA_DURATION, "outcome" => event.kind().type_name())
                        .record(took.as_secs_f64());
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bus::{Handler as _, HandlerError};
    use events::{
        Envelope, InventoryRejected, InventoryReserved, OrderId, OrderKey, ReservedLine, Shortfall,
    };
    use testkit::{NatsServer, sample};

    use super::*;
    use crate::order::Status;
    use crate::store::Store;

    /// A server, and the saga over a store on it.
    async fn saga() -> (NatsServer, Saga) {
        let server = NatsServer::start();
        let bus = sample::bus(&server, "order-saga-test").await;
        let store = Store::open(&bus, &bus::StreamSettings::default(), None)
            .await
            .unwrap();
        (server, Saga { store })
    }

    /// A pending order of two MUGs, created through `store` (which so remembers it).
    async fn placed(store: &Store) -> (OrderKey, Envelope) {
        let id = OrderId::new();
        let key = sample::key("alice", id);
        let created = sample::order_created(id, "alice", &[("MUG", 2)]);
        store.create(key.clone(), &created).await.unwrap();
        (key, created)
    }

    fn reserved(created: &Envelope) -> Envelope {
        let lines = vec![ReservedLine {
            sku: sample::sku("MUG"),
            quantity: 2,
        }];
        let order_id = created.event.order_id();
        sample::caused_by(
            Event::InventoryReserved(
                InventoryReserved::builder()
                    .order_id(order_id)
                    .lines(lines)
                    .build(),
            ),
            created,
        )
    }

    fn shortfall() -> Vec<Shortfall> {
        vec![Shortfall {
            sku: sample::sku("MUG"),
            requested: 2,
            available: 1,
        }]
    }

    #[tokio::test]
    async fn a_reservation_confirms_the_order() {
        let (_server, saga) = saga().await;
        let (key, created) = placed(&saga.store).await;

        saga.handle(sample::delivery(&key, reserved(&created)))
            .await
            .unwrap();

        let order = saga.store.read(&key).await.unwrap().unwrap();
        assert_eq!(order.status, Status::Confirmed);
        assert_eq!(order.history.len(), 2, "{:?}", order.history);
    }

    #[tokio::test]
    async fn a_rejection_cancels_the_order_with_what_was_short() {
        let (_server, saga) = saga().await;
        let (key, created) = placed(&saga.store).await;
        let rejected = sample::caused_by(
            Event::InventoryRejected(
                InventoryRejected::builder()
                    .order_id(key.order)
                    .shortfall(shortfall())
                    .build(),
            ),
            &created,
        );

        saga.handle(sample::delivery(&key, rejected)).await.unwrap();

        let order = saga.store.read(&key).await.unwrap().unwrap();
        assert_eq!(order.status, Status::Cancelled);
        assert_eq!(
            order.reason,
            Some(CancelReason::OutOfStock {
                shortfall: shortfall()
            })
        );
    }

    #[tokio::test]
    async fn a_redelivered_reservation_finds_its_confirmation_and_appends_nothing() {
        let (_server, saga) = saga().await;
        let (key, created) = placed(&saga.store).await;
        let first = sample::delivery(&key, reserved(&created));
        saga.handle(first.clone()).await.unwrap();
        let confirmed = saga.store.read(&key).await.unwrap().unwrap();

        saga.handle(Delivery {
            attempt: 2,
            ..first
        })
        .await
        .unwrap();

        let order = saga.store.read(&key).await.unwrap().unwrap();
        assert_eq!(order.last_sequence, confirmed.last_sequence);
        assert_eq!(order.history.len(), 2, "{:?}", order.history);
    }

    #[tokio::test]
    async fn a_decision_on_a_stale_memory_is_made_again_on_the_history_that_moved() {
        let (server, saga) = saga().await;
        let (key, created) = placed(&saga.store).await;
        // Another replica cancels the order; this one still remembers it pending.
        let replica = Store::open(
            &sample::bus(&server, "replica").await,
            &bus::StreamSettings::default(),
            None,
        )
        .await
        .unwrap();
        replica
            .transition(&key, crate::store::Basis::Read, |order| {
                order.cancel(CancelReason::CustomerRequested, None)
            })
            .await
            .unwrap();

        saga.handle(sample::delivery(&key, reserved(&created)))
            .await
            .unwrap();

        let order = saga.store.read(&key).await.unwrap().unwrap();
        assert_eq!(order.status, Status::Cancelled, "confirmed over a cancel");
        assert_eq!(order.reason, Some(CancelReason::CustomerRequested));
        assert_eq!(order.history.len(), 2, "{:?}", order.history);
    }

    #[tokio::test]
    async fn a_decision_about_an_order_not_yet_readable_is_retried() {
        let (_server, saga) = saga().await;
        let id = OrderId::new();
        let created = sample::order_created(id, "alice", &[("MUG", 2)]);

        let outcome = saga
            .handle(sample::delivery(
                &sample::key("alice", id),
                reserved(&created),
            ))
            .await;

        assert!(
            matches!(outcome, Err(HandlerError::Transient(_))),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn an_event_the_order_side_does_not_handle_is_refused_for_good() {
        let (_server, saga) = saga().await;
        let id = OrderId::new();
        let created = sample::order_created(id, "alice", &[("MUG", 2)]);

        let outcome = saga
            .handle(sample::delivery(&sample::key("alice", id), created))
            .await;

        assert!(
            matches!(outcome, Err(HandlerError::Permanent(_))),
            "{outcome:?}"
        );
    }
}
