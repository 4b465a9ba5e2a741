//! `orderflow-admin order`: one order as its customer's API shows it — status, lines, history,
//! what its customer was told — read as the operator from NATS and, for an order that left the
//! hot window, from the archive; no token of the API needed.

use std::time::Duration;

use archive::{Archive, ArchiveArgs};
use events::OrderId;
use platform::config::NatsArgs;

/// `orderflow-admin order`'s settings.
#[derive(Debug, Clone, clap::Args)]
pub struct OrderArgs {
    /// NATS connection (as the operator) and the shape of the streams.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The archive, for orders that left the hot window (ARCHIVE_URL=none: NATS only).
    #[command(flatten)]
    pub archive: ArchiveArgs,
    /// The order id.
    pub order_id: OrderId,
}

/// Looks the order up; `Err` says why it could not, or that there is no such order.
pub async fn run(args: &OrderArgs) -> Result<order_service::OrderView, String> {
    let settings = args.nats.stream_settings().map_err(|e| e.to_string())?;
    let archive = Archive::from_args(&args.archive).map_err(|e| e.to_string())?;
    let bus = crate::operator_bus(&args.nats, Duration::from_secs(10)).await?;
    let found = order_service::look_up(&bus, &settings, archive, args.order_id).await;
    bus.drain().await;
    found
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no order {}", args.order_id))
}
