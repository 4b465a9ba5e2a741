//! The handler contract: what a consumer hands a service ([`Delivery`]), what the service
//! answers ([`HandlerError`] decides retry or dead letter), and how long a delivery is still the
//! handler's to act on ([`Lease`]). A leaf module: consuming, publishing and storing import it,
//! it imports none of them.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use events::{Envelope, OrderKey};

/// Boxed error a handler reports.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a handler failed, which decides what happens to the message.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying later (NATS or a downstream briefly unavailable, a conflict storm): the
    /// message is nak'ed with a growing delay, and dead-lettered after the last delivery.
    #[error("transient: {0}")]
    Transient(#[source] BoxError),
    /// Worth retrying, but not sooner than `after`: what it waits for (another event, another
    /// consumer catching up) takes that long, and retrying sooner would only spend deliveries.
    #[error("transient, retry after {after:?}: {error}")]
    Wait {
        /// The least delay before the next delivery.
        after: std::time::Duration,
        /// Why.
        #[source]
        error: BoxError,
    },
    /// Can never succeed (invalid content, a broken invariant): dead letter now.
    #[error("permanent: {0}")]
    Permanent(#[source] BoxError),
}

impl HandlerError {
    /// A transient failure.
    pub fn transient(error: impl Into<BoxError>) -> Self {
        Self::Transient(error.into())
    }

    /// A transient failure not worth retrying sooner than `after`.
    pub fn wait(after: std::time::Duration, error: impl Into<BoxError>) -> Self {
        Self::Wait {
            after,
            error: error.into(),
        }
    }

    /// A permanent failure.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self::Permanent(error.into())
    }
}

/// One delivery of a decoded event to a handler.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event, upcast to its current version.
    pub envelope: Envelope,
    /// The order the event belongs to, read from its subject.
    pub key: OrderKey,
    /// The subject it was published on.
    pub subject: String,
    /// Its sequence in the stream.
    pub stream_sequence: u64,
    /// Which delivery this is, from 1 — counting one before a restore for a message that a
    /// consumer restored part-way delivers again (it may have been handled then).
    pub attempt: u64,
    /// Whether a transient failure now sends the message to the dead-letter stream.
    pub is_last_attempt: bool,
    /// Whether this delivery is still ours: check it right before a write that must not be
    /// repeated by a stale attempt (see [`Lease`]).
    pub lease: Lease,
}

impl Delivery {
    /// Whether an earlier delivery of this message may have acted already: then read before
    /// writing; a first delivery may let a conditional write alone decide.
    pub fn is_redelivery(&self) -> bool {
        self.attempt > 1
    }
}

/// How long this process may still act on a delivery. The server redelivers a message only
/// after its ack window passed without an ack or a progress ack; so while this process's last
/// *confirmed* progress ack (or the delivery itself) is younger than the window, no other
/// replica can hold the message. A process that was frozen (SIGSTOP, a long stall, a partition)
/// wakes up with an expired lease and must not write — nor settle: the server applies an ack
/// or a nak from an old delivery to the current one. Checked inside a conditional write's
/// decision, after the read, it makes a stale attempt harmless.
#[derive(Debug, Clone)]
pub struct Lease {
    renewed: Arc<std::sync::Mutex<Instant>>,
    window: Duration,
}

impl Lease {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            renewed: Arc::new(std::sync::Mutex::new(Instant::now())),
            window,
        }
    }

    /// A lease that never expires, for handlers called outside a consumer (tests, tools).
    pub fn unbounded() -> Self {
        Self::new(Duration::MAX)
    }

    /// A lease that has run out: a delivery whose process was frozen past the ack window while
    /// the server handed the message to another (for tests of a handler's stale attempts).
    pub fn expired() -> Self {
        Self::new(Duration::ZERO)
    }

    /// Extends a lease that is still held. An expired lease stays expired: the server may
    /// accept a late progress ack for a message it has already redelivered elsewhere, and that
    /// must not give the stale attempt its message back.
    ///
    /// `sent` is when the progress ack left: the server's new deadline counts from its
    /// arrival, which is later, so counting from the sending keeps the lease on the safe side
    /// however slow the confirmation is.
    pub(crate) fn renew(&self, sent: Instant) {
        if let Ok(mut renewed) = self.renewed.lock()
            && renewed.elapsed() < self.window
            && sent > *renewed
        {
            *renewed = sent;
        }
    }

    /// Whether the delivery is still this process's to act on.
    pub fn is_held(&self) -> bool {
        self.renewed
            .lock()
            .map(|renewed| renewed.elapsed() < self.window)
            .unwrap_or(false)
    }

    /// `Ok` while held; else the transient error that hands the message to its newer attempt.
    pub fn check(&self) -> Result<(), HandlerError> {
        if self.is_held() {
            Ok(())
        } else {
            Err(HandlerError::transient(
                "delivery lease expired: another attempt owns this message now",
            ))
        }
    }
}

/// Processes deliveries. Must be idempotent: any delivery may be a redelivery.
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery.
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(delivery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_lease_is_not_renewed_by_a_late_progress_ack() {
        let lease = Lease::new(Duration::from_millis(20));
        assert!(lease.is_held());
        std::thread::sleep(Duration::from_millis(40));
        lease.renew(Instant::now());
        assert!(!lease.is_held(), "a stale attempt got its message back");
        assert!(matches!(lease.check(), Err(HandlerError::Transient(_))));
    }

    #[test]
    fn a_held_lease_is_extended_by_progress() {
        let lease = Lease::new(Duration::from_millis(200));
        std::thread::sleep(Duration::from_millis(120));
        lease.renew(Instant::now());
        std::thread::sleep(Duration::from_millis(120));
        assert!(lease.is_held());
    }
}
