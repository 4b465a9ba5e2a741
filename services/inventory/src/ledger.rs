//! The stock ledger: every change to a SKU's stock goes through here, and the changes that
//! arrive together are **group-committed** — one compare-and-set write of the SKU's record
//! applies a whole batch (takes for many orders, give-backs, settles), so a hot SKU costs one
//! round trip per batch, not one per order. While a batch is being written the next one
//! gathers; a conflict with another replica re-reads the record and applies the batch again.
//!
//! Settles ride along: they change no numbers (or give back units a rejection left), so they
//! wait for the next write of the record — at most [`SETTLE_DELAY`] — instead of costing one of
//! their own. Every op carries the lease of the delivery it serves, checked when the batch is
//! applied: a delivery that lost its message to a redelivery changes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{Change, KvStore, Lease, StoreError, Versioned};
use events::Sku;
use futures::FutureExt as _;
use tokio::sync::{Notify, oneshot};

use telemetry::metric;

use crate::stock::{Applied, StockOp, StockRecord};

/// How long a settle waits for a write to ride along with before it is written on its own.
pub const SETTLE_DELAY: Duration = Duration::from_millis(100);

/// A stock change that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The delivery the change serves lost its message to a newer delivery.
    #[error("delivery lease expired before the stock of {0} changed")]
    LeaseExpired(Sku),
    /// The stock bucket failed (unavailable, contended, unreadable).
    #[error("stock of {sku}: {reason}")]
    Store {
        /// The SKU.
        sku: Sku,
        /// What failed.
        reason: String,
        /// Whether retrying may help.
        transient: bool,
    },
}

impl From<LedgerError> for bus::HandlerError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Store {
                transient: false, ..
            } => Self::permanent(error),
            _ => Self::transient(error),
        }
    }
}

type Reply = oneshot::Sender<Result<Versioned<Applied>, LedgerError>>;

struct Job {
    op: StockOp,
    lease: Option<Lease>,
    /// `None` for a settle nobody waits for.
    reply: Option<Reply>,
}

#[derive(Default)]
struct Pending {
    jobs: Vec<Job>,
    writing: bool,
}

/// The jobs of one SKU waiting for its next write, and the signal that an urgent one arrived.
#[derive(Default)]
struct Queue {
    pending: Mutex<Pending>,
    urgent: Notify,
}

