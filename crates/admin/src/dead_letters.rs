//! `orderflow-admin dead-letters`: the dead letters of every consumer, read, redriven and
//! discarded as the operator — what otherwise takes the `nats` CLI and the operator password.
//! A redrive publishes a letter again on its original subject only if it is a true copy of a
//! message still in its stream (its headers are only claims), and never one of an order older
//! than most of the hot window (every consumer of the subject would take it for new). The
//! archive projection's letters are folded into the archive instead, as order-service's
//! redrive does — never published, so no other consumer sees the event again.

use std::fmt;
use std::time::Duration;

use archive::{Archive, ArchiveArgs};
use bus::{Bus, DeadLetterError, StoredDeadLetter};
use platform::config::NatsArgs;

/// Most letters one command handles.
const MAX_BATCH: usize = 1000;

/// `orderflow-admin dead-letters`'s settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DeadLettersArgs {
    /// NATS connection (as the operator) and the deployment's settings (its hot window bounds
    /// what may be redriven).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The archive, into which the projection's letters are taken back on redrive (as the
    /// projection's user); ARCHIVE_URL=none: they are refused.
    #[command(flatten)]
    pub archive: ArchiveArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// What to do with dead letters.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Action {
    /// List dead letters, oldest first.
    List {
        /// Only those after this DLQ sequence (paging: the last one listed).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many (up to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only the letters of this consumer (its durable name).
        #[arg(long)]
        consumer: Option<String>,
    },
    /// Publish dead letters again on their original subjects and remove them from the DLQ.
    Redrive {
        /// The letters' DLQ sequences; none: the oldest `--limit` letters (of `--consumer`).
        sequences: Vec<u64>,
        /// Only the letters of this consumer.
        #[arg(long)]
        consumer: Option<String>,
        /// At most this many when no sequences are given (up to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Remove dead letters whose events were handled some other way.
    Discard {
        /// The letters' DLQ sequences.
        #[arg(required = true)]
        sequences: Vec<u64>,
    },
}

/// One dead letter, as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Letter {
    /// Its DLQ sequence (its id here).
    pub sequence: u64,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// The subject it was first published on.
    pub subject: String,
    /// The stream and sequence it came from.
    pub stream: String,
    /// Its sequence there.
    pub stream_sequence: u64,
    /// `permanent`, `retries_exhausted` or `ack_timeout`.
    pub reason: String,
    /// The error.
    pub error: String,
    /// Deliveries made.
    pub deliveries: u64,
    /// When it was dead-lettered.
    pub time: String,
    /// Whether it is stored under its consumer's own subject (so that consumer's service wrote
    /// it; a letter elsewhere makes claims anyone allowed to dead-letter could make).
    pub from_its_consumer: bool,
}

impl From<&StoredDeadLetter> for Letter {
    fn from(stored: &StoredDeadLetter) -> Self {
        let letter = &stored.letter;
        Self {
            sequence: stored.dlq_sequence,
            consumer: letter.consumer.clone(),
            subject: letter.subject.clone(),
            stream: letter.stream.clone(),
            stream_sequence: letter.sequence,
            reason: letter.reason.as_str().to_owned(),
            error: letter.error.clone(),
            deliveries: letter.deliveries,
            time: letter.time.clone(),
            from_its_consumer: stored.is_from_its_consumer(),
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    /// The letters listed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub letters: Vec<Letter>,
    /// Sequences published again (redrive) or removed (discard).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<u64>,
    /// Sequences that were not there (already redriven or discarded).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gone: Vec<u64>,
    /// Sequences refused, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<(u64, String)>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.letters.is_empty() {
            writeln!(
                f,
                "{:>8}  {:<28} {:<17} {:>5}  subject / error",
                "sequence", "consumer", "reason", "tries"
            )?;
        }
        for l in &self.letters {
            let claimed = if l.from_its_consumer {
                ""
            } else {
                " (not under its consumer's subject: its headers are unverified claims)"
            };
            writeln!(
                f,
                "{:>8}  {:<28} {:<17} {:>5}  {}{claimed}\n{:>62}{}",
                l.sequence, l.consumer, l.reason, l.deliveries, l.subject, "", l.error
            )?;
        }
        if !self.done.is_empty() {
            writeln!(f, "done: {:?}", self.done)?;
        }
        if !self.gone.is_empty() {
            writeln!(f, "no longer there: {:?}", self.gone)?;
        }
        for (sequence, why) in &self.refused {
            writeln!(f, "refused {sequence}: {why}")?;
        }
        if self.letters.is_empty()
            && self.done.is_empty()
            && self.gone.is_empty()
            && self.refused.is_empty()
        {
            write!(f, "no dead letters")?;
        }
        Ok(())
    }
}

