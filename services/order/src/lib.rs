//! order-service: takes orders over HTTP and drives each one through the saga to `confirmed`
//! or `cancelled`. A library with [`run`] so tests start it in-process; `main.rs` only parses
//! the configuration and calls it.

mod api;
mod customer_auth;
mod dead_letters;
mod new_order;
mod order;
mod projection;
mod saga;
mod store;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use archive::{Archive, ArchiveArgs, Retention, Schema};
use axum::Router;
use bus::{Bus, CancellationToken, Consumer, ConsumerSpec, StreamSettings};
use customer_auth::{AuthArgs, Customers};
use dead_letters::Redrive;
use events::ServiceId;
use platform::config::{HttpArgs, NatsArgs};
use platform::service::{OpenError, RunError, Started, Task};
use platform::usage::Admission;
use tokio::net::TcpListener;
use utoipa::OpenApi as _;

pub use api::{OrderPage, OrderView};
pub use order::Status;
pub use projection::{TakeBackError, takes_back};

/// Which service this is: its name, event `source`, what it writes and reads
/// ([`events::topology`]).
pub const SERVICE: ServiceId = ServiceId::Order;

/// order-service configuration, from the environment or flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = SERVICE.name(),
    version,
    about = "orderflow order-service: the HTTP API for orders and the order side of the saga"
)]
pub struct Config {
    /// `healthcheck` probes a running instance; `archive` manages the archive's schema.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Address the HTTP API listens on.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// NATS connection and streams.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// HTTP limits.
    #[command(flatten)]
    pub http: HttpArgs,
    /// Customer authentication (off unless a JWKS is given).
    #[command(flatten)]
    pub auth: AuthArgs,
    /// The PostgreSQL archive of orders.
    #[command(flatten)]
    pub archive: ArchiveArgs,
}

/// What the binary can do besides serving.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Probe the running service's /healthz on HTTP_ADDR's port; exit 0 if healthy.
    Healthcheck,
    /// The archive's schema (ARCHIVE_URL).
    #[command(subcommand)]
    Archive(ArchiveCommand),
}

/// `order-service archive …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ArchiveCommand {
    /// Apply the schema migrations this build knows (safe to repeat; run before a new build).
    Migrate,
    /// Say where the schema stands against this build; exit 0 only if it is current.
    Status,
}

