//! Dead letters: where a message goes when it will never be processed, with everything needed
//! to understand and redrive it — the original payload and headers (trace context included),
//! plus where it came from, who gave up on it, how often it was tried, and why.
//!
//! Two roads lead here. A handler's permanent error, an undecodable message, or a transient
//! error on the last delivery is dead-lettered by the consumer before it terms the message. A
//! message whose deliveries all ended in ack timeouts (hung or crashed handler) never reaches a
//! handler's last attempt; the server's MAX_DELIVERIES advisory — captured durably in the
//! `ADVISORIES` stream — is consumed here and the message fetched by sequence. Both roads use
//! the same `Nats-Msg-Id`, so a message is dead-lettered once even if both fire.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use events::names::{self, header};
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use telemetry::metric;

use crate::connect::Bus;
use crate::publish::{MsgId, PublishError, Published};

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The message can never succeed: undecodable, unknown version, or a permanent handler error.
    Permanent,
    /// The handler failed transiently on every allowed delivery.
    RetriesExhausted,
    /// Every delivery ended in an ack timeout: the handler hung or its process died.
    AckTimeout,
}

impl DeadLetterReason {
    /// The value of the `Dlq-Reason` header.
    pub const fn as_str(self) -> &'static str {
        use events::names::dead_letter_reason as reason;
        match self {
            Self::Permanent => reason::PERMANENT,
            Self::RetriesExhausted => reason::RETRIES_EXHAUSTED,
            Self::AckTimeout => reason::ACK_TIMEOUT,
        }
    }

    fn parse(value: &str) -> Option<Self> {
        [Self::Permanent, Self::RetriesExhausted, Self::AckTimeout]
            .into_iter()
            .find(|reason| reason.as_str() == value)
    }
}

/// Where a message was when it was given up on.
#[derive(Debug, Clone)]
pub(crate) struct Origin<'a> {
    pub subject: &'a str,
    pub stream: &'a str,
    pub sequence: u64,
    pub consumer: &'a str,
    pub deliveries: u64,
}

/// A message read back from the `DLQ` stream.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The subject it was first published on.
    pub subject: String,
    /// The stream it was stored in.
    pub stream: String,
    /// Its sequence there.
    pub sequence: u64,
    /// The consumer that gave up.
    pub consumer: String,
    /// Deliveries made.
    pub deliveries: u64,
    /// Why it was given up.
    pub reason: DeadLetterReason,
    /// The error text.
    pub error: String,
    /// When it was dead-lettered (RFC 3339).
    pub time: String,
    /// The original headers plus the `Dlq-*` ones.
    pub headers: HeaderMap,
    /// The original payload, byte for byte.
    pub payload: Bytes,
}

impl DeadLetter {
    /// Reads the `Dlq-*` headers of a message from the `DLQ` stream; `None` if it lacks them.
    pub fn from_parts(headers: HeaderMap, payload: Bytes) -> Option<Self> {
        let text = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        let number = |name: &str| text(name).and_then(|v| v.parse().ok());
        Some(Self {
            subject: text(header::DLQ_SUBJECT)?,
            stream: text(header::DLQ_STREAM)?,
            sequence: number(header::DLQ_SEQUENCE)?,
            consumer: text(header::DLQ_CONSUMER)?,
            deliveries: number(header::DLQ_DELIVERIES)?,
            reason: text(header::DLQ_REASON)
                .as_deref()
                .and_then(DeadLetterReason::parse)?,
            error: text(header::DLQ_ERROR)?,
            time: text(header::DLQ_TIME)?,
            headers,
            payload,
        })
    }
}

/// The `Nats-Msg-Id` of a dead letter: one per (stream, sequence, consumer), whichever road
/// it takes.
fn dead_letter_id(origin: &Origin<'_>) -> MsgId {
    MsgId::raw(format!(
        "dlq:{}:{}:{}",
        origin.stream, origin.sequence, origin.consumer
    ))
}

