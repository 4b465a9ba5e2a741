//! The life of a service, shared by all three: connect to NATS, serve HTTP at once (health
//! answers while NATS is still away; the API answers 503 until ready), wait until what it
//! needs exists — every stream in the subject layout it knows, its buckets, its durable
//! consumers as it would configure them; the deployment's provisioning step creates them, a
//! service may not — then build its state, bind its consumers and be ready (`/readyz` says
//! what it waits for meanwhile; a stream of an unknown layout stops it), and on shutdown stop
//! taking HTTP, drain the consumers, and close the connection — all within the grace period.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use bus::{Bus, CancellationToken, Consumer, ConsumerSpec, ProvisionError, StreamSettings};
use events::ServiceId;
use tokio::net::TcpListener;

use crate::config::{HttpArgs, NatsArgs};
use crate::edge::{self, Edge, Health};
use crate::problem::Problem;

/// State that exists once start-up provisioning is done.
#[derive(Debug)]
pub struct Started<T>(Arc<OnceLock<T>>);

impl<T> Clone for Started<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for Started<T> {
    fn default() -> Self {
        Self(Arc::new(OnceLock::new()))
    }
}

impl<T> Started<T> {
    /// The state, or a 503 problem while the service is still starting.
    pub fn get(&self) -> Result<&T, Problem> {
        self.0
            .get()
            .ok_or_else(|| Problem::unavailable(1).with_detail("the service is starting"))
    }
}

/// What makes a service itself; [`run`] does the rest.
pub trait Service: Send + Sync + 'static {
    /// State built at start-up (KV stores, clients).
    type State: Clone + Send + Sync + 'static;
    /// Handles every event the service consumes.
    type Handler: bus::Handler + Clone;

    /// Which service it is: its name (connection name, `service.name`, log field), what it
    /// writes and reads.
    const ID: ServiceId;

    /// The OpenAPI document of [`Service::routes`].
    fn openapi(&self) -> utoipa::openapi::OpenApi;

    /// The API routes; their state becomes available once started.
    fn routes(&self, state: Started<Self::State>, bus: &Bus) -> Router;

    /// Opens the service's buckets (provisioned, not created: see the module docs) and builds
    /// its state.
    fn open(
        &self,
        bus: &Bus,
        nats: &NatsArgs,
        settings: &StreamSettings,
    ) -> impl Future<Output = Result<Self::State, OpenError>> + Send;

    /// The durable consumers and the handler that serves them.
    fn consumers(&self, state: &Self::State) -> (Vec<ConsumerSpec>, Self::Handler);

    /// What the service runs without right now, for `/readyz` (nothing by default): said, not
    /// failed, because the rest of its work goes on.
    fn degraded(&self, _state: &Self::State) -> Vec<String> {
        Vec::new()
    }

    /// The stores whose fill it reports (`orderflow_store_used_ratio`): those it writes, by
    /// default.
    fn watched_stores(&self, settings: &StreamSettings) -> Vec<String> {
        bus::stores_written_by(settings, Self::ID)
    }

    /// Its gate on new work, closed while a watched store is above the admission limit
    /// (none by default: only the service that takes new work has one).
    fn admission(&self) -> Option<crate::usage::Admission> {
        None
    }

    /// Background work that runs beside the consumers until `shutdown` (none by default).
    fn tasks(&self, _state: &Self::State, _shutdown: &CancellationToken) -> Vec<Task> {
        Vec::new()
    }
}

