//! Where the order service keeps its state: orders are their events in the `ORDERS` stream
//! (see [`events::layout`]); the only KV bucket is for what is not an event —
//!
//! - `idempotency`: sha256(`Idempotency-Key`) → [`Claim`] with a TTL, created only if absent so
//!   two racing requests with one key make one order.
//!
//! A customer's orders are listed by subject filter (`orders.<p>.<customer>.*.created`): the
//! customer is in the subject, so no index is written. Orders this process created or changed
//! are remembered as first guesses for the saga's next transition: only an append is ever
//! decided on a guess, and its precondition proves the guess current.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bus::{AppendError, Appended, Bus, EventLog, KvBucket, KvStore, MsgId, ProvisionError};
use bus::{ReadError, StoreError};
use events::layout::{self, History};
use events::names::bucket::IDEMPOTENCY;
use events::{CustomerId, Domain, Envelope, OrderId, OrderKey, Partitions};
use futures::StreamExt as _;
use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::order::{Decision, Order};

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Rounds of "decide, append, find the history moved" before giving up for now.
const ROUNDS: usize = 16;
/// How many orders the process remembers as first guesses: a few seconds of its busiest rate.
const RECENT_ORDERS: NonZeroUsize = NonZeroUsize::MIN.saturating_add(16_383);

/// What an `Idempotency-Key` was first used for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The order it created.
    pub order_id: OrderId,
    /// sha256 of the request body, to tell a retry from a different request.
    pub request_hash: String,
}

/// What a transition decides on first.
#[derive(Debug, Clone)]
pub enum Basis {
    /// A fresh read.
    Read,
    /// The order as the caller just read it.
    Known(Box<Order>),
    /// The order as this process last saw it, if it did and the decision is an append (a
    /// first delivery: nothing can have been decided for this cause yet); else a read.
    Remembered,
}

/// What a transition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transitioned {
    /// The event was appended; the order as it is now.
    Appended(Envelope, Order),
    /// The decision was to append nothing; the order as it is.
    Unchanged(Decision, Order),
}

/// Reading or changing orders failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderStoreError {
    /// The event log could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// An append failed.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The idempotency bucket failed.
    #[error(transparent)]
    Kv(#[from] StoreError),
    /// The order's history kept moving under every decision.
    #[error("order {0} is contended: its history moved under {ROUNDS} decisions in a row")]
    Contended(OrderId),
    /// Stream metadata (for listing) could not be read.
    #[error("cannot list orders: {0}")]
    Listing(String),
}

impl OrderStoreError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Read(ReadError::Corrupt { .. }) => false,
            Self::Append(e) => e.is_transient(),
            Self::Kv(e) => e.is_transient(),
            _ => true,
        }
    }
}

impl From<OrderStoreError> for bus::HandlerError {
    fn from(error: OrderStoreError) -> Self {
        if error.is_transient() {
            Self::transient(error)
        } else {
            Self::permanent(error)
        }
    }
}

/// The orders this process created or changed last. An LRU on purpose: each entry is wanted
/// once, moments after it was written (the saga's next transition), and never again — the very
/// pattern a scan-resistant cache (such as the KV stores' `quick_cache`) evicts first, which
/// turned the saga's confirm into a read whenever it took longer than a few dozen inserts.
#[derive(Debug)]
struct Recent(Mutex<LruCache<OrderId, Order>>);

