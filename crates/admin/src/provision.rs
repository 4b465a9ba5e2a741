//! `orderflow-admin provision`: the deployment on NATS, created or updated to match the
//! settings — every stream (recording the subject layout it holds), every KV bucket, and every
//! service's durable consumers exactly as the services will bind to them (a service that finds
//! one provisioned otherwise waits and says why). Idempotent: the second run changes nothing.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use bus::{
    Bus, ConsumeError, Consumer, ConsumerSpec, ProvisionError, Start, Starts, StreamSettings,
};
use platform::config::{NatsArgs, NatsConfigError};

/// `orderflow-admin provision`'s settings: the services' NATS settings, and whether
/// order-service archives.
#[derive(Debug, Clone, clap::Args)]
pub struct ProvisionArgs {
    /// NATS connection (as the operator) and the shape of the streams.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Whether order-service archives into PostgreSQL (ARCHIVE_URL set): its projection's
    /// consumers are provisioned too. Needed whenever HOT_WINDOW is not 0.
    #[arg(long = "archive-consumers", env = "ARCHIVE_CONSUMERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub archive: bool,
    /// How long to keep trying (NATS unreachable, a cluster still electing leaders) before
    /// giving up (`2m`, `30s`).
    #[arg(long, env = "PROVISION_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// What a provisioning run left in place.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Provisioned {
    /// The subject layout every stream records.
    pub layout: u32,
    /// The streams.
    pub streams: Vec<String>,
    /// The KV buckets.
    pub buckets: Vec<String>,
    /// The durable consumers, as `STREAM/durable`.
    pub consumers: Vec<String>,
}

impl fmt::Display for Provisioned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "provisioned (subject layout {}):", self.layout)?;
        writeln!(f, "  streams:   {}", self.streams.join(", "))?;
        writeln!(f, "  buckets:   {}", self.buckets.join(", "))?;
        write!(f, "  consumers: {}", self.consumers.join(", "))
    }
}

/// Provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionFailed {
    /// The settings cannot work.
    #[error(transparent)]
    Settings(#[from] NatsConfigError),
    /// A hot window with nothing to archive what leaves it.
    #[error(
        "HOT_WINDOW={} forgets orders after that long unless order-service archives them: leave ARCHIVE_CONSUMERS on (and give order-service ARCHIVE_URL), or set HOT_WINDOW=0",
        humantime::format_duration(*.0)
    )]
    NoArchive(Duration),
    /// NATS could not be reached in time.
    #[error("cannot reach NATS at {url} within {}", humantime::format_duration(*.timeout))]
    Unreachable {
        /// Where.
        url: String,
        /// How long it tried.
        timeout: Duration,
    },
    /// The connection could not be set up.
    #[error(transparent)]
    Connect(#[from] bus::ConnectError),
    /// A stream or bucket could not be provisioned.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// A consumer could not be provisioned.
    #[error(transparent)]
    Consumer(#[from] ConsumeError),
}

impl ProvisionFailed {
    /// Whether trying again cannot help.
    fn is_fatal(&self) -> bool {
        match self {
            Self::Provision(e) => e.is_fatal(),
            Self::Consumer(e) => matches!(e, ConsumeError::Spec { .. }),
            Self::Settings(_)
            | Self::NoArchive(_)
            | Self::Connect(_)
            | Self::Unreachable { .. } => true,
        }
    }
}

/// Connects with `args` and provisions, retrying what may pass (a cluster electing leaders)
/// until `args.timeout`.
pub async fn run(args: &ProvisionArgs) -> Result<Provisioned, ProvisionFailed> {
    let deadline = Instant::now() + args.timeout;
    let bus = Bus::connect(&args.nats.bus_config(crate::CONNECTION_NAME)?).await?;
    let outcome = async {
        if !crate::connected(&bus, args.timeout).await {
            return Err(ProvisionFailed::Unreachable {
                url: crate::shown(&args.nats.nats_url),
                timeout: args.timeout,
            });
        }
        let mut delay = Duration::from_millis(200);
        loop {
            match provision(&bus, &args.nats, args.archive).await {
                Ok(done) => return Ok(done),
                Err(e) if e.is_fatal() || Instant::now() + delay > deadline => return Err(e),
                Err(e) => eprintln!("provisioning failed, retrying in {delay:?}: {e}"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
    .await;
    bus.drain().await;
    outcome
}

/// Creates or updates, on `bus`, every stream, bucket and durable consumer the services run
/// with under `nats` (the projection's only if order-service `archive`s).
pub async fn provision(
    bus: &Bus,
    nats: &NatsArgs,
    archive: bool,
) -> Result<Provisioned, ProvisionFailed> {
    provision_starting(bus, nats, archive, &HashMap::new()).await
}

/// [`provision`], with each durable consumer that does not exist yet starting at the stream
/// sequence `starts` gives for its `(stream, durable)` — a restore's marks.
pub(crate) async fn provision_starting(
    bus: &Bus,
    nats: &NatsArgs,
    archive: bool,
    starts: &HashMap<(String, String), Start>,
) -> Result<Provisioned, ProvisionFailed> {
    let settings: StreamSettings = nats.stream_settings()?;
    if !archive && !settings.max_age.is_zero() {
        return Err(ProvisionFailed::NoArchive(settings.max_age));
    }
    bus.provision_streams(&settings).await?;
    let mut buckets = Vec::new();
    for bucket in settings.buckets() {
        bus.provision_bucket(&bucket).await?;
        buckets.push(bucket.name);
    }
    let specs: Vec<ConsumerSpec> = order_service::consumer_specs(nats, archive)
        .into_iter()
        .chain(inventory_service::consumer_specs(nats))
        .chain(notification_service::consumer_specs(nats))
        .collect();
    let mut consumers = Vec::new();
    for spec in specs {
        // A consumer's own start, else its stream's (`*`: every consumer of it).
        let start = |stream: &str, durable: &str| {
            starts
                .get(&(stream.to_owned(), durable.to_owned()))
                .or_else(|| starts.get(&(stream.to_owned(), "*".to_owned())))
                .copied()
        };
        let watcher = events::names::durable::max_deliveries_watcher(&spec.durable, &spec.stream);
        let from = Starts {
            consumer: start(&spec.stream, &spec.durable),
            watcher: start(events::names::stream::ADVISORIES, &watcher),
        };
        Consumer::provision_from(bus, &spec, from).await?;
        consumers.push(format!("{}/{}", spec.stream, spec.durable));
    }
    Ok(Provisioned {
        layout: events::layout::LAYOUT_VERSION,
        streams: bus::stream_names(&settings),
        buckets,
        consumers,
    })
}
