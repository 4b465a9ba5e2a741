//! Durable pull consumers and the ack discipline every handler gets for free.
//!
//! A [`Handler`] returns ok, a transient error, or a permanent error; the consumer turns that
//! into ack, nak-with-growing-delay, or dead letter + term — and dead-letters a transient error
//! on the last allowed delivery instead of letting the message vanish. Concurrency is bounded
//! by a semaphore, and each pull asks for no more messages than there are free handler slots,
//! so a prefetched message never waits out its `ack_wait` behind a busy handler. Long handlers
//! send progress acks. Shutdown stops pulling, hands back unstarted messages, and finishes
//! in-flight handlers before returning.

mod process;
mod spec;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, consumer::pull};
use events::names;
use futures::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use spec::{ConsumerSpec, DEFAULT_MAX_DELIVER, SpecError};

use telemetry::metric;

use crate::connect::Bus;
use crate::dead_letter::{self, DeadLetterReason};
use crate::handler::Handler;

/// Setting up or running a consumer failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The spec is invalid.
    #[error("consumer {durable}: {source}")]
    Spec {
        /// The durable name.
        durable: String,
        /// What is wrong.
        #[source]
        source: SpecError,
    },
    /// The server refused to create or update the durable consumer.
    #[error("cannot create or update consumer {durable} on {stream}: {source}")]
    Create {
        /// The durable name.
        durable: String,
        /// The stream.
        stream: String,
        /// The server's answer.
        #[source]
        source: jetstream::stream::ConsumerError,
    },
    /// The durable consumer (or its advisory watcher) does not exist (yet).
    #[error(
        "consumer {durable} on {stream} does not exist: the deployment's provisioning step \
         (`orderflow-admin provision`) creates it: {source}"
    )]
    Missing {
        /// The durable name.
        durable: String,
        /// The stream.
        stream: String,
        /// The server's answer.
        #[source]
        source: jetstream::stream::ConsumerError,
    },
    /// The durable consumer exists with other settings than this service runs with: the
    /// provisioning step and the service were given different settings.
    #[error(
        "consumer {durable} on {stream} is provisioned with {what}: give the provisioning step \
         (`orderflow-admin provision`) and the services the same settings, and provision again"
    )]
    Drift {
        /// The durable name.
        durable: String,
        /// The stream.
        stream: String,
        /// What differs, provisioned against expected.
        what: String,
    },
}

/// Where a new consumer and its advisory watcher start (`None`: at the beginning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Starts {
    /// Where the consumer starts.
    pub consumer: Option<Start>,
    /// Where its watcher starts in `ADVISORIES`.
    pub watcher: Option<Start>,
}

/// A consumer restored part-way: it starts at `sequence`, and every message up to
/// `replay_until` may have been handled before the restore — its handler is told so, as for a
/// redelivery ([`Delivery::is_redelivery`](crate::Delivery::is_redelivery)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The first stream sequence delivered.
    pub sequence: u64,
    /// The last stream sequence that may have been handled already.
    pub replay_until: u64,
}

/// The consumer metadata that holds [`Start::replay_until`].
const REPLAY_UNTIL: &str = "orderflow.replay_until";

/// A provisioned durable pull consumer, ready to [`run`](Consumer::run) a handler.
#[derive(Debug)]
pub struct Consumer {
    bus: Bus,
    spec: Arc<ConsumerSpec>,
    consumer: PullConsumer,
    /// Messages up to this sequence may have been handled before a restore.
    replay_until: u64,
}

impl Consumer {
    /// Validates `spec`, creates (or updates) the durable consumer and its advisory watcher on
    /// the server, and binds to it: what the provisioning step and tests do.
    pub async fn create(bus: &Bus, spec: ConsumerSpec) -> Result<Self, ConsumeError> {
        Self::provision(bus, &spec).await?;
        Self::bind(bus, spec).await
    }

    /// Validates `spec` and creates (or updates) its durable consumer and the watcher of its
    /// max-deliveries advisories: the provisioning step's job, never a service's. A consumer
    /// that exists keeps where it started (a restore starts consumers part-way).
    pub async fn provision(bus: &Bus, spec: &ConsumerSpec) -> Result<(), ConsumeError> {
        Self::provision_from(bus, spec, Starts::default()).await
    }