/// Publishes the dead letter of a message and waits for its PubAck.
pub(crate) async fn publish(
    bus: &Bus,
    origin: &Origin<'_>,
    original_headers: Option<&HeaderMap>,
    payload: Bytes,
    reason: DeadLetterReason,
    error: &str,
) -> Result<Published, PublishError> {
    let mut headers = HeaderMap::new();
    for (name, values) in original_headers.into_iter().flat_map(HeaderMap::iter) {
        let name_str: &str = name.as_ref();
        // The dead letter needs its own dedupe id, and publish expectations of the original
        // would make the dead-letter publish fail.
        if name_str.eq_ignore_ascii_case(header::MSG_ID) {
            if let Some(id) = values.first() {
                headers.insert(header::DLQ_MSG_ID, id.clone());
            }
            continue;
        }
        if name_str.to_ascii_lowercase().starts_with("nats-expected") {
            continue;
        }
        for value in values {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(header::DLQ_SUBJECT, header_value(origin.subject));
    headers.insert(header::DLQ_STREAM, header_value(origin.stream));
    headers.insert(header::DLQ_SEQUENCE, origin.sequence.to_string().as_str());
    headers.insert(header::DLQ_CONSUMER, header_value(origin.consumer));
    headers.insert(
        header::DLQ_DELIVERIES,
        origin.deliveries.to_string().as_str(),
    );
    headers.insert(header::DLQ_REASON, reason.as_str());
    headers.insert(header::DLQ_ERROR, header_value(error));
    headers.insert(header::DLQ_TIME, chrono::Utc::now().to_rfc3339().as_str());

    let subject = names::subject::dead_letter(origin.consumer, origin.subject);
    let result = bus
        .publisher()
        // No injection: the original trace context stays as the producer sent it.
        .publish_raw(&subject, &dead_letter_id(origin), headers, payload, None)
        .await;
    match &result {
        Ok(_) => {
            tracing::error!(
                subject = origin.subject,
                stream = origin.stream,
                sequence = origin.sequence,
                consumer = origin.consumer,
                deliveries = origin.deliveries,
                reason = reason.as_str(),
                error,
                "message dead-lettered"
            );
            metrics::counter!(
                metric::DEAD_LETTERS,
                "consumer" => origin.consumer.to_owned(),
                "reason" => reason.as_str(),
            )
            .increment(1);
        }
        Err(e) => tracing::error!(
            subject = origin.subject,
            sequence = origin.sequence,
            error = %e,
            "dead-lettering failed; the message will be retried"
        ),
    }
    result
}

/// A header value: no control characters (they would break the protocol line) and at most
/// 1 KiB, cut on a character boundary.
fn header_value(text: &str) -> HeaderValue {
    const MAX: usize = 1024;
    let mut clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() > MAX {
        let cut = (0..=MAX)
            .rev()
            .find(|&i| clean.is_char_boundary(i))
            .unwrap_or(0);
        clean.truncate(cut);
    }
    HeaderValue::from(clean.as_str())
}

/// The body of a `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES` advisory.
#[derive(Debug, Deserialize)]
struct MaxDeliveries {
    stream: String,
    consumer: String,
    stream_seq: u64,
    deliveries: u64,
}

/// Dead-letters the messages that `consumer` on `stream` gave up on through ack timeouts, until
/// `shutdown`. Reads the captured advisories through a durable consumer of its own, so none is
/// missed while no process runs.
/// The durable consumer that watches `consumer`'s max-deliveries advisories on `stream`.
pub(crate) fn watcher_config(stream: &str, consumer: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(names::durable::max_deliveries_watcher(consumer, stream)),
        filter_subject: format!(
            "{}.{stream}.{consumer}",
            names::subject::MAX_DELIVERIES_ADVISORY_PREFIX
        ),
        ack_wait: Duration::from_secs(30),
        // Never give up on an advisory: it is the last record that a message died.
        max_deliver: -1,
        ..Default::default()
    }
}

pub(crate) async fn watch_max_deliveries(
    bus: Bus,
    stream: String,
    consumer: String,
    shutdown: CancellationToken,
) -> Result<(), jetstream::stream::ConsumerError> {
    // Provisioned with the consumer it watches (`Consumer::provision`), checked by `bind`.
    let advisories: jetstream::consumer::PullConsumer = bus
        .jetstream()
        .get_consumer_from_stream(
            names::durable::max_deliveries_watcher(&consumer, &stream),
            names::stream::ADVISORIES,
        )
        .await?;
    let source = bus.jetstream().get_stream_no_info(&stream).await;
    let source = match source {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%stream, error = %e, "cannot open stream for dead-lettering");
            return Ok(());
        }
    };
    loop {
        let mut messages = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            messages = advisories.messages() => match messages {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(%consumer, error = %e, "cannot pull max-deliveries advisories");
                    sleep_or_shutdown(Duration::from_secs(1), &shutdown).await;
                    continue;
                }
            },
        };
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = messages.next() => match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::warn!(%consumer, error = %e, "advisory stream error");
                        break;
                    }
                    None => break,
                },
            };
            let ack = match serde_json::from_slice::<MaxDeliveries>(&message.payload) {
                Err(e) => {
                    tracing::error!(error = %e, "unreadable max-deliveries advisory; dropping it");
                    AckKind::Term
                }
                // The filter names this stream; a foreign advisory would make `rescue` fetch
                // another stream's sequence from this one.
                Ok(advisory) if advisory.stream != stream => {
                    tracing::error!(%stream, advisory = %advisory.stream, "max-deliveries advisory of another stream; dropping it");
                    AckKind::Term
                }
                Ok(advisory) => match rescue(&bus, &source, &advisory).await {
                    Ok(()) => AckKind::Ack,
                    Err(()) => AckKind::Nak(Some(Duration::from_secs(1))),
                },
            };
            if let Err(e) = message.ack_with(ack).await {
                tracing::warn!(error = %e, "cannot settle a max-deliveries advisory");
            }
        }
    }
}

