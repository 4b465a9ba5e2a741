//! Provisioning, apart from the services: the deployment's provisioning step
//! (`orderflow-admin provision`, with the operator's rights) creates or updates every stream,
//! KV bucket and durable consumer, idempotently, so a fresh NATS, an upgrade and a changed
//! setting all converge. The services hold no right to create, update, purge or delete any of
//! them — a stream update is a purge in effect (`max_msgs: 1`, `sealed`), and `sources`,
//! `republish` or a push consumer's deliver subject make the *server* publish past every user
//! permission — so a service only checks that what it needs exists, in the subject layout it
//! knows ([`Bus::check_streams`]), and waits until it does.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use events::{Domain, Partitions, ServiceId, layout, names};

use crate::connect::Bus;

/// Settings shared by every stream the system owns.
#[derive(Debug, Clone, PartialEq)]
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
    /// Longest an `Idempotency-Key` claim is kept; never past the hot window (the archive
    /// remembers the key after that, and each claim costs nats-server memory like any
    /// retained subject).
    pub idempotency_ttl: Duration,
    /// The byte bound of every stream and bucket.
    pub bounds: Bounds,
}

/// The most bytes each store may hold. A store at its bound refuses new writes and never drops
/// what it holds (discard *new*); order-service refuses new orders before that
/// ([`Bounds::admission`]) so that accepted ones have room to finish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Each event domain's streams together (`EVENTS_MAX_BYTES`), split evenly among its
    /// partitions.
    pub events: u64,
    /// The dead letters (`DLQ_MAX_BYTES`).
    pub dlq: u64,
    /// The captured max-deliveries advisories (`ADVISORIES_MAX_BYTES`).
    pub advisories: u64,
    /// The `Idempotency-Key` claims (`IDEMPOTENCY_MAX_BYTES`).
    pub idempotency: u64,
    /// Stock per SKU (`STOCK_MAX_BYTES`).
    pub stock: u64,
    /// Disabled webhook endpoints (`WEBHOOK_ENDPOINTS_MAX_BYTES`).
    pub webhook_endpoints: u64,
    /// The share of any bound the saga writes to above which new orders are refused
    /// (`ADMISSION_LIMIT`, 0.9): the rest is room for the orders already accepted.
    pub admission: f64,
}

impl Default for Bounds {
    /// Together about 8 GiB, inside the 10 GB JetStream store of `deploy/nats/nats.conf`.
    fn default() -> Self {
        Self {
            events: 2 << 30,
            dlq: 1 << 30,
            advisories: 128 << 20,
            idempotency: 512 << 20,
            stock: 256 << 20,
            webhook_endpoints: 1 << 20,
            admission: 0.9,
        }
    }
}

impl Bounds {
    /// The smallest bound a store may have: room for a few events.
    pub const LEAST: u64 = 16 << 10;

    /// Refuses bounds that cannot work, saying which.
    pub fn validate(&self) -> Result<(), &'static str> {
        let all = [
            self.events,
            self.dlq,
            self.advisories,
            self.idempotency,
            self.stock,
            self.webhook_endpoints,
        ];
        if all.iter().any(|bound| *bound < Self::LEAST) {
            return Err("every store's byte bound must be at least 16 KiB");
        }
        if !(self.admission > 0.0 && self.admission < 1.0) {
            return Err("ADMISSION_LIMIT must be between 0 and 1 (a share of each bound)");
        }
        Ok(())
    }
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(24 * 3600),
            dlq_max_age: Duration::from_secs(30 * 24 * 3600),
            partitions: Partitions::ONE,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            bounds: Bounds::default(),
        }
    }
}

impl StreamSettings {
    /// Every KV bucket of the deployment ([`names::bucket`]), as provisioned.
    pub fn buckets(&self) -> Vec<KvBucket> {
        names::bucket::ALL
            .into_iter()
            .map(|name| self.bucket(name))
            .collect()
    }

