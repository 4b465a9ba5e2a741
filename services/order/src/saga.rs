//! The order's side of the saga, on the durable consumer `order-saga` (`inventory.*.reserved`,
//! `inventory.*.rejected`, per partition): confirm or cancel the order.
//!
//! The decision is one conditional append to the order's history — the event is the state
//! change, so there is nothing to store first and publish after. On a first delivery the
//! append is decided on the order as this process last saw it (usually: it just created it),
//! and its precondition alone proves that view current; a redelivery reads first, finds its own
//! transition if an earlier attempt made it, and does nothing.

use bus::{ConsumerSpec, Delivery, HandlerError};
use events::{CancelReason, Event, Partitions};

use crate::order::Decision;
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
                    "order-service does not handle {}",
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
            Some(Transitioned::Unchanged(decision, _)) => {
                let why = match decision {
                    Decision::Ignore(why) => why,
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
                    metrics::histogram!("orderflow_saga_duration_seconds", "outcome" => event.kind().type_name())
                        .record(took.as_secs_f64());
                }
                Ok(())
            }
        }
    }
}
