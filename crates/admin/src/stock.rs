//! `orderflow-admin stock`: a SKU's stock read, or its available units set (an operator's
//! stock count, as `PUT /v1/stock/{sku}` does), as the operator on NATS — no token of the API
//! needed.

use std::time::Duration;

use events::Sku;
use platform::config::NatsArgs;

/// `orderflow-admin stock`'s settings.
#[derive(Debug, Clone, clap::Args)]
pub struct StockArgs {
    /// NATS connection (as the operator) and the shape of the streams.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The SKU.
    pub sku: Sku,
    /// Set the units available for new reservations to this (units held by reservations stay
    /// as they are).
    #[arg(long)]
    pub set: Option<u64>,
}

/// Reads (or sets, then reads) the SKU's stock.
pub async fn run(args: &StockArgs) -> Result<inventory_service::StockView, String> {
    let settings = args.nats.stream_settings().map_err(|e| e.to_string())?;
    let bus = crate::operator_bus(&args.nats, Duration::from_secs(10)).await?;
    let outcome = match args.set {
        Some(available) => {
            inventory_service::set_stock(&bus, &settings, &args.sku, available).await
        }
        None => inventory_service::stock_of(&bus, &settings, &args.sku).await,
    };
    bus.drain().await;
    outcome.map_err(|e| e.to_string())
}
