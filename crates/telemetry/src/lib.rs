//! Observability in one call: [`init`] installs the log and trace pipeline and the metrics
//! recorder for a service and returns a [`Telemetry`] guard that flushes spans on drop.
//!
//! - Logs: JSON lines with `trace_id`/`span_id` of the current span on stdout (a readable
//!   format when stdout is a terminal, or with `LOG_FORMAT=pretty`); level from `RUST_LOG`.
//!   The filter sits on the log layer only, so a quiet `RUST_LOG` never disables the spans
//!   that carry trace context between services.
//! - Traces: exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`)
//!   is set, over `http/protobuf` (default) or `grpc` per `OTEL_EXPORTER_OTLP_PROTOCOL`;
//!   `OTEL_TRACES_EXPORTER=none` or `OTEL_SDK_DISABLED=true` turn export off. Spans and ids
//!   exist either way, so logs always correlate.
//! - Propagation: W3C trace context + baggage, installed globally for the bus to use.
//! - Metrics: a Prometheus recorder for the `metrics` facade, with the help text of every
//!   metric of the catalog ([`metric`]); [`Telemetry::render_metrics`] is the body of
//!   `/metrics`.

mod json;
pub mod metric;

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Latency buckets (seconds) for every `*_seconds` histogram: 0.5 ms to 2 min (the
/// notification SLO counts deliveries within 60 s).
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, with trace ids.
    Json,
    /// Human-readable, for terminals.
    Pretty,
}

impl LogFormat {
    /// `LOG_FORMAT` if set, else pretty on a terminal and JSON otherwise.
    pub fn from_env() -> Result<Self, TelemetryError> {
        match std::env::var("LOG_FORMAT").ok().as_deref() {
            Some("json") => Ok(Self::Json),
            Some("pretty") => Ok(Self::Pretty),
            Some(other) => Err(TelemetryError::LogFormat(other.to_owned())),
            None if std::io::stdout().is_terminal() => Ok(Self::Pretty),
            None => Ok(Self::Json),
        }
    }
}

/// What [`init_with`] sets up.
pub struct Settings {
    /// `service.name` of the spans (overridden by `OTEL_SERVICE_NAME`).
    pub service_name: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter directives (`RUST_LOG` syntax).
    pub log_filter: String,
    /// Where log lines go (stdout in services, a buffer in tests).
    pub log_writer: BoxMakeWriter,
    /// Where spans are exported; `None`: nowhere (ids are still made, for logs and propagation).
    pub otlp: Option<Otlp>,
}

