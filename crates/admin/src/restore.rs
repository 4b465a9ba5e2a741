//! `orderflow-admin restore`: a backup into a fresh deployment — a NATS server or cluster with
//! none of the system's streams, and an empty PostgreSQL database — squared so that every
//! invariant holds and every order in flight finishes (RELIABILITY.md, "Backup and restore"):
//!
//! 1. every stream is restored from its snapshot, at the deployment's replicas;
//! 2. the stock records are squared with the inventory events stored after the backup began
//!    ([`inventory_service::restore`]): a reservation the copied stock does not wholly hold is
//!    dropped and decided again, a release is carried forward;
//! 3. a confirmation or cancellation whose deciding event the restored `INVENTORY` lacks is
//!    dropped, with what the order did after it (it is decided again); a notification outcome
//!    whose order event the restored `ORDERS` lacks is dropped (notified again if decided
//!    again, under the same `webhook-id`);
//! 4. the buckets are written back and the archive restored with `pg_restore`;
//! 5. the deployment is provisioned, every durable consumer starting right after its mark:
//!    whatever was not surely handled when the backup began is delivered again.
//!
//! Then the services start on it as on any deployment.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use archive::{Archive, ArchiveArgs};
use async_nats::jetstream::stream::RawMessageErrorKind;
use bus::{Bus, Recorded, Start};
use events::layout::{self, Domain};
use events::names::{bucket, header};
use events::{Envelope, Event, OrderId, Sku, StockRevisions};
use inventory_service::StockRecord;
use inventory_service::restore::{CopiedStock, RestoredEvent, square};
use serde_json::Value;

use crate::manifest::{Manifest, Part, Record};
use crate::postgres::{self, PgTools};
use crate::provision::ProvisionArgs;

/// The duplicate window streams are restored with, until provisioning sets the deployment's:
/// the message ids of events the restore drops must not keep their decided-again copies out.
const RESTORE_DUPLICATE_WINDOW_NANOS: u64 = 100_000_000;

/// `orderflow-admin restore`'s settings.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The deployment to restore into: its NATS (as the operator) and the settings the
    /// services will run with.
    #[command(flatten)]
    pub provision: ProvisionArgs,
    /// The (empty) PostgreSQL archive to restore into; ARCHIVE_URL=none: none.
    #[command(flatten)]
    pub archive: ArchiveArgs,
    /// PostgreSQL's client programs.
    #[command(flatten)]
    pub pg: PgTools,
    /// The backup directory.
    #[arg(long = "from", value_name = "DIR")]
    pub from: PathBuf,
    /// Restore a backup older than the hot window: events that have left it since are
    /// dropped at once, and only the archive as it was then holds those orders.
    #[arg(long)]
    pub older_than_hot_window: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Restored {
    /// Messages restored per stream.
    pub streams: BTreeMap<String, u64>,
    /// Records written back per bucket.
    pub buckets: BTreeMap<String, u64>,
    /// Inventory events dropped (stored after the stock was copied).
    pub dropped_inventory_events: u64,
    /// Order events dropped (decided by a dropped or missing inventory event, and after).
    pub dropped_order_events: u64,
    /// Notification outcomes dropped (their order event is not in the restored order streams).
    pub dropped_notification_events: u64,
    /// Stock records the squaring changed.
    pub squared_stock_records: u64,
    /// Durable consumers started after their marks.
    pub consumers: u64,
    /// Whether the archive was restored.
    pub archive: bool,
    /// Seconds each phase took.
    pub phases: BTreeMap<String, f64>,
    /// Bytes of backup read.
    pub bytes: u64,
    /// Seconds it took.
    pub seconds: f64,
}

