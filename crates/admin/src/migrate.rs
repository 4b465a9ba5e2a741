//! `orderflow-admin migrate`: brings what a deployment stores up to this build, before its
//! services start — the subject layout of its streams (step by step, see [`crate::layout`]),
//! the archive's schema migrations (as the archive's owner; what `order-service archive
//! migrate` does), then provisioning, which checks every stream's layout and records it on
//! a stream that has none only if its events are in it. Safe to repeat.

use std::collections::HashMap;
use std::fmt;

use archive::{Archive, ArchiveArgs};
use bus::{Bus, Start};

use crate::layout::{UpgradeFailed, Upgraded};
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
    /// The subject layout upgrade made, if one was due.
    pub layout: Upgraded,
    /// The deployment on NATS.
    pub provisioned: Provisioned,
}

impl fmt::Display for Migrated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.archive_schema {
            Some(version) => writeln!(f, "archive schema at version {version}")?,
            None => writeln!(f, "no archive")?,
        }
        if let Some(from) = self.layout.from {
            writeln!(f, "subject layout upgraded from {from}:")?;
            for step in &self.layout.steps {
                writeln!(f, "  {step}")?;
            }
            for (stream, moved) in &self.layout.moved {
                writeln!(f, "  {stream}: {moved} events moved to their new subjects")?;
            }
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
    /// The subject layout could not be upgraded.
    #[error(transparent)]
    Layout(#[from] UpgradeFailed),
    /// Provisioning failed (a stream of another layout, say).
    #[error(transparent)]
    Provision(#[from] ProvisionFailed),
}

/// Migrates the archive's schema, upgrades the subject layout, then provisions.
pub async fn run(args: &MigrateArgs) -> Result<Migrated, MigrateFailed> {
    let archive = Archive::from_args(&args.archive)?;
    let nats = &args.provision.nats;
    let settings = nats.stream_settings().map_err(ProvisionFailed::from)?;
    let bus = Bus::connect(
        &nats
            .bus_config(crate::CONNECTION_NAME)
            .map_err(ProvisionFailed::from)?,
    )
    .await
    .map_err(ProvisionFailed::from)?;
    if !crate::connected(&bus, args.provision.timeout).await {
        return Err(ProvisionFailed::Unreachable {
            url: crate::shown(&nats.nats_url),
            timeout: args.provision.timeout,
        }
        .into());
    }
    let outcome = async {
        // The layout first: a step that cannot run (a consumer not drained) stops the command
        // before anything else changed.
        let layout = crate::layout::upgrade(&bus, &settings).await?;
        let archive_schema = match &archive {
            Some(archive) => Some(archive.migrate().await?),
            None => None,
        };
        // The consumers of a rewritten stream start after the events it moved.
        let starts: HashMap<(String, String), Start> = layout
            .restarts
            .iter()
            .map(|(key, sequence)| {
                let start = Start {
                    sequence: *sequence,
                    replay_until: 0,
                };
                (key.clone(), start)
            })
            .collect();
        let provisioned =
            crate::provision::provision_starting(&bus, nats, args.provision.archive, &starts)
                .await?;
        crate::layout::forget_restart_points(&bus, &settings).await?;
        Ok::<_, MigrateFailed>((archive_schema, layout, provisioned))
    }
    .await;
    bus.drain().await;
    if let Some(archive) = archive {
        archive.close().await;
    }
    let (archive_schema, layout, provisioned) = outcome?;
    Ok(Migrated {
        archive_schema,
        layout,
        provisioned,
    })
}