    /// The bucket `name` as these settings provision it.
    pub fn bucket(&self, name: &str) -> KvBucket {
        let bucket = KvBucket {
            replicas: self.replicas,
            ..KvBucket::new(name)
        };
        match name {
            names::bucket::IDEMPOTENCY => KvBucket {
                ttl: Some(if self.max_age.is_zero() {
                    self.idempotency_ttl
                } else {
                    self.idempotency_ttl.min(self.max_age)
                }),
                max_bytes: Some(self.bounds.idempotency),
                ..bucket
            },
            // One record per SKU, marks included: the default holds about a million SKUs.
            names::bucket::STOCK => KvBucket {
                max_bytes: Some(self.bounds.stock),
                ..bucket
            },
            // One small record per disabled endpoint.
            names::bucket::WEBHOOK_ENDPOINTS => KvBucket {
                max_bytes: Some(self.bounds.webhook_endpoints),
                ..bucket
            },
            _ => bucket,
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

/// Provisioning failed, or what a service needs is not there (yet).
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
    /// A stream of the deployment does not exist (yet).
    #[error(
        "stream {stream} does not exist: the deployment's provisioning step (`orderflow-admin provision`) creates it: {source}"
    )]
    Missing {
        /// The stream.
        stream: String,
        /// The server's answer.
        #[source]
        source: jetstream::context::GetStreamError,
    },
    /// A stream exists but says nothing of its subject layout: it was created before layouts
    /// were recorded (or by hand), and provisioning records it.
    #[error(
        "stream {stream} carries no subject layout record: run the deployment's provisioning step (`orderflow-admin provision`)"
    )]
    Unrecorded {
        /// The stream.
        stream: String,
    },
    /// A stream holds its events under a subject layout this build does not write: starting
    /// would misread them. Fatal: the data must be migrated first.
    #[error(
        "stream {stream} holds subject layout {found:?}, this build reads and writes layout {}: its events must be migrated before this version runs on them (docs/runbooks.md, \"Upgrading the subject layout\")",
        layout::LAYOUT_VERSION
    )]
    Layout {
        /// The stream.
        stream: String,
        /// The layout it records.
        found: String,
    },
    /// A stream records no subject layout and holds events this build cannot read: made by a
    /// build before layouts were recorded (layout 1 put events on their type, `orders.created`).
    /// Fatal: recording this build's layout on it would hide those events, not read them.
    #[error(
        "stream {stream} records no subject layout and holds events this build does not read (one on `{subject}`): it was written under an older layout, which this build cannot upgrade — drain it with the build that wrote it, or take it out of the deployment (docs/runbooks.md, \"Upgrading the subject layout\")"
    )]
    ForeignEvents {
        /// The stream.
        stream: String,
        /// The subject of one of its events.
        subject: String,
    },
    /// A stream's events could not be read to tell its layout (a leader being elected).
    #[error("cannot read stream {stream} to tell its subject layout: {reason}")]
    Unreadable {
        /// The stream.
        stream: String,
        /// The error.
        reason: String,
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
    /// A KV bucket of the deployment does not exist (yet).
    #[error(
        "KV bucket {bucket} does not exist: the deployment's provisioning step (`orderflow-admin provision`) creates it: {source}"
    )]
    MissingBucket {
        /// The bucket.
        bucket: String,
        /// The server's answer.
        #[source]
        source: jetstream::context::KeyValueError,
    },
}

impl ProvisionError {
    /// Whether waiting cannot help: the deployment must be changed (migrated) first.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::Layout { .. } | Self::ForeignEvents { .. } | Self::Settings(_)
        )
    }
}

impl Bus {
    /// Creates or updates every stream of the deployment — the event streams (`ORDERS`,
    /// `INVENTORY`, `NOTIFICATIONS`, or their partitions `ORDERS_<p>`, …), `DLQ` and
    /// `ADVISORIES` — each recording the subject layout it holds. The provisioning step's
    /// job (it holds the rights; the services do not), and tests'. A stream that records
    /// another layout is left alone: [`ProvisionError::Layout`].
    pub async fn provision_streams(&self, settings: &StreamSettings) -> Result<(), ProvisionError> {
        for stream in streams(settings)? {
            let name = stream.config.name.clone();
            if let Ok(existing) = self.jetstream().get_stream(&name).await {
                if let Some(other) = other_layout(&name, existing.cached_info()) {
                    return Err(other);
                }
                if stream.domain.is_some()
                    && !existing
                        .cached_info()
                        .config
                        .metadata
                        .contains_key(layout::LAYOUT_METADATA)
                {
                    // Recorded only if its events are this layout's: its first and last.
                    foreign_events(&name, &existing).await?;
                }
            }
            self.jetstream()
                .create_or_update_stream(stream.config)
                .await
                .map_err(|source| ProvisionError::Stream {
                    stream: name,
                    source,
                })?;
        }
        Ok(())
    }

