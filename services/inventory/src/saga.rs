//! Inventory's side of the saga, on the durable consumer `inventory` (`orders.created`,
//! `orders.cancelled`), safe with any number of replicas and any redelivery:
//!
//! - reserve: read the stock of every line, decide (all lines or none), and store the decision
//!   together with the stock it takes in one atomic batch — the reservation created only if
//!   absent, every SKU compare-and-set on the revision read — then publish the decision;
//! - release: store the reservation as released together with the stock it gives back, in one
//!   atomic batch (the reservation compare-and-set from `reserved`), then publish
//!   `inventory.released`.
//!
//! A batch is stored whole or not at all, so there is no moment where stock moved but the
//! reservation does not say why: a crash before the commit leaves nothing, a crash after it
//! leaves a record the redelivery finds and re-publishes. The reservation's create-only (or
//! compare-and-set) precondition is also the fence against a stale attempt — a frozen replica
//! whose message was redelivered elsewhere — since only one of them can commit.

use std::collections::BTreeMap;

use bus::{
    Bucket, ConsumerSpec, Delivery, HandlerError, MsgId, Publisher, Store, Versioned,
    pause_after_conflict,
};
use events::{
    Envelope, Event, EventKind, OrderCreated, OrderId, ReservedLine, Shortfall, Sku, names,
};

use crate::reservation::{Reservation, State};
use crate::stock::StockRecord;

/// Durable consumer of order events.
pub const CONSUMER: &str = "inventory";
/// Rounds of "read, decide, commit" lost to concurrent writers before a redelivery is asked
/// for (a hot SKU under two replicas loses some).
const ROUNDS: u32 = 64;

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
    pub(crate) bucket: Bucket,
    pub(crate) stock: Store<StockRecord>,
    pub(crate) reservations: Store<Reservation>,
    pub(crate) publisher: Publisher,
}

