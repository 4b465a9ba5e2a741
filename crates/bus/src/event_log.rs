//! The event store: JetStream streams used as the database. Two primitives, and nothing else
//! holds an order's state:
//!
//! - [`EventLog::read`] — one aggregate's history in one round trip: a multi-last direct get
//!   (nats-server ≥ 2.11) over the aggregate's subject filter. The layout puts each event type
//!   of an aggregate on its own subject and writes it at most once, so the last message of each
//!   subject is the whole history.
//! - [`EventLog::append`] — a conditional [`Append`]: stored only if nothing was appended under
//!   the aggregate's filter since the sequence the writer decided on, or at all
//!   (a [`Precondition`]: `Nats-Expected-Last-Subject-Sequence` with `…-Subject`). Two writers can never both
//!   append conflicting transitions: the loser gets [`Appended::Conflict`] with the history as
//!   it is, and decides again on it — [`retry_on_conflict`] runs those rounds, the same way
//!   for every writer.
//!
//! Reads may be answered by any replica of the stream (direct get). That is safe for decisions
//! taken by an append: a history only grows, so a stale read can only be *missing* events, and
//! a write decided on it fails its precondition. A writer that acts *outside* the log on what it
//! read (inventory gives stock back before it appends the release) reads from the stream leader
//! instead ([`EventLog::with_leader_reads`]), which has every acknowledged append.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream::RawMessageErrorKind};
use async_nats::{Client, Message};
use events::layout::History;
use events::{DecodeError, Envelope};
use futures::StreamExt as _;
use tokio::sync::{OnceCell, mpsc};

use crate::handler::HandlerError;
use crate::publish::{Expect, MsgId, PublishError, Published, Publisher};

/// How long a read may take before it counts as unavailable.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Its sequence in the stream.
    pub sequence: u64,
    /// The subject it was appended on.
    pub subject: String,
    /// The event.
    pub envelope: Envelope,
}

/// The condition an [`Append`] is stored on: about the last sequence of its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Nothing was ever appended to the history: the first event of an aggregate (or of a
    /// kind of event, whose history is its own subject).
    CreateOnly,
    /// Nothing was appended to the history after this sequence: the last event of the history
    /// the writer decided on.
    After(u64),
}

impl Precondition {
    /// The history is still as the writer read it, whose last sequence was `last` (0: it read
    /// an empty history).
    pub fn unchanged_since(last: u64) -> Self {
        match last {
            0 => Self::CreateOnly,
            last => Self::After(last),
        }
    }
}

/// A conditional append: an event, the subject it is stored on, the history its
/// [`Precondition`] is about, and any headers to store beside the event's
/// ([`Append::annotated`]).
#[derive(Debug, Clone)]
pub struct Append<'a> {
    precondition: Precondition,
    history: &'a History,
    subject: String,
    envelope: &'a Envelope,
    msg_id: MsgId,
    annotations: Vec<(&'a str, &'a str)>,
}

impl<'a> Append<'a> {
    /// Stores `envelope` on `subject` if `precondition` holds for `history`.
    pub fn new(
        precondition: Precondition,
        history: &'a History,
        subject: String,
        envelope: &'a Envelope,
        msg_id: MsgId,
    ) -> Self {
        Self {
            precondition,
            history,
            subject,
            envelope,
            msg_id,
            annotations: Vec::new(),
        }
    }

    /// Also stores the header `name: value` beside the event's own.
    pub fn annotated(mut self, name: &'a str, value: &'a str) -> Self {
        self.annotations.push((name, value));
        self
    }
}

/// What a conditional append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored now (or by an earlier try of this very append, whose answer was lost).
    Stored(u64),
    /// Another writer appended first: the history as it is now, read after the refusal, to
    /// decide again on.
    Conflict(Vec<Recorded>),
}

/// Most decisions in a row a writer makes on one history, each lost to another writer that
/// appended first, before it gives up ([`retry_on_conflict`]).
pub const DECISION_ROUNDS: usize = 16;

/// What one round of deciding and appending came to.
#[derive(Debug)]
pub enum Round<S, T> {
    /// Finished: stored, or nothing to store.
    Done(T),
    /// Another writer got there first: decide again on this, the state the moved history
    /// folds into.
    Again(S),
}

/// Runs `round` on `state`, and again on the state each lost round returns, until one
/// finishes — at most [`DECISION_ROUNDS`] rounds, then `contended()`. Every writer of the
/// event store decides and appends this way: a round reads nothing it was not given, decides,
/// appends conditionally, and on [`Appended::Conflict`] folds the history it got back.
pub async fn retry_on_conflict<S, T, E, F, Fut>(
    mut state: S,
    contended: impl FnOnce() -> E,
    mut round: F,
) -> Result<T, E>
where
    F: FnMut(S) -> Fut,
    Fut: std::future::Future<Output = Result<Round<S, T>, E>>,
{
    for _ in 0..DECISION_ROUNDS {
        match round(state).await? {
            Round::Done(done) => return Ok(done),
            Round::Again(latest) => state = latest,
        }
    }
    Err(contended())
}

