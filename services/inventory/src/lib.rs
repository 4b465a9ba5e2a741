//! inventory-service: keeps stock per SKU in KV (group-committed) and answers every order with
//! a reservation or a rejection event — all lines or none, decided once, correct with any
//! number of replicas. A
//! library with [`run`] so tests start it in-process; `main.rs` only parses the configuration.

mod api;
mod ledger;
mod reservation;
pub mod restore;
mod saga;
mod stock;
mod store;

use std::net::SocketAddr;

use axum::Router;
use bus::{Bus, CancellationToken, ConsumerSpec, StreamSettings};
use events::ServiceId;
use platform::config::{HttpArgs, NatsArgs};
use platform::service::{OpenError, RunError, Started, Task};
use tokio::net::TcpListener;
use utoipa::OpenApi as _;

pub use api::StockView;
pub use stock::StockRecord;

/// The stock of `sku`, read straight from the bus — `orderflow-admin stock`.
pub async fn stock_of(
    bus: &Bus,
    settings: &StreamSettings,
    sku: &events::Sku,
) -> Result<StockView, Box<dyn std::error::Error + Send + Sync>> {
    let store = store::Store::open(bus, settings).await?;
    Ok(StockView::new(
        sku.as_str(),
        &store.ledger().record(sku).await?,
    ))
}

/// Sets the units of `sku` available for new reservations, as `PUT /v1/stock/{sku}` does,
/// straight on the bus — `orderflow-admin stock --set`.
pub async fn set_stock(
    bus: &Bus,
    settings: &StreamSettings,
    sku: &events::Sku,
    available: u64,
) -> Result<StockView, Box<dyn std::error::Error + Send + Sync>> {
    if available > api::MAX_AVAILABLE {
        return Err(format!("available must be at most {}", api::MAX_AVAILABLE).into());
    }
    let store = store::Store::open(bus, settings).await?;
    Ok(StockView::new(
        sku.as_str(),
        &store.set_available(sku, available).await?,
    ))
}

/// Which service this is: its name, event `source`, what it writes and reads
/// ([`events::topology`]).
pub const SERVICE: ServiceId = ServiceId::Inventory;

/// inventory-service configuration, from the environment or flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = SERVICE.name(),
    version,
    about = "orderflow inventory-service: stock and reservations"
)]
pub struct Config {
    /// `healthcheck` probes a running instance instead of starting one.
    #[command(subcommand)]
    pub command: Option<platform::probe::Command>,
    /// Address the HTTP API listens on.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8081")]
    pub http_addr: SocketAddr,
    /// NATS connection and streams.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// HTTP limits and the admin token.
    #[command(flatten)]
    pub http: HttpArgs,
}

/// The durable consumers inventory-service runs under `nats`, as the provisioning step creates
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
    let service = InventoryService {
        admin_token: platform::admin::token(&config.http)?,
    };
    platform::service::run(service, config.nats, config.http, listener, shutdown).await
}

struct InventoryService {
    admin_token: Option<bus::Secret>,
}

impl platform::service::Service for InventoryService {
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
        Ok(store::Store::open(bus, settings).await?)
    }

    fn consumers(&self, store: &store::Store) -> (Vec<ConsumerSpec>, saga::Saga) {
        let saga = saga::Saga {
            store: store.clone(),
        };
        (saga::consumer_specs(store.partitions()), saga)
    }

    fn tasks(&self, store: &store::Store, shutdown: &CancellationToken) -> Vec<Task> {
        vec![Box::pin(store.clone().reconcile(shutdown.clone()))]
    }
}