/// Dead letters could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLettersFailed {
    /// The settings cannot work.
    #[error(transparent)]
    Settings(#[from] platform::config::NatsConfigError),
    /// The connection could not be set up.
    #[error(transparent)]
    Connect(#[from] bus::ConnectError),
    /// The archive settings cannot work.
    #[error(transparent)]
    ArchiveSettings(#[from] archive::ArchiveConfigError),
    /// NATS could not be reached.
    #[error("cannot reach NATS at {0}")]
    Unreachable(String),
    /// The DLQ could not be read or changed.
    #[error(transparent)]
    DeadLetters(#[from] DeadLetterError),
}

/// Runs `args`. Letters refused are in the outcome (the command then exits with 1).
pub async fn run(args: &DeadLettersArgs) -> Result<Outcome, DeadLettersFailed> {
    let settings = args.nats.stream_settings()?;
    let bus = Bus::connect(&args.nats.bus_config(crate::CONNECTION_NAME)?).await?;
    if !crate::connected(&bus, Duration::from_secs(10)).await {
        return Err(DeadLettersFailed::Unreachable(crate::shown(
            &args.nats.nats_url,
        )));
    }
    let hot_window = Some(settings.max_age).filter(|w| !w.is_zero());
    let archive = Archive::from_args(&args.archive)?;
    let outcome = act(&bus, &args.action, hot_window, archive.as_ref()).await;
    if let Some(archive) = archive {
        archive.close().await;
    }
    bus.drain().await;
    Ok(outcome?)
}

async fn act(
    bus: &Bus,
    action: &Action,
    hot_window: Option<Duration>,
    archive: Option<&Archive>,
) -> Result<Outcome, DeadLetterError> {
    let mut outcome = Outcome::default();
    match action {
        Action::List {
            after,
            limit,
            consumer,
        } => {
            outcome.letters = letters(bus, *after, *limit, consumer.as_deref())
                .await?
                .iter()
                .map(Letter::from)
                .collect();
        }
        Action::Redrive {
            sequences,
            consumer,
            limit,
        } => {
            let sequences = if sequences.is_empty() {
                letters(bus, 0, *limit, consumer.as_deref())
                    .await?
                    .iter()
                    .map(|l| l.dlq_sequence)
                    .collect()
            } else {
                sequences.clone()
            };
            for sequence in sequences {
                let Some(stored) = bus.dead_letter(sequence).await? else {
                    outcome.gone.push(sequence);
                    continue;
                };
                if order_service::takes_back(&stored.letter.consumer) {
                    // Folded into the archive here, never published again: a copy of an order
                    // event would reach inventory and notification too.
                    let Some(archive) = archive else {
                        outcome.refused.push((
                            sequence,
                            format!(
                                "{} is the archive's projection: its letters are folded into the archive, which needs ARCHIVE_URL",
                                stored.letter.consumer
                            ),
                        ));
                        continue;
                    };
                    if !stored.is_from_its_consumer() || !bus.is_verified(&stored).await? {
                        outcome.refused.push((
                            sequence,
                            "not a true copy of a message still in its stream, written by its consumer".into(),
                        ));
                        continue;
                    }
                    let window = hot_window.unwrap_or_default();
                    match order_service::take_back(archive.clone(), window, stored.letter).await {
                        Ok(()) => {
                            bus.discard_dead_letter(sequence).await?;
                            outcome.done.push(sequence);
                        }
                        Err(refused) => outcome.refused.push((sequence, refused.to_string())),
                    }
                    continue;
                }
                match bus.redrive_stored(stored, hot_window).await {
                    Ok(()) => outcome.done.push(sequence),
                    Err(DeadLetterError::Unavailable(e)) => {
                        return Err(DeadLetterError::Unavailable(e));
                    }
                    Err(refused) => outcome.refused.push((sequence, refused.to_string())),
                }
            }
        }
        Action::Discard { sequences } => {
            for &sequence in sequences {
                if bus.dead_letter(sequence).await?.is_none() {
                    outcome.gone.push(sequence);
                    continue;
                }
                bus.discard_dead_letter(sequence).await?;
                outcome.done.push(sequence);
            }
        }
    }
    Ok(outcome)
}

/// Up to `limit` letters after `after`, of `consumer` if given.
async fn letters(
    bus: &Bus,
    after: u64,
    limit: usize,
    consumer: Option<&str>,
) -> Result<Vec<StoredDeadLetter>, DeadLetterError> {
    let limit = limit.clamp(1, MAX_BATCH);
    let mut found = Vec::new();
    let mut after = after;
    loop {
        let page = bus.dead_letters(after, MAX_BATCH).await?;
        let Some(last) = page.last().map(|l| l.dlq_sequence) else {
            return Ok(found);
        };
        after = last;
        for letter in page {
            if consumer.is_none_or(|c| letter.letter.consumer == c) {
                found.push(letter);
                if found.len() == limit {
                    return Ok(found);
                }
            }
        }
    }
}