/// OTLP span export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Otlp {
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Full URL of the traces endpoint; `None` lets the exporter read the `OTEL_*` variables
    /// (which also append `/v1/traces` to a bare `OTEL_EXPORTER_OTLP_ENDPOINT` for HTTP).
    pub endpoint: Option<String>,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf` (the OpenTelemetry default), port 4318.
    HttpProtobuf,
    /// `grpc`, port 4317.
    Grpc,
}

impl Otlp {
    /// The export the `OTEL_*` variables ask for, or `None` when export is off.
    pub fn from_env() -> Result<Option<Self>, TelemetryError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        if var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
            && var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        {
            return Ok(None);
        }
        let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => return Err(TelemetryError::Protocol(other.to_owned())),
        };
        Ok(Some(Self {
            protocol,
            endpoint: None,
        }))
    }

    fn exporter(&self) -> Result<SpanExporter, TelemetryError> {
        Ok(match (self.protocol, &self.endpoint) {
            (OtlpProtocol::HttpProtobuf, endpoint) => {
                let builder = SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
                match endpoint {
                    Some(url) => builder.with_endpoint(url).build()?,
                    None => builder.build()?,
                }
            }
            (OtlpProtocol::Grpc, Some(url)) => SpanExporter::builder()
                .with_tonic()
                .with_endpoint(url)
                .build()?,
            (OtlpProtocol::Grpc, None) => SpanExporter::builder().with_tonic().build()?,
        })
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("service_name", &self.service_name)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Settings from the environment: `LOG_FORMAT`, `RUST_LOG` (default `info`), `OTEL_*`.
    pub fn from_env(service_name: &str) -> Result<Self, TelemetryError> {
        Ok(Self {
            service_name: service_name.to_owned(),
            log_format: LogFormat::from_env()?,
            log_filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            log_writer: BoxMakeWriter::new(std::io::stdout),
            otlp: Otlp::from_env()?,
        })
    }
}

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `LOG_FORMAT` has an unknown value.
    #[error("LOG_FORMAT must be `json` or `pretty`, not {0:?}")]
    LogFormat(String),
    /// `RUST_LOG` does not parse.
    #[error("invalid RUST_LOG {directives:?}: {source}")]
    LogFilter {
        /// The directives.
        directives: String,
        /// The parser's complaint.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// An unsupported OTLP protocol was asked for.
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL {0:?} is not supported (use `http/protobuf` or `grpc`)")]
    Protocol(String),
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A global subscriber is already installed in this process.
    #[error("telemetry is already initialised in this process: {0}")]
    AlreadyInitialised(#[from] tracing_subscriber::util::TryInitError),
}

/// Keeps telemetry running; dropping it flushes and shuts down span export.
#[derive(Debug)]
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    metrics: PrometheusHandle,
}

impl Telemetry {
    /// The Prometheus text exposition of every metric recorded so far (the `/metrics` body).
    pub fn render_metrics(&self) -> String {
        self.metrics.render()
    }

    /// The handle behind [`Self::render_metrics`], for HTTP servers that hold their own.
    pub fn metrics_handle(&self) -> PrometheusHandle {
        self.metrics.clone()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.tracer_provider.shutdown() {
            eprintln!("flushing spans failed: {e}");
        }
    }
}

/// Sets up logs, traces, propagation and metrics for `service_name` from the environment.
/// Call once, early in `main`, inside the Tokio runtime (the gRPC exporter needs it).
pub fn init(service_name: &str) -> Result<Telemetry, TelemetryError> {
    init_with(Settings::from_env(service_name)?)
}

/// [`init`] with explicit settings.
pub fn init_with(settings: Settings) -> Result<Telemetry, TelemetryError> {
    // The workspace builds reqwest without a default TLS provider (one provider, ring, for the
    // whole process); the OTLP HTTP client needs it installed before it is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));

    // Every crate of the workspace has the workspace's version (`version.workspace`, checked by
    // scripts/check-version.py), so this crate's is the binary's: the version its `--version`
    // prints and its image is tagged with.
    let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(settings.service_name.clone());
    }
    let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
    if let Some(otlp) = &settings.otlp {
        provider = provider.with_batch_exporter(otlp.exporter()?);
    }
    let tracer_provider = provider.build();
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());

    let log_filter =
        EnvFilter::try_new(&settings.log_filter).map_err(|source| TelemetryError::LogFilter {
            directives: settings.log_filter.clone(),
            source,
        })?;
    let logs = match settings.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(json::JsonWithTraceIds)
            .fmt_fields(json::NoSpanFields)
            .with_writer(settings.log_writer)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(settings.log_writer)
            .with_filter(log_filter)
            .boxed(),
    };
    // Spans of our own code at info and above; the HTTP/gRPC stacks underneath (including the
    // exporter's own client) stay out of traces.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer_provider.tracer(settings.service_name.clone()))
        .with_filter(EnvFilter::new(
            "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,reqwest=off,opentelemetry=off,async_nats=off",
        ));
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()?;

    Ok(Telemetry {
        tracer_provider,
        metrics: metrics_handle(),
    })
}

/// How often pending histogram samples are drained into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide Prometheus recorder, installed on first use (a process has one recorder;
/// services started in-process by tests share it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS);
            let recorder = match builder {
                Ok(builder) => builder.build_recorder(),
                // Only fails on an empty bucket list, which SECONDS_BUCKETS is not.
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by a test harness); rendering
            // then shows only what this one saw, which is still a valid exposition.
            let _ = metrics::set_global_recorder(recorder);
            metric::describe();
            // A recorder built (not installed with an exporter) keeps every histogram sample
            // until it is drained — by a scrape, or by this upkeep. Without it a process nobody
            // scrapes grew by every sample of every request (BENCHMARKS.md, the soak).
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            handle
        })
        .clone()
}
