//! `<service> healthcheck`: asks the service running in this container whether it is alive, so
//! a minimal image (no shell, no curl) can still have a Docker `HEALTHCHECK`. Exits 0 when
//! `/healthz` answers 200, 1 otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

/// Subcommands every service binary understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Probe the running service's /healthz on HTTP_ADDR's port; exit 0 if healthy.
    Healthcheck,
}

/// Probes `/healthz` of the service listening on `http_addr` (a wildcard address is probed
/// on loopback).
pub async fn healthcheck(http_addr: SocketAddr) -> ExitCode {
    let ip = if http_addr.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        http_addr.ip()
    };
    let url = format!("http://{}/healthz", SocketAddr::new(ip, http_addr.port()));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("healthcheck: cannot build an HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("healthcheck: {url} answered {}", response.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}
