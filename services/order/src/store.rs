//! Where the order service keeps its state: orders are their events in the `ORDERS` stream
//! (see [`events::layout`]) for the hot window, and their snapshots in the PostgreSQL archive
//! (see [`crate::projection`]) for as long as the operator keeps them; the only KV bucket is for
//! what is not an event —
//!
//! - `idempotency`: sha256(`Idempotency-Key`) → [`Claim`] with a TTL, created only if absent so
//!   two racing requests with one key make one order.
//!
//! Every read of an order looks in the hot log first: while it still holds the order's
//! `created`, it holds the whole history. Once `created` has left it, the archived snapshot is
//! the beginning and what is left in the hot log is folded over it ([`Order::fold_over`]), so a
//! late transition is decided on the full history, with the same conditional append (its
//! precondition is then the hot log's last sequence of the order, 0 when all has left).
//!
//! A customer's orders are listed from both: subject filter (`orders.<p>.<customer>.*.created`)
//! over the hot log, a page of the archive, each order once. Orders this process created or
//! changed are remembered as first guesses for the saga's next transition: only an append is
//! ever decided on a guess, and its precondition proves the guess current.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use archive::{Archive, ArchiveError};
use bus::{Append, AppendError, Appended, Bus, EventLog, KvStore, MsgId, ProvisionError};
use bus::{Precondition, Round, StreamSettings, retry_on_conflict};
use bus::{ReadError, Recorded, StoreError};
use events::layout::{self, History};
use events::names::bucket::IDEMPOTENCY;
use events::{CustomerId, Domain, Envelope, OrderId, OrderKey, Partitions};
use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::order::{Order, Snapshot, Step};

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
    /// The order as this process last saw it, if it did and the step is an append (a
    /// first delivery: nothing can have been decided for this cause yet); else a read.
    Remembered,
}

/// What a transition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transitioned {
    /// The event was appended; the order as it is now.
    Appended(Box<Envelope>, Order),
    /// The step appends nothing; the order as it is.
    Unchanged(Step, Order),
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
    #[error("order {0} is contended: its history moved under {DECISION_ROUNDS} decisions in a row", DECISION_ROUNDS = bus::DECISION_ROUNDS)]
    Contended(OrderId),
    /// Stream metadata (for listing) could not be read.
    #[error("cannot list orders: {0}")]
    Listing(String),
    /// The archive failed (its own error says whether for now).
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

impl OrderStoreError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Read(ReadError::Corrupt { .. }) => false,
            Self::Append(e) => e.is_transient(),
            Self::Kv(e) => e.is_transient(),
            Self::Archive(e) => e.is_transient(),
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

/// The order service's state: the order events, their archive and the idempotency bucket.
#[derive(Debug, Clone)]
pub struct Store {
    log: EventLog,
    partitions: Partitions,
    idempotency: KvStore<Claim>,
    archive: Option<Archive>,
    recent: Arc<Recent>,
}

impl Store {
    /// Provisions the idempotency bucket and opens the store; orders are looked for in
    /// `archive` too once their events have left the hot log (`None`: the hot log keeps them
    /// all).
    pub async fn open(
        bus: &Bus,
        settings: &StreamSettings,
        archive: Option<Archive>,
    ) -> Result<Self, ProvisionError> {
        let partitions = settings.partitions;
        Ok(Self {
            log: bus.events().clone(),
            partitions,
            archive,
            idempotency: KvStore::open(bus, &settings.bucket(IDEMPOTENCY)).await?,
            recent: Arc::new(Recent::new(RECENT_ORDERS)),
        })
    }

    /// How many partitions the streams have.
    pub fn partitions(&self) -> Partitions {
        self.partitions
    }