/// Group-committed stock changes per SKU. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    stock: KvStore<StockRecord>,
    queues: Arc<Mutex<HashMap<Sku, Arc<Queue>>>>,
    /// SKUs whose record may hold marks to reconcile.
    marked: Arc<Mutex<HashSet<Sku>>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("stock", &self.stock)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger over the `stock` bucket.
    pub fn new(stock: KvStore<StockRecord>) -> Self {
        Self {
            stock,
            queues: Arc::default(),
            marked: Arc::default(),
        }
    }

    /// The stock bucket, for reads.
    pub fn stock(&self) -> &KvStore<StockRecord> {
        &self.stock
    }

    /// The record of `sku` as it is now (empty if it has none).
    pub async fn record(&self, sku: &Sku) -> Result<StockRecord, LedgerError> {
        match self.stock.get(sku.as_str()).await {
            Ok(record) => Ok(record.map(|r| r.value).unwrap_or_default()),
            Err(e) => Err(store_error(sku, &e)),
        }
    }

    /// Applies `op` to `sku` in the next batch and waits until it is written (or found to
    /// change nothing); `lease` is checked when the batch is applied. The revision is the
    /// record's, written or read: the stock revision an event recording the change carries.
    pub async fn apply(
        &self,
        sku: &Sku,
        op: StockOp,
        lease: Option<&Lease>,
    ) -> Result<Versioned<Applied>, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(
            sku,
            Job {
                op,
                lease: lease.cloned(),
                reply: Some(reply),
            },
        );
        answer.await.unwrap_or_else(|_| {
            Err(LedgerError::Store {
                sku: sku.clone(),
                reason: "the batch writer stopped".into(),
                transient: true,
            })
        })
    }

    /// Queues a settle to ride along with the next write of `sku`'s record.
    pub fn settle_later(&self, sku: &Sku, op: StockOp) {
        self.enqueue(
            sku,
            Job {
                op,
                lease: None,
                reply: None,
            },
        );
    }

    /// SKUs whose record may hold marks, for the reconciler; `seed` adds SKUs found elsewhere
    /// (all of them, at start-up).
    pub fn marked(&self, seed: impl IntoIterator<Item = Sku>) -> Vec<Sku> {
        let Ok(mut marked) = self.marked.lock() else {
            return Vec::new();
        };
        marked.extend(seed);
        marked.iter().cloned().collect()
    }

    /// Forgets that `sku` may hold marks (its record has none).
    pub fn unmark(&self, sku: &Sku) {
        if let Ok(mut marked) = self.marked.lock() {
            marked.remove(sku);
        }
    }

    fn enqueue(&self, sku: &Sku, job: Job) {
        let urgent = job.reply.is_some();
        let Ok(mut queues) = self.queues.lock() else {
            if let Some(reply) = job.reply {
                let _ = reply.send(Err(poisoned(sku)));
            }
            return;
        };
        let queue = queues.entry(sku.clone()).or_default().clone();
        drop(queues);
        let start = match queue.pending.lock() {
            Ok(mut pending) => {
                pending.jobs.push(job);
                !std::mem::replace(&mut pending.writing, true)
            }
            Err(_) => return,
        };
        if start {
            // A task of its own, so that no caller's cancellation can strand the batch.
            tokio::spawn(self.clone().write_batches(sku.clone(), queue));
        } else if urgent {
            queue.urgent.notify_one();
        }
    }

    /// Writes batches for `sku` until its queue is empty.
    async fn write_batches(self, sku: Sku, queue: Arc<Queue>) {
        loop {
            let jobs = {
                let Ok(mut pending) = queue.pending.lock() else {
                    return;
                };
                if pending.jobs.is_empty() {
                    pending.writing = false;
                    return;
                }
                let only_settles = pending.jobs.iter().all(|j| j.reply.is_none());
                if only_settles {
                    // A permit left by an urgent job of a batch already written would end the
                    // wait at once; drop it here, under the lock, so only a job pushed after
                    // this check (which must take the lock) can wake the wait.
                    let _ = queue.urgent.notified().now_or_never();
                    None
                } else {
                    Some(std::mem::take(&mut pending.jobs))
                }
            };
            let jobs = match jobs {
                Some(jobs) => jobs,
                None => {
                    // Wait for a write to ride along with, or write the settles on their own.
                    tokio::select! {
                        _ = tokio::time::sleep(SETTLE_DELAY) => {}
                        _ = queue.urgent.notified() => {}
                    }
                    let Ok(mut pending) = queue.pending.lock() else {
                        return;
                    };
                    std::mem::take(&mut pending.jobs)
                }
            };
            self.write(&sku, jobs).await;
        }
    }

    /// Applies `jobs` to the record in one compare-and-set (re-applied on a conflict) and
    /// answers each.
    async fn write(&self, sku: &Sku, mut jobs: Vec<Job>) {
        let now = chrono::Utc::now().timestamp();
        let ops: Vec<(StockOp, Option<Lease>)> =
            jobs.iter().map(|j| (j.op, j.lease.clone())).collect();
        let written = self
            .stock
            .modify_versioned(sku.as_str(), |current| {
                let mut record = current.cloned().unwrap_or_default();
                let mut changed = false;
                let results: Vec<Result<Applied, LedgerError>> = ops
                    .iter()
                    .map(|(op, lease)| {
                        if lease.as_ref().is_some_and(|l| !l.is_held()) {
                            return Err(LedgerError::LeaseExpired(sku.clone()));
                        }
                        let (applied, moved) = record.apply(*op, now);
                        changed |= moved;
                        Ok(applied)
                    })
                    .collect();
                let marks = record.unsettled();
                if changed {
                    Change::Write(record, (results, marks))
                } else {
                    Change::Keep((results, marks))
                }
            })
            .await;
        metrics::histogram!(metric::STOCK_BATCH_SIZE).record(jobs.len() as f64);
        match written {
            Ok(Versioned {
                value: (results, marks),
                revision,
            }) => {
                if marks > 0 {
                    self.marked(Some(sku.clone()));
                }
                for (job, result) in jobs.drain(..).zip(results) {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(result.map(|value| Versioned { value, revision }));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%sku, error = %e, batch = jobs.len(), "stock batch not written");
                let failure = store_error(sku, &e);
                for job in jobs {
                    match job.reply {
                        Some(reply) => {
                            let _ = reply.send(Err(failure.clone()));
                        }
                        // A settle is not lost: the reconciler finds the mark again.
                        None => {
                            self.marked(Some(sku.clone()));
                        }
                    }
                }
            }
        }
    }
}

fn store_error(sku: &Sku, error: &StoreError) -> LedgerError {
    LedgerError::Store {
        sku: sku.clone(),
        reason: error.to_string(),
        transient: error.is_transient(),
    }
}

fn poisoned(sku: &Sku) -> LedgerError {
    LedgerError::Store {
        sku: sku.clone(),
        reason: "ledger state poisoned".into(),
        transient: true,
    }
}