/// Fetches the message an advisory names and dead-letters it.
async fn rescue(
    bus: &Bus,
    source: &jetstream::stream::Stream<()>,
    advisory: &MaxDeliveries,
) -> Result<(), ()> {
    let message = match source.get_raw_message(advisory.stream_seq).await {
        Ok(m) => m,
        Err(e)
            if matches!(
                e.kind(),
                jetstream::stream::RawMessageErrorKind::NoMessageFound
            ) =>
        {
            tracing::error!(
                stream = %advisory.stream,
                sequence = advisory.stream_seq,
                "message named by a max-deliveries advisory is gone from its stream"
            );
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(error = %e, sequence = advisory.stream_seq, "cannot fetch message to dead-letter");
            return Err(());
        }
    };
    let origin = Origin {
        subject: message.subject.as_str(),
        stream: &advisory.stream,
        sequence: advisory.stream_seq,
        consumer: &advisory.consumer,
        deliveries: advisory.deliveries,
    };
    let error = format!(
        "delivered {} times without being settled (handler hung, crashed, or exceeded ack_wait)",
        advisory.deliveries
    );
    publish(
        bus,
        &origin,
        Some(&message.headers),
        message.payload.clone(),
        DeadLetterReason::AckTimeout,
        &error,
    )
    .await
    .map(|_| ())
    .map_err(|_| ())
}

async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}

/// A dead letter as stored in the `DLQ` stream, with its sequence there.
#[derive(Debug, Clone)]
pub struct StoredDeadLetter {
    /// Its sequence in the `DLQ` stream (its id for inspection and redrive).
    pub dlq_sequence: u64,
    /// The subject it was stored under.
    pub dlq_subject: String,
    /// The letter.
    pub letter: DeadLetter,
}

impl StoredDeadLetter {
    /// How long ago its order was placed (order ids are UUID v7, so they carry it), or for a
    /// payload that names no order, how old its event is; `None` for a payload that is no
    /// event.
    pub fn age(&self) -> Option<Duration> {
        let event = events::Envelope::decode(&self.letter.payload).ok()?;
        let placed = event
            .event
            .order_id()
            .0
            .get_timestamp()
            .map(|ts| {
                let (secs, nanos) = ts.to_unix();
                std::time::UNIX_EPOCH + Duration::new(secs, nanos)
            })
            .unwrap_or_else(|| std::time::SystemTime::from(event.time));
        Some(
            std::time::SystemTime::now()
                .duration_since(placed)
                .unwrap_or(Duration::ZERO),
        )
    }

    /// Whether it was stored under the subject of the consumer its headers name, for the
    /// subject they name: only that consumer's service may publish there, so the letter is
    /// that consumer's own (the headers alone are claims anyone who may publish a dead letter
    /// can make).
    pub fn is_from_its_consumer(&self) -> bool {
        self.dlq_subject == names::subject::dead_letter(&self.letter.consumer, &self.letter.subject)
    }
}

