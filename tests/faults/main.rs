//! `orderflow-faults`: runs every fault scenario and prints a Markdown report — the figures in
//! RELIABILITY.md. `--long` runs thousands of orders per scenario over minutes; without it,
//! the CI-sized runs. Needs the service binaries (`cargo build --bins`) and a nats-server.
//!
//!   cargo build --bins && target/debug/orderflow-faults --long

use std::process::ExitCode;

use testkit::faults::{self, Fault, Size};

#[tokio::main]
async fn main() -> ExitCode {
    let long = std::env::args().any(|a| a == "--long");
    let size = if long { Size::LONG } else { Size::SHORT };
    // `--only <Fault>` runs one scenario (e.g. to reproduce a failure with its logs).
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    println!(
        "| scenario | orders attempted | accepted | confirmed | cancelled | faults injected | webhooks (ids) | dead letters | violations | time to recover |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut violations = 0;
    for fault in Fault::ALL
        .into_iter()
        .filter(|f| only.as_ref().is_none_or(|o| format!("{f:?}") == *o))
    {
        let outcome = faults::run(fault, size).await;
        let r = &outcome.report;
        println!(
            "| {fault:?} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {:.1} s |",
            r.attempted,
            r.accepted,
            r.confirmed,
            r.cancelled,
            outcome.injected,
            r.webhook_deliveries,
            r.webhook_ids,
            r.dead_letters,
            r.violations.len(),
            outcome.recovery.as_secs_f64()
        );
        for violation in &r.violations {
            eprintln!("{fault:?}: {violation}");
        }
        violations += r.violations.len();
        // Attempts never accepted broke no invariant (each was refused, none made an order),
        // but the system refused for longer than a careful client retries: worth a look too.
        let refused = r.attempted.saturating_sub(r.accepted);
        if !r.violations.is_empty() || refused > 0 {
            let why = if refused > 0 && r.violations.is_empty() {
                format!("{refused} attempts never accepted")
            } else {
                format!("{} violations", r.violations.len())
            };
            eprintln!(
                "{fault:?}: {why}; logs kept in {}",
                outcome.keep_logs().display()
            );
        }
    }
    if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