    /// [`Self::provision`], with the consumer and its watcher starting at the given stream
    /// sequences if they do not exist yet — what a restore does, to deliver again everything
    /// after the marks its backup took.
    pub async fn provision_from(
        bus: &Bus,
        spec: &ConsumerSpec,
        starts: Starts,
    ) -> Result<(), ConsumeError> {
        spec.validate().map_err(|source| ConsumeError::Spec {
            durable: spec.durable.clone(),
            source,
        })?;
        let create = |mut config: pull::Config, stream: String, start: Option<Start>| async move {
            let durable = config.durable_name.clone().unwrap_or_default();
            // The start cannot be changed once made: an update repeats the existing one.
            let existing = bus
                .jetstream()
                .get_consumer_from_stream::<pull::Config, _, _>(&durable, &stream)
                .await
                .ok()
                .map(|c: PullConsumer| c.cached_info().config.clone());
            match (existing, start) {
                (Some(existing), _) => {
                    config.deliver_policy = existing.deliver_policy;
                    config.metadata.extend(
                        existing
                            .metadata
                            .into_iter()
                            .filter(|(key, _)| key == REPLAY_UNTIL),
                    );
                }
                (None, Some(start)) => {
                    config.deliver_policy = jetstream::consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: start.sequence.max(1),
                    };
                    config
                        .metadata
                        .insert(REPLAY_UNTIL.to_owned(), start.replay_until.to_string());
                }
                (None, None) => {}
            }
            bus.jetstream()
                .create_consumer_on_stream(config, &stream)
                .await
                .map(drop)
                .map_err(|source| ConsumeError::Create {
                    durable,
                    stream,
                    source,
                })
        };
        create(spec.server_config(), spec.stream.clone(), starts.consumer).await?;
        create(
            dead_letter::watcher_config(&spec.stream, &spec.durable),
            names::stream::ADVISORIES.to_owned(),
            starts.watcher,
        )
        .await
    }

    /// Validates `spec` and binds to its existing durable consumer — what a service does: it
    /// may not create one. [`ConsumeError::Missing`] until provisioned;
    /// [`ConsumeError::Drift`] if provisioned with other settings.
    pub async fn bind(bus: &Bus, spec: ConsumerSpec) -> Result<Self, ConsumeError> {
        spec.validate().map_err(|source| ConsumeError::Spec {
            durable: spec.durable.clone(),
            source,
        })?;
        let missing = |durable: &str, stream: &str| {
            let (durable, stream) = (durable.to_owned(), stream.to_owned());
            move |source| ConsumeError::Missing {
                durable,
                stream,
                source,
            }
        };
        let consumer: PullConsumer = bus
            .jetstream()
            .get_consumer_from_stream(&spec.durable, &spec.stream)
            .await
            .map_err(missing(&spec.durable, &spec.stream))?;
        let watcher = names::durable::max_deliveries_watcher(&spec.durable, &spec.stream);
        let _: PullConsumer = bus
            .jetstream()
            .get_consumer_from_stream(&watcher, names::stream::ADVISORIES)
            .await
            .map_err(missing(&watcher, names::stream::ADVISORIES))?;
        let config = &consumer.cached_info().config;
        if let Some(what) = spec.drift(config) {
            return Err(ConsumeError::Drift {
                durable: spec.durable.clone(),
                stream: spec.stream.clone(),
                what,
            });
        }
        let replay_until = config
            .metadata
            .get(REPLAY_UNTIL)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Self {
            bus: bus.clone(),
            spec: Arc::new(spec),
            consumer,
            replay_until,
        })
    }

    /// Runs `handler` on every message until `shutdown` is cancelled, then stops pulling,
    /// hands back messages not yet started, waits for running handlers, and returns.
    pub async fn run<H: Handler>(
        self,
        handler: H,
        shutdown: CancellationToken,
    ) -> Result<(), ConsumeError> {
        let watchers = self.watch(&shutdown);
        let mut handlers = Handlers::new(handler, self.spec.concurrency);
        let (durable, stream) = (&self.spec.durable, &self.spec.stream);
        tracing::info!(%durable, %stream, "consumer started");
        while let Flow::Continue = self.pull_round(&mut handlers, &shutdown).await {}
        self.drain(handlers, watchers).await;
        Ok(())
    }

    /// Starts what runs beside the pulls until `shutdown`: the max-deliveries watcher (it
    /// dead-letters what the server gave up on) and the lag reporter; and zeroes this
    /// consumer's counters, so dashboards and rate() see every consumer from the start.
    fn watch(&self, shutdown: &CancellationToken) -> Watchers {
        let durable = self.spec.durable.clone();
        metrics::counter!(metric::REDELIVERIES, "consumer" => durable.clone()).increment(0);
        for reason in [
            DeadLetterReason::Permanent,
            DeadLetterReason::RetriesExhausted,
            DeadLetterReason::AckTimeout,
        ] {
            let labels = [
                ("consumer", durable.clone()),
                ("reason", reason.as_str().into()),
            ];
            metrics::counter!(metric::DEAD_LETTERS, &labels).increment(0);
        }
        Watchers {
            advisories: tokio::spawn(dead_letter::watch_max_deliveries(
                self.bus.clone(),
                self.spec.stream.clone(),
                durable.clone(),
                shutdown.clone(),
            )),
            lag: tokio::spawn(report_lag(
                self.consumer.clone(),
                [self.spec.stream.clone(), durable],
                shutdown.clone(),
            )),
        }
    }

    /// One pull: waits for a free handler, asks the server for at most as many messages as
    /// there are free handlers, and starts a handler on each as it arrives.
    async fn pull_round<H: Handler>(
        &self,
        handlers: &mut Handlers<H>,
        shutdown: &CancellationToken,
    ) -> Flow {
        if shutdown.is_cancelled() {
            return Flow::Stop;
        }
        let Some(free) = handlers.wait_for_free(shutdown).await else {
            return Flow::Stop;
        };
        match self.request(free, shutdown).await {
            Ok(batch) => self.dispatch(batch, handlers, shutdown).await,
            Err(flow) => flow,
        }
    }

    /// Asks for up to `free` messages; or, instead of a batch, whether to pull again (after a
    /// pause, when the request failed) or stop (on shutdown).
    async fn request(
        &self,
        free: usize,
        shutdown: &CancellationToken,
    ) -> Result<pull::Batch, Flow> {
        let request = self
            .consumer
            .batch()
            .max_messages(free.min(self.spec.max_batch))
            .expires(self.spec.pull_expiry)
            .messages();
        tokio::select! {
            _ = shutdown.cancelled() => Err(Flow::Stop),
            batch = request => match batch {
                Ok(batch) => Ok(batch),
                Err(e) => {
                    let durable = &self.spec.durable;
                    tracing::warn!(%durable, error = %e, "pull failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => Err(Flow::Stop),
                        _ = tokio::time::sleep(PULL_RETRY) => Err(Flow::Continue),
                    }
                }
            },
        }
    }

    /// Starts a handler on each message of `batch` as it arrives, until the pull ends. On
    /// shutdown, hands back what already arrived, so another replica takes it now rather than
    /// after ack_wait.
    async fn dispatch<H: Handler>(
        &self,
        mut batch: pull::Batch,
        handlers: &mut Handlers<H>,
        shutdown: &CancellationToken,
    ) -> Flow {
        let durable = self.spec.durable.as_str();
        // A pull the server lost (a restart between request and answer) would never end: its
        // expiry ends it from the server's side, this from ours.
        let patience = self.spec.pull_expiry + PULL_GRACE;
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    hand_back(&mut batch).await;
                    return Flow::Stop;
                }
                next = tokio::time::timeout(patience, batch.next()) => next,
            };
            match next {
                Ok(Some(Ok(message))) => {
                    if handlers.start(self, message).await.is_err() {
                        return Flow::Stop;
                    }
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(durable, error = %e, "pull interrupted");
                    return Flow::Continue;
                }
                Ok(None) => return Flow::Continue,
                Err(_) => {
                    tracing::warn!(
                        durable,
                        "a pull went unanswered past its expiry; pulling again"
                    );
                    return Flow::Continue;
                }
            }
        }
    }

    /// Waits for the running handlers, puts the last acks on the wire, stops the watchers.
    async fn drain<H: Handler>(&self, handlers: Handlers<H>, watchers: Watchers) {
        let durable = self.spec.durable.as_str();
        tracing::info!(
            durable,
            in_flight = handlers.running.len(),
            "consumer draining"
        );
        handlers.finish().await;
        // Acks are fire-and-forget: put the last ones on the wire before saying we are done.
        if let Err(e) = self.bus.client().flush().await {
            tracing::warn!(durable, error = %e, "could not flush the final acks");
        }
        let _ = watchers.lag.await;
        if let Ok(Err(e)) = watchers.advisories.await {
            tracing::error!(durable, error = %e, "max-deliveries watcher could not start");
        }
        tracing::info!(durable, "consumer stopped");
    }
}