impl bus::Handler for Inventory {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let cause = &delivery.envelope;
        match &cause.event {
            Event::OrderCreated(order) => self.reserve(order, cause).await,
            Event::OrderCancelled(cancelled) => self.release(cancelled.order_id, cause).await,
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
    async fn reserve(&self, order: &OrderCreated, cause: &Envelope) -> Result<(), HandlerError> {
        let order_id = order.order_id;
        let key = order_id.to_string();
        let lines = lines_of(order)?;
        for round in 1..=ROUNDS {
            let recorded = match self.reservations.get(&key).await? {
                Some(existing) if existing.value.state == State::CancelledFirst => {
                    let rejected = existing.value.reject_after_cancel(cause);
                    self.reservations
                        .update(&key, &rejected, existing.revision)
                        .await?
                        .map(|_| rejected)
                }
                Some(existing) => Some(existing.value),
                None => self.decide(order_id, &lines, cause).await?,
            };
            if let Some(reservation) = recorded {
                return self.publish_decision(&reservation).await;
            }
            pause_after_conflict(round).await;
        }
        Err(HandlerError::transient(format!(
            "reservation of {order_id} is contended"
        )))
    }

    /// Decides on the stock read now and commits the decision with the stock it takes;
    /// `None` if someone wrote one of those keys first (nothing was written then).
    async fn decide(
        &self,
        order_id: OrderId,
        lines: &[ReservedLine],
        cause: &Envelope,
    ) -> Result<Option<Reservation>, HandlerError> {
        let mut taken = Vec::with_capacity(lines.len());
        let mut shortfall = Vec::new();
        for line in lines {
            let current = self.stock.get(line.sku.as_str()).await?;
            let mut stock = current
                .as_ref()
                .map(|c| c.value.clone())
                .unwrap_or_default();
            match stock.take(line.quantity) {
                Ok(()) => taken.push((&line.sku, stock, current.map(|c| c.revision))),
                Err(short) => shortfall.push(Shortfall {
                    sku: line.sku.clone(),
                    requested: line.quantity,
                    available: u32::try_from(short.available).unwrap_or(u32::MAX),
                }),
            }
        }
        let mut batch = self.bucket.batch();
        let state = if shortfall.is_empty() {
            for (sku, stock, revision) in &taken {
                self.stage_stock(&mut batch, sku, stock, *revision)?;
            }
            State::Reserved {
                lines: lines.to_vec(),
            }
        } else {
            // Nothing is taken, so the rejection alone is written.
            State::Rejected { shortfall }
        };
        let decided = Reservation::decided(order_id, state, cause);
        batch.create(&self.reservations, &order_id.to_string(), &decided)?;
        Ok(batch.commit().await?.then_some(decided))
    }

    /// Adds the stock of `sku` to `batch`: compare-and-set on `revision`, create if unseen.
    fn stage_stock(
        &self,
        batch: &mut bus::Batch,
        sku: &Sku,
        stock: &StockRecord,
        revision: Option<u64>,
    ) -> Result<(), HandlerError> {
        match revision {
            Some(revision) => batch.update(&self.stock, sku.as_str(), stock, revision)?,
            None => batch.create(&self.stock, sku.as_str(), stock)?,
        };
        Ok(())
    }

    /// Publishes the recorded decision (the same event, same id, on every attempt).
    async fn publish_decision(&self, reservation: &Reservation) -> Result<(), HandlerError> {
        let Some(event) = reservation.decision_event() else {
            return Ok(());
        };
        let kind = event.kind();
        let order_id = reservation.order_id;
        self.publisher
            .publish(&event, &MsgId::new(kind, order_id))
            .await?;
        tracing::info!(%order_id, decision = %kind, "reservation decided");
        Ok(())
    }

    async fn release(&self, order_id: OrderId, cause: &Envelope) -> Result<(), HandlerError> {
        let key = order_id.to_string();
        for round in 1..=ROUNDS {
            let released = match self.reservations.get(&key).await? {
                None => {
                    let tombstone = Reservation::cancelled_first(order_id);
                    if self.reservations.create(&key, &tombstone).await?.is_some() {
                        tracing::info!(%order_id, "cancelled before its reservation; tombstone left");
                        return Ok(());
                    }
                    None
                }
                Some(existing) => match &existing.value.state {
                    State::CancelledFirst | State::Rejected { .. } => return Ok(()),
                    State::Released { .. } => Some(existing.value),
                    State::Reserved { lines } => self.give_back(&existing, lines, cause).await?,
                },
            };
            if let Some(released) = released {
                return self.publish_release(&released).await;
            }
            pause_after_conflict(round).await;
        }
        Err(HandlerError::transient(format!(
            "release of {order_id} is contended"
        )))
    }

    /// Commits the reservation as released with every line given back; `None` if someone
    /// wrote one of those keys first (nothing was written then).
    async fn give_back(
        &self,
        reservation: &Versioned<Reservation>,
        lines: &[ReservedLine],
        cause: &Envelope,
    ) -> Result<Option<Reservation>, HandlerError> {
        let Some(released) = reservation.value.released(cause) else {
            return Ok(None);
        };
        let mut batch = self.bucket.batch();
        batch.update(
            &self.reservations,
            &released.order_id.to_string(),
            &released,
            reservation.revision,
        )?;
        for line in lines {
            let current = self.stock.get(line.sku.as_str()).await?;
            let mut stock = current
                .as_ref()
                .map(|c| c.value.clone())
                .unwrap_or_default();
            stock.give_back(line.quantity);
            self.stage_stock(&mut batch, &line.sku, &stock, current.map(|c| c.revision))?;
        }
        Ok(batch.commit().await?.then_some(released))
    }

    /// Publishes the recorded release (the same event, same id, on every attempt).
    async fn publish_release(&self, reservation: &Reservation) -> Result<(), HandlerError> {
        let Some(event) = reservation.release_event() else {
            return Ok(());
        };
        let order_id = reservation.order_id;
        self.publisher
            .publish(&event, &MsgId::new(EventKind::InventoryReleased, order_id))
            .await?;
        tracing::info!(%order_id, "reservation released");
        Ok(())
    }
}
