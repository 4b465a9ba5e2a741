//! Typed state in JetStream KV with compare-and-set on every write: a [`Store`] reads a value
//! with its revision and writes only if nobody wrote in between, so a lost update is
//! impossible. [`Store::modify`] is the read → decide → CAS → retry-on-conflict loop every
//! stateful handler needs; conflicts between replicas are retried (bounded), never overwritten.
//!
//! A [`Bucket`] can hold several stores, each in its own keyspace (`stock.<sku>`,
//! `reservations.<order>`), and write to them in one [`Batch`]: a JetStream atomic batch in
//! which every key keeps its own compare-and-set precondition, and either every write is
//! stored or none is. That is what lets one decision and the state it changes be a single
//! step, with no window for a crash in between.

use std::marker::PhantomData;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind};
use bytes::Bytes;
use futures::StreamExt as _;
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
    /// A batch was given a store of another bucket (a bug: a batch spans one bucket).
    #[error("KV {bucket}/{key} cannot join a batch on bucket {batch_bucket}")]
    ForeignBucket {
        /// The store's bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The batch's bucket.
        batch_bucket: String,
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

/// An opened KV bucket: the home of one or more [`Store`]s and of their [`Batch`]es.
#[derive(Debug, Clone)]
pub struct Bucket {
    kv: kv::Store,
    name: String,
    /// Reads may use a direct get: true when the bucket has one replica, so the server that
    /// answers is the one that applied every acknowledged write.
    direct: bool,
    client: async_nats::Client,
}

impl Bucket {
    /// Provisions `bucket` (create or update) and opens it.
    pub async fn open(bus: &Bus, bucket: &KvBucket) -> Result<Self, ProvisionError> {
        let kv = bus.key_value(bucket).await?;
        metrics::counter!("orderflow_kv_cas_conflicts_total", "bucket" => bucket.name.clone())
            .increment(0);
        Ok(Self {
            kv,
            name: bucket.name.clone(),
            direct: bucket.replicas <= 1,
            client: bus.client().clone(),
        })
    }

    /// The values of type `T` under `keyspace.` in this bucket; their keys are given without
    /// the keyspace.
    pub fn store<T>(&self, keyspace: &str) -> Store<T> {
        Store {
            bucket: self.clone(),
            keyspace: format!("{keyspace}."),
            value: PhantomData,
        }
    }

    /// An empty atomic batch on this bucket (which must have been opened with `atomic`).
    pub fn batch(&self) -> Batch {
        Batch {
            bucket: self.clone(),
            writes: Vec::new(),
        }
    }

    fn conflict(&self) {
        metrics::counter!("orderflow_kv_cas_conflicts_total", "bucket" => self.name.clone())
            .increment(1);
    }
}

/// JSON values of type `T` in one KV bucket (or one keyspace of it).
#[derive(Debug)]
pub struct Store<T> {
    bucket: Bucket,
    /// Prepended to every key: `""` for a whole bucket, `"stock."` for a keyspace.
    keyspace: String,
    value: PhantomData<fn() -> T>,
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Self {
            bucket: self.bucket.clone(),
            keyspace: self.keyspace.clone(),
            value: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    /// Provisions `bucket` (create or update) and opens it whole.
    pub async fn open(bus: &Bus, bucket: &KvBucket) -> Result<Self, ProvisionError> {
        let bucket = Bucket::open(bus, bucket).await?;
        Ok(Self {
            bucket,
            keyspace: String::new(),
            value: PhantomData,
        })
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket.name
    }

    /// The raw KV handle, for listing and watching.
    pub fn kv(&self) -> &kv::Store {
        &self.bucket.kv
    }

    /// The key as stored in the bucket.
    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.keyspace)
    }

    /// Every key of this store (without the keyspace), in no particular order; keys whose
    /// last entry is a delete marker are included.
    pub async fn keys(&self) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{}{}", self.bucket.kv.prefix, self.keyspace);
        let stream = self.bucket.kv.stream.clone();
        let mut subjects = stream
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(|e| self.unavailable("*", e))?;
        let mut keys = Vec::new();
        while let Some(subject) = subjects.next().await {
            let (subject, _) = subject.map_err(|e| self.unavailable("*", e))?;
            if let Some(key) = subject.strip_prefix(&prefix) {
                keys.push(key.to_owned());
            }
        }
        Ok(keys)
    }

    fn unavailable(&self, key: &str, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable {
            bucket: self.bucket.name.clone(),
            key: self.full_key(key),
            reason: reason.to_string(),
        }
    }

    fn encode(&self, key: &str, value: &T) -> Result<Bytes, StoreError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|source| StoreError::Encode {
                bucket: self.bucket.name.clone(),
                key: self.full_key(key),
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
        let kv = &self.bucket.kv;
        let subject = format!("{}{}{key}", kv.prefix, self.keyspace);
        let message = if self.bucket.direct {
            match kv.stream.direct_get_last_for_subject(subject).await {
                Ok(message) => message,
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.unavailable(key, e)),
            }
        } else {
            match kv.stream.get_last_raw_message_by_subject(&subject).await {
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
                bucket: self.bucket.name.clone(),
                key: self.full_key(key),
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
        match self.bucket.kv.create(self.full_key(key), bytes).await {
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
        match self
            .bucket
            .kv
            .update(self.full_key(key), bytes, revision)
            .await
        {
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
            self.bucket.conflict();
            pause_after_conflict(attempt).await;
        }
        Err(StoreError::Contended {
            bucket: self.bucket.name.clone(),
            key: self.full_key(key),
            attempts: MAX_CAS_ATTEMPTS,
        })
    }
}

/// Writes to several keys of one bucket, each with its own compare-and-set precondition,
/// stored all together or not at all (a JetStream atomic batch; the bucket must allow it).
#[derive(Debug)]
pub struct Batch {
    bucket: Bucket,
    writes: Vec<Write>,
}

#[derive(Debug)]
struct Write {
    key: String,
    value: Bytes,
    /// The key's revision the write expects; 0 for "does not exist yet".
    revision: u64,
}

impl Batch {
    /// Adds a write of `value` to `key` of `store` if the key does not exist yet.
    pub fn create<T: Serialize + DeserializeOwned>(
        &mut self,
        store: &Store<T>,
        key: &str,
        value: &T,
    ) -> Result<&mut Self, StoreError> {
        self.push(store, key, value, 0)
    }

    /// Adds a write of `value` to `key` of `store` if the key is still at `revision`.
    pub fn update<T: Serialize + DeserializeOwned>(
        &mut self,
        store: &Store<T>,
        key: &str,
        value: &T,
        revision: u64,
    ) -> Result<&mut Self, StoreError> {
        self.push(store, key, value, revision)
    }

    fn push<T: Serialize + DeserializeOwned>(
        &mut self,
        store: &Store<T>,
        key: &str,
        value: &T,
        revision: u64,
    ) -> Result<&mut Self, StoreError> {
        if store.bucket.name != self.bucket.name {
            return Err(StoreError::ForeignBucket {
                bucket: store.bucket.name.clone(),
                key: store.full_key(key),
                batch_bucket: self.bucket.name.clone(),
            });
        }
        self.writes.push(Write {
            key: store.full_key(key),
            value: store.encode(key, value)?,
            revision,
        });
        Ok(self)
    }

    /// Stores every write, or none: `Ok(false)` when a precondition failed (someone wrote one
    /// of the keys first); nothing was written then, so read again and decide again.
    pub async fn commit(self) -> Result<bool, StoreError> {
        let Some(last) = self.writes.len().checked_sub(1) else {
            return Ok(true);
        };
        let bucket = &self.bucket;
        let batch_id = uuid::Uuid::now_v7().simple().to_string();
        let unavailable = |key: &str, reason: &dyn std::fmt::Display| StoreError::Unavailable {
            bucket: bucket.name.clone(),
            key: key.to_owned(),
            reason: format!("atomic batch: {reason}"),
        };
        for (index, write) in self.writes.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", (index + 1).to_string().as_str());
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                write.revision.to_string().as_str(),
            );
            // Writes go where the KV client would put them (a domain may move them).
            let prefix = bucket.kv.put_prefix.as_ref().unwrap_or(&bucket.kv.prefix);
            let subject = format!("{prefix}{}", write.key);
            if index < last {
                // Only the commit is answered: one round trip for the whole batch.
                bucket
                    .client
                    .publish_with_headers(subject, headers, write.value.clone())
                    .await
                    .map_err(|e| unavailable(&write.key, &e))?;
                continue;
            }
            headers.insert("Nats-Batch-Commit", "1");
            let reply = bucket
                .client
                .request_with_headers(subject, headers, write.value.clone())
                .await
                .map_err(|e| unavailable(&write.key, &e))?;
            return match serde_json::from_slice::<BatchAck>(&reply.payload) {
                Ok(BatchAck { error: None }) => Ok(true),
                Ok(BatchAck { error: Some(e) }) if e.err_code == WRONG_LAST_SEQUENCE => {
                    bucket.conflict();
                    Ok(false)
                }
                Ok(BatchAck { error: Some(e) }) => Err(unavailable(
                    &write.key,
                    &format_args!("{} (code {})", e.description, e.err_code),
                )),
                Err(e) => Err(unavailable(&write.key, &e)),
            };
        }
        Ok(true)
    }
}

/// JetStream's error code for a failed `Nats-Expected-Last-Subject-Sequence`.
const WRONG_LAST_SEQUENCE: u64 = 10071;

/// The server's answer to a batch commit (a PubAck); only its error matters here.
#[derive(Debug, serde::Deserialize)]
struct BatchAck {
    error: Option<BatchAckError>,
}

#[derive(Debug, serde::Deserialize)]
struct BatchAckError {
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// Waits a little after losing compare-and-set round `attempt`: spreads contending writers
/// apart, a little longer with each lost round.
pub async fn pause_after_conflict(attempt: u32) {
    let pause = Duration::from_micros(u64::from(attempt.min(10)) * 200 + jitter_micros(500));
    tokio::time::sleep(pause).await;
}

/// A cheap pseudo-random pause below `max` µs (from the clock; no need for a real RNG).
fn jitter_micros(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos) % max.max(1)
}
