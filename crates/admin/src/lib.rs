//! orderflow-admin: the operator's one tool, and the only holder of the rights the services
//! are denied. `provision` creates or updates every stream, KV bucket and durable consumer of
//! a deployment — the deployment's provisioning step (a one-shot in compose, a Job in
//! Kubernetes, a step of `scripts/dev` and of the test harness); `usage` says how full each
//! store is against its bound; `backup` takes an online backup of everything the deployment
//! stores and `restore` puts one into a fresh deployment, squared (see `backup` and `restore`).
//!
//! Credentials come from the environment or files (`NATS_PASSWORD_FILE`), never from the
//! command line; `--json` prints what a script reads.

mod backup;
mod dead_letters;
mod layout;
mod manifest;
mod migrate;
mod order;
mod postgres;
mod provision;
mod restore;
mod stock;
mod usage;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use backup::{BackupArgs, BackupFailed, run as backup};
pub use dead_letters::{DeadLettersArgs, Letter, Outcome, run as dead_letters};
pub use manifest::Manifest;
pub use migrate::{MigrateArgs, MigrateFailed, Migrated, run as migrate};
pub use order::{OrderArgs, run as order};
pub use provision::{
    ProvisionArgs, ProvisionFailed, Provisioned, provision, run as provision_deployment,
};
pub use restore::{RestoreArgs, RestoreFailed, Restored, run as restore};
pub use stock::{StockArgs, run as stock};

/// `orderflow-admin`.
#[derive(Debug, Parser)]
#[command(
    name = "orderflow-admin",
    version,
    about = "orderflow's operator tool: provisions the deployment, says how full it is, backs it up and restores it"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Print the outcome as JSON (for scripts) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update every stream, KV bucket and durable consumer of the deployment, with
    /// the settings given (the services must be given the same ones). Safe to repeat; run it
    /// before the services start and after every change of these settings or of the build.
    Provision(ProvisionArgs),
    /// How full every stream and bucket is against its byte bound (exit 1 if any is above the
    /// admission limit, where order-service refuses new orders).
    Usage(usage::UsageArgs),
    /// Take an online backup of everything the deployment stores — streams, buckets, consumer
    /// marks and the PostgreSQL archive — into a directory, while orders flow.
    Backup(BackupArgs),
    /// Restore a backup into a fresh deployment (NATS with none of the system's streams, an
    /// empty archive database); then start the services.
    Restore(RestoreArgs),
    /// List, redrive or discard the dead letters of any consumer (exit 1 if some letters were
    /// refused: the output says which and why).
    DeadLetters(dead_letters::DeadLettersArgs),
    /// Show one order as its customer's API shows it (read from NATS and the archive).
    Order(order::OrderArgs),
    /// Show a SKU's stock, or set the units available for new reservations (`--set`).
    Stock(stock::StockArgs),
    /// Bring what the deployment stores up to this build before its services start: the
    /// subject layout of its streams (offline: services stopped, consumers drained), the
    /// archive's schema migrations, then provisioning. Safe to repeat.
    Migrate(migrate::MigrateArgs),
}

/// The settings that hold secrets. The admin refuses them on its command line, where every
/// user of the host can read them (`ps`, shell history): from the environment or a `_FILE`.
const SECRETS: [&str; 5] = [
    "nats_password",
    "nats_token",
    "nats_nkey_seed",
    "archive_password",
    "archive_reader_password",
];

/// The secrets given on the command line parsed into `matches` (flags, or a password inside
/// `--archive-url`), by flag; empty when there are none.
pub fn secrets_on_command_line(matches: &clap::ArgMatches) -> Vec<String> {
    let mut found = Vec::new();
    let mut matches = Some(matches);
    while let Some(current) = matches {
        for id in SECRETS {
            if let Ok(Some(clap::parser::ValueSource::CommandLine)) =
                current.try_get_raw(id).map(|_| current.value_source(id))
            {
                found.push(format!("--{}", id.replace('_', "-")));
            }
        }
        if let Ok(Some(url)) = current.try_get_raw("archive_url")
            && current.value_source("archive_url") == Some(clap::parser::ValueSource::CommandLine)
            && url.into_iter().any(|u| {
                let u = u.to_string_lossy();
                url::Url::parse(&u).is_ok_and(|u| u.password().is_some()) || u.contains("password=")
            })
        {
            found.push("--archive-url (with a password in it)".to_owned());
        }
        matches = current.subcommand().map(|(_, sub)| sub);
    }
    found
}

