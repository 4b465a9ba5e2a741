//! The `flash` mode: a flash sale. One SKU is seeded with `units`, then `orders` orders of one
//! unit each arrive at a rate (or as fast as they are accepted); every order is followed to its
//! end. The report says how long the stock took to sell out and whether the sale was exact:
//! `units` confirmed — not one more, not one less — the rest cancelled, the SKU's stock at 0 with
//! all of it reserved.

use serde::Serialize;

use crate::saga::{Driver, Load, Report};

/// What a flash sale ended with.
#[derive(Debug, Clone, Serialize)]
pub struct FlashReport {
    pub mode: &'static str,
    pub units: u64,
    pub orders: u64,
    /// Seconds from the first order to the last confirmation.
    pub sell_out_seconds: Option<f64>,
    /// `(available, reserved, unsettled orders)` of the SKU after the sale.
    pub stock_after: (u64, u64, u64),
    /// More confirmed than there were units, or stock below zero.
    pub oversold: bool,
    /// Exactly `units` confirmed, every other order cancelled, nothing left available.
    pub exact: bool,
    /// The run as `saga` reports it (throughput, latencies, writes and messages per order).
    pub saga: Report,
}

impl FlashReport {
    /// Human-readable report.
    pub fn print(&self) {
        println!(
            "flash sale: {} units, {} orders — {}",
            self.units,
            self.orders,
            if self.exact {
                "exact"
            } else if self.oversold {
                "OVERSOLD"
            } else {
                "NOT EXACT"
            }
        );
        match self.sell_out_seconds {
            Some(s) => println!("  sold out after     {s:.3} s"),
            None => println!("  sold out after     — (nothing confirmed)"),
        }
        let (available, reserved, unsettled) = self.stock_after;
        println!(
            "  stock after        available {available}, reserved {reserved}, unsettled {unsettled}"
        );
        self.saga.print();
    }
}

/// Seeds the SKU with `units` (the driver's target has one SKU stocked so), places `orders`
/// orders at `rate` (or as fast as accepted), and checks the outcome.
pub async fn run(
    driver: &std::sync::Arc<Driver>,
    units: u64,
    orders: u64,
    rate: Option<f64>,
) -> anyhow::Result<FlashReport> {
    let (_, reserved_before, _) = driver.stock(0).await?;
    let (load, seconds) = match rate {
        Some(rate) => (Load::Open { rate }, orders as f64 / rate.max(0.001)),
        None => (Load::Burst { orders }, 0.0),
    };
    let saga = driver.run(load, seconds, 0.0).await?;
    let stock_after = driver.stock(0).await?;
    let (available, reserved, _) = stock_after;
    let sold = reserved.saturating_sub(reserved_before);
    let oversold = saga.confirmed > units || sold > units;
    let exact = saga.confirmed == units
        && saga.cancelled == saga.accepted.saturating_sub(units)
        && available == 0
        && sold == units;
    Ok(FlashReport {
        mode: "flash",
        units,
        orders,
        sell_out_seconds: saga.last_confirmed_after_s,
        stock_after,
        oversold,
        exact,
        saga,
    })
}