/// Reading a history failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// NATS did not answer in time or answered with an error status.
    #[error("reading {filter} from {stream}: {reason}")]
    Unavailable {
        /// The stream.
        stream: String,
        /// The filter.
        filter: String,
        /// What went wrong.
        reason: String,
    },
    /// A stored event does not decode: a foreign writer or a bug.
    #[error("event {sequence} on {subject} does not decode: {source}")]
    Corrupt {
        /// Its subject.
        subject: String,
        /// Its sequence.
        sequence: u64,
        /// Why.
        #[source]
        source: DecodeError,
    },
}

impl ReadError {
    fn unavailable(history: &History, reason: String) -> Self {
        Self::Unavailable {
            stream: history.stream.clone(),
            filter: history.filter.clone(),
            reason,
        }
    }
}

impl From<ReadError> for HandlerError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Unavailable { .. } => HandlerError::transient(error),
            ReadError::Corrupt { .. } => HandlerError::permanent(error),
        }
    }
}

/// An append failed for a reason other than a moved history.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The publish failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The history could not be read after a refusal.
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl AppendError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Publish(e) => e.is_transient(),
            Self::Read(ReadError::Unavailable { .. }) => true,
            Self::Read(ReadError::Corrupt { .. }) => false,
        }
    }
}

impl From<AppendError> for HandlerError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::Publish(e) => e.into(),
            AppendError::Read(e) => e.into(),
        }
    }
}

/// Reads and conditionally appends aggregates' events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventLog {
    client: Client,
    jetstream: jetstream::Context,
    publisher: Publisher,
    replies: Arc<OnceCell<Arc<Replies>>>,
    leader_reads: bool,
    /// Where the JetStream API answers (`$JS.API`, or an import's prefix in another account).
    api_prefix: Arc<str>,
}

impl EventLog {
    pub(crate) fn new(
        jetstream: jetstream::Context,
        publisher: Publisher,
        api_prefix: &str,
    ) -> Self {
        Self {
            client: jetstream.client(),
            jetstream,
            publisher,
            replies: Arc::new(OnceCell::new()),
            leader_reads: false,
            api_prefix: api_prefix.into(),
        }
    }

    /// This log, reading from the stream leader when `leader` (replicated streams whose reader
    /// acts outside the log on what it reads): one round trip per event instead of one per
    /// history, but never behind an acknowledged append.
    pub fn with_leader_reads(mut self, leader: bool) -> Self {
        self.leader_reads = leader;
        self
    }

    /// The subjects under `history` that hold events, in one stream-info request however
    /// many events each holds — a customer's orders, say, whose ids their `created` subjects
    /// name.
    pub async fn subjects(&self, history: &History) -> Result<Vec<String>, ReadError> {
        let unavailable =
            |e: &dyn std::fmt::Display| ReadError::unavailable(history, e.to_string());
        let stream = self
            .jetstream
            .get_stream_no_info(&history.stream)
            .await
            .map_err(|e| unavailable(&e))?;
        let mut listed = stream
            .info_with_subjects(&history.filter)
            .await
            .map_err(|e| unavailable(&e))?;
        let mut subjects = Vec::new();
        while let Some(subject) = listed.next().await {
            let (subject, _) = subject.map_err(|e| unavailable(&e))?;
            subjects.push(subject);
        }
        Ok(subjects)
    }

    /// Every event of `history`, oldest first; empty if there are none.
    pub async fn read(&self, history: &History) -> Result<Vec<Recorded>, ReadError> {
        if self.leader_reads {
            self.read_from_leader(history).await
        } else {
            self.read_direct(history).await
        }
    }

    async fn read_from_leader(&self, history: &History) -> Result<Vec<Recorded>, ReadError> {
        let unavailable = |reason: String| ReadError::unavailable(history, reason);
        let stream = self
            .jetstream
            .get_stream_no_info(&history.stream)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let mut events = Vec::new();
        let mut next = 1;
        loop {
            match stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(history.filter.clone())
                .send()
                .await
            {
                Ok(message) => {
                    next = message.sequence + 1;
                    let envelope = Envelope::decode(&message.payload).map_err(|source| {
                        ReadError::Corrupt {
                            subject: message.subject.to_string(),
                            sequence: message.sequence,
                            source,
                        }
                    })?;
                    events.push(Recorded {
                        sequence: message.sequence,
                        subject: message.subject.to_string(),
                        envelope,
                    });
                }
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(events),
                Err(e) => return Err(unavailable(e.to_string())),
            }
        }
    }