    /// The order under `key` from its hot events, over its archived snapshot when they no
    /// longer begin with `created`.
    async fn fold(
        &self,
        key: &OrderKey,
        events: &[Recorded],
    ) -> Result<Option<Order>, OrderStoreError> {
        if let Some(order) = Order::fold(key.clone(), events) {
            return Ok(Some(order));
        }
        let archived = match &self.archive {
            Some(archive) => archive
                .get::<Snapshot>(key.order.0)
                .await?
                .map(|row| Order::restore(key.clone(), row.snapshot)),
            None => None,
        };
        Ok(Order::fold_over(archived, key.clone(), events))
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
        let history = self.history(&key);
        let append = Append::new(
            Precondition::CreateOnly,
            &history,
            key.subject(&created.event),
            created,
            MsgId::new(created.kind(), key.order),
        );
        let order = match self.log.append(append).await? {
            Appended::Stored(sequence) => Order::created(key.clone(), created, sequence),
            Appended::Conflict(events) => self.fold(&key, &events).await?,
        };
        let order = order.ok_or(OrderStoreError::Contended(key.order))?;
        self.recent.insert(key.order, order.clone());
        Ok(order)
    }

    /// The order under `key`, read from its events (and the archive once they have left the
    /// hot log); `None` if neither has it.
    pub async fn read(&self, key: &OrderKey) -> Result<Option<Order>, OrderStoreError> {
        let events = self.log.read(&self.history(key)).await?;
        self.fold(key, &events).await
    }

    /// `order` with what its customer was told: the outcomes notification-service recorded
    /// that are still in the hot log, over those the archive has (an order whose `created` is
    /// still hot has all of its notifications there too — they come after it).
    pub async fn notified(&self, mut order: Order) -> Result<Order, OrderStoreError> {
        let history = order.key.history(Domain::Notifications, self.partitions);
        let events = self.log.read(&history).await?;
        order.notified(events.iter().map(|recorded| &recorded.envelope));
        Ok(order)
    }

    /// The order with id `order_id`, whoever placed it (a lookup by id over the customers of
    /// its partition, then in the archive). Under replication a follower may not have applied
    /// a just-placed order yet: an order id minted in the last seconds is looked for a little
    /// longer.
    pub async fn find(&self, order_id: OrderId) -> Result<Option<Order>, OrderStoreError> {
        let history = layout::order_anywhere(Domain::Orders, self.partitions, order_id);
        let mut pauses = std::iter::successors(Some(Duration::from_millis(2)), |p| Some(*p * 2))
            .take_while(|p| *p <= Duration::from_millis(128));
        loop {
            let events = self.log.read(&history).await?;
            if let Some(order) = events
                .first()
                .and_then(|first| OrderKey::parse(&first.subject).ok())
                .and_then(|(key, _)| Order::fold(key, &events))
            {
                return Ok(Some(order));
            }
            match pauses.next() {
                Some(pause) if events.is_empty() && recently_placed(order_id) => {
                    tokio::time::sleep(pause).await
                }
                _ => return self.find_archived(order_id, &events).await,
            }
        }
    }

    /// The order `order_id` whose `created` has left the hot log: its archived snapshot (which
    /// names its customer) with what is left of its `events` folded over it.
    async fn find_archived(
        &self,
        order_id: OrderId,
        events: &[Recorded],
    ) -> Result<Option<Order>, OrderStoreError> {
        let Some(archive) = &self.archive else {
            return Ok(None);
        };
        let Some(row) = archive.get::<Snapshot>(order_id.0).await? else {
            return Ok(None);
        };
        let key = self.key(row.snapshot.created.customer_id.clone(), order_id);
        // A wildcard read may be a few events behind a keyed one; the keyed read decides.
        let events = if events.is_empty() {
            Vec::new()
        } else {
            self.log.read(&self.history(&key)).await?
        };
        Ok(Order::fold_over(
            Some(Order::restore(key.clone(), row.snapshot)),
            key,
            &events,
        ))
    }