impl Recent {
    fn new(capacity: NonZeroUsize) -> Self {
        Self(Mutex::new(LruCache::new(capacity)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<OrderId, Order>> {
        // A panic while holding the lock cannot leave an LRU half-updated in a way that matters
        // here: every entry is only a first guess.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, order: &OrderId) -> Option<Order> {
        self.lock().get(order).cloned()
    }

    fn insert(&self, order: OrderId, value: Order) {
        self.lock().put(order, value);
    }

    fn remove(&self, order: &OrderId) {
        self.lock().pop(order);
    }
}

/// The order service's state: the order events and the idempotency bucket.
#[derive(Debug, Clone)]
pub struct Store {
    log: EventLog,
    bus: Bus,
    partitions: Partitions,
    idempotency: KvStore<Claim>,
    recent: Arc<Recent>,
}

impl Store {
    /// Provisions the idempotency bucket and opens the store.
    pub async fn open(
        bus: &Bus,
        replicas: usize,
        partitions: Partitions,
    ) -> Result<Self, ProvisionError> {
        Ok(Self {
            log: bus.events().clone(),
            bus: bus.clone(),
            partitions,
            idempotency: KvStore::open(
                bus,
                &KvBucket {
                    replicas,
                    ttl: Some(IDEMPOTENCY_TTL),
                    ..KvBucket::new(IDEMPOTENCY)
                },
            )
            .await?,
            recent: Arc::new(Recent::new(RECENT_ORDERS)),
        })
    }

    /// How many partitions the streams have.
    pub fn partitions(&self) -> Partitions {
        self.partitions
    }

    /// Where the events of `customer`'s `order` live.
    pub fn key(&self, customer: CustomerId, order: OrderId) -> OrderKey {
        OrderKey::new(self.partitions, customer, order)
    }

    fn history(&self, key: &OrderKey) -> History {
        key.history(Domain::Orders, self.partitions)
    }

    /// Appends a new order's `created` event, create-only. A repeat (an idempotent retry)
    /// finds the order already there and returns it as it is.
    pub async fn create(
        &self,
        key: OrderKey,
        created: &Envelope,
    ) -> Result<Order, OrderStoreError> {
        let appended = self
            .log
            .append(
                &self.history(&key),
                &key.subject(&created.event),
                created,
                &MsgId::new(created.kind(), key.order),
                0,
            )
            .await?;
        let order = match appended {
            Appended::Stored(sequence) => Order::created(key.clone(), created, sequence),
            Appended::Moved(events) => Order::fold(key.clone(), &events),
        };
        let order = order.ok_or(OrderStoreError::Contended(key.order))?;
        self.recent.insert(key.order, order.clone());
        Ok(order)
    }

    /// The order under `key`, read from its events; `None` if it has none.
    pub async fn read(&self, key: &OrderKey) -> Result<Option<Order>, OrderStoreError> {
        let events = self.log.read(&self.history(key)).await?;
        Ok(Order::fold(key.clone(), &events))
    }

    /// The order with id `order_id`, whoever placed it (a lookup by id over the customers of
    /// its partition). Under replication a follower may not have applied a just-placed order
    /// yet: an order id minted in the last seconds is looked for a little longer.
    pub async fn find(&self, order_id: OrderId) -> Result<Option<Order>, OrderStoreError> {
        let history = layout::order_anywhere(Domain::Orders, self.partitions, order_id);
        let mut pauses = std::iter::successors(Some(Duration::from_millis(2)), |p| Some(*p * 2))
            .take_while(|p| *p <= Duration::from_millis(128));
        loop {
            let events = self.log.read(&history).await?;
            if let Some(first) = events.first() {
                let Ok((key, _)) = OrderKey::parse(&first.subject) else {
                    return Ok(None);
                };
                return Ok(Order::fold(key, &events));
            }
            match pauses.next() {
                Some(pause) if recently_placed(order_id) => tokio::time::sleep(pause).await,
                _ => return Ok(None),
            }
        }
    }

    /// Applies `decide` to the order under `key` and appends what it decides, conditionally on
    /// the history it decided on; if the history moved, decides again on the new one. `None`
    /// if the order does not exist.
    pub async fn transition(
        &self,
        key: &OrderKey,
        basis: Basis,
        decide: impl Fn(&Order) -> Decision,
    ) -> Result<Option<Transitioned>, OrderStoreError> {
        let remembered = match basis {
            Basis::Known(order) => Some(*order),
            // Only an append is taken from a remembered order: its precondition checks it.
            Basis::Remembered => self
                .recent
                .get(&key.order)
                .filter(|guess| matches!(decide(guess), Decision::Append(_))),
            Basis::Read => None,
        };
        let mut order = match remembered {
            Some(order) => order,
            None => match self.read(key).await? {
                Some(order) => order,
                None => return Ok(None),
            },
        };
        for _ in 0..ROUNDS {
            let event = match decide(&order) {
                Decision::Append(event) => event,
                other => return Ok(Some(Transitioned::Unchanged(other, order))),
            };
            let appended = self
                .log
                .append(
                    &self.history(key),
                    &key.subject(&event.event),
                    &event,
                    &MsgId::new(event.kind(), key.order),
                    order.last_sequence,
                )
                .await?;
            match appended {
                Appended::Stored(sequence) => {
                    let order = order.appended(&event, sequence);
                    self.recent.insert(key.order, order.clone());
                    return Ok(Some(Transitioned::Appended(event, order)));
                }
                Appended::Moved(events) => match Order::fold(key.clone(), &events) {
                    Some(moved) => order = moved,
                    None => return Ok(None),
                },
            }
        }
        self.recent.remove(&key.order);
        Err(OrderStoreError::Contended(key.order))
    }

    /// A page of a customer's orders, newest first, strictly older than `before` if given;
    /// also returns the cursor of the next page. The ids come from the subjects of the
    /// customer's `created` events (order ids are UUID v7, so they sort by time); only the
    /// page's orders are read.
    pub async fn list_for_customer(
        &self,
        customer: &CustomerId,
        before: Option<OrderId>,
        limit: usize,
    ) -> Result<(Vec<Order>, Option<OrderId>), OrderStoreError> {
        let listing = |e: &dyn std::fmt::Display| OrderStoreError::Listing(e.to_string());
        let mut ids = Vec::new();
        for partition in self.partitions.all() {
            let created = layout::orders_of(customer, partition, self.partitions);
            let stream = self
                .bus
                .jetstream()
                .get_stream_no_info(&created.stream)
                .await
                .map_err(|e| listing(&e))?;
            let mut subjects = stream
                .info_with_subjects(&created.filter)
                .await
                .map_err(|e| listing(&e))?;
            while let Some(subject) = subjects.next().await {
                let (subject, _) = subject.map_err(|e| listing(&e))?;
                if let Ok((key, _)) = OrderKey::parse(&subject) {
                    ids.push(key.order);
                }
            }
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let page: Vec<OrderId> = ids
            .into_iter()
            .filter(|id| before.is_none_or(|b| *id < b))
            .take(limit + 1)
            .collect();
        let next = if page.len() > limit {
            page.get(limit - 1).copied()
        } else {
            None
        };
        let reads = page
            .into_iter()
            .take(limit)
            .map(|id| self.key(customer.clone(), id))
            .map(|key| async move { self.read(&key).await });
        let orders = futures::future::try_join_all(reads).await?;
        Ok((orders.into_iter().flatten().collect(), next))
    }

    /// Claims `key` for `claim`; `Ok(None)` if claimed now, `Ok(Some(existing))` if it was
    /// already claimed (by this request's earlier try or by another one).
    pub async fn claim(&self, key: &str, claim: &Claim) -> Result<Option<Claim>, StoreError> {
        // Absent after a failed create means the claim expired in between: claim afresh.
        for _ in 0..3 {
            if self.idempotency.create(key, claim).await?.is_some() {
                return Ok(None);
            }
            if let Some(existing) = self.idempotency.get(key).await? {
                return Ok(Some(existing.value));
            }
        }
        Err(StoreError::Contended {
            bucket: IDEMPOTENCY.into(),
            key: key.to_owned(),
            attempts: 3,
        })
    }
}

/// Whether the order id (a UUID v7, timestamped at placement) is less than 5 s old.
fn recently_placed(order_id: OrderId) -> bool {
    let Some((secs, nanos)) = order_id.0.get_timestamp().map(|t| t.to_unix()) else {
        return false;
    };
    let placed = std::time::UNIX_EPOCH + Duration::new(secs, nanos);
    placed
        .elapsed()
        .is_ok_and(|age| age < Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_written_last_is_remembered_however_many_were_written_before_it() {
        let recent = Recent::new(RECENT_ORDERS);
        for _ in 0..2 * RECENT_ORDERS.get() {
            let older = crate::order::tests::placed();
            recent.insert(older.key.order, older);
        }
        let first = crate::order::tests::placed();
        recent.insert(first.key.order, first.clone());
        // Up to the capacity, newer orders never push out an order not yet looked at again.
        for _ in 1..RECENT_ORDERS.get() {
            let newer = crate::order::tests::placed();
            recent.insert(newer.key.order, newer);
        }
        assert_eq!(recent.get(&first.key.order), Some(first));
    }

    #[test]
    fn only_an_order_placed_moments_ago_counts_as_recently_placed() {
        assert!(recently_placed(OrderId::new()));
        let old = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, 1_000_000, 0));
        assert!(!recently_placed(OrderId(old)));
    }
}