/// Reading or redriving dead letters failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// NATS did not answer.
    #[error("dead-letter stream unavailable: {0}")]
    Unavailable(String),
    /// The message at that sequence is not a dead letter (no `Dlq-*` headers).
    #[error("DLQ message {0} is not a dead letter")]
    NotADeadLetter(u64),
    /// Its original subject is not an event subject of its original stream: a letter that
    /// did not come from a consumer of ours, and is not published anywhere.
    #[error(
        "DLQ message {sequence} cannot be redriven: {subject:?} is not an event subject of stream {stream:?}"
    )]
    NotRedrivable {
        /// Its DLQ sequence.
        sequence: u64,
        /// The subject it names.
        subject: String,
        /// The stream it names.
        stream: String,
    },
    /// The message it says it came from is not in its stream as it says: a forged letter (a
    /// service may write any `Dlq-*` header into the letters it publishes), or one whose
    /// original has left the stream. Kept for inspection, never published.
    #[error(
        "DLQ message {sequence} cannot be redriven: {stream} holds no message {subject:?} with this payload at sequence {stream_sequence}"
    )]
    Unverified {
        /// Its DLQ sequence.
        sequence: u64,
        /// The stream it names.
        stream: String,
        /// The sequence there it names.
        stream_sequence: u64,
        /// The subject it names.
        subject: String,
    },
    /// Its order is older than the hot window allows: the consumers it would reach decide on
    /// histories that have left NATS by now, and would take it for new (reserve its stock
    /// again, notify again).
    #[error(
        "DLQ message {sequence} cannot be redriven: its order is {}s old, and only events of orders younger than {}s (most of the hot window) are published again — the history its consumers would decide on has left NATS",
        age.as_secs(),
        limit.as_secs()
    )]
    TooOld {
        /// Its DLQ sequence.
        sequence: u64,
        /// How old its order (or, for a payload that names none, its event) is.
        age: Duration,
        /// The oldest an event may be to be published again.
        limit: Duration,
    },
    /// Republishing it failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Whether a stream answered that it holds no message at that sequence.
fn is_missing(error: &jetstream::stream::RawMessageError) -> bool {
    matches!(
        error.kind(),
        jetstream::stream::RawMessageErrorKind::NoMessageFound
    )
}

impl Bus {
    async fn dlq(&self) -> Result<jetstream::stream::Stream, DeadLetterError> {
        self.jetstream()
            .get_stream(names::stream::DLQ)
            .await
            .map_err(|e| DeadLetterError::Unavailable(e.to_string()))
    }

