//! The order archive and read model in PostgreSQL — the store shops already run, back up and
//! replicate with tools they know. NATS keeps what is hot (a bounded window of raw events);
//! this keeps every order for as long as the operator says.
//!
//! One row per order (`orders`): the order's snapshot as its events folded it, plus the
//! columns queries select on. The crate knows nothing of what a snapshot holds — the order
//! service folds events into it ([`Archive::update`]) and reads it back ([`Archive::get`],
//! [`Archive::page`]). Every write takes the orders' advisory locks first, so two projecting
//! replicas never fold the same order from the same stale row.
//!
//! The schema is versioned ([`MIGRATOR`], files in `migrations/`, checksummed and embedded in
//! the binary) and changed only by a command ([`Archive::migrate`]); a service checks that the
//! schema is exactly the one it was built for before it reads or writes ([`Archive::schema`]).

mod config;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use uuid::Uuid;

pub use config::{ArchiveArgs, ArchiveConfigError, Libpq, Retention};

/// The roles the schema grants to, created without LOGIN where missing (as in migration 0003).
const ROLES: &str = "DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orderflow_projection') THEN
        CREATE ROLE orderflow_projection NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orderflow_reader') THEN
        CREATE ROLE orderflow_reader NOLOGIN;
    END IF;
END
$$";

/// The schema migrations this build knows, oldest first.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a query may wait for a connection before the archive counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most orders one retention pass deletes per statement, so no pass holds locks for long.
const PURGE_BATCH: i64 = 10_000;

/// One archived order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedOrder<S> {
    /// The order (a UUID v7: its order is the order of placement).
    pub order_id: Uuid,
    /// Who placed it.
    pub customer_id: String,
    /// Its status, as the snapshot says.
    pub status: String,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The (hashed) `Idempotency-Key` it was created with, if any.
    pub idempotency_key: Option<String>,
    /// The order as its events folded it.
    pub snapshot: S,
}

/// How much the archive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Orders archived.
    pub orders: i64,
    /// Bytes on disk of the `orders` table with its indexes and TOAST.
    pub bytes: i64,
}

/// Where the archive's schema stands against this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schema {
    /// Exactly the migrations this build knows are applied.
    Current(i64),
    /// Migrations this build knows are missing: run the migrate command.
    Behind {
        /// The newest version applied (0: none).
        applied: i64,
        /// The version this build needs.
        needed: i64,
    },
    /// A version this build does not know is applied (a newer build migrated), or a known one
    /// was changed after it was applied: this build must not touch the data.
    Unknown {
        /// What is wrong.
        reason: String,
    },
}

/// The archive failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// PostgreSQL did not answer, or refused the statement (down, disk full, no permission).
    #[error("the archive is unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    /// An archived snapshot does not decode: a foreign writer or a bug.
    #[error("archived order {order} does not decode: {source}")]
    Corrupt {
        /// The order.
        order: Uuid,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The schema is not the one this build was made for.
    #[error("the archive's schema is not usable by this build: {0}")]
    Schema(String),
    /// A statement did not finish in time (a hung connection, a locked table).
    #[error("the archive did not answer within {0:?}")]
    Timeout(Duration),
    /// Applying the migrations failed.
    #[error("migrating the archive failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl ArchiveError {
    /// Whether retrying later may succeed. A schema that is behind is fixed by running the
    /// migrate command, one that is unknown by deploying the right build: both come back.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Corrupt { .. })
    }
}

/// The archive: a lazily connecting pool, so a service starts (and its saga runs) while
/// PostgreSQL is still away.
#[derive(Debug, Clone)]
pub struct Archive {
    pool: PgPool,
    /// Set once the schema was found current; checked again only until then.
    schema_checked: Arc<AtomicBool>,
    /// What the last write or check found: [`UNKNOWN`], [`UP`] or [`DOWN`].
    reachable: Arc<AtomicU8>,
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

impl Archive {
    /// An archive over `options`, opening at most `pool_size` connections, each on first use.
    pub fn connect_lazy(options: PgConnectOptions, pool_size: u32) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Self {
            pool,
            schema_checked: Arc::new(AtomicBool::new(false)),
            reachable: Arc::new(AtomicU8::new(UNKNOWN)),
        }
    }

