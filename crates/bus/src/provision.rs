//! Idempotent provisioning: every service creates or updates the streams and KV buckets it
//! owns at start-up, so a fresh NATS, a restarted one and a changed setting all converge. Each
//! stream has one owner (the writer of its events; order-service for the dead-letter streams),
//! so NATS permissions can keep every other service from changing it.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use events::{Domain, Partitions, names, topology};

use crate::connect::Bus;

/// Settings shared by every stream the system owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// Copies of each stream in a cluster: 1 locally, 3 in production (`STREAM_REPLICAS`).
    pub replicas: usize,
    /// Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate (never longer than
    /// the hot window: the server refuses that).
    pub duplicate_window: Duration,
    /// The hot window: how long the event streams keep each event (`HOT_WINDOW`); zero keeps
    /// every event for ever. nats-server holds about 300 bytes of memory per retained subject,
    /// so this bounds its memory by order rate × window; history lives in the archive.
    pub max_age: Duration,
    /// How long dead letters are kept (long enough for a human to look).
    pub dlq_max_age: Duration,
    /// How many partition streams each event domain is split into.
    pub partitions: Partitions,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(24 * 3600),
            dlq_max_age: Duration::from_secs(30 * 24 * 3600),
            partitions: Partitions::ONE,
        }
    }
}

/// A KV bucket some service keeps state in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvBucket {
    /// Bucket name.
    pub name: String,
    /// Revisions kept per key.
    pub history: i64,
    /// Entries expire after this long (`None`: never) — idempotency keys use it.
    pub ttl: Option<Duration>,
    /// Most bytes the bucket may hold (`None`: unbounded); a write beyond it is refused, so
    /// a bucket of state (not of expiring entries) never loses what it holds.
    pub max_bytes: Option<u64>,
    /// Copies in a cluster.
    pub replicas: usize,
}

impl KvBucket {
    /// A bucket with one revision per key, no TTL, no size bound, one replica.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            history: 1,
            ttl: None,
            max_bytes: None,
            replicas: 1,
        }
    }
}

/// Provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// Settings that cannot work.
    #[error("invalid stream settings: {0}")]
    Settings(&'static str),
    /// The server refused a stream.
    #[error("cannot create or update stream {stream}: {source}")]
    Stream {
        /// The stream.
        stream: String,
        /// The server's answer.
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    /// A stream this service uses but does not own does not exist (yet).
    #[error("stream {stream} does not exist yet; {owner} creates it: {source}")]
    Missing {
        /// The stream.
        stream: String,
        /// The service that creates it.
        owner: &'static str,
        /// The server's answer.
        #[source]
        source: jetstream::context::GetStreamError,
    },
    /// The server refused a KV bucket.
    #[error("cannot create or update KV bucket {bucket}: {source}")]
    Bucket {
        /// The bucket.
        bucket: String,
        /// The server's answer.
        #[source]
        source: jetstream::context::CreateKeyValueError,
    },
}

impl Bus {
    /// Creates or updates every stream: the event streams (`ORDERS`, `INVENTORY`,
    /// `NOTIFICATIONS`, or their partitions `ORDERS_<p>`, …), `DLQ` and `ADVISORIES`. For tests
    /// and tools that own the whole server; a service uses [`Bus::provision_streams_of`].
    pub async fn provision_streams(&self, settings: &StreamSettings) -> Result<(), ProvisionError> {
        for stream in streams(settings)? {
            self.create_or_update(stream).await?;
        }
        Ok(())
    }

    /// Creates or updates the streams `service` owns: the stream of the events it writes
    /// ([`topology::written_by`]), and `DLQ` and `ADVISORIES` for their owner. A service may
    /// therefore be granted the right to change its own streams only; the ones it reads are
    /// its owners' to create ([`Bus::streams_used_by_exist`]).
    pub async fn provision_streams_of(
        &self,
        settings: &StreamSettings,
        service: &str,
    ) -> Result<(), ProvisionError> {
        for stream in streams(settings)? {
            if stream.owner == service {
                self.create_or_update(stream).await?;
            }
        }
        Ok(())
    }

    /// Whether the streams `service` uses but does not own exist — the event stream it
    /// consumes and the dead-letter streams: [`ProvisionError::Missing`] names the first that
    /// does not, and its owner. Its consumers start once this holds.
    pub async fn streams_used_by_exist(
        &self,
        settings: &StreamSettings,
        service: &str,
    ) -> Result<(), ProvisionError> {
        let consumed: Vec<Domain> = topology::subscriptions_of(service)
            .filter_map(|s| s.domain())
            .collect();
        for stream in streams(settings)? {
            let used = stream.domain.is_none_or(|d| consumed.contains(&d));
            if stream.owner != service && used {
                self.jetstream()
                    .get_stream(&stream.config.name)
                    .await
                    .map_err(|source| ProvisionError::Missing {
                        stream: stream.config.name.clone(),
                        owner: stream.owner,
                        source,
                    })?;
            }
        }
        Ok(())
    }

    async fn create_or_update(&self, stream: OwnedStream) -> Result<(), ProvisionError> {
        let name = stream.config.name.clone();
        self.jetstream()
            .create_or_update_stream(stream.config)
            .await
            .map(|_| ())
            .map_err(|source| ProvisionError::Stream {
                stream: name,
                source,
            })
    }

    /// Creates or updates a KV bucket and returns its handle.
    pub async fn key_value(&self, bucket: &KvBucket) -> Result<kv::Store, ProvisionError> {
        let config = kv::Config {
            bucket: bucket.name.clone(),
            history: bucket.history,
            max_age: bucket.ttl.unwrap_or_default(),
            max_bytes: bucket
                .max_bytes
                .map_or(-1, |bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
            num_replicas: bucket.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        self.jetstream()
            .create_or_update_key_value(config)
            .await
            .map_err(|source| ProvisionError::Bucket {
                bucket: bucket.name.clone(),
                source,
            })
    }
}

/// A stream of the system, with the service that creates and configures it.
struct OwnedStream {
    config: stream::Config,
    /// The event domain it holds (`None`: `DLQ`, `ADVISORIES`).
    domain: Option<Domain>,
    owner: &'static str,
}

/// Every stream `settings` describe, or why they cannot work.
fn streams(settings: &StreamSettings) -> Result<Vec<OwnedStream>, ProvisionError> {
    if settings.replicas == 0 || settings.replicas > 5 {
        return Err(ProvisionError::Settings("replicas must be between 1 and 5"));
    }
    let keeps_forever = settings.max_age.is_zero();
    if settings.duplicate_window.is_zero()
        || (!keeps_forever && settings.duplicate_window > settings.max_age)
    {
        return Err(ProvisionError::Settings(
            "duplicate window must be positive and no longer than the hot window",
        ));
    }
    let config = |name: String, subjects: String, max_age| stream::Config {
        name,
        subjects: vec![subjects],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        num_replicas: settings.replicas,
        duplicate_window: settings.duplicate_window,
        max_age,
        // Histories are read with multi-last direct gets; dead letters are fetched by
        // sequence when redriven.
        allow_direct: true,
        ..Default::default()
    };
    let events = Domain::ALL.into_iter().flat_map(|domain| {
        settings.partitions.all().map(move |p| OwnedStream {
            config: config(
                domain.stream(p, settings.partitions),
                domain.stream_subjects(p, settings.partitions),
                settings.max_age,
            ),
            domain: Some(domain),
            owner: topology::writer(domain),
        })
    });
    let support = names::stream::SUPPORT
        .into_iter()
        .map(|(name, subjects)| OwnedStream {
            config: config(name.to_owned(), subjects.to_owned(), settings.dlq_max_age),
            domain: None,
            owner: topology::SUPPORT_STREAMS_OWNER,
        });
    Ok(events.chain(support).collect())
}
