//! `loadgen`: measures orderflow against the ceiling of the machine it runs on.
//!
//! - `ceiling`: raw acked publishes/s and pull consume+ack/s on the system's nats-server;
//! - `saga`: orders over HTTP, open or closed loop, each followed to its end on NATS, reported
//!   with latency percentiles and the ratio R to the ceiling measured in the same run;
//! - `sweep`: open-loop steps up to saturation, the throughput/latency curve as text, CSV and SVG;
//! - `flash`: a flash sale — one SKU, more orders than units — timed to sell-out and checked
//!   for an exact outcome;
//! - `footprint`: what keeping a million orders costs nats-server (subjects, bytes, memory);
//! - `plot`: sweep CSVs drawn together as one SVG;
//! - `otlp-sink`: a local OTLP/HTTP endpoint counting spans, for runs with tracing on.

mod ceiling;
mod cpu;
mod flash;
mod footprint;
mod latency;
mod plot;
mod saga;
mod sink;
mod soak;
mod sweep;
mod tracker;
mod traffic;
mod writes;

use std::io::IsTerminal as _;

use anyhow::Context as _;
use clap::Parser as _;

// The same allocator as the services, so the load generator takes as little of the shared CPU as
// it can.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, clap::Parser)]
#[command(name = "loadgen", version, about = "orderflow load generator")]
struct Cli {
    /// NATS server of the system (for the ceiling, the end events and the write count).
    #[arg(
        long,
        global = true,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,
    /// NATS user, for a system whose NATS wants a login (the `operator`: loadgen reads the
    /// streams' subjects), with `--nats-password-file`.
    #[arg(
        long,
        global = true,
        env = "NATS_USER",
        requires = "nats_password_file"
    )]
    nats_user: Option<String>,
    /// File holding that user's password (never the password itself on the command line).
    #[arg(
        long,
        global = true,
        env = "NATS_PASSWORD_FILE",
        requires = "nats_user"
    )]
    nats_password_file: Option<std::path::PathBuf>,
    /// Print one JSON object instead of text (and no progress bar).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// Raw acked publishes/s and pull consume+ack/s on a scratch stream.
    Ceiling {
        #[command(flatten)]
        ceiling: ceiling::Options,
    },
    /// Place orders over HTTP and follow them to their end.
    Saga {
        /// Open loop: orders per second, on a fixed schedule.
        #[arg(
            long,
            conflicts_with = "concurrency",
            required_unless_present = "concurrency"
        )]
        rate: Option<f64>,
        /// Closed loop: orders in flight (each waits for its saga to end).
        #[arg(long)]
        concurrency: Option<usize>,
        /// How long to place orders.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Leading seconds not measured.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        #[command(flatten)]
        system: System,
    },
    /// Open-loop steps of rising rate until saturation.
    Sweep {
        #[command(flatten)]
        steps: sweep::Steps,
        /// Seconds per step.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Leading seconds of each step not measured.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        #[command(flatten)]
        system: System,
    },
    /// A flash sale: one SKU seeded with `--units`, `--orders` orders of one unit each; reports
    /// the time to sell out and whether exactly `--units` were confirmed (exit status 1 if not).
    Flash {
        /// Units the SKU is seeded with.
        #[arg(long, default_value_t = 10_000)]
        units: u64,
        /// Orders placed (one unit each).
        #[arg(long, default_value_t = 50_000)]
        orders: u64,
        /// Orders per second; without it, as fast as they are accepted (bounded by
        /// `--max-in-flight` requests awaiting their answer).
        #[arg(long)]
        rate: Option<f64>,
        #[command(flatten)]
        endpoints: saga::Endpoints,
    },
    /// Publish the events of `--orders` orders into a scratch stream and report the subjects,
    /// bytes and server memory they take, per million orders.
    Footprint {
        /// Orders whose events to publish (four each).
        #[arg(long, default_value_t = 1_000_000)]
        orders: u64,
        /// nats-server's monitoring endpoint, for its resident memory.
        #[arg(
            long,
            env = "NATS_MONITOR_URL",
            default_value = "http://127.0.0.1:8222"
        )]
        nats_monitor_url: String,
    },
    /// Draw sweep CSVs (from `sweep --csv`) as one SVG, a colour per file.
    Plot {
        /// A sweep CSV; repeat to compare curves.
        #[arg(long = "csv", required = true)]
        csvs: Vec<std::path::PathBuf>,
        /// The SVG to write.
        #[arg(long)]
        svg: std::path::PathBuf,
    },
    /// A local OTLP/HTTP trace sink that counts spans (`GET /stats`).
    OtlpSink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:4318")]
        addr: String,
    },
}

