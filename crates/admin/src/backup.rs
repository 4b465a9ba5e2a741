//! `orderflow-admin backup`: an online backup of everything the system stores, while orders
//! flow — event streams through JetStream's stream snapshots, KV buckets record by record, the
//! PostgreSQL archive through `pg_dump` — into one directory with a manifest.
//!
//! The parts are taken one after another, so each is of a different moment; the order is
//! chosen so that a restore can square them (RELIABILITY.md, "Backup and restore", argues it):
//!
//! 1. **consumer marks**: every durable consumer's ack floor. A restore starts each consumer
//!    after its mark, so everything not surely handled is delivered again — every handler is
//!    idempotent.
//! 2. the **archive** (after the consumer marks, before the order streams: it never holds what
//!    they lack, and what the projection had not written is delivered again);
//! 3. **stream marks**: every stream's last sequence, NOTIFICATIONS before ORDERS before
//!    INVENTORY. What is stored after a mark is what the restore squares;
//! 4. the **stock** records, each at its revision;
//! 5. the **INVENTORY** streams: every decision whose stock change a copied record holds is in
//!    them; one stored later says so by its stock revisions, and the restore drops or completes
//!    it (see `inventory_service::restore`);
//! 6. the **ORDERS** streams: every order a decision is about is in them; a confirmation or
//!    cancellation caused by a decision the backup lacks is dropped by the restore;
//! 7. the **idempotency** keys: every order's key is there (a key without its order is what a
//!    crash between the two leaves, and order-service finishes it);
//! 8. the **NOTIFICATIONS** streams: every webhook recorded as sent for an order event in the
//!    backup, before this snapshot began, is there, so it is not sent again (one sent later
//!    goes again, under the same `webhook-id`);
//! 9. webhook endpoints, dead letters, captured advisories.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use archive::ArchiveArgs;
use bus::Bus;
use events::Domain;
use events::names::{bucket, stream};
use futures::{StreamExt as _, TryStreamExt as _};
use platform::config::NatsArgs;

use crate::manifest::{self, ConsumerMark, Manifest, Marks, Part, Record};
use crate::postgres::{self, PgTools};

/// `orderflow-admin backup`'s settings.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// NATS connection (as the operator) and the shape of the streams.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The PostgreSQL archive (ARCHIVE_URL=none: there is none to back up).
    #[command(flatten)]
    pub archive: ArchiveArgs,
    /// PostgreSQL's client programs.
    #[command(flatten)]
    pub pg: PgTools,
    /// The directory to write the backup into: created if needed (owner-only), and it must not
    /// hold a backup already.
    #[arg(long = "to", value_name = "DIR")]
    pub to: PathBuf,
}

