//! order-service: takes orders over HTTP and drives each one through the saga to `confirmed`
//! or `cancelled`. A library with [`run`] so tests start it in-process; `main.rs` only parses
//! the configuration and calls it.

mod api;
mod order;
mod saga;
mod store;

use std::net::SocketAddr;

use axum::Router;
use bus::{Bus, CancellationToken, ConsumerSpec, ProvisionError};
use platform::config::{HttpArgs, NatsArgs};
use platform::customer_auth::{AuthArgs, Customers};
use platform::service::{RunError, Started};
use tokio::net::TcpListener;
use utoipa::OpenApi as _;

pub use api::{Accepted, CreateOrder, OrderLine, OrderPage, OrderView};
pub use order::Status;

/// The service name: connection name, `service.name`, event `source`.
pub const SERVICE: &str = "order-service";

/// order-service configuration, from the environment or flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "order-service",
    version,
    about = "orderflow order-service: the HTTP API for orders and the order side of the saga"
)]
pub struct Config {
    /// `healthcheck` probes a running instance instead of starting one.
    #[command(subcommand)]
    pub command: Option<platform::probe::Command>,
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
}

/// Runs the service on `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    platform::service::run(
        OrderService {
            admin_token: platform::admin::token(&config.http)?,
            customers: customers(&config.auth).await?,
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
}

impl platform::service::Service for OrderService {
    type State = store::Store;
    type Handler = saga::Saga;
    const NAME: &'static str = SERVICE;

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        let mut doc = api::ApiDoc::openapi();
        if self.customers.is_some() {
            api::require_customer_tokens(&mut doc);
        }
        doc.merge(platform::dead_letters::ApiDoc::openapi());
        doc
    }

    fn routes(&self, store: Started<store::Store>, bus: &Bus) -> Router {
        api::routes(api::App {
            store,
            customers: self.customers.clone(),
        })
        .merge(platform::dead_letters::routes(
            bus.clone(),
            self.admin_token.clone(),
        ))
    }

    async fn provision(&self, bus: &Bus, nats: &NatsArgs) -> Result<store::Store, ProvisionError> {
        store::Store::open(bus, nats.stream_replicas, nats.stream_partitions).await
    }

    fn consumers(&self, store: &store::Store, bus: &Bus) -> (Vec<ConsumerSpec>, saga::Saga) {
        let _ = bus;
        (
            saga::consumer_specs(store.partitions()),
            saga::Saga {
                store: store.clone(),
            },
        )
    }
}