impl std::fmt::Display for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "restored {} bytes in {:.1}s:", self.bytes, self.seconds)?;
        for (stream, messages) in &self.streams {
            writeln!(f, "  stream {stream}: {messages} messages")?;
        }
        for (bucket, records) in &self.buckets {
            writeln!(f, "  bucket {bucket}: {records} records")?;
        }
        writeln!(
            f,
            "  squared: {} stock records; {} inventory and {} order events dropped (decided again); {} notification outcomes of order events the restore lacks dropped",
            self.squared_stock_records,
            self.dropped_inventory_events,
            self.dropped_order_events,
            self.dropped_notification_events
        )?;
        writeln!(
            f,
            "  consumers started after their marks: {}",
            self.consumers
        )?;
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(phase, seconds)| format!("{phase} {seconds:.1}s"))
            .collect();
        writeln!(f, "  phases: {}", phases.join(", "))?;
        write!(
            f,
            "  archive: {}",
            if self.archive { "restored" } else { "none" }
        )
    }
}

/// A restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreFailed {
    /// The backup cannot be used.
    #[error("the backup: {0}")]
    Backup(String),
    /// The target is not a fresh deployment, or does not match the backup.
    #[error("{0}")]
    Target(String),
    /// The settings cannot work.
    #[error(transparent)]
    Settings(#[from] platform::config::NatsConfigError),
    /// The archive settings cannot work.
    #[error(transparent)]
    ArchiveSettings(#[from] archive::ArchiveConfigError),
    /// The connection could not be set up.
    #[error(transparent)]
    Connect(#[from] bus::ConnectError),
    /// A stream restore failed.
    #[error(transparent)]
    Snapshot(#[from] bus::SnapshotError),
    /// Reading or changing what was restored failed.
    #[error("{what}: {reason}")]
    Nats {
        /// What.
        what: String,
        /// The error.
        reason: String,
    },
    /// Provisioning failed.
    #[error(transparent)]
    Provision(#[from] crate::ProvisionFailed),
    /// `pg_restore` failed.
    #[error("the archive: {0}")]
    Archive(String),
}

fn nats(what: impl std::fmt::Display, reason: impl std::fmt::Display) -> RestoreFailed {
    RestoreFailed::Nats {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// Restores the backup in `args.from`.
pub async fn run(args: &RestoreArgs) -> Result<Restored, RestoreFailed> {
    let clock = Instant::now();
    let manifest = Manifest::read(&args.from).map_err(RestoreFailed::Backup)?;
    // A part cut short or damaged would restore as less than was taken, silently.
    manifest.verify(&args.from).map_err(RestoreFailed::Backup)?;
    let nats_args = &args.provision.nats;
    let settings = nats_args.stream_settings()?;
    check_fits(&manifest, &settings, args.older_than_hot_window)?;
    let libpq = args.archive.libpq()?;
    // An archive that is not empty is found before NATS is touched.
    if archive_file(&manifest).is_some()
        && let Some(archive) = Archive::from_args(&args.archive)?
    {
        let empty = archive.is_empty().await;
        archive.close().await;
        if !empty.map_err(|e| RestoreFailed::Archive(e.to_string()))? {
            return Err(RestoreFailed::Target(
                "the archive's database holds tables: a restore goes into an empty database".into(),
            ));
        }
    }
    let bus = Bus::connect(&nats_args.bus_config(crate::CONNECTION_NAME)?).await?;
    if !crate::connected(&bus, args.provision.timeout).await {
        return Err(RestoreFailed::Target(format!(
            "cannot reach NATS at {}",
            crate::shown(&nats_args.nats_url)
        )));
    }
    let outcome = restore(&bus, args, &manifest, &settings, libpq.as_ref()).await;
    bus.drain().await;
    let mut restored = outcome?;
    restored.bytes = manifest.bytes();
    restored.seconds = clock.elapsed().as_secs_f64();
    Ok(restored)
}

fn check_fits(
    manifest: &Manifest,
    settings: &bus::StreamSettings,
    older_than_hot_window: bool,
) -> Result<(), RestoreFailed> {
    if manifest.layout != layout::LAYOUT_VERSION {
        return Err(RestoreFailed::Backup(format!(
            "its streams hold subject layout {}, this build runs layout {}: restore it with the build that took it, then upgrade the layout",
            manifest.layout,
            layout::LAYOUT_VERSION
        )));
    }
    if manifest.partitions != settings.partitions.count() {
        return Err(RestoreFailed::Target(format!(
            "the backup has {} partitions per domain and STREAM_PARTITIONS is {}: restore with the backup's",
            manifest.partitions,
            settings.partitions.count()
        )));
    }
    let age = (chrono::Utc::now() - manifest.started)
        .to_std()
        .unwrap_or_default();
    if !settings.max_age.is_zero() && age > settings.max_age && !older_than_hot_window {
        return Err(RestoreFailed::Backup(format!(
            "it was taken {} ago, longer than HOT_WINDOW ({}): its hot events expire as soon as they are restored and only the archive keeps those orders; pass --older-than-hot-window to restore it anyway",
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            humantime::format_duration(settings.max_age)
        )));
    }
    Ok(())
}

async fn restore(
    bus: &Bus,
    args: &RestoreArgs,
    manifest: &Manifest,
    settings: &bus::StreamSettings,
    libpq: Option<&archive::Libpq>,
) -> Result<Restored, RestoreFailed> {
    let mut restored = Restored::default();
    // A fresh deployment only: nothing of the system may exist yet.
    for part in &manifest.parts {
        let name = match part {
            Part::Stream { name, .. } => name.clone(),
            Part::Bucket { name, .. } => bucket::stream(name),
            Part::Archive { .. } => continue,
        };
        if bus.jetstream().get_stream(&name).await.is_ok() {
            return Err(RestoreFailed::Target(format!(
                "stream {name} exists: a restore goes into a fresh deployment (one whose NATS holds none of the system's streams)"
            )));
        }
    }
    let mut clock = Instant::now();
    let mut lap = |restored: &mut Restored, phase: &str| {
        restored
            .phases
            .insert(phase.to_owned(), clock.elapsed().as_secs_f64());
        clock = Instant::now();
    };
    let mut last = BTreeMap::new();
    for part in &manifest.parts {
        let Part::Stream {
            name, file, config, ..
        } = part
        else {
            continue;
        };
        let mut config = config.clone();
        config["num_replicas"] = Value::from(settings.replicas);
        config["duplicate_window"] = Value::from(RESTORE_DUPLICATE_WINDOW_NANOS);
        let path = args.from.join(file);
        let mut archive = BufReader::new(
            File::open(&path)
                .map_err(|e| RestoreFailed::Backup(format!("{}: {e}", path.display())))?,
        );
        let state = bus.restore_stream(&config, &mut archive).await?;
        let messages = state.get("messages").and_then(Value::as_u64).unwrap_or(0);
        last.insert(
            name.clone(),
            state.get("last_seq").and_then(Value::as_u64).unwrap_or(0),
        );
        restored.streams.insert(name.clone(), messages);
    }

    lap(&mut restored, "streams");
    let mut stock = read_stock(&args.from, manifest)?;
    let before = stock.clone();
    let dropped =
        square_inventory(bus, manifest, settings, &last, &mut stock, &mut restored).await?;
    restored.dropped_order_events = square_orders(bus, manifest, settings, &last, &dropped).await?;
    restored.dropped_notification_events =
        square_notifications(bus, manifest, settings, &last).await?;
    restored.squared_stock_records = stock
        .iter()
        .filter(|(sku, copied)| before.get(*sku) != Some(*copied))
        .count() as u64;

    // Every message the backup holds may have been handled; those after a consumer's mark
    // are delivered again, and their handlers told so. A consumer the backup has no mark of
    // (it did not exist where the backup was taken) starts at the beginning, told the same.
    let mut starts: HashMap<(String, String), Start> = manifest
        .marks
        .consumers
        .iter()
        .map(|m| {
            let start = Start {
                sequence: m.ack_floor + 1,
                replay_until: last.get(&m.stream).copied().unwrap_or(0),
            };
            ((m.stream.clone(), m.durable.clone()), start)
        })
        .collect();
    restored.consumers = starts.len() as u64;
    for (stream, end) in &last {
        let start = Start {
            sequence: 1,
            replay_until: *end,
        };
        starts.insert((stream.clone(), "*".to_owned()), start);
    }
    lap(&mut restored, "squaring");

    // The buckets and the archive before any consumer exists: a service that binds as soon as
    // its consumers do must find the stock and the archive as the backup has them.
    for bucket in settings.buckets() {
        bus.provision_bucket(&bucket)
            .await
            .map_err(|e| nats(format!("bucket {}", bucket.name), e))?;
    }
    write_buckets(bus, &args.from, manifest, &stock, &mut restored).await?;
    lap(&mut restored, "buckets");
    if let (Some(libpq), Some(file)) = (libpq, archive_file(manifest)) {
        if let Some(archive) = Archive::from_args(&args.archive)? {
            archive
                .ensure_roles()
                .await
                .map_err(|e| RestoreFailed::Archive(e.to_string()))?;
            archive.close().await;
        }
        postgres::restore(&args.pg, libpq, &args.from.join(file))
            .await
            .map_err(RestoreFailed::Archive)?;
        restored.archive = true;
        lap(&mut restored, "archive");
    }
    // A consumer made meanwhile (a provisioning step run beside the restore) would start at
    // the beginning and take everything for new.
    for stream in last.keys() {
        if let Some(durable) = any_consumer(bus, stream).await? {
            return Err(RestoreFailed::Target(format!(
                "consumer {durable} of {stream} was made while the restore ran: keep the provisioning step and the services away until the restore is done, then restore again into a fresh deployment"
            )));
        }
    }
    crate::provision::provision_starting(
        bus,
        &args.provision.nats,
        args.provision.archive,
        &starts,
    )
    .await?;
    lap(&mut restored, "provisioning");
    Ok(restored)
}

/// A consumer of `stream`, if it has any.
async fn any_consumer(bus: &Bus, stream: &str) -> Result<Option<String>, RestoreFailed> {
    let consumers = crate::consumers_of(bus, stream)
        .await
        .map_err(|reason| nats(format!("stream {stream}"), reason))?;
    Ok(consumers.into_iter().next().map(|c| c.name))
}

fn archive_file(manifest: &Manifest) -> Option<&str> {
    manifest.parts.iter().find_map(|p| match p {
        Part::Archive { file, .. } => Some(file.as_str()),
        _ => None,
    })
}

fn bucket_records(dir: &Path, file: &str) -> Result<Vec<Record>, RestoreFailed> {
    let path = dir.join(file);
    let unreadable = |e: String| RestoreFailed::Backup(format!("{}: {e}", path.display()));
    let reader = BufReader::new(File::open(&path).map_err(|e| unreadable(e.to_string()))?);
    reader
        .lines()
        .map(|line| {
            let line = line.map_err(|e| unreadable(e.to_string()))?;
            serde_json::from_str(&line).map_err(|e| unreadable(e.to_string()))
        })
        .collect()
}

/// The copied stock records, by SKU.
fn read_stock(
    dir: &Path,
    manifest: &Manifest,
) -> Result<BTreeMap<Sku, CopiedStock>, RestoreFailed> {
    let mut stock = BTreeMap::new();
    for part in &manifest.parts {
        let Part::Bucket { name, file, .. } = part else {
            continue;
        };
        if name != bucket::STOCK {
            continue;
        }
        for record in bucket_records(dir, file)? {
            let bad =
                |e: String| RestoreFailed::Backup(format!("stock record {}: {e}", record.key));
            let sku = Sku::new(record.key.clone()).map_err(|e| bad(e.to_string()))?;
            let value: StockRecord =
                serde_json::from_str(&record.value).map_err(|e| bad(e.to_string()))?;
            stock.insert(
                sku,
                CopiedStock {
                    record: value,
                    revision: record.revision,
                },
            );
        }
    }
    Ok(stock)
}

/// The event log, read from each stream's leader: right after a restore into a cluster a
/// follower may still be catching up, and a history read from it would miss events.
fn leader_log(bus: &Bus) -> bus::EventLog {
    bus.events().clone().with_leader_reads(true)
}

/// A stream's messages stored after the backup's mark, decoded: (sequence, headers, event).
async fn tail(
    bus: &Bus,
    stream: &str,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, Option<async_nats::HeaderMap>, Envelope)>, RestoreFailed> {
    let handle = bus
        .jetstream()
        .get_stream(stream)
        .await
        .map_err(|e| nats(format!("stream {stream}"), e))?;
    let mut messages = Vec::new();
    for sequence in from..=to {
        let message = match handle.get_raw_message(sequence).await {
            Ok(message) => message,
            // Deleted, or expired: nothing to square.
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => continue,
            // Anything else (a leader still being elected) would leave the event unsquared.
            Err(e) => return Err(nats(format!("{stream} message {sequence}"), e)),
        };
        // A message that is not an event of this build was dead-lettered when it was
        // delivered, and will be again: nothing to square either.
        if let Ok(envelope) = Envelope::decode(&message.payload) {
            messages.push((sequence, Some(message.headers), envelope));
        }
    }
    Ok(messages)
}

/// Squares the stock with the inventory events stored after the backup began; the ids of
/// the decisions dropped.
async fn square_inventory(
    bus: &Bus,
    manifest: &Manifest,
    settings: &bus::StreamSettings,
    last: &BTreeMap<String, u64>,
    stock: &mut BTreeMap<Sku, CopiedStock>,
    restored: &mut Restored,
) -> Result<BTreeSet<uuid::Uuid>, RestoreFailed> {
    let partitions = settings.partitions;
    // Per order: its late events' sequences and stock revisions.
    let mut late: BTreeMap<OrderId, HashMap<u64, Option<StockRevisions>>> = BTreeMap::new();
    for p in partitions.all() {
        let name = Domain::Inventory.stream(p, partitions);
        let mark = manifest.marks.streams.get(&name).copied().unwrap_or(0);
        let end = last.get(&name).copied().unwrap_or(0);
        for (sequence, headers, envelope) in tail(bus, &name, mark + 1, end).await? {
            let revisions = headers
                .as_ref()
                .and_then(|h| h.get(header::STOCK_REVISION))
                .and_then(|v| StockRevisions::from_header(v.as_str()).ok());
            late.entry(envelope.event.order_id())
                .or_default()
                .insert(sequence, revisions);
        }
    }
    let marked: BTreeSet<OrderId> = stock
        .values()
        .flat_map(|c| c.record.taking.keys().chain(c.record.returning.keys()))
        .copied()
        .collect();
    // Orders with marks only first (undoing their takes frees units), then the others in the
    // order their events were stored, so that a reservation is carried forward on the units
    // the ones stored before it left.
    let first_late = |order: &OrderId| {
        late.get(order)
            .and_then(|events| events.keys().min().copied())
            .unwrap_or(0)
    };
    let mut orders: Vec<OrderId> = late.keys().copied().chain(marked).collect();
    orders.sort_by_key(|order| (first_late(order), *order));
    orders.dedup();
    let mut dropped = BTreeSet::new();
    for order in orders {
        let history = layout::order_anywhere(Domain::Inventory, partitions, order);
        let recorded: Vec<Recorded> = leader_log(bus)
            .read(&history)
            .await
            .map_err(|e| nats(format!("inventory of order {order}"), e))?;
        let late_of = late.get(&order);
        let events: Vec<RestoredEvent> = recorded
            .into_iter()
            .map(|recorded| {
                let tagged = late_of.and_then(|l| l.get(&recorded.sequence));
                RestoredEvent {
                    late: tagged.is_some(),
                    revisions: tagged.cloned().flatten(),
                    recorded,
                }
            })
            .collect();
        let held = held_by_cancellation(bus, partitions, order).await?;
        let squared = square(order, &events, &held, stock);
        if squared.drop.is_empty() {
            continue;
        }
        let stream = bus
            .jetstream()
            .get_stream(&history.stream)
            .await
            .map_err(|e| nats(format!("stream {}", history.stream), e))?;
        for sequence in &squared.drop {
            stream
                .delete_message(*sequence)
                .await
                .map_err(|e| nats(format!("{} message {sequence}", history.stream), e))?;
            restored.dropped_inventory_events += 1;
        }
        dropped.extend(squared.dropped_decision);
    }
    Ok(dropped)
}

/// What an order's cancellation says inventory held for it (a confirmed order's).
async fn held_by_cancellation(
    bus: &Bus,
    partitions: events::Partitions,
    order: OrderId,
) -> Result<Vec<events::ReservedLine>, RestoreFailed> {
    let history = layout::order_anywhere(Domain::Orders, partitions, order);
    let recorded = leader_log(bus)
        .read(&history)
        .await
        .map_err(|e| nats(format!("order {order}"), e))?;
    Ok(recorded
        .into_iter()
        .find_map(|r| match r.envelope.event {
            Event::OrderCancelled(cancelled) => Some(cancelled.reserved),
            _ => None,
        })
        .unwrap_or_default())
}

/// Drops each order outcome stored after the backup began whose deciding inventory event the
/// restore does not hold, with the order's later events; how many were dropped.
async fn square_orders(
    bus: &Bus,
    manifest: &Manifest,
    settings: &bus::StreamSettings,
    last: &BTreeMap<String, u64>,
    dropped: &BTreeSet<uuid::Uuid>,
) -> Result<u64, RestoreFailed> {
    let partitions = settings.partitions;
    let mut count = 0;
    for p in partitions.all() {
        let name = Domain::Orders.stream(p, partitions);
        let mark = manifest.marks.streams.get(&name).copied().unwrap_or(0);
        let end = last.get(&name).copied().unwrap_or(0);
        let mut by_order: BTreeMap<OrderId, Vec<(u64, Envelope)>> = BTreeMap::new();
        for (sequence, _, envelope) in tail(bus, &name, mark + 1, end).await? {
            by_order
                .entry(envelope.event.order_id())
                .or_default()
                .push((sequence, envelope));
        }
        let stream = bus
            .jetstream()
            .get_stream(&name)
            .await
            .map_err(|e| nats(format!("stream {name}"), e))?;
        for (order, events) in by_order {
            let Some(cut) = first_undecided(bus, partitions, order, &events, dropped).await? else {
                continue;
            };
            for (sequence, _) in &events[cut..] {
                stream
                    .delete_message(*sequence)
                    .await
                    .map_err(|e| nats(format!("{name} message {sequence}"), e))?;
                count += 1;
            }
        }
    }
    Ok(count)
}

/// The index of the first of `events` that inventory decided and whose decision is gone.
async fn first_undecided(
    bus: &Bus,
    partitions: events::Partitions,
    order: OrderId,
    events: &[(u64, Envelope)],
    dropped: &BTreeSet<uuid::Uuid>,
) -> Result<Option<usize>, RestoreFailed> {
    let mut decisions: Option<BTreeSet<uuid::Uuid>> = None;
    for (index, (_, envelope)) in events.iter().enumerate() {
        let decided = matches!(
            &envelope.event,
            Event::OrderConfirmed(_)
                | Event::OrderCancelled(events::OrderCancelled {
                    reason: events::CancelReason::OutOfStock { .. },
                    ..
                })
        );
        let Some(cause) = envelope.causation_id.filter(|_| decided) else {
            continue;
        };
        if dropped.contains(&cause) {
            return Ok(Some(index));
        }
        if decisions.is_none() {
            let history = layout::order_anywhere(Domain::Inventory, partitions, order);
            let recorded = leader_log(bus)
                .read(&history)
                .await
                .map_err(|e| nats(format!("inventory of order {order}"), e))?;
            decisions = Some(recorded.iter().map(|r| r.envelope.id).collect());
        }
        if decisions.as_ref().is_some_and(|d| !d.contains(&cause)) {
            return Ok(Some(index));
        }
    }
    Ok(None)
}

/// Drops the notification outcomes stored after the backup began whose order event the
/// restored order streams do not hold (an order placed after they were taken, or an outcome
/// the squaring dropped): nothing would ever settle them, and an outcome decided again is
/// notified again under the same `webhook-id`. How many were dropped.
async fn square_notifications(
    bus: &Bus,
    manifest: &Manifest,
    settings: &bus::StreamSettings,
    last: &BTreeMap<String, u64>,
) -> Result<u64, RestoreFailed> {
    let partitions = settings.partitions;
    let mut count = 0;
    for p in partitions.all() {
        let name = Domain::Notifications.stream(p, partitions);
        let mark = manifest.marks.streams.get(&name).copied().unwrap_or(0);
        let end = last.get(&name).copied().unwrap_or(0);
        let stream = bus
            .jetstream()
            .get_stream(&name)
            .await
            .map_err(|e| nats(format!("stream {name}"), e))?;
        let mut known: HashMap<OrderId, BTreeSet<uuid::Uuid>> = HashMap::new();
        for (sequence, _, envelope) in tail(bus, &name, mark + 1, end).await? {
            let order = envelope.event.order_id();
            if let std::collections::hash_map::Entry::Vacant(slot) = known.entry(order) {
                let history = layout::order_anywhere(Domain::Orders, partitions, order);
                let events = leader_log(bus)
                    .read(&history)
                    .await
                    .map_err(|e| nats(format!("order {order}"), e))?;
                slot.insert(events.iter().map(|r| r.envelope.id).collect());
            }
            let caused = envelope
                .causation_id
                .is_some_and(|cause| known.get(&order).is_some_and(|ids| ids.contains(&cause)));
            if !caused {
                stream
                    .delete_message(sequence)
                    .await
                    .map_err(|e| nats(format!("{name} message {sequence}"), e))?;
                count += 1;
            }
        }
    }
    Ok(count)
}

/// Writes every bucket's records back (the stock as squared).
async fn write_buckets(
    bus: &Bus,
    dir: &Path,
    manifest: &Manifest,
    stock: &BTreeMap<Sku, CopiedStock>,
    restored: &mut Restored,
) -> Result<(), RestoreFailed> {
    for part in &manifest.parts {
        let Part::Bucket { name, file, .. } = part else {
            continue;
        };
        let kv = bus
            .jetstream()
            .get_key_value(name)
            .await
            .map_err(|e| nats(format!("bucket {name}"), e))?;
        let mut written = 0;
        if name == bucket::STOCK {
            for (sku, copied) in stock {
                let value = serde_json::to_vec(&copied.record)
                    .map_err(|e| nats(format!("stock of {sku}"), e))?;
                kv.put(sku.as_str(), value.into())
                    .await
                    .map_err(|e| nats(format!("stock of {sku}"), e))?;
                written += 1;
            }
        } else {
            for record in bucket_records(dir, file)? {
                kv.put(record.key.as_str(), record.value.into_bytes().into())
                    .await
                    .map_err(|e| nats(format!("bucket {name} key {}", record.key), e))?;
                written += 1;
            }
        }
        restored.buckets.insert(name.clone(), written);
    }
    Ok(())
}