/// A backup failed; the directory holds no manifest, so it is not mistaken for one.
#[derive(Debug, thiserror::Error)]
pub enum BackupFailed {
    /// The settings cannot work.
    #[error(transparent)]
    Settings(#[from] platform::config::NatsConfigError),
    /// The archive settings cannot work.
    #[error(transparent)]
    ArchiveSettings(#[from] archive::ArchiveConfigError),
    /// The connection could not be set up.
    #[error(transparent)]
    Connect(#[from] bus::ConnectError),
    /// NATS could not be reached.
    #[error("cannot reach NATS at {0}")]
    Unreachable(String),
    /// The directory cannot be used.
    #[error("{}: {reason}", path.display())]
    Directory {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Reading a stream, consumer or bucket failed.
    #[error("{what}: {reason}")]
    Nats {
        /// What was being read.
        what: String,
        /// The error.
        reason: String,
    },
    /// A stream snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] bus::SnapshotError),
    /// `pg_dump` failed.
    #[error("the archive: {0}")]
    Archive(String),
}

fn nats(what: impl Into<String>) -> impl FnOnce(String) -> BackupFailed {
    let what = what.into();
    move |reason| BackupFailed::Nats { what, reason }
}

fn directory(path: &Path) -> impl FnOnce(std::io::Error) -> BackupFailed + '_ {
    move |e| BackupFailed::Directory {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// What a backup takes, in the order it takes it (see the module documentation).
#[derive(Debug, Clone, Copy)]
enum Step {
    Marks,
    Archive,
    Bucket(&'static str),
    Streams(Domain),
    Stream(&'static str),
}

const PLAN: [Step; 10] = [
    Step::Archive,
    Step::Marks,
    Step::Bucket(bucket::STOCK),
    Step::Streams(Domain::Inventory),
    Step::Streams(Domain::Orders),
    Step::Bucket(bucket::IDEMPOTENCY),
    Step::Streams(Domain::Notifications),
    Step::Bucket(bucket::WEBHOOK_ENDPOINTS),
    Step::Stream(stream::DLQ),
    Step::Stream(stream::ADVISORIES),
];

/// Takes a backup into `args.to`.
pub async fn run(args: &BackupArgs) -> Result<Manifest, BackupFailed> {
    let settings = args.nats.stream_settings()?;
    let libpq = args.archive.libpq()?;
    prepare(&args.to)?;
    let bus = Bus::connect(&args.nats.bus_config(crate::CONNECTION_NAME)?).await?;
    if !crate::connected(&bus, Duration::from_secs(10)).await {
        return Err(BackupFailed::Unreachable(crate::shown(&args.nats.nats_url)));
    }
    let partitions = settings.partitions;
    let streams: Vec<String> = bus::stream_names(&settings);
    let taken = async {
        let started = chrono::Utc::now();
        let layout = recorded_layout(&bus, &streams).await?;
        let consumers = consumer_marks(&bus, &streams).await?;
        let mut parts = Vec::new();
        let mut marks = None;
        for step in PLAN {
            match step {
                Step::Marks => {
                    marks = Some(Marks {
                        streams: stream_marks(&bus, &streams, partitions).await?,
                        consumers: consumers.clone(),
                    });
                }
                Step::Archive => {
                    if let Some(libpq) = &libpq {
                        let clock = Instant::now();
                        let file = "archive.pgdump";
                        // Made before pg_dump writes it, so it is never readable by others.
                        drop(private_file(&args.to.join(file))?);
                        postgres::dump(&args.pg, libpq, &args.to.join(file))
                            .await
                            .map_err(BackupFailed::Archive)?;
                        let (bytes, sha256) = sealed(&args.to.join(file))?;
                        parts.push(Part::Archive {
                            file: file.into(),
                            bytes,
                            sha256,
                            seconds: clock.elapsed().as_secs_f64(),
                        });
                    }
                }
                Step::Bucket(name) => parts.push(copy_bucket(&bus, name, &args.to).await?),
                Step::Streams(domain) => {
                    for p in partitions.all() {
                        let name = domain.stream(p, partitions);
                        parts.push(snapshot(&bus, &name, &args.to).await?);
                    }
                }
                Step::Stream(name) => parts.push(snapshot(&bus, name, &args.to).await?),
            }
        }
        // Every stream the deployment has is in the plan (a new one must be placed in it).
        for name in &streams {
            let taken = parts
                .iter()
                .any(|p| matches!(p, Part::Stream { name: n, .. } if n == name));
            if !taken {
                return Err(BackupFailed::Nats {
                    what: format!("stream {name}"),
                    reason: "this build does not know where to take it in a backup".into(),
                });
            }
        }
        Ok(Manifest {
            format: manifest::FORMAT,
            version: env!("CARGO_PKG_VERSION").into(),
            layout,
            partitions: partitions.count(),
            started,
            finished: chrono::Utc::now(),
            marks: marks.unwrap_or_default(),
            parts,
        })
    }
    .await;
    bus.drain().await;
    let manifest = taken?;
    write_manifest(&args.to, &manifest)?;
    Ok(manifest)
}

/// Creates `dir`, or checks the one there is empty.
fn prepare(dir: &Path) -> Result<(), BackupFailed> {
    use std::os::unix::fs::PermissionsExt as _;
    // Every order and customer is in it: readable by its owner only.
    for made in [dir.to_owned(), dir.join("streams"), dir.join("buckets")] {
        std::fs::create_dir_all(&made).map_err(directory(&made))?;
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o700))
            .map_err(directory(&made))?;
    }
    let taken = dir.join(manifest::FILE);
    if taken.exists() {
        return Err(BackupFailed::Directory {
            path: taken,
            reason: "a backup is there already: give an empty directory".into(),
        });
    }
    Ok(())
}

/// Every durable consumer's ack floor, now: taken first, so a consumer restarts no later than
/// what the parts taken after hold.
async fn consumer_marks(bus: &Bus, streams: &[String]) -> Result<Vec<ConsumerMark>, BackupFailed> {
    let mut marks = Vec::new();
    for name in streams {
        let consumers = crate::consumers_of(bus, name)
            .await
            .map_err(nats(format!("stream {name}")))?;
        for consumer in consumers {
            if consumer.config.durable_name.is_some() {
                marks.push(ConsumerMark {
                    stream: name.clone(),
                    durable: consumer.name,
                    ack_floor: consumer.ack_floor.stream_sequence,
                });
            }
        }
    }
    Ok(marks)
}

/// Every stream's last sequence, now — an effect's stream before its cause's (NOTIFICATIONS,
/// then ORDERS, then INVENTORY): whatever is stored before a mark has its cause stored before
/// the next one, so the restore never needs to look before a mark to square what is after.
async fn stream_marks(
    bus: &Bus,
    streams: &[String],
    partitions: events::Partitions,
) -> Result<std::collections::BTreeMap<String, u64>, BackupFailed> {
    let mut ordered: Vec<String> = [Domain::Notifications, Domain::Orders, Domain::Inventory]
        .into_iter()
        .flat_map(|d| partitions.all().map(move |p| d.stream(p, partitions)))
        .collect();
    ordered.extend(
        streams
            .iter()
            .filter(|s| !ordered.contains(s))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut marks = std::collections::BTreeMap::new();
    for name in ordered {
        let mut stream = bus
            .jetstream()
            .get_stream(&name)
            .await
            .map_err(|e| nats(format!("stream {name}"))(e.to_string()))?;
        let info = stream
            .info()
            .await
            .map_err(|e| nats(format!("stream {name}"))(e.to_string()))?;
        marks.insert(name, info.state.last_sequence);
    }
    Ok(marks)
}

/// The subject layout the streams record (they must agree).
async fn recorded_layout(bus: &Bus, streams: &[String]) -> Result<u32, BackupFailed> {
    let mut found = std::collections::BTreeSet::new();
    for name in streams {
        let stream = bus
            .jetstream()
            .get_stream(name)
            .await
            .map_err(|e| nats(format!("stream {name}"))(e.to_string()))?;
        let recorded = stream
            .cached_info()
            .config
            .metadata
            .get(events::layout::LAYOUT_METADATA)
            .cloned()
            .unwrap_or_else(|| "none".to_owned());
        found.insert(recorded);
    }
    match found.into_iter().collect::<Vec<_>>().as_slice() {
        [one] => one.parse().map_err(|_| BackupFailed::Nats {
            what: "the streams".into(),
            reason: format!(
                "they record no subject layout ({one}): provision the deployment first"
            ),
        }),
        many => Err(BackupFailed::Nats {
            what: "the streams".into(),
            reason: format!(
                "they record different subject layouts {many:?}: finish `orderflow-admin migrate` first"
            ),
        }),
    }
}

async fn snapshot(bus: &Bus, name: &str, dir: &Path) -> Result<Part, BackupFailed> {
    let clock = Instant::now();
    let file = format!("streams/{name}.snapshot");
    let path = dir.join(&file);
    let mut out = BufWriter::new(private_file(&path)?);
    let snapshot = bus.snapshot_stream(name, &mut out).await?;
    finish(out, &path)?;
    let (_, sha256) = sealed(&path)?;
    Ok(Part::Stream {
        name: name.to_owned(),
        file,
        last_sequence: snapshot.last_sequence(),
        config: snapshot.config,
        bytes: snapshot.bytes,
        sha256,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// Copies every record of `name` with its revision. Record by record, not as a stream
/// snapshot: a snapshot can miss a record rewritten while it runs (the rewrite removes the
/// revision the snapshot was about to read, and the new one is past its end).
async fn copy_bucket(bus: &Bus, name: &str, dir: &Path) -> Result<Part, BackupFailed> {
    let clock = Instant::now();
    let what = format!("bucket {name}");
    let kv = bus
        .jetstream()
        .get_key_value(name)
        .await
        .map_err(|e| nats(what.clone())(e.to_string()))?;
    let keys: Vec<String> = match kv.keys().await {
        Ok(keys) => keys
            .try_collect()
            .await
            .map_err(|e| nats(what.clone())(e.to_string()))?,
        Err(e) => return Err(nats(what)(e.to_string())),
    };
    let file = format!("buckets/{name}.jsonl");
    let path = dir.join(&file);
    let mut out = BufWriter::new(private_file(&path)?);
    let mut entries = futures::stream::iter(keys)
        .map(|key| {
            let kv = kv.clone();
            async move { kv.entry(key).await }
        })
        .buffered(32);
    let mut records = 0;
    while let Some(entry) = entries.next().await {
        let entry = entry.map_err(|e| nats(what.clone())(e.to_string()))?;
        let Some(entry) = entry.filter(|e| e.operation == bus::kv::Operation::Put) else {
            continue;
        };
        let value = String::from_utf8(entry.value.to_vec()).map_err(|_| BackupFailed::Nats {
            what: format!("{what} key {}", entry.key),
            reason: "the value is not JSON text".into(),
        })?;
        let record = Record {
            key: entry.key,
            revision: entry.revision,
            value,
        };
        serde_json::to_writer(&mut out, &record).map_err(|e| directory(&path)(e.into()))?;
        out.write_all(b"\n").map_err(directory(&path))?;
        records += 1;
    }
    finish(out, &path)?;
    let (bytes, sha256) = sealed(&path)?;
    Ok(Part::Bucket {
        name: name.to_owned(),
        file,
        records,
        bytes,
        sha256,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// Flushes and syncs a part; its size.
fn finish(out: BufWriter<File>, path: &Path) -> Result<u64, BackupFailed> {
    let file = out
        .into_inner()
        .map_err(|e| directory(path)(e.into_error()))?;
    file.sync_all().map_err(directory(path))?;
    size(path)
}

/// A written part's size and SHA-256, for the manifest.
fn sealed(path: &Path) -> Result<(u64, String), BackupFailed> {
    manifest::digest(path).map_err(directory(path))
}

/// A new file only its owner may read.
fn private_file(path: &Path) -> Result<File, BackupFailed> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(directory(path))
}

fn size(path: &Path) -> Result<u64, BackupFailed> {
    Ok(std::fs::metadata(path).map_err(directory(path))?.len())
}

/// Writes the manifest last, atomically: its presence says the backup is whole.
fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), BackupFailed> {
    let path = dir.join(manifest::FILE);
    let partial = dir.join(format!("{}.partial", manifest::FILE));
    let text = serde_json::to_string_pretty(manifest).map_err(|e| directory(&path)(e.into()))?;
    let mut file = private_file(&partial)?;
    file.write_all(text.as_bytes())
        .map_err(directory(&partial))?;
    file.sync_all().map_err(directory(&partial))?;
    std::fs::rename(&partial, &path).map_err(directory(&path))
}