    /// Up to `limit` dead letters, oldest first, starting after DLQ sequence `after`.
    pub async fn dead_letters(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>, DeadLetterError> {
        let mut dlq = self.dlq().await?;
        let state = dlq
            .info()
            .await
            .map_err(|e| DeadLetterError::Unavailable(e.to_string()))?
            .state
            .clone();
        let mut letters = Vec::new();
        let mut sequence = state.first_sequence.max(after.saturating_add(1));
        while letters.len() < limit && sequence <= state.last_sequence {
            if let Some(letter) = self.dead_letter(sequence).await? {
                letters.push(letter);
            }
            sequence += 1;
        }
        Ok(letters)
    }

    /// The dead letter at DLQ sequence `sequence`, if it is still there.
    pub async fn dead_letter(
        &self,
        sequence: u64,
    ) -> Result<Option<StoredDeadLetter>, DeadLetterError> {
        // Stream sequences start at 1; the server answers 0 with an error, not "no message".
        if sequence == 0 {
            return Ok(None);
        }
        let dlq = self.dlq().await?;
        match dlq.get_raw_message(sequence).await {
            Ok(message) => DeadLetter::from_parts(message.headers, message.payload)
                .map(|letter| {
                    Some(StoredDeadLetter {
                        dlq_sequence: sequence,
                        dlq_subject: message.subject.to_string(),
                        letter,
                    })
                })
                .ok_or(DeadLetterError::NotADeadLetter(sequence)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(DeadLetterError::Unavailable(e.to_string())),
        }
    }

    /// Publishes dead letter `sequence` again on its original subject — its payload, with the
    /// original message's [`header::REPLAYED`] headers (trace context included) — then removes
    /// it from the DLQ. `false`
    /// if it is no longer there (already redriven). Safe to repeat after a crash: the
    /// republish carries `Nats-Msg-Id` `redrive:<sequence>`, so the server stores it once.
    ///
    /// Only what is verifiably a message of its stream is published again: the message the
    /// letter names must still be there with the same subject and payload
    /// ([`DeadLetterError::Unverified`] otherwise — a letter's headers are claims). With a
    /// `hot_window`, a letter whose order was placed longer ago than 90% of it is refused
    /// ([`DeadLetterError::TooOld`]): the copy would reach every consumer of its subject, and
    /// theirs is a history of the hot window only.
    pub async fn redrive(
        &self,
        sequence: u64,
        hot_window: Option<Duration>,
    ) -> Result<bool, DeadLetterError> {
        match self.dead_letter(sequence).await? {
            Some(stored) => self.redrive_stored(stored, hot_window).await.map(|()| true),
            None => Ok(false),
        }
    }

    /// [`Bus::redrive`] of a letter already read.
    pub async fn redrive_stored(
        &self,
        stored: StoredDeadLetter,
        hot_window: Option<Duration>,
    ) -> Result<(), DeadLetterError> {
        let sequence = stored.dlq_sequence;
        if let Some(window) = hot_window.filter(|w| !w.is_zero()) {
            let limit = window.mul_f64(0.9);
            if let Some(age) = stored.age().filter(|age| *age > limit) {
                return Err(DeadLetterError::TooOld {
                    sequence,
                    age,
                    limit,
                });
            }
        }
        // Anyone who can publish to the DLQ can write these headers: redrive only onto the
        // event subjects of the stream the letter says it came from, never onto a KV bucket,
        // another stream or a reply subject.
        if !events::layout::stream_holds(&stored.letter.stream, &stored.letter.subject) {
            return Err(DeadLetterError::NotRedrivable {
                sequence,
                subject: stored.letter.subject.clone(),
                stream: stored.letter.stream.clone(),
            });
        }
        let Some(original) = self.original_of(&stored).await? else {
            return Err(DeadLetterError::Unverified {
                sequence,
                stream: stored.letter.stream.clone(),
                stream_sequence: stored.letter.sequence,
                subject: stored.letter.subject.clone(),
            });
        };
        // The original's headers, not the letter's (which its publisher wrote), and of those
        // only the ones an event carries: its type and version, and its trace context. A
        // conditional append's precondition held once; the copy is appended as it is (readers
        // fold an event id once).
        let mut headers = HeaderMap::new();
        for name in header::REPLAYED {
            for value in original.get_all(name) {
                headers.append(name, value.clone());
            }
        }
        let span = tracing::info_span!("redrive", dlq.sequence = sequence, subject = %stored.letter.subject);
        self.publisher()
            .publish_raw(
                &stored.letter.subject,
                &MsgId::raw(format!("redrive:{sequence}")),
                headers,
                stored.letter.payload.clone(),
                None,
            )
            .instrument(span)
            .await?;
        self.discard_dead_letter(sequence).await?;
        tracing::info!(sequence, subject = %stored.letter.subject, "dead letter redriven");
        Ok(())
    }

    /// Whether the message `stored` names is in its stream, at its sequence, with its subject
    /// and payload byte for byte — the letter is then a true copy, whoever published it.
    /// `false` once that message has left the stream.
    pub async fn is_verified(&self, stored: &StoredDeadLetter) -> Result<bool, DeadLetterError> {
        Ok(self.original_of(stored).await?.is_some())
    }

    /// The headers of the message `stored` names, if it is in its stream with the letter's
    /// subject and payload (see [`Bus::is_verified`]).
    async fn original_of(
        &self,
        stored: &StoredDeadLetter,
    ) -> Result<Option<HeaderMap>, DeadLetterError> {
        let letter = &stored.letter;
        if !events::layout::stream_holds(&letter.stream, &letter.subject) {
            return Ok(None);
        }
        let stream = self
            .jetstream()
            .get_stream_no_info(&letter.stream)
            .await
            .map_err(|e| DeadLetterError::Unavailable(e.to_string()))?;
        match stream.get_raw_message(letter.sequence).await {
            Ok(original)
                if original.subject.as_str() == letter.subject
                    && original.payload == letter.payload =>
            {
                Ok(Some(original.headers))
            }
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(DeadLetterError::Unavailable(e.to_string())),
        }
    }

    /// Removes dead letter `sequence` once its event was handled some other way (taken back
    /// by the consumer that gave it up), counted as redriven. Removing it again is harmless.
    pub async fn discard_dead_letter(&self, sequence: u64) -> Result<(), DeadLetterError> {
        let dlq = self.dlq().await?;
        if let Err(e) = dlq.delete_message(sequence).await {
            // Already gone (a repeated redrive): done.
            if self.dead_letter(sequence).await?.is_some() {
                return Err(DeadLetterError::Unavailable(e.to_string()));
            }
            return Ok(());
        }
        metrics::counter!(metric::DEAD_LETTERS_REDRIVEN).increment(1);
        Ok(())
    }
}
