//! The life of a service, shared by all three: connect to NATS, serve HTTP at once (health
//! answers while NATS is still away; the API answers 503 until ready), provision its own
//! streams and state (retrying with backoff until NATS is reachable) and be ready, start the
//! consumers once the streams they read exist (their owners create them), then on shutdown
//! stop taking HTTP, drain the consumers, and close the connection — all within the grace
//! period.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use bus::{Bus, CancellationToken, Consumer, ConsumerSpec, ProvisionError, StreamSettings};
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

    /// Connection name, `service.name`, log field.
    const NAME: &'static str;

    /// The OpenAPI document of [`Service::routes`].
    fn openapi(&self) -> utoipa::openapi::OpenApi;

    /// The API routes; their state becomes available once started.
    fn routes(&self, state: Started<Self::State>, bus: &Bus) -> Router;

    /// Creates or updates the service's buckets and builds its state.
    fn provision(
        &self,
        bus: &Bus,
        nats: &NatsArgs,
    ) -> impl Future<Output = Result<Self::State, ProvisionError>> + Send;

    /// The durable consumers and the handler that serves them.
    fn consumers(&self, state: &Self::State, bus: &Bus) -> (Vec<ConsumerSpec>, Self::Handler);

    /// What the service runs without right now, for `/readyz` (nothing by default): said, not
    /// failed, because the rest of its work goes on.
    fn degraded(&self, _state: &Self::State) -> Vec<String> {
        Vec::new()
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
    let bus = Bus::connect(&nats.bus_config(S::NAME)?).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let started = Started::<S::State>::default();
    let edge = Edge {
        metrics: telemetry::metrics_handle(),
        openapi: Arc::new(crate::openapi::complete(service.openapi())),
        ready: {
            let (bus, ready, started, service) =
                (bus.clone(), ready.clone(), started.clone(), service.clone());
            Arc::new(move || Health {
                ready: bus.is_connected() && ready.load(Ordering::Relaxed),
                degraded: started
                    .0
                    .get()
                    .map(|state| service.degraded(state))
                    .unwrap_or_default(),
            })
        },
        limits: http.clone(),
    };
    let router = edge::router(service.routes(started.clone(), &bus), edge);
    let server = tokio::spawn(edge::serve(listener, router, shutdown.clone()));

    let mut consumers = tokio::task::JoinSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(state) = provision(service.as_ref(), &bus, &nats, &settings, &shutdown).await {
        let (specs, handler) = service.consumers(&state, &bus);
        for task in service.tasks(&state, &shutdown) {
            tasks.spawn(task);
        }
        let _ = started.0.set(state);
        // Ready once its own streams and state exist: its API does not need the others'.
        ready.store(true, Ordering::Relaxed);
        tracing::info!(service = S::NAME, "ready");
        // Its consumers start once the streams they read exist (their owners create them);
        // durable consumers then deliver everything stored meanwhile.
        if streams_used_exist::<S>(&bus, &settings, &shutdown).await {
            for spec in specs {
                let consumer = Consumer::create(&bus, nats.tune(spec)).await?;
                consumers.spawn(consumer.run(handler.clone(), shutdown.clone()));
            }
            tracing::info!(service = S::NAME, "consuming");
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

/// Provisions the service's own streams and its state, retrying with backoff until it works;
/// `None` if shutdown comes first.
async fn provision<S: Service>(
    service: &S,
    bus: &Bus,
    nats: &NatsArgs,
    settings: &StreamSettings,
    shutdown: &CancellationToken,
) -> Option<S::State> {
    retry("provisioning", shutdown, || async {
        bus.provision_streams_of(settings, S::NAME).await?;
        service.provision(bus, nats).await
    })
    .await
}

/// Waits, with backoff, until the streams the service reads exist; `false` if shutdown comes
/// first.
async fn streams_used_exist<S: Service>(
    bus: &Bus,
    settings: &StreamSettings,
    shutdown: &CancellationToken,
) -> bool {
    retry("starting the consumers", shutdown, || {
        bus.streams_used_by_exist(settings, S::NAME)
    })
    .await
    .is_some()
}

/// Runs `attempt` until it succeeds (backoff 0.2 s doubling to 5 s, each failure logged with
/// `what`); `None` if shutdown comes first.
async fn retry<T, F, Fut>(what: &str, shutdown: &CancellationToken, mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProvisionError>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(e) => tracing::warn!(error = %e, ?delay, "{what} failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => delay = (delay * 2).min(Duration::from_secs(5)),
        }
    }
}
