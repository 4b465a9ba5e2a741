//! Inventory's side of the saga, on the durable consumer `inventory` (`orders.created`,
//! `orders.cancelled`), safe with any number of replicas and any redelivery:
//!
//! - reserve: take every line (each SKU write is compare-and-set and remembers the order, so
//!   a retry takes nothing twice), record the decision create-only, settle the SKUs by that
//!   decision (keep the units, or give them back if rejected), publish the decision;
//! - release: mark the reservation releasing, give back each line once, mark it released,
//!   settle the SKUs, publish `inventory.released`.
//!
//! Every step is idempotent and the message is acked only after the publish, so a crash at
//! any point is finished by the redelivery.

use std::collections::BTreeMap;

use bus::{Change, ConsumerSpec, Delivery, HandlerError, Lease, MsgId, Publisher, Store};
use events::{
    Envelope, Event, EventKind, OrderCreated, OrderId, ReservedLine, Shortfall, Sku, names,
};

use crate::reservation::{Reservation, State};
use crate::stock::{Reserve, StockRecord};

/// Durable consumer of order events.
pub const CONSUMER: &str = "inventory";
/// Rounds of "read the reservation, act, write" before a redelivery is asked for.
const ROUNDS: usize = 8;

/// The inventory service's consumer.
pub fn consumer_specs() -> Vec<ConsumerSpec> {
    vec![ConsumerSpec::new(
        names::stream::ORDERS,
        CONSUMER,
        &[
            names::subject::ORDERS_CREATED,
            names::subject::ORDERS_CANCELLED,
        ],
    )]
}

/// Handles `orders.created` and `orders.cancelled`.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub(crate) stock: Store<StockRecord>,
    pub(crate) reservations: Store<Reservation>,
    pub(crate) publisher: Publisher,
}

impl bus::Handler for Inventory {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let cause = &delivery.envelope;
        match &cause.event {
            Event::OrderCreated(order) => self.reserve(order, cause, &delivery.lease).await,
            Event::OrderCancelled(cancelled) => {
                self.release(cancelled.order_id, cause, &delivery.lease)
                    .await
            }
            other => Err(HandlerError::permanent(format!(
                "inventory-service does not handle {}",
                other.kind()
            ))),
        }
    }
}

/// The order's lines as (SKU, quantity), one per SKU, in SKU order — a fixed order keeps two
/// replicas from working on the same SKUs in opposite orders.
fn lines_of(order: &OrderCreated) -> Result<Vec<ReservedLine>, HandlerError> {
    let mut by_sku: BTreeMap<&Sku, u32> = BTreeMap::new();
    for line in &order.items {
        let quantity = by_sku.entry(&line.sku).or_default();
        *quantity = quantity.checked_add(line.quantity).ok_or_else(|| {
            HandlerError::permanent(format!("quantity of {} overflows", line.sku))
        })?;
    }
    Ok(by_sku
        .into_iter()
        .map(|(sku, quantity)| ReservedLine {
            sku: sku.clone(),
            quantity,
        })
        .collect())
}

impl Inventory {
    /// Changes the stock of `sku` with compare-and-set — only while `lease` is held, checked
    /// after every read, so an attempt that lost its message to a redelivery (a frozen or
    /// partitioned process waking up) cannot apply a change the newer attempt already settled.
    async fn update_stock<R>(
        &self,
        sku: &Sku,
        lease: &Lease,
        mut apply: impl FnMut(&mut StockRecord) -> (bool, R),
    ) -> Result<R, HandlerError> {
        let outcome = self
            .stock
            .modify(sku.as_str(), |current| {
                if !lease.is_held() {
                    return Change::Keep(None);
                }
                let mut stock = current.cloned().unwrap_or_default();
                match apply(&mut stock) {
                    (true, result) => Change::Write(stock, Some(result)),
                    (false, result) => Change::Keep(Some(result)),
                }
            })
            .await?;
        match outcome {
            Some(result) => Ok(result),
            None => Err(lease
                .check()
                .err()
                .unwrap_or_else(|| HandlerError::transient("delivery lease expired"))),
        }
    }

    async fn reserve(
        &self,
        order: &OrderCreated,
        cause: &Envelope,
        lease: &Lease,
    ) -> Result<(), HandlerError> {
        let order_id = order.order_id;
        let key = order_id.to_string();
        let lines = lines_of(order)?;
        for _ in 0..ROUNDS {
            let recorded = match self.reservations.get(&key).await? {
                Some(existing) if existing.value.state == State::CancelledFirst => {
                    let rejected = existing.value.reject_after_cancel(cause);
                    self.reservations
                        .update(&key, &rejected, existing.revision)
                        .await?
                        .map(|_| rejected)
                }
                Some(existing) => Some(existing.value),
                None => {
                    let state = self.take(order_id, &lines, lease).await?;
                    let decided = Reservation::decided(order_id, state, cause);
                    // Create-only: if another replica or a cancellation got there first, the
                    // next round follows what they recorded.
                    self.reservations
                        .create(&key, &decided)
                        .await?
                        .map(|_| decided)
                }
            };
            if let Some(reservation) = recorded {
                return self.settle_decision(&reservation, &lines, lease).await;
            }
        }
        Err(HandlerError::transient(format!(
            "reservation of {order_id} is contended"
        )))
    }