    /// Applies `decide` to the order under `key` and appends what it decides, conditionally on
    /// the history it decided on; if the history moved, decides again on the new one. `None`
    /// if the order does not exist.
    pub async fn transition(
        &self,
        key: &OrderKey,
        basis: Basis,
        decide: impl Fn(&Order) -> Step,
    ) -> Result<Option<Transitioned>, OrderStoreError> {
        let remembered = match basis {
            Basis::Known(order) => Some(*order),
            // Only an append is taken from a remembered order: its precondition checks it.
            Basis::Remembered => self
                .recent
                .get(&key.order)
                .filter(|guess| matches!(decide(guess), Step::Append(_))),
            Basis::Read => None,
        };
        let order = match remembered {
            Some(order) => order,
            None => match self.read(key).await? {
                Some(order) => order,
                None => return Ok(None),
            },
        };
        let history = self.history(key);
        let (history, decide) = (&history, &decide);
        let contended = || OrderStoreError::Contended(key.order);
        let transitioned = retry_on_conflict(order, contended, |order| async move {
            let event = match decide(&order) {
                Step::Append(event) => event,
                other => return Ok(Round::Done(Some(Transitioned::Unchanged(other, order)))),
            };
            let msg_id = MsgId::new(event.kind(), key.order);
            let subject = key.subject(&event.event);
            let after = Precondition::After(order.last_sequence);
            let append = Append::new(after, history, subject, &event, msg_id);
            match self.log.append(append).await? {
                Appended::Stored(sequence) => {
                    let order = order.appended(&event, sequence);
                    self.recent.insert(key.order, order.clone());
                    Ok(Round::Done(Some(Transitioned::Appended(event, order))))
                }
                Appended::Conflict(events) => match self.fold(key, &events).await? {
                    Some(moved) => Ok(Round::Again(moved)),
                    None => Ok(Round::Done(None)),
                },
            }
        })
        .await;
        if transitioned.is_err() {
            self.recent.remove(&key.order);
        }
        transitioned
    }

