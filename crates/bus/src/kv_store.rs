//! Typed state in JetStream KV with compare-and-set on every write: a [`KvStore`] reads a value
//! with its revision and writes only if nobody wrote in between, so a lost update is
//! impossible. [`KvStore::modify`] is the read → decide → CAS → retry-on-conflict loop every
//! stateful handler needs; conflicts between replicas are retried (bounded), never overwritten.
//!
//! A store may keep a bounded cache of the entries this process last read or wrote
//! ([`KvStore::with_cache`]). It is only ever a *guess* for [`KvStore::modify`]: a write decided on
//! a cached entry is still compare-and-set on the cached revision (or create-only when the key
//! was seen absent), so a stale guess fails the write and the round is redone on a fresh read;
//! a decision *not* to write is never taken on a cached entry, since no compare-and-set would
//! check it. A key this process keeps writing — a hot SKU, an order it just recorded — then
//! costs one round trip per change instead of two.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use telemetry::metric;

use crate::connect::Bus;
use crate::handler::HandlerError;
use crate::provision::{KvBucket, ProvisionError};

/// A cache size for [`KvStore::with_cache`]: the keys of a second or more of traffic at full
/// speed (an order record is ~1 KB, so ~2 MB at most).
pub const RECENT_KEYS: usize = 2048;

/// Attempts of one [`KvStore::modify`] before giving up with [`StoreError::Contended`].
const MAX_CAS_ATTEMPTS: u32 = 64;

/// A value and the KV revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its revision: the precondition for the next write.
    pub revision: u64,
}