/// A background task of a service: it returns once its shutdown token is cancelled.
pub type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Why a service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::NatsConfigError),
    /// A service-specific setting is invalid.
    #[error("invalid configuration: {0}")]
    Settings(String),
    /// The admin token is unusable.
    #[error("invalid configuration: {0}")]
    AdminToken(#[from] crate::config::AdminTokenError),
    /// NATS could not be set up.
    #[error(transparent)]
    Connect(#[from] bus::ConnectError),
    /// A consumer is misconfigured or refused by the server.
    #[error(transparent)]
    Consumer(#[from] bus::ConsumeError),
    /// What the service needs on NATS cannot serve it without a change to the deployment
    /// (a stream of another subject layout).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// Runs `service` on `listener` until `shutdown`.
pub async fn run<S: Service>(
    service: S,
    nats: NatsArgs,
    http: HttpArgs,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let service = Arc::new(service);
    let settings = nats.stream_settings()?;
    http.validate().map_err(RunError::Settings)?;
    let bus = Bus::connect(&nats.bus_config(S::ID.name())?).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let waiting = Waiting::default();
    let started = Started::<S::State>::default();
    let edge = Edge {
        metrics: telemetry::metrics_handle(),
        openapi: Arc::new(crate::openapi::complete(service.openapi())),
        ready: {
            let (bus, ready, started, service, waiting) = (
                bus.clone(),
                ready.clone(),
                started.clone(),
                service.clone(),
                waiting.clone(),
            );
            Arc::new(move || Health {
                ready: bus.is_connected() && ready.load(Ordering::Relaxed),
                degraded: started
                    .0
                    .get()
                    .map(|state| service.degraded(state))
                    .unwrap_or_default(),
                waiting: waiting.get(),
            })
        },
        limits: http.clone(),
    };
    let router = edge::router(service.routes(started.clone(), &bus), edge);
    let server = tokio::spawn(edge::serve(
        listener,
        router,
        http.clone(),
        shutdown.clone(),
    ));

    let mut consumers = tokio::task::JoinSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    let opened = open(
        service.as_ref(),
        &bus,
        &nats,
        &settings,
        &waiting,
        &shutdown,
    )
    .await;
    match opened {
        Err(fatal) => {
            tracing::error!(error = %fatal, "cannot start");
            shutdown.cancel();
            let _ = server.await;
            bus.drain().await;
            return Err(fatal);
        }
        Ok(None) => {}
        Ok(Some((state, bound, handler))) => {
            for task in service.tasks(&state, &shutdown) {
                tasks.spawn(task);
            }
            tasks.spawn(crate::usage::watch(
                bus.clone(),
                service.watched_stores(&settings),
                service.admission(),
                settings.bounds.admission,
                shutdown.clone(),
            ));
            let _ = started.0.set(state);
            // Durable consumers deliver everything stored while the service was away.
            for consumer in bound {
                consumers.spawn(consumer.run(handler.clone(), shutdown.clone()));
            }
            waiting.set(None);
            ready.store(true, Ordering::Relaxed);
            tracing::info!(service = S::ID.name(), "ready and consuming");
        }
    }

    shutdown.cancelled().await;
    let drained = tokio::time::timeout(http.shutdown_grace, async {
        let served = server.await;
        while let Some(result) = consumers.join_next().await {
            if let Ok(Err(e)) = result {
                tracing::error!(error = %e, "consumer failed");
            }
        }
        while tasks.join_next().await.is_some() {}
        served
    })
    .await;
    bus.drain().await;
    match drained {
        Ok(Ok(served)) => Ok(served?),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "HTTP server task failed");
            Ok(())
        }
        Err(_) => {
            tracing::warn!("shutdown grace period exceeded; exiting with work in flight");
            Ok(())
        }
    }
}

/// Why a service is not ready yet, for `/readyz`.
#[derive(Debug, Clone, Default)]
struct Waiting(Arc<Mutex<Option<String>>>);

impl Waiting {
    fn set(&self, why: Option<String>) {
        if let Ok(mut waiting) = self.0.lock() {
            *waiting = why;
        }
    }

    fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|waiting| waiting.clone())
    }
}

/// A service's state and its bound consumers, with their handler.
type Opened<S> = (
    <S as Service>::State,
    Vec<Consumer>,
    <S as Service>::Handler,
);

/// Waits until every stream exists in the layout this build knows, then opens the service's
/// state and binds its consumers, retrying with backoff while anything is missing (`waiting`
/// says what); `Ok(None)` if shutdown comes first, an error if waiting cannot help.
async fn open<S: Service>(
    service: &S,
    bus: &Bus,
    nats: &NatsArgs,
    settings: &StreamSettings,
    waiting: &Waiting,
    shutdown: &CancellationToken,
) -> Result<Option<Opened<S>>, RunError> {
    retry(waiting, shutdown, || async {
        if !bus.is_connected() {
            return Err(OpenError::Disconnected);
        }
        bus.check_streams(settings, S::ID).await?;
        let state = service.open(bus, nats, settings).await?;
        let (specs, handler) = service.consumers(&state);
        let mut bound = Vec::with_capacity(specs.len());
        for spec in specs {
            bound.push(Consumer::bind(bus, nats.tune(spec)).await?);
        }
        Ok((state, bound, handler))
    })
    .await
}

/// Why an attempt to open a service failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// NATS is not reachable (yet).
    #[error("not connected to NATS")]
    Disconnected,
    /// A stream or bucket is missing, or of an unknown layout.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// A consumer is missing or provisioned with other settings.
    #[error(transparent)]
    Consumer(#[from] bus::ConsumeError),
}

impl OpenError {
    /// Whether waiting cannot help.
    fn is_fatal(&self) -> bool {
        match self {
            Self::Disconnected => false,
            Self::Provision(e) => e.is_fatal(),
            Self::Consumer(e) => matches!(e, bus::ConsumeError::Spec { .. }),
        }
    }
}

/// Runs `attempt` until it succeeds (backoff 0.2 s doubling to 5 s, each failure logged and
/// kept in `waiting`); `Ok(None)` if shutdown comes first, the error if it is fatal.
async fn retry<T, F, Fut>(
    waiting: &Waiting,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Result<Option<T>, RunError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OpenError>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match attempt().await {
            Ok(value) => return Ok(Some(value)),
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, ?delay, "waiting for what this service needs on NATS");
                waiting.set(Some(format!("waiting: {e}")));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(delay) => delay = (delay * 2).min(Duration::from_secs(5)),
        }
    }
}