/// Runs an `archive` command against the configured archive; what it printed is for people.
pub async fn archive_command(args: &ArchiveArgs, command: &ArchiveCommand) -> ExitCode {
    let archive = match Archive::from_args(args) {
        Ok(Some(archive)) => archive,
        Ok(None) => {
            eprintln!("no archive: ARCHIVE_URL is none");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match command {
        ArchiveCommand::Migrate => archive
            .migrate()
            .await
            .map(|version| println!("the archive's schema is at version {version}")),
        ArchiveCommand::Status => match archive.schema().await {
            Ok(Schema::Current(version)) => archive.usage().await.map(|usage| {
                let per_order = usage.bytes.checked_div(usage.orders).unwrap_or(0);
                println!(
                    "schema current (version {version}); {} orders in {} bytes ({per_order} bytes per order)",
                    usage.orders, usage.bytes
                );
            }),
            Ok(other) => Err(archive::ArchiveError::Schema(format!("{other:?}"))),
            Err(e) => Err(e),
        },
    };
    archive.close().await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// An order as `GET /v1/orders/{id}` shows it, notifications included, read straight from the
/// bus and the archive (`reader`, for orders that left the hot window) — what
/// `orderflow-admin order` prints, with no token of the API. `None` if there is no such order.
pub async fn look_up(
    bus: &Bus,
    settings: &StreamSettings,
    reader: Option<Archive>,
    order_id: events::OrderId,
) -> Result<Option<OrderView>, Box<dyn std::error::Error + Send + Sync>> {
    let store = store::Store::open(bus, settings, reader).await?;
    match store.find(order_id).await? {
        Some(order) => Ok(Some(api::view_with_notifications(&store, order).await?)),
        None => Ok(None),
    }
}

/// Folds a dead letter of the archive's projection into `archive`, as order-service's redrive
/// does — never published again (a copy of an order event would reach inventory and
/// notification too) — for `orderflow-admin dead-letters redrive`, which holds the archive's
/// credentials. `hot_window` is the deployment's.
pub async fn take_back(
    archive: Archive,
    hot_window: std::time::Duration,
    letter: bus::DeadLetter,
) -> Result<(), TakeBackError> {
    let projection = projection::Projection::start(archive, hot_window);
    projection::take_back(&projection, letter).await
}

/// The durable consumers order-service runs under `nats` — the saga's, and with `archive`
/// the projection's — as the provisioning step creates them and the service binds to them.
pub fn consumer_specs(nats: &NatsArgs, archive: bool) -> Vec<ConsumerSpec> {
    let mut specs = nats.tune_all(saga::consumer_specs(nats.stream_partitions));
    if archive {
        specs.extend(projection_specs(nats));
    }
    specs
}

fn projection_specs(nats: &NatsArgs) -> Vec<ConsumerSpec> {
    projection::consumer_specs(nats.stream_partitions, nats.hot_window, |spec| {
        nats.tune(spec)
    })
}

/// Runs the service on `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let settings = |e: archive::ArchiveConfigError| RunError::Settings(e.to_string());
    let archive = Archive::from_args(&config.archive).map_err(settings)?;
    let reader = Archive::reader_from_args(&config.archive)
        .map_err(settings)?
        .or_else(|| archive.clone());
    if archive.is_none() && !config.nats.hot_window.is_zero() {
        return Err(RunError::Settings(format!(
            "HOT_WINDOW={} forgets orders after that long without an archive: set ARCHIVE_URL \
             (PostgreSQL), or HOT_WINDOW=0 to keep every event in NATS",
            humantime::format_duration(config.nats.hot_window)
        )));
    }
    if let Retention::For(age) = config.archive.archive_retention
        && !config.nats.hot_window.is_zero()
        && age < config.nats.hot_window
    {
        return Err(RunError::Settings(format!(
            "ARCHIVE_RETENTION={} is shorter than HOT_WINDOW={}: orders still hot would be \
             deleted from the archive",
            humantime::format_duration(age),
            humantime::format_duration(config.nats.hot_window)
        )));
    }
    if archive.is_none() {
        tracing::warn!(
            "no archive (ARCHIVE_URL=none): every event stays in NATS, whose memory grows \
             with every order kept"
        );
    }
    platform::service::run(
        OrderService {
            admin_token: platform::admin::token(&config.http)?,
            customers: customers(&config.auth).await?,
            archive,
            reader,
            retention: config.archive.archive_retention,
            take_back: projection::TakeBack::default(),
            nats: config.nats.clone(),
            projection_consumers: std::sync::Mutex::default(),
            admission: Admission::default(),
        },
        config.nats,
        config.http,
        listener,
        shutdown,
    )
    .await
}

async fn customers(args: &AuthArgs) -> Result<Option<Customers>, RunError> {
    let customers = Customers::from_args(args)
        .await
        .map_err(|e| RunError::Settings(e.to_string()))?;
    if customers.is_none() {
        tracing::warn!(
            "customer authentication is off (no AUTH_JWKS_URL or AUTH_JWKS_FILE): the API trusts \
             the customer id in each request — for a trusted network only"
        );
    }
    Ok(customers)
}

struct OrderService {
    admin_token: Option<bus::Secret>,
    customers: Option<Customers>,
    /// The archive as the projection writes it.
    archive: Option<Archive>,
    /// The archive as the API reads it: another user where one is set, granted only SELECT.
    reader: Option<Archive>,
    retention: Retention,
    /// The archive consumers' dead letters, folded back on redrive once the projection runs.
    take_back: projection::TakeBack,
    /// For the projection's consumers, tuned like the saga's.
    nats: NatsArgs,
    /// The projection's consumers, bound while opening, until its task runs them.
    projection_consumers: std::sync::Mutex<Vec<Consumer>>,
    /// Closed while a store the saga writes is nearly full: new orders are refused.
    admission: Admission,
}

impl platform::service::Service for OrderService {
    type State = store::Store;
    type Handler = saga::Saga;
    const ID: ServiceId = SERVICE;

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        let mut doc = api::openapi::ApiDoc::openapi();
        if self.customers.is_some() {
            api::openapi::require_customer_tokens(&mut doc);
        }
        doc.merge(dead_letters::ApiDoc::openapi());
        doc
    }

    fn routes(&self, store: Started<store::Store>, bus: &Bus) -> Router {
        api::routes(api::App {
            store,
            customers: self.customers.clone(),
            admission: self.admission.clone(),
        })
        .merge(dead_letters::routes(
            Redrive::new(bus.clone(), self.nats.hot_window).taking_back(self.take_back.clone()),
            self.admin_token.clone(),
        ))
    }

    async fn open(
        &self,
        bus: &Bus,
        _: &NatsArgs,
        settings: &StreamSettings,
    ) -> Result<store::Store, OpenError> {
        let store = store::Store::open(bus, settings, self.reader.clone()).await?;
        if self.archive.is_some() {
            // The projection's consumers are as much a part of readiness as the saga's.
            let specs = projection_specs(&self.nats);
            let mut bound = Vec::with_capacity(specs.len());
            for spec in specs {
                bound.push(Consumer::bind(bus, spec).await?);
            }
            if let Ok(mut parked) = self.projection_consumers.lock() {
                *parked = bound;
            }
        }
        Ok(store)
    }

    fn consumers(&self, store: &store::Store) -> (Vec<ConsumerSpec>, saga::Saga) {
        (
            saga::consumer_specs(store.partitions()),
            saga::Saga {
                store: store.clone(),
            },
        )
    }

    /// Every store an order is written to on its way, so that new orders are refused before
    /// any of them is full: its own, and every other service's event streams.
    fn watched_stores(&self, settings: &StreamSettings) -> Vec<String> {
        let mut stores = bus::stores_written_by(settings, SERVICE);
        for service in ServiceId::ALL.into_iter().filter(|s| *s != SERVICE) {
            let buckets: Vec<String> = service
                .buckets()
                .iter()
                .map(|bucket| events::names::bucket::stream(bucket))
                .collect();
            stores.extend(
                bus::stores_written_by(settings, service)
                    .into_iter()
                    .filter(|store| !buckets.contains(store)),
            );
        }
        stores
    }

    fn admission(&self) -> Option<Admission> {
        Some(self.admission.clone())
    }

    fn degraded(&self, _: &store::Store) -> Vec<String> {
        let down = |archive: &Option<Archive>| {
            archive.as_ref().and_then(Archive::last_known_reachable) == Some(false)
        };
        let mut degraded = Vec::new();
        if down(&self.archive) {
            degraded.push(
                "archive: PostgreSQL does not take the projection's writes — it catches up once \
                 they go through"
                    .to_owned(),
            );
        }
        if down(&self.reader) {
            degraded.push(
                "archive: PostgreSQL does not answer the API's reads — orders that left the hot \
                 log answer 503"
                    .to_owned(),
            );
        }
        degraded
    }

    fn tasks(&self, _: &store::Store, shutdown: &CancellationToken) -> Vec<Task> {
        let Some(archive) = self.archive.clone() else {
            return Vec::new();
        };
        let mut tasks: Vec<Task> = Vec::new();
        let projection = projection::Projection::start(archive.clone(), self.nats.hot_window);
        self.take_back.serve(projection.clone());
        let bound = self
            .projection_consumers
            .lock()
            .map(|mut parked| std::mem::take(&mut *parked))
            .unwrap_or_default();
        for consumer in bound {
            let (projection, shutdown) = (projection.clone(), shutdown.clone());
            tasks.push(Box::pin(async move {
                if let Err(e) = consumer.run(projection, shutdown).await {
                    tracing::error!(error = %e, "the archive's projection failed");
                }
            }));
        }
        if let Retention::For(age) = self.retention {
            tasks.push(Box::pin(expire(archive, age, shutdown.clone())));
        }
        tasks
    }
}

/// Deletes archived orders older than the retention, hourly, until shutdown.
async fn expire(archive: Archive, age: Duration, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let Ok(age) = chrono::Duration::from_std(age) else {
            return;
        };
        match archive.purge_placed_before(chrono::Utc::now() - age).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "archived orders past their retention deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "deleting archived orders past their retention failed")
            }
        }
    }
}
