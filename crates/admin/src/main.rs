//! `orderflow-admin`: parses the command line — refusing secrets on it — and runs the command.

use clap::{CommandFactory as _, FromArgMatches as _};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let matches = orderflow_admin::Cli::command().get_matches();
    let secrets = orderflow_admin::secrets_on_command_line(&matches);
    if !secrets.is_empty() {
        eprintln!(
            "orderflow-admin: {} on the command line, where every user of this host can read it: give it in the environment or its _FILE setting",
            secrets.join(", ")
        );
        return std::process::ExitCode::from(2);
    }
    match orderflow_admin::Cli::from_arg_matches(&matches) {
        Ok(cli) => orderflow_admin::run(cli).await,
        Err(e) => e.exit(),
    }
}
