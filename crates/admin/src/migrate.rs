//! `orderflow-admin migrate`: brings what a deployment stores up to this build, before its
//! services start — the archive's schema migrations (as the archive's owner; what
//! `order-service archive migrate` does), then provisioning, which checks every stream's
//! subject layout and records it on a stream that has none only if its events are in it.
//! A stream recording another layout stops it: layout 2 is the only one ever recorded, and
//! this build carries no layout migration yet (docs/runbooks.md, "Upgrading the subject
//! layout").

use std::fmt;

use archive::{Archive, ArchiveArgs};

use crate::provision::{ProvisionArgs, ProvisionFailed, Provisioned};

/// `orderflow-admin migrate`'s settings.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// The deployment on NATS, as `provision` takes it.
    #[command(flatten)]
    pub provision: ProvisionArgs,
    /// The archive, as its owner (the user that may change its schema); ARCHIVE_URL=none: none.
    #[command(flatten)]
    pub archive: ArchiveArgs,
}

/// What a migration left in place.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Migrated {
    /// The archive's schema version (`None`: no archive).
    pub archive_schema: Option<i64>,
    /// The deployment on NATS.
    pub provisioned: Provisioned,
}

impl fmt::Display for Migrated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.archive_schema {
            Some(version) => writeln!(f, "archive schema at version {version}")?,
            None => writeln!(f, "no archive")?,
        }
        write!(f, "{}", self.provisioned)
    }
}

/// A migration failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateFailed {
    /// The archive settings cannot work.
    #[error(transparent)]
    ArchiveSettings(#[from] archive::ArchiveConfigError),
    /// The archive's schema could not be migrated.
    #[error("the archive: {0}")]
    Archive(#[from] archive::ArchiveError),
    /// Provisioning failed (a stream of another layout, say).
    #[error(transparent)]
    Provision(#[from] ProvisionFailed),
}

/// Migrates the archive's schema, then provisions.
pub async fn run(args: &MigrateArgs) -> Result<Migrated, MigrateFailed> {
    let archive_schema = match Archive::from_args(&args.archive)? {
        Some(archive) => {
            let version = archive.migrate().await;
            archive.close().await;
            Some(version?)
        }
        None => None,
    };
    let provisioned = crate::provision::run(&args.provision).await?;
    Ok(Migrated {
        archive_schema,
        provisioned,
    })
}