    /// Takes every line, or reports what is short (taken lines stay pending until the
    /// decision is recorded, then are settled by it).
    async fn take(
        &self,
        order_id: OrderId,
        lines: &[ReservedLine],
        lease: &Lease,
    ) -> Result<State, HandlerError> {
        let mut shortfall = Vec::new();
        for line in lines {
            let outcome = if shortfall.is_empty() {
                self.update_stock(&line.sku, lease, |stock| {
                    let outcome = stock.reserve(order_id, line.quantity);
                    (outcome == Reserve::Taken, outcome)
                })
                .await?
            } else {
                // Already rejected: only look, to report every short line.
                let mut stock = self
                    .stock
                    .get(line.sku.as_str())
                    .await?
                    .map(|s| s.value)
                    .unwrap_or_default();
                stock.reserve(order_id, line.quantity)
            };
            if let Reserve::Short { available } = outcome {
                shortfall.push(Shortfall {
                    sku: line.sku.clone(),
                    requested: line.quantity,
                    available: u32::try_from(available).unwrap_or(u32::MAX),
                });
            }
        }
        Ok(if shortfall.is_empty() {
            State::Reserved {
                lines: lines.to_vec(),
            }
        } else {
            State::Rejected { shortfall }
        })
    }

    /// Settles every SKU by the recorded decision and publishes it.
    async fn settle_decision(
        &self,
        reservation: &Reservation,
        lines: &[ReservedLine],
        lease: &Lease,
    ) -> Result<(), HandlerError> {
        let order_id = reservation.order_id;
        let rejected = matches!(reservation.state, State::Rejected { .. });
        for line in lines {
            self.update_stock(&line.sku, lease, |stock| {
                let changed = if rejected {
                    stock.undo_reserve(order_id)
                } else {
                    stock.settle(order_id, false)
                };
                (changed, ())
            })
            .await?;
        }
        let Some(event) = reservation.decision_event() else {
            return Ok(());
        };
        let kind = event.kind();
        self.publisher
            .publish(&event, &MsgId::new(kind, order_id))
            .await?;
        tracing::info!(%order_id, decision = %kind, "reservation decided");
        Ok(())
    }

    async fn release(
        &self,
        order_id: OrderId,
        cause: &Envelope,
        lease: &Lease,
    ) -> Result<(), HandlerError> {
        let key = order_id.to_string();
        for _ in 0..ROUNDS {
            let Some(existing) = self.reservations.get(&key).await? else {
                if self
                    .reservations
                    .create(&key, &Reservation::cancelled_first(order_id))
                    .await?
                    .is_some()
                {
                    tracing::info!(%order_id, "cancelled before its reservation; tombstone left");
                    return Ok(());
                }
                continue;
            };
            match &existing.value.state {
                State::CancelledFirst | State::Rejected { .. } => return Ok(()),
                State::Reserved { .. } => {
                    let Some(releasing) = existing.value.releasing(cause) else {
                        continue;
                    };
                    if self
                        .reservations
                        .update(&key, &releasing, existing.revision)
                        .await?
                        .is_some()
                    {
                        return self.finish_release(releasing, lease).await;
                    }
                }
                State::Releasing { .. } | State::Released { .. } => {
                    return self.finish_release(existing.value, lease).await;
                }
            }
        }
        Err(HandlerError::transient(format!(
            "release of {order_id} is contended"
        )))
    }

    /// Gives back every line once (unless already released), marks the reservation released,
    /// settles, publishes.
    async fn finish_release(
        &self,
        reservation: Reservation,
        lease: &Lease,
    ) -> Result<(), HandlerError> {
        let order_id = reservation.order_id;
        let (State::Releasing { lines } | State::Released { lines }) = &reservation.state else {
            return Ok(());
        };
        // Once the record says released, the pending marks that made the give-back idempotent
        // may already be settled: giving back again would return the units twice.
        if matches!(reservation.state, State::Releasing { .. }) {
            for line in lines {
                self.update_stock(&line.sku, lease, |stock| {
                    (stock.release(order_id, line.quantity), ())
                })
                .await?;
            }
        }
        let released = self
            .reservations
            .modify(&order_id.to_string(), |current| {
                match current.and_then(Reservation::released) {
                    Some(released) => Change::Write(released.clone(), released),
                    None => Change::Keep(reservation.clone()),
                }
            })
            .await?;
        for line in lines {
            self.update_stock(&line.sku, lease, |stock| (stock.settle(order_id, true), ()))
                .await?;
        }
        if let Some(event) = released.release_event() {
            self.publisher
                .publish(&event, &MsgId::new(EventKind::InventoryReleased, order_id))
                .await?;
            tracing::info!(%order_id, "reservation released");
        }
        Ok(())
    }
}
