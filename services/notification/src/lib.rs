//! notification-service: tells the customer about every order state change — once — through
//! the log (default) or a signed webhook, and records each outcome as an event. A library with [`run`] so
//! tests start it in-process; `main.rs` only parses the configuration.

mod api;
mod egress;
mod notification;
mod saga;
mod store;
mod webhook;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use bus::{Bus, CancellationToken, ConsumerSpec, KvStore, Secret, StreamSettings};
use events::ServiceId;
use platform::config::{HttpArgs, NatsArgs};
use platform::service::{OpenError, RunError, Started};
use tokio::net::TcpListener;
use utoipa::OpenApi as _;

pub use notification::notification_id;
pub use webhook::WebhookConfigError;

/// Which service this is: its name, event `source`, what it writes and reads
/// ([`events::topology`]).
pub const SERVICE: ServiceId = ServiceId::Notification;

/// notification-service configuration, from the environment or flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = SERVICE.name(),
    version,
    about = "orderflow notification-service: order notifications by log or signed webhook"
)]
pub struct Config {
    /// `healthcheck` probes a running instance instead of starting one.
    #[command(subcommand)]
    pub command: Option<platform::probe::Command>,
    /// Address the HTTP API listens on.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8082")]
    pub http_addr: SocketAddr,
    /// Where to POST notifications (Standard Webhooks); unset: notifications go to the log.
    /// Kept secret (it may carry a token): shown only as scheme, host and port.
    #[arg(long, env = "WEBHOOK_URL", hide_env_values = true, value_parser = platform::config::secret)]
    pub webhook_url: Option<Secret>,
    /// Lets webhooks reach private, loopback and link-local addresses (an internal receiver);
    /// off, only public addresses are dialled.
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Lets webhooks use plain http:// (a development receiver); off, only https:// URLs are
    /// accepted — a notification and its signature would otherwise cross the network in clear.
    #[arg(long, env = "WEBHOOK_ALLOW_HTTP")]
    pub webhook_allow_http: bool,
    /// Signing secret, `whsec_` + base64 of at least 24 random bytes (required with WEBHOOK_URL).
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true, value_parser = platform::config::secret)]
    pub webhook_secret: Option<Secret>,
    /// Timeout of one webhook request, in milliseconds.
    #[arg(long, env = "WEBHOOK_TIMEOUT_MS", default_value = "5000", value_parser = platform::config::millis)]
    pub webhook_timeout: Duration,
    /// NATS connection and streams.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// HTTP limits.
    #[command(flatten)]
    pub http: HttpArgs,
}

impl Config {
    /// Refuses a webhook without a strong secret.
    pub fn validate(&self) -> Result<(), WebhookConfigError> {
        webhook::validate(
            self.webhook_url.as_ref().map(Secret::expose),
            self.webhook_secret.as_ref(),
            self.egress(),
        )
    }

    /// Where webhooks may connect.
    pub fn egress(&self) -> egress::Egress {
        egress::Egress {
            allow_private: self.webhook_allow_private,
            allow_http: self.webhook_allow_http,
        }
    }
}

/// The durable consumers notification-service runs under `nats`, as the provisioning step creates
/// them and the service binds to them.
pub fn consumer_specs(nats: &NatsArgs) -> Vec<ConsumerSpec> {
    nats.tune_all(saga::consumer_specs(nats.stream_partitions))
}

/// Runs the service on `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    config
        .validate()
        .map_err(|e| RunError::Settings(e.to_string()))?;
    let service = NotificationService {
        webhook: config
            .webhook_url
            .clone()
            .zip(config.webhook_secret.clone()),
        timeout: config.webhook_timeout,
        egress: config.egress(),
        admin_token: platform::admin::token(&config.http)?,
    };
    platform::service::run(service, config.nats, config.http, listener, shutdown).await
}

struct NotificationService {
    webhook: Option<(Secret, Secret)>,
    timeout: Duration,
    egress: egress::Egress,
    admin_token: Option<Secret>,
}

impl platform::service::Service for NotificationService {
    type State = store::Store;
    type Handler = saga::Saga;
    const ID: ServiceId = SERVICE;

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        api::ApiDoc::openapi()
    }

    fn routes(&self, store: Started<store::Store>, _bus: &Bus) -> Router {
        api::routes(store, self.admin_token.clone())
    }

    async fn open(
        &self,
        bus: &Bus,
        _: &NatsArgs,
        settings: &StreamSettings,
    ) -> Result<store::Store, OpenError> {
        let webhook = match &self.webhook {
            None => None,
            Some((url, secret)) => {
                let endpoints = KvStore::open(
                    bus,
                    &settings.bucket(events::names::bucket::WEBHOOK_ENDPOINTS),
                )
                .await?;
                // Validated in `run`; a failure here is the HTTP client itself.
                match webhook::Webhook::new(url, secret, self.timeout, self.egress, endpoints) {
                    Ok(webhook) => Some(webhook),
                    Err(e) => {
                        tracing::error!(error = %e, "webhook disabled: cannot set it up");
                        None
                    }
                }
            }
        };
        Ok(store::Store::new(bus, settings.partitions, webhook))
    }

    fn consumers(&self, store: &store::Store) -> (Vec<ConsumerSpec>, saga::Saga) {
        let saga = saga::Saga {
            store: store.clone(),
        };
        (saga::consumer_specs(store.partitions()), saga)
    }
}
