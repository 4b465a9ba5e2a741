//! `order-service`: parses the configuration, starts telemetry, and runs the service until
//! SIGTERM or Ctrl-C.

use anyhow::Context as _;
use clap::Parser as _;

// Every message hop allocates many small, short-lived buffers; mimalloc serves them several
// times cheaper than the system allocator (glibc here, musl in the images).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let config = order_service::Config::parse();
    match &config.command {
        Some(order_service::Command::Healthcheck) => {
            return Ok(platform::probe::healthcheck(config.http_addr).await);
        }
        Some(order_service::Command::Archive(command)) => {
            return Ok(order_service::archive_command(&config.archive, command).await);
        }
        None => {}
    }
    let _telemetry =
        telemetry::init(order_service::SERVICE.name()).context("starting telemetry")?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP_ADDR {}", config.http_addr))?;
    tracing::info!(addr = %config.http_addr, "order-service listening");
    order_service::run(config, listener, platform::shutdown::on_signal()).await?;
    Ok(std::process::ExitCode::SUCCESS)
}