    /// Whether every stream `service` uses — the events it writes and reads, the dead-letter
    /// and advisory streams — exists and holds the subject layout this build knows: what a
    /// service checks before it starts. [`ProvisionError::Missing`] and
    /// [`ProvisionError::Unrecorded`] pass once provisioning has run;
    /// [`ProvisionError::Layout`] does not.
    pub async fn check_streams(
        &self,
        settings: &StreamSettings,
        service: ServiceId,
    ) -> Result<(), ProvisionError> {
        let used: Vec<Domain> = service
            .subscriptions()
            .filter_map(|s| s.domain())
            .chain([service.writes()])
            .collect();
        let streams = streams(settings)?
            .into_iter()
            .filter(|s| s.domain.is_none_or(|d| used.contains(&d)));
        for stream in streams {
            let name = stream.config.name;
            let found = self.jetstream().get_stream(&name).await.map_err(|source| {
                ProvisionError::Missing {
                    stream: name.clone(),
                    source,
                }
            })?;
            let info = found.cached_info();
            if let Some(other) = other_layout(&name, info) {
                return Err(other);
            }
            if !info.config.metadata.contains_key(layout::LAYOUT_METADATA) {
                return Err(ProvisionError::Unrecorded { stream: name });
            }
        }
        Ok(())
    }

    /// Creates or updates a KV bucket and returns its handle: the provisioning step's job.
    pub async fn provision_bucket(&self, bucket: &KvBucket) -> Result<kv::Store, ProvisionError> {
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
        let store = self
            .jetstream()
            .create_or_update_key_value(config)
            .await
            .map_err(|source| ProvisionError::Bucket {
                bucket: bucket.name.clone(),
                source,
            })?;
        // A `Nats-Rollup: all` header on any write would purge the whole bucket — a purge
        // right by the back door for whoever may write one key. No key is ever purged here
        // (deletes are markers), so rollups are refused.
        let mut stream_config = store.stream.cached_info().config.clone();
        if stream_config.allow_rollup {
            stream_config.allow_rollup = false;
            self.jetstream()
                .update_stream(&stream_config)
                .await
                .map_err(|e| ProvisionError::Bucket {
                    bucket: bucket.name.clone(),
                    source: jetstream::context::CreateKeyValueError::with_source(
                        jetstream::context::CreateKeyValueErrorKind::JetStream,
                        e,
                    ),
                })?;
        }
        Ok(store)
    }

    /// The handle of an existing KV bucket: what a service opens (it may not create one).
    pub async fn bucket(&self, name: &str) -> Result<kv::Store, ProvisionError> {
        self.jetstream()
            .get_key_value(name)
            .await
            .map_err(|source| ProvisionError::MissingBucket {
                bucket: name.to_owned(),
                source,
            })
    }
}

/// The stores (streams, and buckets by their streams `KV_<bucket>`) `service` writes: its
/// event streams, its buckets, and for order-service `DLQ` and `ADVISORIES`.
pub fn stores_written_by(settings: &StreamSettings, service: ServiceId) -> Vec<String> {
    let writes = service.writes();
    let mut stores: Vec<String> = streams(settings)
        .map(|streams| {
            streams
                .into_iter()
                .filter(|s| match s.domain {
                    Some(domain) => domain == writes,
                    None => service.owns_support_streams(),
                })
                .map(|s| s.config.name)
                .collect()
        })
        .unwrap_or_default();
    stores.extend(
        service
            .buckets()
            .iter()
            .map(|bucket| names::bucket::stream(bucket)),
    );
    stores
}

/// How full one store is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// The stream (a bucket's is `KV_<bucket>`).
    pub store: String,
    /// Bytes it holds.
    pub bytes: u64,
    /// Its bound (0: none).
    pub max_bytes: u64,
    /// Messages it holds.
    pub messages: u64,
}

impl Usage {
    /// The share of its bound in use (0 without a bound).
    pub fn ratio(&self) -> f64 {
        if self.max_bytes == 0 {
            0.0
        } else {
            self.bytes as f64 / self.max_bytes as f64
        }
    }
}

