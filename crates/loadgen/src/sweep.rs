//! The `sweep` mode: open-loop runs at rising offered rates until the system stops keeping up,
//! giving the throughput/latency curve (printed, and written as CSV) and the highest rate it
//! sustained.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;

use crate::ceiling::Ceiling;
use crate::plot::{self, Curve, Point};
use crate::saga::{Driver, Load, Report};

/// The rates to step through and when to call a step saturated.
#[derive(Debug, Clone, clap::Args)]
pub struct Steps {
    /// First offered rate, orders/s.
    #[arg(long, default_value_t = 500.0)]
    pub from: f64,
    /// Added to the rate at each step.
    #[arg(long, default_value_t = 500.0)]
    pub step: f64,
    /// Last offered rate tried.
    #[arg(long, default_value_t = 20_000.0)]
    pub to: f64,
    /// A step is saturated when fewer than this share of the offered orders end per second…
    #[arg(long, default_value_t = 0.95)]
    pub min_share: f64,
    /// …or when p99 POST → confirmed exceeds this many milliseconds…
    #[arg(long, default_value_t = 1000.0)]
    pub max_p99_ms: f64,
    /// …or when more than this share of requests fail.
    #[arg(long, default_value_t = 0.01)]
    pub max_error_share: f64,
    /// Where to write the curve as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Where to draw the curve as SVG.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// The whole curve.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    pub mode: &'static str,
    pub steps: Vec<Report>,
    /// Highest offered rate the system kept up with (0 if none).
    pub max_sustained_offered: f64,
    /// Orders/s ended at that step.
    pub max_sustained_orders_per_sec: f64,
    pub ceiling: Option<Ceiling>,
}

impl Sweep {
    /// The throughput/latency curve of this sweep (its open-loop steps).
    pub fn curve(&self, label: &str) -> Curve {
        let points = self
            .steps
            .iter()
            .filter_map(|step| match step.load {
                Load::Open { rate } => Some(Point {
                    offered: rate,
                    ended: step.orders_per_sec,
                    confirmed_p50_ms: step.latency_ms.confirmed.p50,
                    confirmed_p99_ms: step.latency_ms.confirmed.p99,
                }),
                Load::Closed { .. } | Load::Burst { .. } => None,
            })
            .collect();
        Curve {
            label: label.to_owned(),
            points,
        }
    }
}

impl Steps {
    fn saturated(&self, offered: f64, report: &Report) -> Option<String> {
        let errors: u64 = report.errors.values().sum();
        if report.orders_per_sec < offered * self.min_share {
            Some(format!(
                "{:.0} of {offered:.0} orders/s ended",
                report.orders_per_sec
            ))
        } else if report.latency_ms.confirmed.p99 > self.max_p99_ms {
            Some(format!(
                "p99 POST → confirmed {:.1} ms",
                report.latency_ms.confirmed.p99
            ))
        } else if errors as f64 > report.sent.max(1) as f64 * self.max_error_share {
            Some(format!("{errors} errors of {} requests", report.sent))
        } else {
            None
        }
    }
}

/// Steps the rate up until saturation (the saturated step is included in the curve).
pub async fn run(
    driver: &Arc<Driver>,
    steps: &Steps,
    seconds: f64,
    warmup: f64,
    ceiling: Option<&Ceiling>,
    json: bool,
) -> anyhow::Result<Sweep> {
    let mut sweep = Sweep {
        mode: "sweep",
        steps: Vec::new(),
        max_sustained_offered: 0.0,
        max_sustained_orders_per_sec: 0.0,
        ceiling: ceiling.cloned(),
    };
    let mut offered = steps.from.max(1.0);
    while offered <= steps.to {
        let report = driver
            .run(Load::Open { rate: offered }, seconds, warmup)
            .await?
            .against(ceiling);
        let saturated = steps.saturated(offered, &report);
        if !json {
            println!(
                "{offered:>8.0} offered  {:>8.0} ended/s  accept p99 {:>8.2}  confirmed p50 {:>8.2} p99 {:>8.2}  notified p99 {:>8.2} ms  R {:.3}{}",
                report.orders_per_sec,
                report.latency_ms.accept.p99,
                report.latency_ms.confirmed.p50,
                report.latency_ms.confirmed.p99,
                report.latency_ms.notified.p99,
                report.r.unwrap_or(0.0),
                saturated
                    .as_ref()
                    .map(|why| format!("  saturated: {why}"))
                    .unwrap_or_default()
            );
        }
        let orders_per_sec = report.orders_per_sec;
        sweep.steps.push(report);
        if saturated.is_some() {
            break;
        }
        sweep.max_sustained_offered = offered;
        sweep.max_sustained_orders_per_sec = orders_per_sec;
        offered += steps.step.max(1.0);
    }
    if let Some(path) = &steps.csv {
        write_csv(path, &sweep).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &steps.svg {
        plot::draw(&[sweep.curve(&plot::label_of(path))], path)?;
    }
    Ok(sweep)
}

fn write_csv(path: &PathBuf, sweep: &Sweep) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "{}", plot::CSV_COLUMNS.join(","))?;
    for step in &sweep.steps {
        let offered = match step.load {
            Load::Open { rate } => rate,
            Load::Closed { .. } | Load::Burst { .. } => 0.0,
        };
        let l = &step.latency_ms;
        writeln!(
            out,
            "{offered},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            step.orders_per_sec,
            step.errors.values().sum::<u64>(),
            l.accept.p50,
            l.accept.p99,
            l.confirmed.p50,
            l.confirmed.p90,
            l.confirmed.p99,
            l.confirmed.p999,
            l.confirmed.max,
            l.notified.p50,
            l.notified.p99,
            step.writes_per_order,
            step.r.unwrap_or(0.0)
        )?;
    }
    out.flush()
}
