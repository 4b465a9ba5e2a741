//! Typed state in JetStream KV with compare-and-set on every write: a [`Store`] reads a value
//! with its revision and writes only if nobody wrote in between, so a lost update is
//! impossible. [`Store::modify`] is the read → decide → CAS → retry-on-conflict loop every
//! stateful handler needs; conflicts between replicas are retried (bounded), never overwritten.

use std::marker::PhantomData;
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connect::Bus;
use crate::consume::HandlerError;
use crate::provision::{KvBucket, ProvisionError};

/// Attempts of one [`Store::modify`] before giving up with [`StoreError::Contended`].
const MAX_CAS_ATTEMPTS: u32 = 64;

/// A value and the KV revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its revision: the precondition for the next write.
    pub revision: u64,
}

/// What a [`Store::modify`] decision does.
#[derive(Debug)]
pub enum Change<T, R> {
    /// Write this value (create if absent, else CAS on the revision read) and return `R`.
    Write(T, R),
    /// Leave the value as it is and return `R`.
    Keep(R),
}

/// A KV operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// NATS did not complete the operation (unavailable, timed out).
    #[error("KV {bucket}/{key}: {reason}")]
    Unavailable {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The client's error.
        reason: String,
    },
    /// The stored bytes are not a valid value (a bug or a foreign writer).
    #[error("KV {bucket}/{key} holds an unreadable value: {source}")]
    Corrupt {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The value could not be encoded (a bug).
    #[error("cannot encode the value for KV {bucket}/{key}: {source}")]
    Encode {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// Every compare-and-set attempt lost to a concurrent writer.
    #[error("KV {bucket}/{key}: still contended after {attempts} compare-and-set attempts")]
    Contended {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
}

impl StoreError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Contended { .. })
    }
}

impl From<StoreError> for HandlerError {
    fn from(error: StoreError) -> Self {
        if error.is_transient() {
            HandlerError::transient(error)
        } else {
            HandlerError::permanent(error)
        }
    }
}

/// JSON values of type `T` in one KV bucket.
#[derive(Debug)]
pub struct Store<T> {
    kv: kv::Store,
    bucket: String,
    /// Reads may use a direct get: true when the bucket has one replica, so the server that
    /// answers is the one that applied every acknowledged write.
    direct: bool,
    value: PhantomData<fn() -> T>,
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Self {
            kv: self.kv.clone(),
            bucket: self.bucket.clone(),
            direct: self.direct,
            value: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    /// Provisions `bucket` (create or update) and opens it.
    pub async fn open(bus: &Bus, bucket: &KvBucket) -> Result<Self, ProvisionError> {
        let kv = bus.key_value(bucket).await?;
        metrics::counter!("orderflow_kv_cas_conflicts_total", "bucket" => bucket.name.clone())
            .increment(0);
        Ok(Self {
            kv,
            bucket: bucket.name.clone(),
            direct: bucket.replicas <= 1,
            value: PhantomData,
        })
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The raw KV handle, for listing and watching.
    pub fn kv(&self) -> &kv::Store {
        &self.kv
    }

    fn unavailable(&self, key: &str, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            reason: reason.to_string(),
        }
    }

    fn encode(&self, key: &str, value: &T) -> Result<Bytes, StoreError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|source| StoreError::Encode {
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                source,
            })
    }

    /// The current value of `key` with its revision; `None` if absent or deleted.
    ///
    /// With replicas, read from the stream leader, never with a direct get: a direct get may be
    /// answered by a replica that lags, and a decision to *not* write (`Change::Keep`) taken on
    /// such a stale view is never checked by a compare-and-set. With one replica the direct
    /// get is just as fresh and far cheaper for the server (no JSON API round, no base64).
    pub async fn get(&self, key: &str) -> Result<Option<Versioned<T>>, StoreError> {
        let subject = format!("{}{key}", self.kv.prefix);
        let message = if self.direct {
            match self.kv.stream.direct_get_last_for_subject(subject).await {
                Ok(message) => message,
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.unavailable(key, e)),
            }
        } else {
            match self
                .kv
                .stream
                .get_last_raw_message_by_subject(&subject)
                .await
            {
                Ok(message) => message,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
                Err(e) => return Err(self.unavailable(key, e)),
            }
        };
        // Deletes and purges are markers with a `KV-Operation` header.
        if message.headers.get("KV-Operation").is_some() {
            return Ok(None);
        }
        let value =
            serde_json::from_slice(&message.payload).map_err(|source| StoreError::Corrupt {
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                source,
            })?;
        Ok(Some(Versioned {
            value,
            revision: message.sequence,
        }))
    }

    /// Writes `value` only if `key` does not exist; `Ok(None)` if it does.
    pub async fn create(&self, key: &str, value: &T) -> Result<Option<u64>, StoreError> {
        let bytes = self.encode(key, value)?;
        match self.kv.create(key, bytes).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(self.unavailable(key, e)),
        }
    }

    /// Writes `value` only if `key` is still at `revision`; `Ok(None)` if someone wrote first.
    pub async fn update(
        &self,
        key: &str,
        value: &T,
        revision: u64,
    ) -> Result<Option<u64>, StoreError> {
        let bytes = self.encode(key, value)?;
        match self.kv.update(key, bytes, revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(self.unavailable(key, e)),
        }
    }

    /// Reads `key`, lets `decide` choose, and writes with compare-and-set; on a conflict,
    /// re-reads and decides again (bounded, with a short jittered pause).
    pub async fn modify<R>(
        &self,
        key: &str,
        mut decide: impl FnMut(Option<&T>) -> Change<T, R>,
    ) -> Result<R, StoreError> {
        for attempt in 1..=MAX_CAS_ATTEMPTS {
            let current = self.get(key).await?;
            let written = match decide(current.as_ref().map(|c| &c.value)) {
                Change::Keep(result) => return Ok(result),
                Change::Write(value, result) => {
                    let written = match &current {
                        None => self.create(key, &value).await?,
                        Some(current) => self.update(key, &value, current.revision).await?,
                    };
                    written.map(|_| result)
                }
            };
            if let Some(result) = written {
                return Ok(result);
            }
            metrics::counter!("orderflow_kv_cas_conflicts_total", "bucket" => self.bucket.clone())
                .increment(1);
            // Spread contending writers apart; grows a little with each lost round.
            let pause =
                Duration::from_micros(u64::from(attempt.min(10)) * 200 + jitter_micros(500));
            tokio::time::sleep(pause).await;
        }
        Err(StoreError::Contended {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            attempts: MAX_CAS_ATTEMPTS,
        })
    }
}

/// A cheap pseudo-random pause below `max` µs (from the clock; no need for a real RNG).
fn jitter_micros(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos) % max.max(1)
}