    async fn read_direct(&self, history: &History) -> Result<Vec<Recorded>, ReadError> {
        let unavailable = |reason: String| ReadError::unavailable(history, reason);
        let replies = self
            .replies
            .get_or_try_init(|| Replies::start(self.client.clone()))
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let (token, mut answers) = replies.open();
        let request = serde_json::json!({ "multi_last": [history.filter] }).to_string();
        let sent = self
            .client
            .publish_with_reply(
                format!("{}.DIRECT.GET.{}", self.api_prefix, history.stream),
                replies.subject(token),
                request.into(),
            )
            .await;
        let collected = async {
            sent.map_err(|e| unavailable(e.to_string()))?;
            let mut events = Vec::new();
            loop {
                let Some(message) = answers.recv().await else {
                    return Err(unavailable("the reply subscription closed".into()));
                };
                match message.status {
                    None => events.push(recorded(message)?),
                    // 204: end of batch; 404: nothing matched.
                    Some(status) if matches!(status.as_u16(), 204 | 404) => break,
                    Some(status) => {
                        return Err(unavailable(format!(
                            "status {status}: {}",
                            message.description.unwrap_or_default()
                        )));
                    }
                }
            }
            events.sort_by_key(|e: &Recorded| e.sequence);
            Ok(events)
        };
        let result = tokio::time::timeout(READ_TIMEOUT, collected)
            .await
            .unwrap_or_else(|_| Err(unavailable(format!("no answer within {READ_TIMEOUT:?}"))));
        replies.close(token);
        result
    }

    /// Stores `append` if its condition holds. If the history moved — or the server
    /// deduplicated the message id — reads it and returns it as [`Appended::Conflict`], unless
    /// it already holds this very event (an earlier try stored it and its answer was lost),
    /// which counts as stored.
    pub async fn append(&self, append: Append<'_>) -> Result<Appended, AppendError> {
        let Append {
            precondition,
            history,
            subject,
            envelope,
            msg_id,
            annotations,
        } = append;
        let expect = Expect {
            filter: history.filter.clone(),
            // The server's expected last subject sequence: 0 is "none ever".
            last: match precondition {
                Precondition::CreateOnly => 0,
                Precondition::After(sequence) => sequence,
            },
        };
        match self
            .publisher
            .append(&subject, envelope, &msg_id, &expect, &annotations)
            .await
        {
            Ok(Published {
                sequence,
                duplicate: false,
                ..
            }) => Ok(Appended::Stored(sequence)),
            // The server already had a message with this `Nats-Msg-Id`: ours from an earlier
            // try, or another writer's event of the same kind — the history says which.
            Ok(Published {
                duplicate: true, ..
            })
            | Err(PublishError::Conflict { .. }) => {
                let events = self.read(history).await?;
                match events.iter().find(|e| e.envelope.id == envelope.id) {
                    Some(own) => Ok(Appended::Stored(own.sequence)),
                    None => Ok(Appended::Conflict(events)),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn recorded(message: Message) -> Result<Recorded, ReadError> {
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let subject = header("Nats-Subject").unwrap_or_default();
    let sequence = header("Nats-Sequence")
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    let envelope = Envelope::decode(&message.payload).map_err(|source| ReadError::Corrupt {
        subject: subject.clone(),
        sequence,
        source,
    })?;
    Ok(Recorded {
        sequence,
        subject,
        envelope,
    })
}

/// One subscription for the answers of every read of this process: a multi-message reply is
/// routed to its reader by the last token of the reply subject.
#[derive(Debug)]
struct Replies {
    prefix: String,
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>,
}

impl Replies {
    async fn start(client: Client) -> Result<Arc<Self>, async_nats::SubscribeError> {
        let prefix = client.new_inbox();
        let mut subscription = client.subscribe(format!("{prefix}.*")).await?;
        let replies = Arc::new(Self {
            prefix,
            next: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
        });
        let router = Arc::downgrade(&replies);
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let Some(replies) = router.upgrade() else {
                    return;
                };
                let token = message
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|t| t.parse::<u64>().ok());
                if let (Some(token), Ok(waiting)) = (token, replies.waiting.lock())
                    && let Some(reader) = waiting.get(&token)
                {
                    let _ = reader.send(message);
                }
            }
        });
        Ok(replies)
    }

    fn subject(&self, token: u64) -> String {
        format!("{}.{token}", self.prefix)
    }

    fn open(&self) -> (u64, mpsc::UnboundedReceiver<Message>) {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::unbounded_channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(token, sender);
        }
        (token, receiver)
    }

    fn close(&self, token: u64) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(&token);
        }
    }
}