    /// A page of a customer's orders, newest first, strictly older than `before` if given;
    /// also returns the cursor of the next page. The ids come from the subjects of the
    /// customer's `created` events in the hot log and from a page of the archive (order ids
    /// are UUID v7, so they sort by time), each id once; only the page's orders are read.
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
            for subject in self.log.subjects(&created).await.map_err(|e| listing(&e))? {
                if let Ok((key, _)) = OrderKey::parse(&subject) {
                    ids.push(key.order);
                }
            }
        }
        let mut archived = std::collections::HashMap::new();
        if let Some(archive) = &self.archive {
            for row in archive
                .page::<Snapshot>(customer.as_str(), before.map(|b| b.0), limit + 1)
                .await?
            {
                ids.push(OrderId(row.order_id));
                archived.insert(OrderId(row.order_id), row.snapshot);
            }
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
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
        let reads = page.into_iter().take(limit).map(|id| {
            let key = self.key(customer.clone(), id);
            let snapshot = archived.remove(&id);
            async move {
                let events = self.log.read(&self.history(&key)).await?;
                match Order::fold(key.clone(), &events) {
                    Some(order) => Ok(Some(order)),
                    // Already read from the archive: no second query.
                    None if snapshot.is_some() => Ok(Order::fold_over(
                        snapshot.map(|s| Order::restore(key.clone(), s)),
                        key,
                        &events,
                    )),
                    None => self.fold(&key, &events).await,
                }
            }
        });
        let orders = futures::future::try_join_all(reads).await?;
        Ok((orders.into_iter().flatten().collect(), next))
    }

    /// The order the (hashed) `Idempotency-Key` `key` created, as the archive remembers it once
    /// the key's claim has expired; `None` without an archive.
    pub async fn archived_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<Order>, OrderStoreError> {
        let Some(archive) = &self.archive else {
            return Ok(None);
        };
        let Some(row) = archive.find_by_idempotency_key::<Snapshot>(key).await? else {
            return Ok(None);
        };
        let key = self.key(
            row.snapshot.created.customer_id.clone(),
            OrderId(row.order_id),
        );
        Ok(Some(Order::restore(key, row.snapshot)))
    }

    /// Points the claim of `key` at `claim` (an order the archive remembers for it), whatever
    /// it held; `Ok(false)` if another request changed it meanwhile.
    pub async fn reclaim(&self, key: &str, claim: &Claim) -> Result<bool, StoreError> {
        Ok(match self.idempotency.get(key).await? {
            Some(current) => self
                .idempotency
                .update(key, claim, current.revision)
                .await?
                .is_some(),
            None => self.idempotency.create(key, claim).await?.is_some(),
        })
    }

    /// Drops the claim of `key` (one a refused request made).
    pub async fn release_claim(&self, key: &str) -> Result<(), StoreError> {
        self.idempotency.delete(key).await
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

    /// Late transitions: orders whose events have left the hot log, decided on their archive.
    mod late {
        use bus::{Delivery, Handler as _};
        use events::{CancelReason, Event, InventoryReserved, ReservedLine};
        use testkit::{NatsServer, PostgresServer, sample};

        use super::*;
        use crate::order::Status;
        use crate::projection::Projection;

        struct Setup {
            _nats: NatsServer,
            _postgres: PostgresServer,
            bus: Bus,
            store: Store,
            projection: Projection,
        }

        async fn setup() -> Setup {
            let nats = NatsServer::start();
            let postgres = PostgresServer::start();
            let bus = sample::bus(&nats, "order-store-test").await;
            let archive = sample::archive(&postgres).await;
            let store = Store::open(&bus, &bus::StreamSettings::default(), Some(archive.clone()))
                .await
                .unwrap();
            Setup {
                _nats: nats,
                _postgres: postgres,
                bus,
                store,
                projection: Projection::start(archive, Duration::ZERO),
            }
        }

        impl Setup {
            /// A confirmed order of two MUGs, archived; returns its key and the reservation
            /// that confirmed it.
            async fn confirmed_and_archived(&self, customer: &str) -> (OrderKey, Envelope) {
                let id = OrderId::new();
                let key = sample::key(customer, id);
                let created = sample::order_created(id, customer, &[("MUG", 2)]);
                self.store.create(key.clone(), &created).await.unwrap();
                let reserved = sample::caused_by(
                    Event::InventoryReserved(
                        InventoryReserved::builder()
                            .order_id(id)
                            .lines(vec![ReservedLine {
                                sku: sample::sku("MUG"),
                                quantity: 2,
                            }])
                            .build(),
                    ),
                    &created,
                );
                self.store
                    .transition(&key, Basis::Read, |order| order.confirm(&reserved))
                    .await
                    .unwrap();
                self.archive(&key).await;
                (key, reserved)
            }

            /// Hands the order's events to the projection, as its consumer would.
            async fn archive(&self, key: &OrderKey) {
                for recorded in self.store.log.read(&self.store.history(key)).await.unwrap() {
                    let delivery = Delivery {
                        stream_sequence: recorded.sequence,
                        ..sample::delivery(key, recorded.envelope)
                    };
                    self.projection.handle(delivery).await.unwrap();
                }
            }

            async fn expire(&self, key: &OrderKey) {
                sample::expire(&self.bus, Domain::Orders, key).await;
                assert!(
                    self.store
                        .log
                        .read(&self.store.history(key))
                        .await
                        .unwrap()
                        .is_empty()
                );
            }
        }

        #[tokio::test]
        async fn an_order_whose_events_left_the_hot_log_reads_the_same_from_the_archive() {
            let setup = setup().await;
            let (key, _) = setup.confirmed_and_archived("alice").await;
            let hot = setup.store.find(key.order).await.unwrap().unwrap();

            setup.expire(&key).await;

            let cold = setup.store.find(key.order).await.unwrap().unwrap();
            assert_eq!(cold.snapshot(), hot.snapshot());
            assert_eq!(cold.key, hot.key);
            let read = setup.store.read(&key).await.unwrap().unwrap();
            assert_eq!(read.snapshot(), hot.snapshot());
        }

        #[tokio::test]
        async fn a_confirmed_order_cancelled_after_its_events_left_is_decided_on_its_full_history()
        {
            let setup = setup().await;
            let (key, _) = setup.confirmed_and_archived("alice").await;
            setup.expire(&key).await;
            let order = setup.store.find(key.order).await.unwrap().unwrap();

            let cancel = |order: &Order| order.cancel(CancelReason::CustomerRequested, None);
            let first = setup
                .store
                .transition(&key, Basis::Known(Box::new(order.clone())), cancel)
                .await
                .unwrap();
            // A second customer request, decided on the same stale view, is refused by the
            // append's precondition and decided again on the history that moved.
            let second = setup
                .store
                .transition(&key, Basis::Known(Box::new(order)), cancel)
                .await
                .unwrap();

            let Some(Transitioned::Appended(event, cancelled)) = first else {
                panic!("not appended: {first:?}")
            };
            assert_eq!(cancelled.status, Status::Cancelled);
            assert_eq!(cancelled.history.len(), 3, "{:?}", cancelled.history);
            let Event::OrderCancelled(payload) = &event.event else {
                panic!("not a cancellation: {event:?}")
            };
            assert_eq!(
                payload.reserved.len(),
                1,
                "inventory must be told what to give back"
            );
            assert!(
                matches!(second, Some(Transitioned::Unchanged(Step::Ignore(_), _))),
                "{second:?}"
            );
            let read = setup.store.read(&key).await.unwrap().unwrap();
            assert_eq!(read.status, Status::Cancelled);
            assert_eq!(read.history.len(), 3);
        }

        #[tokio::test]
        async fn a_reservation_redelivered_after_the_hot_window_finds_its_confirmation() {
            let setup = setup().await;
            let (key, reserved) = setup.confirmed_and_archived("alice").await;
            setup.expire(&key).await;
            let saga = crate::saga::Saga {
                store: setup.store.clone(),
            };

            saga.handle(Delivery {
                attempt: 2,
                ..sample::delivery(&key, reserved)
            })
            .await
            .unwrap();

            assert!(
                setup
                    .store
                    .log
                    .read(&setup.store.history(&key))
                    .await
                    .unwrap()
                    .is_empty(),
                "confirmed a second time"
            );
        }

        #[tokio::test]
        async fn a_customers_orders_are_listed_once_whether_hot_archived_or_both() {
            let setup = setup().await;
            let (gone, _) = setup.confirmed_and_archived("bob").await;
            let (both, _) = setup.confirmed_and_archived("bob").await;
            let hot_only = sample::key("bob", OrderId::new());
            let created = sample::order_created(hot_only.order, "bob", &[("MUG", 1)]);
            setup
                .store
                .create(hot_only.clone(), &created)
                .await
                .unwrap();
            setup.expire(&gone).await;

            let customer = sample::customer("bob");
            let (page, next) = setup
                .store
                .list_for_customer(&customer, None, 2)
                .await
                .unwrap();
            let (rest, end) = setup
                .store
                .list_for_customer(&customer, next, 2)
                .await
                .unwrap();

            let ids: Vec<OrderId> = page.iter().chain(&rest).map(|o| o.key.order).collect();
            assert_eq!(ids, [hot_only.order, both.order, gone.order]);
            assert_eq!(end, None);
            assert_eq!(rest[0].status, Status::Confirmed);
        }

        #[tokio::test]
        async fn an_order_neither_log_nor_archive_holds_is_not_found() {
            let setup = setup().await;
            assert!(setup.store.find(OrderId::new()).await.unwrap().is_none());
        }
    }
}
