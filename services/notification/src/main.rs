//! `notification-service`: parses the configuration, starts telemetry, and runs the service until
//! SIGTERM or Ctrl-C.

use anyhow::Context as _;
use clap::Parser as _;

// Every message hop allocates many small, short-lived buffers; mimalloc serves them several
// times cheaper than the system allocator (glibc here, musl in the images).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let config = notification_service::Config::parse();
    if let Some(platform::probe::Command::Healthcheck) = config.command {
        return Ok(platform::probe::healthcheck(config.http_addr).await);
    }
    config.validate().context("invalid webhook settings")?;
    let _telemetry =
        telemetry::init(notification_service::SERVICE.name()).context("starting telemetry")?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP_ADDR {}", config.http_addr))?;
    tracing::info!(addr = %config.http_addr, "notification-service listening");
    notification_service::run(config, listener, platform::shutdown::on_signal()).await?;
    Ok(std::process::ExitCode::SUCCESS)
}
