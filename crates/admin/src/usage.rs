//! `orderflow-admin usage`: every stream and bucket of the deployment against its byte bound,
//! as a table (or JSON), read from the stream infos as the operator.

use std::process::ExitCode;
use std::time::Duration;

use bus::{Bus, Usage};
use platform::config::NatsArgs;

/// `orderflow-admin usage`'s settings: the connection and the settings the deployment was
/// provisioned with (its partitions name the streams).
#[derive(Debug, Clone, clap::Args)]
pub struct UsageArgs {
    /// NATS connection (as the operator) and the shape of the streams.
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Prints the usage; exit 1 if any store is at or above the admission limit, 2 on failure.
pub(crate) async fn run(args: &UsageArgs, json: bool) -> ExitCode {
    match usage(args).await {
        Ok((usage, limit)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&usage).unwrap_or_default()
                );
            } else {
                println!(
                    "{:<24} {:>14} {:>14} {:>7}",
                    "store", "bytes", "bound", "used"
                );
                for store in &usage {
                    println!(
                        "{:<24} {:>14} {:>14} {:>6.1}%",
                        store.store,
                        store.bytes,
                        store.max_bytes,
                        store.ratio() * 100.0
                    );
                }
            }
            if usage.iter().any(|store| store.ratio() >= limit) {
                eprintln!(
                    "a store is at or above the admission limit ({:.0}%): order-service refuses new orders",
                    limit * 100.0
                );
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("orderflow-admin usage: {e}");
            ExitCode::from(2)
        }
    }
}

async fn usage(args: &UsageArgs) -> Result<(Vec<Usage>, f64), Box<dyn std::error::Error>> {
    let settings = args.nats.stream_settings()?;
    let bus = Bus::connect(&args.nats.bus_config(crate::CONNECTION_NAME)?).await?;
    if !crate::connected(&bus, Duration::from_secs(10)).await {
        return Err(format!("cannot reach NATS at {}", crate::shown(&args.nats.nats_url)).into());
    }
    let mut stores = bus::stream_names(&settings);
    stores.extend(
        events::names::bucket::ALL
            .iter()
            .map(|bucket| events::names::bucket::stream(bucket)),
    );
    let usage = bus.usage(&stores).await;
    bus.drain().await;
    Ok((usage?, settings.bounds.admission))
}