impl Bus {
    /// How full each of `stores` is, read from their stream info.
    pub async fn usage(&self, stores: &[String]) -> Result<Vec<Usage>, ProvisionError> {
        let mut usage = Vec::with_capacity(stores.len());
        for store in stores {
            let stream = self.jetstream().get_stream(store).await.map_err(|source| {
                ProvisionError::Missing {
                    stream: store.clone(),
                    source,
                }
            })?;
            let info = stream.cached_info();
            usage.push(Usage {
                store: store.clone(),
                bytes: info.state.bytes,
                max_bytes: u64::try_from(info.config.max_bytes).unwrap_or(0),
                messages: info.state.messages,
            });
        }
        Ok(usage)
    }
}

/// [`ProvisionError::ForeignEvents`] if the first or the last event `stream` holds is not on
/// a subject of this build's layout.
async fn foreign_events(
    name: &str,
    stream: &jetstream::stream::Stream,
) -> Result<(), ProvisionError> {
    let state = &stream.cached_info().state;
    if state.messages == 0 {
        return Ok(());
    }
    for sequence in [state.first_sequence, state.last_sequence] {
        let message = match stream.get_raw_message(sequence).await {
            Ok(message) => message,
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                continue;
            }
            Err(e) => {
                return Err(ProvisionError::Unreadable {
                    stream: name.to_owned(),
                    reason: e.to_string(),
                });
            }
        };
        if layout::OrderKey::parse(&message.subject).is_err() {
            return Err(ProvisionError::ForeignEvents {
                stream: name.to_owned(),
                subject: message.subject.to_string(),
            });
        }
    }
    Ok(())
}

/// [`ProvisionError::Layout`] if `stream` records a subject layout other than this build's.
fn other_layout(stream: &str, info: &stream::Info) -> Option<ProvisionError> {
    let found = info.config.metadata.get(layout::LAYOUT_METADATA)?;
    (*found != layout::LAYOUT_VERSION.to_string()).then(|| ProvisionError::Layout {
        stream: stream.to_owned(),
        found: found.clone(),
    })
}

/// The name of every stream `settings` describe (none if they cannot work).
pub fn stream_names(settings: &StreamSettings) -> Vec<String> {
    streams(settings)
        .map(|streams| streams.into_iter().map(|s| s.config.name).collect())
        .unwrap_or_default()
}

/// A stream of the system.
struct OwnedStream {
    config: stream::Config,
    /// The event domain it holds (`None`: `DLQ`, `ADVISORIES`, which every service uses).
    domain: Option<Domain>,
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
    settings
        .bounds
        .validate()
        .map_err(ProvisionError::Settings)?;
    let config = |name: String, subjects: String, max_age, max_bytes: u64| stream::Config {
        name,
        subjects: vec![subjects],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        // At its byte bound a stream refuses what is new and keeps what it has: an event
        // stored is never dropped for room (only age — the hot window — retires events).
        discard: stream::DiscardPolicy::New,
        max_bytes: i64::try_from(max_bytes).unwrap_or(i64::MAX),
        num_replicas: settings.replicas,
        duplicate_window: settings.duplicate_window,
        max_age,
        // Histories are read with multi-last direct gets; dead letters are fetched by
        // sequence when redriven.
        allow_direct: true,
        metadata: [(
            layout::LAYOUT_METADATA.to_owned(),
            layout::LAYOUT_VERSION.to_string(),
        )]
        .into(),
        ..Default::default()
    };
    let events = Domain::ALL.into_iter().flat_map(|domain| {
        settings.partitions.all().map(move |p| OwnedStream {
            config: config(
                domain.stream(p, settings.partitions),
                domain.stream_subjects(p, settings.partitions),
                settings.max_age,
                settings.bounds.events / u64::from(settings.partitions.count()),
            ),
            domain: Some(domain),
        })
    });
    let support = names::stream::SUPPORT
        .into_iter()
        .map(|(name, subjects)| OwnedStream {
            config: config(
                name.to_owned(),
                subjects.to_owned(),
                settings.dlq_max_age,
                if name == names::stream::DLQ {
                    settings.bounds.dlq
                } else {
                    settings.bounds.advisories
                },
            ),
            domain: None,
        });
    Ok(events.chain(support).collect())
}