/// The system under load and how its ceiling is measured (`saga` and `sweep`).
#[derive(Debug, clap::Args)]
struct System {
    #[command(flatten)]
    target: saga::Target,
    /// Skip the ceiling measurement (no R in the report).
    #[arg(long)]
    no_ceiling: bool,
    #[command(flatten)]
    ceiling: ceiling::Options,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // reqwest is built without a bundled crypto provider (as in the services); plain HTTP is
    // all loadgen speaks, but the client still needs one installed to build.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let progress = !cli.json && std::io::stderr().is_terminal();
    let login = match (&cli.nats_user, &cli.nats_password_file) {
        (Some(user), Some(file)) => {
            let password = std::fs::read_to_string(file)
                .with_context(|| format!("reading the NATS password from {}", file.display()))?;
            Some((user.clone(), password.trim().to_owned()))
        }
        _ => None,
    };
    let connect = || async {
        let options = match &login {
            Some((user, password)) => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            None => async_nats::ConnectOptions::new(),
        };
        options
            // The end events of a fast run arrive in bursts; keep them rather than drop.
            .subscription_capacity(1 << 20)
            .connect(&cli.nats_url)
            .await
            .with_context(|| format!("connecting to {}", cli.nats_url))
    };
    match cli.mode {
        Mode::Ceiling { ceiling } => {
            let measured = ceiling::measure(&connect().await?, &ceiling).await?;
            if cli.json {
                let mut value = serde_json::to_value(&measured)?;
                value["mode"] = "ceiling".into();
                println!("{value}");
            } else {
                measured.print();
            }
        }
        Mode::Saga {
            rate,
            concurrency,
            seconds,
            warmup,
            system,
        } => {
            let (ceiling, driver) = prepare(&connect().await?, system, progress).await?;
            let load = match (rate, concurrency) {
                (Some(rate), _) => saga::Load::Open { rate },
                (None, concurrency) => saga::Load::Closed {
                    concurrency: concurrency.unwrap_or(1),
                },
            };
            let report = driver
                .run(load, seconds, warmup)
                .await?
                .against(ceiling.as_ref());
            if cli.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                report.print();
            }
        }
        Mode::Sweep {
            steps,
            seconds,
            warmup,
            system,
        } => {
            let (ceiling, driver) = prepare(&connect().await?, system, progress).await?;
            if let (Some(c), false) = (&ceiling, cli.json) {
                c.print();
            }
            let sweep =
                sweep::run(&driver, &steps, seconds, warmup, ceiling.as_ref(), cli.json).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&sweep)?);
            } else {
                println!(
                    "max sustained: {:.0} offered, {:.0} orders/s ended",
                    sweep.max_sustained_offered, sweep.max_sustained_orders_per_sec
                );
            }
        }
        Mode::Flash {
            units,
            orders,
            rate,
            endpoints,
        } => {
            let target = saga::Target {
                endpoints,
                skus: 1,
                lines: 1,
                stock: units,
            };
            let driver = saga::Driver::new(&connect().await?, target, progress).await?;
            driver.seed().await?;
            let report = flash::run(&driver, units, orders, rate).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                report.print();
            }
            if !report.exact {
                std::process::exit(1);
            }
        }
        Mode::Footprint {
            orders,
            nats_monitor_url,
        } => {
            let measured = footprint::measure(&connect().await?, &nats_monitor_url, orders).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&measured)?);
            } else {
                measured.print();
            }
        }
        Mode::Plot { csvs, svg } => {
            let curves = csvs
                .iter()
                .map(|csv| plot::Curve::read(csv))
                .collect::<anyhow::Result<Vec<_>>>()?;
            plot::draw(&curves, &svg)?;
            println!("{}", svg.display());
        }
        Mode::OtlpSink { addr } => sink::serve(&addr).await?,
    }
    Ok(())
}

/// The ceiling first (while the system is idle), then a driver with its stock seeded.
async fn prepare(
    client: &async_nats::Client,
    system: System,
    progress: bool,
) -> anyhow::Result<(Option<ceiling::Ceiling>, std::sync::Arc<saga::Driver>)> {
    let ceiling = match system.no_ceiling {
        true => None,
        false => Some(ceiling::measure(client, &system.ceiling).await?),
    };
    let driver = saga::Driver::new(client, system.target, progress).await?;
    driver.seed().await?;
    Ok((ceiling, driver))
}