/// Whether the pull loop goes on.
enum Flow {
    Continue,
    Stop,
}

/// What runs beside a consumer's pulls.
struct Watchers {
    advisories: tokio::task::JoinHandle<Result<(), jetstream::stream::ConsumerError>>,
    lag: tokio::task::JoinHandle<()>,
}

/// The handler and the tasks running it, at most `concurrency` at once.
struct Handlers<H> {
    handler: Arc<H>,
    slots: Arc<Semaphore>,
    running: JoinSet<()>,
}

impl<H: Handler> Handlers<H> {
    fn new(handler: H, concurrency: usize) -> Self {
        Self {
            handler: Arc::new(handler),
            slots: Arc::new(Semaphore::new(concurrency)),
            running: JoinSet::new(),
        }
    }

    /// How many handlers are free, once at least one is; `None` on shutdown.
    async fn wait_for_free(&mut self, shutdown: &CancellationToken) -> Option<usize> {
        loop {
            self.reap();
            let free = self.slots.available_permits();
            if free > 0 {
                return Some(free);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = self.running.join_next() => {}
            }
        }
    }

    /// Starts a handler on `message` as soon as one is free; `Err` if the slots are closed.
    async fn start(
        &mut self,
        consumer: &Consumer,
        message: jetstream::Message,
    ) -> Result<(), tokio::sync::AcquireError> {
        let slot = self.slots.clone().acquire_owned().await?;
        let (bus, spec) = (consumer.bus.clone(), consumer.spec.clone());
        let (handler, replay_until) = (self.handler.clone(), consumer.replay_until);
        self.running.spawn(async move {
            process::process(&bus, &spec, handler.as_ref(), message, replay_until).await;
            drop(slot);
        });
        Ok(())
    }