/// What a [`KvStore::modify`] decision does.
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
    /// The bucket is at its byte bound (discard new): nothing held was dropped, the write
    /// was refused. Retrying helps once it has room.
    #[error("KV {bucket}/{key}: the bucket is full (at its byte bound)")]
    Full {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
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
        matches!(
            self,
            Self::Unavailable { .. } | Self::Contended { .. } | Self::Full { .. }
        )
    }

    /// Whether the bucket refused the write because it is full.
    pub fn is_store_full(&self) -> bool {
        matches!(self, Self::Full { .. })
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

/// What this process last saw of each key: its entry, or `None` when it was seen absent.
type Cache<T> = quick_cache::sync::Cache<String, Option<Versioned<T>>>;

/// JSON values of type `T` in one KV bucket.
pub struct KvStore<T> {
    kv: kv::Store,
    bucket: String,
    /// Reads may use a direct get: true when the bucket has one replica, so the server that
    /// answers is the one that applied every acknowledged write.
    direct: bool,
    /// First guesses for [`KvStore::modify`]; shared by the clones of this store.
    cache: Option<Arc<Cache<T>>>,
    value: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for KvStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("bucket", &self.bucket)
            .field("direct", &self.direct)
            .field("cached", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> Clone for KvStore<T> {
    fn clone(&self) -> Self {
        Self {
            kv: self.kv.clone(),
            bucket: self.bucket.clone(),
            direct: self.direct,
            cache: self.cache.clone(),
            value: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned + Clone> KvStore<T> {
    /// Opens `bucket`, which must exist ([`Bus::provision_bucket`] creates it).
    pub async fn open(bus: &Bus, bucket: &KvBucket) -> Result<Self, ProvisionError> {
        let kv = bus.bucket(&bucket.name).await?;
        metrics::counter!(metric::KV_CAS_CONFLICTS, "bucket" => bucket.name.clone()).increment(0);
        Ok(Self {
            kv,
            bucket: bucket.name.clone(),
            direct: bucket.replicas <= 1,
            cache: None,
            value: PhantomData,
        })
    }

    /// Remembers up to `entries` keys this process last read or wrote, as first guesses for
    /// [`KvStore::modify`] (see the module docs for why that is safe).
    pub fn with_cache(mut self, entries: usize) -> Self {
        self.cache = Some(Arc::new(Cache::new(entries.max(1))));
        self
    }

    /// Caches what `seen` gives; built only when there is a cache, so an uncached store clones
    /// nothing.
    fn remember(&self, key: &str, seen: impl FnOnce() -> Option<Versioned<T>>) {
        if let Some(cache) = &self.cache {
            cache.insert(key.to_owned(), seen());
        }
    }

    fn forget(&self, key: &str) {
        if let Some(cache) = &self.cache {
            cache.remove(key);
        }
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The raw KV handle, for listing and watching.
    pub fn kv(&self) -> &kv::Store {
        &self.kv
    }

    /// Every key that has a value or a deletion marker, read from the bucket's stream info
    /// rather than by a watch: a watch is a consumer, and a service may create none (a
    /// consumer's deliver subject would have the server publish wherever it names).
    pub async fn keys(&self) -> Result<Vec<String>, StoreError> {
        use futures::TryStreamExt as _;
        let prefix = self.kv.prefix.clone();
        let subjects = self
            .kv
            .stream
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(|e| self.unavailable("(every key)", e))?;
        let mut keys: Vec<String> = subjects
            .map_ok(|(subject, _)| subject)
            .try_collect::<Vec<String>>()
            .await
            .map_err(|e| self.unavailable("(every key)", e))?
            .into_iter()
            .filter_map(|subject| subject.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        keys.sort();
        Ok(keys)
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
        let found = if self.direct {
            match self.kv.stream.direct_get_last_for_subject(subject).await {
                Ok(message) => Some(message),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => None,
                Err(e) => return Err(self.unavailable(key, e)),
            }
        } else {
            match self
                .kv
                .stream
                .get_last_raw_message_by_subject(&subject)
                .await
            {
                Ok(message) => Some(message),
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => None,
                Err(e) => return Err(self.unavailable(key, e)),
            }
        };
        let Some(message) = found else {
            self.remember(key, || None);
            return Ok(None);
        };
        // Deletes and purges are markers with a `KV-Operation` header. A key seen deleted is
        // not remembered as absent: creating it again needs the marker's revision.
        if message.headers.get("KV-Operation").is_some() {
            self.forget(key);
            return Ok(None);
        }
        let value =
            serde_json::from_slice(&message.payload).map_err(|source| StoreError::Corrupt {
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                source,
            })?;
        let versioned = Versioned {
            value,
            revision: message.sequence,
        };
        self.remember(key, || Some(versioned.clone()));
        Ok(Some(versioned))
    }

    /// Writes `value` only if `key` does not exist; `Ok(None)` if it does.
    pub async fn create(&self, key: &str, value: &T) -> Result<Option<u64>, StoreError> {
        let bytes = self.encode(key, value)?;
        let outcome = self.kv.create(key, bytes).await;
        self.written(key, value, outcome, |e| {
            e.kind() == kv::CreateErrorKind::AlreadyExists
        })
    }

    /// Deletes `key` (a delete marker; absent to every reader from now on).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.forget(key);
        self.kv
            .delete(key)
            .await
            .map_err(|e| self.unavailable(key, e))
    }

    /// Writes `value` only if `key` is still at `revision`; `Ok(None)` if someone wrote first.
    pub async fn update(
        &self,
        key: &str,
        value: &T,
        revision: u64,
    ) -> Result<Option<u64>, StoreError> {
        let bytes = self.encode(key, value)?;
        let outcome = self.kv.update(key, bytes, revision).await;
        self.written(key, value, outcome, |e| {
            e.kind() == kv::UpdateErrorKind::WrongLastRevision
        })
    }

    /// Writes `value` over `current` (what was read or remembered): create-only when it was
    /// absent, else compare-and-set on its revision; `Ok(None)` if someone wrote first.
    async fn write_over(
        &self,
        key: &str,
        value: &T,
        current: Option<&Versioned<T>>,
    ) -> Result<Option<u64>, StoreError> {
        match current {
            None => self.create(key, value).await,
            Some(current) => self.update(key, value, current.revision).await,
        }
    }

    /// The result of a conditional write, remembered: the value at its new revision, or — after
    /// a lost precondition or an error (the write may have landed without its answer) — nothing.
    fn written<E: std::error::Error + 'static>(
        &self,
        key: &str,
        value: &T,
        outcome: Result<u64, E>,
        lost_precondition: impl FnOnce(&E) -> bool,
    ) -> Result<Option<u64>, StoreError> {
        match outcome {
            Ok(revision) => {
                self.remember(key, || {
                    Some(Versioned {
                        value: value.clone(),
                        revision,
                    })
                });
                Ok(Some(revision))
            }
            Err(e) => {
                self.forget(key);
                if lost_precondition(&e) {
                    Ok(None)
                } else if crate::publish::names_a_full_store(&e) {
                    Err(StoreError::Full {
                        bucket: self.bucket.clone(),
                        key: key.to_owned(),
                    })
                } else {
                    Err(self.unavailable(key, e))
                }
            }
        }
    }

    /// Reads `key`, lets `decide` choose, and writes with compare-and-set; on a conflict,
    /// re-reads and decides again (bounded, with a short jittered pause). With a cache, the
    /// first round may decide on the remembered entry instead of a read — only a write is
    /// taken from such a round, and its compare-and-set proves the entry was current.
    pub async fn modify<R>(
        &self,
        key: &str,
        decide: impl FnMut(Option<&T>) -> Change<T, R>,
    ) -> Result<R, StoreError> {
        Ok(self.modify_versioned(key, decide).await?.value)
    }

    /// [`Self::modify`], and the revision the decision took effect at: the one written, or
    /// the one read when the decision was to keep (0: the key did not exist).
    pub async fn modify_versioned<R>(
        &self,
        key: &str,
        mut decide: impl FnMut(Option<&T>) -> Change<T, R>,
    ) -> Result<Versioned<R>, StoreError> {
        if let Some(guess) = self.cache.as_ref().and_then(|cache| cache.get(key))
            && let Change::Write(value, result) = decide(guess.as_ref().map(|g| &g.value))
            && let Some(revision) = self.write_over(key, &value, guess.as_ref()).await?
        {
            return Ok(Versioned {
                value: result,
                revision,
            });
        }
        // A stale guess, or a decision to keep: decide again on what the server has.
        for attempt in 1..=MAX_CAS_ATTEMPTS {
            let current = self.get(key).await?;
            let read_at = current.as_ref().map_or(0, |c| c.revision);
            let written = match decide(current.as_ref().map(|c| &c.value)) {
                Change::Keep(result) => {
                    return Ok(Versioned {
                        value: result,
                        revision: read_at,
                    });
                }
                Change::Write(value, result) => self
                    .write_over(key, &value, current.as_ref())
                    .await?
                    .map(|revision| Versioned {
                        value: result,
                        revision,
                    }),
            };
            if let Some(written) = written {
                return Ok(written);
            }
            metrics::counter!(metric::KV_CAS_CONFLICTS, "bucket" => self.bucket.clone())
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