    /// The archive the settings describe, or `None` when they name none.
    pub fn from_args(args: &ArchiveArgs) -> Result<Option<Self>, ArchiveConfigError> {
        Ok(args
            .connect_options()?
            .map(|options| Self::connect_lazy(options, args.archive_pool_size)))
    }

    /// The archive as the reading user sees it (ARCHIVE_READER_USER), or `None` when no
    /// reader is set (or no archive): the API's reads then use [`Archive::from_args`]'.
    pub fn reader_from_args(args: &ArchiveArgs) -> Result<Option<Self>, ArchiveConfigError> {
        Ok(args
            .reader_options()?
            .map(|options| Self::connect_lazy(options, args.archive_pool_size)))
    }

    /// Creates the roles the schema grants to, where they do not exist yet (without LOGIN) —
    /// what a restore into a fresh server needs first: roles belong to the server, not to the
    /// database a dump holds. The same statement as migration 0003's.
    pub async fn ensure_roles(&self) -> Result<(), ArchiveError> {
        sqlx::query(ROLES).execute(&self.pool).await?;
        Ok(())
    }

    /// Whether the database holds no table of its own (what a restore goes into).
    pub async fn is_empty(&self) -> Result<bool, ArchiveError> {
        let (tables,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(tables == 0)
    }

    /// Applies every migration this build knows that is not applied yet; returns the version
    /// the schema is at. Safe to run again, and by several processes at once (sqlx takes an
    /// advisory lock).
    pub async fn migrate(&self) -> Result<i64, ArchiveError> {
        MIGRATOR.run(&self.pool).await?;
        match self.schema().await? {
            Schema::Current(version) => Ok(version),
            other => Err(ArchiveError::Schema(format!("{other:?} after migrating"))),
        }
    }

    /// Where the schema stands against this build's migrations.
    pub async fn schema(&self) -> Result<Schema, ArchiveError> {
        let applied: Vec<(i64, bool, Vec<u8>)> = match sqlx::query_as(
            "SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await
        {
            Ok(rows) => rows,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let needed = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        for (version, success, checksum) in &applied {
            let Some(known) = MIGRATOR.iter().find(|m| m.version == *version) else {
                return Ok(Schema::Unknown {
                    reason: format!(
                        "version {version} is applied, but this build knows versions up to {needed}: deploy the build that migrated it"
                    ),
                });
            };
            if !success {
                return Ok(Schema::Unknown {
                    reason: format!("migration {version} failed part-way: repair it by hand"),
                });
            }
            if known.checksum.as_ref() != checksum.as_slice() {
                return Ok(Schema::Unknown {
                    reason: format!(
                        "migration {version} was changed after it was applied: migrations are never edited, only added"
                    ),
                });
            }
        }
        let newest = applied.iter().map(|(v, ..)| *v).max().unwrap_or(0);
        Ok(if newest == needed {
            Schema::Current(newest)
        } else {
            Schema::Behind {
                applied: newest,
                needed,
            }
        })
    }

    /// `Ok` once the schema is current; otherwise the error that says what to do.
    pub async fn ensure_schema(&self) -> Result<(), ArchiveError> {
        if self.schema_checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.schema().await? {
            Schema::Current(_) => {
                self.schema_checked.store(true, Ordering::Relaxed);
                Ok(())
            }
            Schema::Behind { applied, needed } => Err(ArchiveError::Schema(format!(
                "it is at version {applied} and this build needs {needed}: run `order-service archive migrate`"
            ))),
            Schema::Unknown { reason } => Err(ArchiveError::Schema(reason)),
        }
    }

    /// The archived order `order_id`, if there is one.
    pub async fn get<S: DeserializeOwned>(
        &self,
        order_id: Uuid,
    ) -> Result<Option<ArchivedOrder<S>>, ArchiveError> {
        self.ensure_schema().await?;
        let row: Result<Option<Row>, _> = sqlx::query_as(
            "SELECT order_id, customer_id, status, placed_at, updated_at, idempotency_key, snapshot \
             FROM orders WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await;
        self.observed(row)?.map(decode).transpose()
    }

    /// The first order created with the (hashed) `Idempotency-Key` `key`, if any.
    pub async fn find_by_idempotency_key<S: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<ArchivedOrder<S>>, ArchiveError> {
        self.ensure_schema().await?;
        let row: Result<Option<Row>, _> = sqlx::query_as(
            "SELECT order_id, customer_id, status, placed_at, updated_at, idempotency_key, snapshot \
             FROM orders WHERE idempotency_key = $1 ORDER BY order_id LIMIT 1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await;
        self.observed(row)?.map(decode).transpose()
    }

    /// Up to `limit` of `customer`'s archived orders, newest first, placed before the order
    /// `before` if given.
    pub async fn page<S: DeserializeOwned>(
        &self,
        customer: &str,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ArchivedOrder<S>>, ArchiveError> {
        self.ensure_schema().await?;
        let rows: Result<Vec<Row>, _> = sqlx::query_as(
            "SELECT order_id, customer_id, status, placed_at, updated_at, idempotency_key, snapshot \
             FROM orders WHERE customer_id = $1 AND order_id < $2 \
             ORDER BY order_id DESC LIMIT $3",
        )
        .bind(customer)
        .bind(before.unwrap_or(Uuid::max()))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await;
        self.observed(rows)?.into_iter().map(decode).collect()
    }

    /// In one transaction: locks `orders`, hands their archived rows (those that exist) to
    /// `fold`, and writes back the rows it returns (inserted, or replacing the old ones).
    /// Returns how many rows were written.
    pub async fn update<S, F>(&self, orders: &[Uuid], fold: F) -> Result<usize, ArchiveError>
    where
        S: Serialize + DeserializeOwned,
        F: FnOnce(HashMap<Uuid, ArchivedOrder<S>>) -> Vec<ArchivedOrder<S>>,
    {
        self.ensure_schema().await?;
        let mut locks: Vec<i64> = orders.iter().map(|id| lock_key(*id)).collect();
        // One order of locking for every writer, so two of them never wait on each other.
        locks.sort_unstable();
        locks.dedup();
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::int8[]) AS k")
            .bind(&locks)
            .execute(&mut *tx)
            .await?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT order_id, customer_id, status, placed_at, updated_at, idempotency_key, snapshot \
             FROM orders WHERE order_id = ANY($1)",
        )
        .bind(orders)
        .fetch_all(&mut *tx)
        .await?;
        let existing = rows
            .into_iter()
            .map(|row| decode(row).map(|order: ArchivedOrder<S>| (order.order_id, order)))
            .collect::<Result<HashMap<_, _>, _>>()?;
        let changed = fold(existing);
        if !changed.is_empty() {
            let mut columns = Columns::default();
            for order in &changed {
                columns.push(order)?;
            }
            sqlx::query(
                "INSERT INTO orders (order_id, customer_id, status, placed_at, updated_at, \
                                     idempotency_key, snapshot) \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], \
                                      $5::timestamptz[], $6::text[], $7::jsonb[]) \
                 ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, \
                   updated_at = EXCLUDED.updated_at, snapshot = EXCLUDED.snapshot",
            )
            .bind(columns.order_id)
            .bind(columns.customer_id)
            .bind(columns.status)
            .bind(columns.placed_at)
            .bind(columns.updated_at)
            .bind(columns.idempotency_key)
            .bind(columns.snapshot)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(changed.len())
    }

    /// Deletes the orders placed before `cutoff` (retention), a batch at a time; returns how
    /// many went.
    pub async fn purge_placed_before(&self, cutoff: DateTime<Utc>) -> Result<u64, ArchiveError> {
        self.ensure_schema().await?;
        let mut deleted = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM orders WHERE order_id IN \
                 (SELECT order_id FROM orders WHERE placed_at < $1 ORDER BY order_id LIMIT $2)",
            )
            .bind(cutoff)
            .bind(PURGE_BATCH)
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += done;
            if done < PURGE_BATCH as u64 {
                return Ok(deleted);
            }
        }
    }

    /// How many orders the archive holds, and the bytes they take on disk.
    pub async fn usage(&self) -> Result<Usage, ArchiveError> {
        self.ensure_schema().await?;
        let (orders, bytes): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM orders), pg_total_relation_size('orders')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Usage { orders, bytes })
    }

    /// Whether PostgreSQL answers now.
    pub async fn is_reachable(&self) -> bool {
        let up = sqlx::query("SELECT 1").execute(&self.pool).await.is_ok();
        self.record_reachable(up);
        up
    }

    /// `result` of a read, recorded for [`Archive::last_known_reachable`].
    fn observed<T>(&self, result: Result<T, sqlx::Error>) -> Result<T, ArchiveError> {
        self.record_reachable(result.is_ok());
        Ok(result?)
    }

    /// Records whether the archive just took a write (or answered a check), for
    /// [`Archive::last_known_reachable`] — shared by every clone of this archive.
    pub fn record_reachable(&self, up: bool) {
        self.reachable
            .store(if up { UP } else { DOWN }, Ordering::Relaxed);
    }

    /// Whether the archive took the last read, write or check (`None`: none was tried yet).
    /// What readiness reports, without a query per probe.
    pub fn last_known_reachable(&self) -> Option<bool> {
        match self.reachable.load(Ordering::Relaxed) {
            UP => Some(true),
            DOWN => Some(false),
            _ => None,
        }
    }

    /// Closes the pool, waiting for queries in flight.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// An `orders` row as selected.
type Row = (
    Uuid,
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<String>,
    serde_json::Value,
);

fn decode<S: DeserializeOwned>(row: Row) -> Result<ArchivedOrder<S>, ArchiveError> {
    let (order_id, customer_id, status, placed_at, updated_at, idempotency_key, snapshot) = row;
    let snapshot = serde_json::from_value(snapshot).map_err(|source| ArchiveError::Corrupt {
        order: order_id,
        source,
    })?;
    Ok(ArchivedOrder {
        order_id,
        customer_id,
        status,
        placed_at,
        updated_at,
        idempotency_key,
        snapshot,
    })
}

/// Rows as the column arrays one `unnest` insert takes.
#[derive(Default)]
struct Columns {
    order_id: Vec<Uuid>,
    customer_id: Vec<String>,
    status: Vec<String>,
    placed_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    idempotency_key: Vec<Option<String>>,
    snapshot: Vec<serde_json::Value>,
}

impl Columns {
    fn push<S: Serialize>(&mut self, order: &ArchivedOrder<S>) -> Result<(), ArchiveError> {
        let snapshot =
            serde_json::to_value(&order.snapshot).map_err(|source| ArchiveError::Corrupt {
                order: order.order_id,
                source,
            })?;
        self.order_id.push(order.order_id);
        self.customer_id.push(order.customer_id.clone());
        self.status.push(order.status.clone());
        self.placed_at.push(order.placed_at);
        self.updated_at.push(order.updated_at);
        self.idempotency_key.push(order.idempotency_key.clone());
        self.snapshot.push(snapshot);
        Ok(())
    }
}

/// The advisory lock of an order: the random low half of its UUID v7.
fn lock_key(order: Uuid) -> i64 {
    let (_, low) = order.as_u64_pair();
    i64::from_ne_bytes(low.to_ne_bytes())
}
