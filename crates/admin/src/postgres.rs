//! The archive through PostgreSQL's own tools: `pg_dump` takes an online, consistent copy of
//! the database (one transaction's snapshot, while the projection keeps writing), and
//! `pg_restore` loads it into an empty one. The password goes to them in `PGPASSWORD`, never
//! on their command line.

use std::path::{Path, PathBuf};
use std::process::Command;

use archive::Libpq;

/// Which PostgreSQL client programs to run.
#[derive(Debug, Clone, clap::Args)]
pub struct PgTools {
    /// The `pg_dump` to run (of the server's major version or newer).
    #[arg(long, env = "PG_DUMP", default_value = "pg_dump")]
    pub pg_dump: PathBuf,
    /// The `pg_restore` to run.
    #[arg(long, env = "PG_RESTORE", default_value = "pg_restore")]
    pub pg_restore: PathBuf,
}

/// Dumps the archive into `file` (custom format).
pub async fn dump(tools: &PgTools, libpq: &Libpq, file: &Path) -> Result<(), String> {
    let mut command = Command::new(&tools.pg_dump);
    command
        .arg("--format=custom")
        .arg("--no-password")
        .arg(format!("--dbname={}", libpq.url))
        .arg("--file")
        .arg(file);
    run(command, libpq).await
}

/// Restores the dump in `file` into the archive's (empty) database, in one transaction.
pub async fn restore(tools: &PgTools, libpq: &Libpq, file: &Path) -> Result<(), String> {
    let mut command = Command::new(&tools.pg_restore);
    command
        .arg("--no-owner")
        .arg("--exit-on-error")
        .arg("--single-transaction")
        .arg("--no-password")
        .arg(format!("--dbname={}", libpq.url))
        .arg(file);
    run(command, libpq).await
}

async fn run(mut command: Command, libpq: &Libpq) -> Result<(), String> {
    if let Some(password) = &libpq.password {
        command.env("PGPASSWORD", password.expose());
    }
    let program = command.get_program().to_string_lossy().into_owned();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(|e| format!("{program}: {e}"))?
        .map_err(|e| format!("cannot run {program}: {e} (set PG_DUMP / PG_RESTORE)"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