    /// Collects finished handler tasks so the set does not grow.
    fn reap(&mut self) {
        while let Some(result) = self.running.try_join_next() {
            if let Err(e) = result {
                tracing::error!(error = %e, "handler task failed");
            }
        }
    }

    /// Waits for every running handler.
    async fn finish(mut self) {
        while let Some(result) = self.running.join_next().await {
            if let Err(e) = result {
                tracing::error!(error = %e, "handler task failed");
            }
        }
    }
}

/// Naks what already arrived of a pull, without waiting for more.
async fn hand_back(batch: &mut pull::Batch) {
    while let Some(Some(Ok(message))) = batch.next().now_or_never() {
        let _ = message.ack_with(AckKind::Nak(None)).await;
    }
}

/// How long a failed pull request waits before the next.
const PULL_RETRY: Duration = Duration::from_millis(500);

/// How long past its expiry a pull may go without a word from the server before it is
/// abandoned and made again.
const PULL_GRACE: Duration = Duration::from_secs(5);

/// How often the consumer's lag is read from the server.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// Exports the consumer's lag (`num_pending`, not yet delivered) and its unacked count as
/// gauges, read from the server, so a stuck consumer shows even when nothing is delivered.
/// Labelled with the stream too: a partitioned consumer has one durable name per stream.
async fn report_lag(
    consumer: PullConsumer,
    [stream, durable]: [String; 2],
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(LAG_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match consumer.get_info().await {
            Ok(info) => {
                let labels = [("stream", stream.clone()), ("consumer", durable.clone())];
                metrics::gauge!(metric::CONSUMER_PENDING, &labels).set(info.num_pending as f64);
                metrics::gauge!(metric::CONSUMER_ACK_PENDING, &labels)
                    .set(info.num_ack_pending as f64);
            }
            Err(e) => tracing::debug!(durable, error = %e, "cannot read consumer info"),
        }
    }
}