/// A server list as it may be shown: each URL without the user and password it may carry.
pub(crate) fn shown(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let url = url.trim();
            match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}{}", &url[..scheme + 3], &url[at + 1..])
                }
                _ => url.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Every consumer of `stream` as the server describes it now; none if the stream does not
/// exist. The error says what could not be listed.
pub(crate) async fn consumers_of(
    bus: &bus::Bus,
    stream: &str,
) -> Result<Vec<async_nats::jetstream::consumer::Info>, String> {
    use futures::TryStreamExt as _;
    let Ok(handle) = bus.jetstream().get_stream(stream).await else {
        return Ok(Vec::new());
    };
    handle
        .consumers()
        .try_collect()
        .await
        .map_err(|e| format!("consumers of {stream}: {e}"))
}

/// Connects to NATS as `nats` says and waits until connected (at most `within`); what failed,
/// said without the credentials a URL may carry.
pub(crate) async fn operator_bus(
    nats: &platform::config::NatsArgs,
    within: std::time::Duration,
) -> Result<bus::Bus, String> {
    let config = nats
        .bus_config(CONNECTION_NAME)
        .map_err(|e| e.to_string())?;
    let bus = bus::Bus::connect(&config)
        .await
        .map_err(|e| e.to_string())?;
    if !connected(&bus, within).await {
        return Err(format!("cannot reach NATS at {}", shown(&nats.nats_url)));
    }
    Ok(bus)
}

/// Who the admin connects as (its connection name and reply inbox).
pub(crate) const CONNECTION_NAME: &str = "orderflow-admin";

/// Whether `bus` is connected within `within` (it reconnects in the background).
pub(crate) async fn connected(bus: &bus::Bus, within: std::time::Duration) -> bool {
    tokio::time::timeout(within, async {
        while !bus.is_connected() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok()
}

/// Runs `cli`; what it prints is the outcome (stdout) or why it failed (stderr).
pub async fn run(cli: Cli) -> ExitCode {
    let json = cli.json;
    match cli.command {
        Command::Provision(args) => report("provision", json, provision::run(&args).await),
        Command::Usage(args) => usage::run(&args, json).await,
        Command::Backup(args) => report("backup", json, backup::run(&args).await),
        Command::Restore(args) => report("restore", json, restore::run(&args).await),
        Command::DeadLetters(args) => match dead_letters::run(&args).await {
            Ok(outcome) if !outcome.refused.is_empty() => {
                report("dead-letters", json, Ok::<_, String>(outcome));
                ExitCode::from(1)
            }
            outcome => report("dead-letters", json, outcome),
        },
        Command::Order(args) => report("order", json, order::run(&args).await.map(Json)),
        Command::Stock(args) => report("stock", json, stock::run(&args).await.map(Json)),
        Command::Migrate(args) => report("migrate", json, migrate::run(&args).await),
    }
}

/// An outcome shown as JSON whether or not `--json` was given (an order, a stock record:
/// already what a person reads).
#[derive(serde::Serialize)]
#[serde(transparent)]
struct Json<T>(T);

impl<T: serde::Serialize> std::fmt::Display for Json<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_string_pretty(&self.0).map_err(|_| std::fmt::Error)?;
        f.write_str(&text)
    }
}

/// Prints a command's outcome — as JSON with `--json`, else as text — or why it failed.
fn report<T: serde::Serialize + std::fmt::Display>(
    command: &str,
    json: bool,
    outcome: Result<T, impl std::fmt::Display>,
) -> ExitCode {
    match outcome {
        Ok(done) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&done).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("orderflow-admin {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_server_list_is_shown_without_the_credentials_it_carries() {
        assert_eq!(
            super::shown("nats://operator:s3cret@nats-0:4222, nats://nats-1:4222"),
            "nats://nats-0:4222,nats://nats-1:4222"
        );
    }
}
