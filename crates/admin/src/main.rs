//! `orderflow-admin`: parses the command line and runs the command.

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    orderflow_admin::run(orderflow_admin::Cli::parse()).await
}
