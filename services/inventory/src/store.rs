//! Where the inventory service keeps its state: each order's reservation is its events in the
//! `INVENTORY` stream (see [`events::layout`]); stock per SKU is the one thing kept in KV (the
//! `stock` bucket), changed only through the group-committing [`Ledger`].
//!
//! Inventory acts outside the log on what it reads (it gives stock back before it appends the
//! release), so with replicated streams it reads histories from the stream leader.

use std::time::Duration;

use bus::ReadError;
use bus::{Append, AppendError, Appended, Bus, EventLog, KvStore, MsgId, Precondition};
use bus::{ProvisionError, StreamSettings};
use events::layout::{self, History};
use events::names::bucket::STOCK;
use events::names::header;
use events::{Domain, Envelope, OrderId, OrderKey, Partitions, Sku, StockRevisions};

use crate::ledger::{Ledger, LedgerError};
use crate::reservation::Reservation;
use crate::stock::{StockOp, StockRecord};

/// How often marks are looked at for reconciliation.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// How old a mark must be before it is reconciled: its event should long be stored by then.
const RECONCILE_AFTER_SECS: i64 = 10;

/// The inventory service's state: the reservation events and the stock ledger.
#[derive(Debug, Clone)]
pub struct Store {
    log: EventLog,
    partitions: Partitions,
    ledger: Ledger,
}

impl Store {
    /// Opens the store on the stock bucket.
    pub async fn open(bus: &Bus, settings: &StreamSettings) -> Result<Self, ProvisionError> {
        let (replicas, partitions) = (settings.replicas, settings.partitions);
        let stock = KvStore::open(bus, &settings.bucket(STOCK))
            .await?
            // Every batch of a SKU writes its record: remembering its last revision saves a read.
            .with_cache(bus::RECENT_KEYS);
        Ok(Self {
            log: bus.events().clone().with_leader_reads(replicas > 1),
            partitions,
            ledger: Ledger::new(stock),
        })
    }

    /// How many partitions the streams have.
    pub fn partitions(&self) -> Partitions {
        self.partitions
    }

    /// The stock ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn history(&self, key: &OrderKey) -> History {
        key.history(Domain::Inventory, self.partitions)
    }

    /// Sets the units of `sku` available for new reservations (an operator's stock count);
    /// the record after.
    pub async fn set_available(
        &self,
        sku: &Sku,
        available: u64,
    ) -> Result<StockRecord, LedgerError> {
        self.ledger
            .apply(sku, StockOp::SetAvailable(available), None)
            .await?;
        self.ledger.record(sku).await
    }

    /// The reservation of the order under `key`.
    pub async fn read(&self, key: &OrderKey) -> Result<Reservation, ReadError> {
        let events = self.log.read(&self.history(key)).await?;
        Ok(Reservation::fold(key.order, &events))
    }

    /// The reservation of `order_id`, whoever placed it; `None` if inventory has no events of it.
    pub async fn find(&self, order_id: OrderId) -> Result<Option<Reservation>, ReadError> {
        let history = layout::order_anywhere(Domain::Inventory, self.partitions, order_id);
        let events = self.log.read(&history).await?;
        Ok((!events.is_empty()).then(|| Reservation::fold(order_id, &events)))
    }

    /// Appends `event` to the order's inventory history if `precondition` holds; `stock` says
    /// where the event's stock changes are in the stock bucket, if it made any (sent as
    /// [`header::STOCK_REVISION`]).
    pub async fn append(
        &self,
        key: &OrderKey,
        event: &Envelope,
        precondition: Precondition,
        stock: Option<&StockRevisions>,
    ) -> Result<Appended, AppendError> {
        let history = self.history(key);
        let msg_id = MsgId::new(event.kind(), key.order);
        let append = Append::new(
            precondition,
            &history,
            key.subject(&event.event),
            event,
            msg_id,
        );
        let revision = stock.map(StockRevisions::to_header);
        let append = match &revision {
            Some(revision) => append.annotated(header::STOCK_REVISION, revision),
            None => append,
        };
        self.log.append(append).await
    }

    /// Settles, until `shutdown`, the marks that outlived their attempt (a process that died
    /// between storing a decision and settling it): every [`RECONCILE_EVERY`], each mark older
    /// than [`RECONCILE_AFTER_SECS`] is settled against the order's stored events. Marks whose
    /// order has no decision are left alone: that order's message is still to be delivered.
    pub async fn reconcile(self, shutdown: bus::CancellationToken) {
        // At start, every SKU may hold marks a previous process left.
        let mut seed: Vec<Sku> = match self.ledger.stock().keys().await {
            Ok(keys) => keys.into_iter().filter_map(|k| Sku::new(k).ok()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list stock keys to reconcile");
                Vec::new()
            }
        };
        loop {
            for sku in self.ledger.marked(seed.drain(..)) {
                if let Err(e) = self.reconcile_sku(&sku).await {
                    tracing::warn!(%sku, error = %e, "reconciling stock marks failed; will retry");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            }
        }
    }

    async fn reconcile_sku(&self, sku: &Sku) -> Result<(), Box<dyn std::error::Error>> {
        let Some(record) = self.ledger.stock().get(sku.as_str()).await? else {
            self.ledger.unmark(sku);
            return Ok(());
        };
        if record.value.unsettled() == 0 {
            self.ledger.unmark(sku);
            return Ok(());
        }
        let before = chrono::Utc::now().timestamp() - RECONCILE_AFTER_SECS;
        let orders: Vec<OrderId> = record.value.marked_before(before).collect();
        for order in orders {
            let Some(reservation) = self.find(order).await? else {
                continue;
            };
            if let Some(decision) = &reservation.decision {
                self.ledger.settle_later(
                    sku,
                    StockOp::SettleTake {
                        order,
                        decision: decision.event(),
                        keep: decision.keeps(),
                    },
                );
            }
            if let Some(release) = reservation.released {
                self.ledger
                    .settle_later(sku, StockOp::SettleReturn { order, release });
            }
            tracing::info!(%sku, order_id = %order, "reconciled a stock mark left by an earlier attempt");
        }
        Ok(())
    }
}
