//! The order's side of the saga. Two durable consumers:
//!
//! - `order-requests` on `ORDERS` (`orders.created`, `orders.cancellation_requested`): records
//!   created orders (repairing the HTTP handler's best-effort write) and applies cancellation
//!   requests;
//! - `order-saga` on `INVENTORY` (`inventory.reserved`, `inventory.rejected`): confirms or
//!   cancels.
//!
//! Each decision is stored first (compare-and-set on the order record), then its event is
//! published, then the cause is acked. A crash in between redelivers the cause, which finds its
//! own transition in the history and publishes the same event again (deduplicated by the
//! server) — so a state change is never stored without its event.

use bus::{Change, ConsumerSpec, Delivery, HandlerError, MsgId, Publisher};
use events::{CancelReason, Envelope, Event, EventKind, OrderId, names};

use crate::order::{Decision, OrderRecord};
use crate::records::{self, Records};

/// Durable consumer of order requests.
pub const REQUESTS_CONSUMER: &str = "order-requests";
/// Durable consumer of inventory decisions.
pub const SAGA_CONSUMER: &str = "order-saga";

/// The consumer specs of the order service.
pub fn consumer_specs() -> [ConsumerSpec; 2] {
    [
        ConsumerSpec::new(
            names::stream::ORDERS,
            REQUESTS_CONSUMER,
            &[
                names::subject::ORDERS_CREATED,
                names::subject::ORDERS_CANCELLATION_REQUESTED,
            ],
        ),
        ConsumerSpec::new(
            names::stream::INVENTORY,
            SAGA_CONSUMER,
            &[
                names::subject::INVENTORY_RESERVED,
                names::subject::INVENTORY_REJECTED,
            ],
        ),
    ]
}

/// Handles every event the order service consumes.
#[derive(Debug, Clone)]
pub struct Saga {
    pub(crate) records: Records,
    pub(crate) publisher: Publisher,
}

impl bus::Handler for Saga {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let cause = &delivery.envelope;
        match &cause.event {
            Event::OrderCreated(order) => Ok(self.records.insert_created(cause, order).await?),
            Event::OrderCancellationRequested(request) => {
                self.apply(request.order_id, cause, |o| {
                    o.cancel(CancelReason::CustomerRequested, cause)
                })
                .await
            }
            Event::InventoryReserved(reserved) => {
                self.apply(reserved.order_id, cause, |o| o.confirm(cause))
                    .await
            }
            Event::InventoryRejected(rejected) => {
                let reason = CancelReason::OutOfStock {
                    shortfall: rejected.shortfall.clone(),
                };
                self.apply(rejected.order_id, cause, |o| {
                    o.cancel(reason.clone(), cause)
                })
                .await
            }
            other => Err(HandlerError::permanent(format!(
                "order-service does not handle {}",
                other.kind()
            ))),
        }
    }
}

impl Saga {
    /// Stores the decision `decide` takes on the order (CAS, retried on conflict), then
    /// publishes the event it produced.
    async fn apply(
        &self,
        order_id: OrderId,
        cause: &Envelope,
        decide: impl Fn(&OrderRecord) -> Decision,
    ) -> Result<(), HandlerError> {
        let key = order_id.to_string();
        // Inventory may decide before the projection of the same `orders.created` has written
        // the record; it is usually a millisecond away, so wait a little here rather than nak
        // into a redelivery delay.
        let mut pauses = records::projection_pauses(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(16),
        );
        let outcome = loop {
            let outcome = self
                .records
                .orders()
                .modify(&key, |current| match current.map(&decide) {
                    None => Change::Keep(None),
                    Some(Decision::Transition(next, event)) => {
                        let took = next.created_at().map(|created| event.time - created);
                        Change::Write(next, Some(Some((event, took))))
                    }
                    Some(Decision::Republish(event)) => Change::Keep(Some(Some((event, None)))),
                    Some(Decision::Ignore) => Change::Keep(Some(None)),
                })
                .await?;
            match (outcome, pauses.next()) {
                (None, Some(pause)) => tokio::time::sleep(pause).await,
                (outcome, _) => break outcome,
            }
        };
        match outcome {
            // The record is written by the `orders.created` projection, which may lag.
            None => Err(HandlerError::transient(format!(
                "order {order_id} is not recorded yet"
            ))),
            Some(None) => {
                tracing::info!(%order_id, cause = %cause.kind(), "no state change");
                Ok(())
            }
            Some(Some((event, took))) => {
                let kind = event.kind();
                self.publisher
                    .publish(&event, &msg_id(kind, order_id))
                    .await?;
                tracing::info!(%order_id, event = %kind, "order state changed");
                if let Some(took) = took.and_then(|t| t.to_std().ok()) {
                    // Accepted → settled, the latency a customer feels.
                    metrics::histogram!("orderflow_saga_duration_seconds", "outcome" => kind.type_name())
                        .record(took.as_secs_f64());
                }
                Ok(())
            }
        }
    }
}

/// One order changes to each state at most once, so the order id identifies the event.
fn msg_id(kind: EventKind, order_id: OrderId) -> MsgId {
    MsgId::new(kind, order_id)
}
