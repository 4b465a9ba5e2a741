//! Where the order service keeps its state, all in JetStream KV:
//!
//! - `orders`: order id → [`OrderRecord`], written only with compare-and-set;
//! - `orders_by_customer`: `<customer>.<order id>` → marker, the index behind
//!   `GET /v1/orders?customer_id=` (listed with a subject filter, newest first — order ids are
//!   UUID v7, so they sort by time);
//! - `idempotency`: sha256(`Idempotency-Key`) → [`Claim`] with a TTL, created only if absent so
//!   two racing requests with one key make one order.

use std::time::Duration;

use bus::{Bus, KvBucket, ProvisionError, Store, StoreError, Versioned};
use events::{CustomerId, Envelope, OrderCreated, OrderId};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::order::OrderRecord;

const ORDERS: &str = "orders";
const BY_CUSTOMER: &str = "orders_by_customer";
const IDEMPOTENCY: &str = "idempotency";
/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// What an `Idempotency-Key` was first used for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The order it created.
    pub order_id: OrderId,
    /// sha256 of the request body, to tell a retry from a different request.
    pub request_hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexEntry {}

/// The order service's KV buckets.
#[derive(Debug, Clone)]
pub struct Records {
    orders: Store<OrderRecord>,
    by_customer: Store<IndexEntry>,
    idempotency: Store<Claim>,
    bus: Bus,
}

impl Records {
    /// Provisions and opens the buckets.
    pub async fn open(bus: &Bus, replicas: usize) -> Result<Self, ProvisionError> {
        let bucket = |name: &str| KvBucket {
            replicas,
            ..KvBucket::new(name)
        };
        Ok(Self {
            // The projection writes a record and the saga changes it milliseconds later,
            // usually in the same process: the cache saves the saga's read.
            orders: Store::open(bus, &bucket(ORDERS))
                .await?
                .with_cache(bus::RECENT_KEYS),
            by_customer: Store::open(bus, &bucket(BY_CUSTOMER)).await?,
            idempotency: Store::open(
                bus,
                &KvBucket {
                    ttl: Some(IDEMPOTENCY_TTL),
                    ..bucket(IDEMPOTENCY)
                },
            )
            .await?,
            bus: bus.clone(),
        })
    }

    /// The orders bucket.
    pub fn orders(&self) -> &Store<OrderRecord> {
        &self.orders
    }

    /// The order, with its revision.
    pub async fn get(
        &self,
        order_id: OrderId,
    ) -> Result<Option<Versioned<OrderRecord>>, StoreError> {
        self.orders.get(&order_id.to_string()).await
    }

    /// The order as [`Records::get`], but an order placed within the last seconds that is not
    /// recorded yet is waited for briefly: the 202 goes out before the `orders.created`
    /// projection writes the record, so a client following the `Location` at once would
    /// otherwise see a 404 for an order that exists.
    pub async fn get_fresh(
        &self,
        order_id: OrderId,
    ) -> Result<Option<Versioned<OrderRecord>>, StoreError> {
        let mut pauses = projection_pauses(Duration::from_millis(2), Duration::from_millis(128));
        loop {
            let record = self.get(order_id).await?;
            if record.is_some() || !recently_placed(order_id) {
                return Ok(record);
            }
            match pauses.next() {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Ok(record),
            }
        }
    }

    /// Records a created order (the `orders.created` projection): its customer-index entry
    /// first, then the record, so a listed order always has its index entry; a no-op for parts
    /// that exist already, so a redelivery is harmless.
    pub async fn insert_created(
        &self,
        envelope: &Envelope,
        order: &OrderCreated,
    ) -> Result<(), StoreError> {
        self.by_customer
            .create(
                &format!("{}.{}", order.customer_id, order.order_id),
                &IndexEntry {},
            )
            .await?;
        self.orders
            .create(
                &order.order_id.to_string(),
                &OrderRecord::created(envelope, order),
            )
            .await?;
        Ok(())
    }

    /// A page of a customer's orders, newest first, strictly older than `before` if given;
    /// also returns the cursor of the next page.
    pub async fn list_for_customer(
        &self,
        customer: &CustomerId,
        before: Option<OrderId>,
        limit: usize,
    ) -> Result<(Vec<OrderRecord>, Option<OrderId>), StoreError> {
        let unavailable = |e: &dyn std::fmt::Display| StoreError::Unavailable {
            bucket: BY_CUSTOMER.into(),
            key: customer.to_string(),
            reason: e.to_string(),
        };
        let prefix = format!("$KV.{BY_CUSTOMER}.{customer}.");
        let stream = self
            .bus
            .jetstream()
            .get_stream_no_info(format!("KV_{BY_CUSTOMER}"))
            .await
            .map_err(|e| unavailable(&e))?;
        let mut subjects = stream
            .info_with_subjects(format!("{prefix}*"))
            .await
            .map_err(|e| unavailable(&e))?;
        let mut ids = Vec::new();
        while let Some(subject) = subjects.next().await {
            let (subject, _) = subject.map_err(|e| unavailable(&e))?;
            if let Some(id) = subject
                .strip_prefix(&prefix)
                .and_then(|id| id.parse::<OrderId>().ok())
            {
                ids.push(id);
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
        let mut orders = Vec::with_capacity(limit);
        for id in page.into_iter().take(limit) {
            if let Some(record) = self.get(id).await? {
                orders.push(record.value);
            }
        }
        Ok((orders, next))
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

/// The pauses of a wait for the `orders.created` projection of an order (written a moment
/// after the 202): doubling from `first`, none longer than `longest`.
pub(crate) fn projection_pauses(
    first: Duration,
    longest: Duration,
) -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(first), |pause| Some(*pause * 2))
        .take_while(move |pause| *pause <= longest)
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
    fn projection_pauses_double_up_to_the_longest() {
        let pauses: Vec<u64> =
            projection_pauses(Duration::from_millis(2), Duration::from_millis(128))
                .map(|p| p.as_millis() as u64)
                .collect();
        assert_eq!(pauses, [2, 4, 8, 16, 32, 64, 128]);
    }

    #[test]
    fn only_an_order_placed_moments_ago_counts_as_recently_placed() {
        assert!(recently_placed(OrderId::new()));
        let old = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, 1_000_000, 0));
        assert!(!recently_placed(OrderId(old)));
    }
}
