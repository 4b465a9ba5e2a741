//! A durable pull consumer's settings, and the checks that refuse nonsense at start-up (a bare
//! nak, a backoff list the server rejects, progress acks slower than the ack window, …).

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use events::topology::Subscription;
use events::{Partitions, layout};

/// A durable pull consumer's settings. Checked by [`ConsumerSpec::validate`] before use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The stream to consume.
    pub stream: String,
    /// The durable name: one per service per purpose, shared by the service's replicas.
    pub durable: String,
    /// Subjects to receive (all of the stream when empty).
    pub filter_subjects: Vec<String>,
    /// How long the server waits for a settlement before redelivering.
    pub ack_wait: Duration,
    /// Deliveries before the message is given up on (and dead-lettered).
    pub max_deliver: i64,
    /// Server-side redelivery schedule after ack timeouts; replaces `ack_wait` when set.
    pub backoff: Vec<Duration>,
    /// Nak delay after the first transient failure; doubles on each further delivery.
    pub nak_delay: Duration,
    /// Upper bound of the nak delay.
    pub max_nak_delay: Duration,
    /// Messages delivered but not yet settled, across all replicas.
    pub max_ack_pending: i64,
    /// Handlers running at once in this process.
    pub concurrency: usize,
    /// Most messages requested per pull.
    pub max_batch: usize,
    /// How long an idle pull waits for messages before asking again.
    pub pull_expiry: Duration,
    /// Progress-ack interval for a running handler; must be shorter than the ack window.
    pub progress_every: Duration,
    /// A handler still running after this long is abandoned and counted as a transient
    /// failure — otherwise its progress acks would keep a hung handler's message forever.
    pub handler_timeout: Duration,
}

/// Deliveries of a message before it is dead-lettered, by default: with the default nak
/// delays (250 ms doubling to 30 s) a message that keeps failing is retried for 6.5 minutes,
/// longer than the 2–2.5 minutes the fault suite measured for a cluster to recover from node
/// loss (RELIABILITY.md) — an outage must not turn into dead letters and pending orders.
pub const DEFAULT_MAX_DELIVER: i64 = 20;

impl ConsumerSpec {
    /// A spec with production defaults: ack_wait 30 s, [`DEFAULT_MAX_DELIVER`] deliveries, nak
    /// 250 ms doubling to 30 s, 32 handlers, 1000 pending.
    pub fn new(
        stream: impl Into<String>,
        durable: impl Into<String>,
        filter_subjects: &[&str],
    ) -> Self {
        Self {
            stream: stream.into(),
            durable: durable.into(),
            filter_subjects: filter_subjects.iter().map(|s| (*s).to_owned()).collect(),
            ack_wait: Duration::from_secs(30),
            max_deliver: DEFAULT_MAX_DELIVER,
            backoff: Vec::new(),
            nak_delay: Duration::from_millis(250),
            max_nak_delay: Duration::from_secs(30),
            max_ack_pending: 1000,
            concurrency: 32,
            max_batch: 32,
            pull_expiry: Duration::from_secs(5),
            progress_every: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(60),
        }
    }

    /// One spec per partition for `subscription`'s durable, consuming its kinds — events of
    /// one domain, so of one stream per partition — each filtered to its partition's subjects.
    pub fn per_partition(subscription: &Subscription, partitions: Partitions) -> Vec<Self> {
        let (durable, kinds) = (subscription.durable, subscription.kinds);
        let Some(domain) = subscription.domain() else {
            return Vec::new();
        };
        partitions
            .all()
            .map(|p| Self {
                filter_subjects: kinds
                    .iter()
                    .map(|kind| layout::consumer_filter(*kind, p))
                    .collect(),
                ..Self::new(domain.stream(p, partitions), durable, &[])
            })
            .collect()
    }

    /// Refuses settings that would misbehave at run time, with a message that says which.
    pub fn validate(&self) -> Result<(), SpecError> {
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !token(&self.durable) {
            return Err(SpecError::DurableName(self.durable.clone()));
        }
        if self.max_deliver < 1 {
            return Err(SpecError::MaxDeliver(self.max_deliver));
        }
        if !self.backoff.is_empty() && self.backoff.len() as i64 >= self.max_deliver {
            return Err(SpecError::BackoffTooLong {
                steps: self.backoff.len(),
                max_deliver: self.max_deliver,
            });
        }
        if self.backoff.iter().any(Duration::is_zero) || self.ack_wait.is_zero() {
            return Err(SpecError::ZeroAckWindow);
        }
        if self.nak_delay.is_zero() {
            return Err(SpecError::ZeroNakDelay);
        }
        if self.max_nak_delay < self.nak_delay {
            return Err(SpecError::NakDelayOrder {
                nak_delay: self.nak_delay,
                max: self.max_nak_delay,
            });
        }
        if self.concurrency == 0 || self.max_batch == 0 {
            return Err(SpecError::ZeroConcurrency);
        }
        if self.max_ack_pending < self.concurrency as i64 {
            return Err(SpecError::AckPendingBelowConcurrency {
                max_ack_pending: self.max_ack_pending,
                concurrency: self.concurrency,
            });
        }
        let window = self.shortest_ack_window();
        if self.progress_every.is_zero() || self.progress_every >= window {
            return Err(SpecError::ProgressInterval {
                progress_every: self.progress_every,
                window,
            });
        }
        if self.handler_timeout.is_zero() {
            return Err(SpecError::ZeroHandlerTimeout);
        }
        if self.pull_expiry < Duration::from_millis(100) {
            return Err(SpecError::PullExpiry(self.pull_expiry));
        }
        Ok(())
    }

    /// The shortest time the server waits for an ack on any delivery.
    pub(super) fn shortest_ack_window(&self) -> Duration {
        self.backoff
            .iter()
            .copied()
            .chain([self.ack_wait])
            .min()
            .unwrap_or(self.ack_wait)
    }

    /// How long a message that fails transiently on every delivery is retried before it is
    /// dead-lettered: the sum of the nak delays between its deliveries (server backoff and
    /// handler time not counted, so a lower bound).
    pub fn retry_budget(&self) -> Duration {
        let attempts = u64::try_from(self.max_deliver).unwrap_or(0);
        (1..attempts)
            .map(|attempt| self.nak_delay_after(attempt))
            .sum()
    }

    /// How many deliveries of a message that fails at once on each fit in `span`: the
    /// inverse of [`ConsumerSpec::retry_budget`] (at least 1, at most 65535).
    pub fn deliveries_within(&self, span: Duration) -> i64 {
        self.deliveries_within_spending(span, Duration::ZERO)
    }

    /// How many deliveries of a message fit in `span` when each also spends `each` (a handler
    /// that waits that long before it fails) before its nak delay (at least 1, at most 65535).
    pub fn deliveries_within_spending(&self, span: Duration, each: Duration) -> i64 {
        let mut spent = each;
        let mut deliveries: u64 = 1;
        while deliveries < u64::from(u16::MAX) {
            spent += self.nak_delay_after(deliveries) + each;
            if spent > span {
                break;
            }
            deliveries += 1;
        }
        deliveries as i64
    }

    /// The nak delay after the `attempt`-th delivery failed transiently.
    pub(super) fn nak_delay_after(&self, attempt: u64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(20) as u32;
        self.nak_delay
            .saturating_mul(1 << doublings)
            .min(self.max_nak_delay)
    }

    /// What differs between the consumer the server holds (`provisioned`) and this spec, in
    /// words; `None` if they agree on everything the server enforces.
    pub(super) fn drift(&self, provisioned: &jetstream::consumer::Config) -> Option<String> {
        let expected = self.server_config();
        let sorted = |subjects: &[String]| {
            let mut subjects = subjects.to_vec();
            subjects.sort();
            subjects
        };
        let (have, want) = (
            sorted(&provisioned.filter_subjects),
            sorted(&expected.filter_subjects),
        );
        let mut differences = Vec::new();
        if have != want && !(want.len() == 1 && provisioned.filter_subject == want[0]) {
            differences.push(format!("filter subjects {have:?}, not {want:?}"));
        }
        let (p, e) = (provisioned, &expected);
        for (what, have, want) in [
            (
                "ack wait",
                format!("{:?}", p.ack_wait),
                format!("{:?}", e.ack_wait),
            ),
            (
                "deliveries",
                p.max_deliver.to_string(),
                e.max_deliver.to_string(),
            ),
            (
                "backoff",
                format!("{:?}", p.backoff),
                format!("{:?}", e.backoff),
            ),
            (
                "max ack pending",
                p.max_ack_pending.to_string(),
                e.max_ack_pending.to_string(),
            ),
            (
                "ack policy",
                format!("{:?}", p.ack_policy),
                format!("{:?}", e.ack_policy),
            ),
        ] {
            if have != want {
                differences.push(format!("{what} {have}, not {want}"));
            }
        }
        (!differences.is_empty()).then(|| differences.join(", "))
    }

    pub(super) fn server_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.durable.clone()),
            filter_subjects: self.filter_subjects.clone(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            backoff: self.backoff.clone(),
            max_ack_pending: self.max_ack_pending,
            ..Default::default()
        }
    }
}

/// Consumer settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The durable name is unusable in subjects.
    #[error("durable name {0:?} must be non-empty and use only A-Z, a-z, 0-9, '_' and '-'")]
    DurableName(String),
    /// `max_deliver` is not positive.
    #[error(
        "max_deliver must be at least 1 (got {0}); unlimited redelivery would never dead-letter"
    )]
    MaxDeliver(i64),
    /// The backoff schedule is not shorter than `max_deliver`.
    #[error(
        "backoff has {steps} steps but max_deliver is {max_deliver}; \
         the server needs max_deliver > steps"
    )]
    BackoffTooLong {
        /// Steps in the schedule.
        steps: usize,
        /// The configured max_deliver.
        max_deliver: i64,
    },
    /// An ack window of zero.
    #[error("ack_wait and every backoff step must be positive")]
    ZeroAckWindow,
    /// A zero nak delay would burn every delivery in milliseconds.
    #[error("nak_delay must be positive: a bare nak is redelivered at once and burns max_deliver")]
    ZeroNakDelay,
    /// The nak delay bounds are reversed.
    #[error("max_nak_delay {max:?} is shorter than nak_delay {nak_delay:?}")]
    NakDelayOrder {
        /// First delay.
        nak_delay: Duration,
        /// Upper bound.
        max: Duration,
    },
    /// No handler could ever run.
    #[error("concurrency and max_batch must be at least 1")]
    ZeroConcurrency,
    /// `max_ack_pending` would cap concurrency below what was asked.
    #[error("max_ack_pending {max_ack_pending} is below concurrency {concurrency}")]
    AckPendingBelowConcurrency {
        /// Configured max_ack_pending.
        max_ack_pending: i64,
        /// Configured concurrency.
        concurrency: usize,
    },
    /// Progress acks would come too late (or never).
    #[error(
        "progress_every {progress_every:?} must be positive and shorter than \
         the shortest ack window {window:?}"
    )]
    ProgressInterval {
        /// Configured interval.
        progress_every: Duration,
        /// Shortest ack window.
        window: Duration,
    },
    /// Every handler would time out at once.
    #[error("handler_timeout must be positive")]
    ZeroHandlerTimeout,
    /// Pulls that expire almost at once would spin.
    #[error("pull_expiry {0:?} is too short (at least 100ms)")]
    PullExpiry(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deliveries_within_a_span_are_those_whose_retry_budget_fits_it() {
        let spec = ConsumerSpec::new("S", "d", &[]);
        for span in [0, 1, 60, 3600, 12 * 3600] {
            let span = Duration::from_secs(span);
            let deliveries = spec.deliveries_within(span);
            let fits = ConsumerSpec {
                max_deliver: deliveries,
                ..spec.clone()
            };
            let over = ConsumerSpec {
                max_deliver: deliveries + 1,
                ..spec.clone()
            };
            assert!(fits.retry_budget() <= span, "{span:?}");
            assert!(over.retry_budget() > span, "{span:?}");
        }
    }

    fn spec() -> ConsumerSpec {
        ConsumerSpec::new("ORDERS", "inventory", &["orders.created"])
    }

    #[test]
    fn by_default_a_failing_message_is_retried_through_a_five_minute_outage() {
        assert!(
            spec().retry_budget() >= Duration::from_secs(300),
            "{:?}",
            spec().retry_budget()
        );
    }

    #[test]
    fn the_retry_budget_adds_the_doubling_nak_delays_up_to_their_cap() {
        let spec = ConsumerSpec {
            max_deliver: 5,
            nak_delay: Duration::from_secs(1),
            max_nak_delay: Duration::from_secs(3),
            ..spec()
        };
        // Naks after deliveries 1–4: 1 + 2 + 3 + 3; the fifth failure dead-letters.
        assert_eq!(spec.retry_budget(), Duration::from_secs(9));
    }

    #[test]
    fn a_spec_per_partition_filters_each_to_its_partition_stream() {
        let specs =
            ConsumerSpec::per_partition(&events::topology::INVENTORY, Partitions::new(2).unwrap());
        let streams: Vec<_> = specs.iter().map(|s| s.stream.as_str()).collect();
        assert_eq!(streams, ["ORDERS_0", "ORDERS_1"]);
        assert_eq!(
            specs[1].filter_subjects,
            ["orders.1.*.*.created", "orders.1.*.*.cancelled"]
        );
        assert!(specs.iter().all(|s| s.durable == "inventory"));
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(spec().validate(), Ok(()));
    }

    #[test]
    fn a_backoff_schedule_as_long_as_max_deliver_is_refused() {
        let spec = ConsumerSpec {
            max_deliver: 2,
            backoff: vec![Duration::from_secs(1); 2],
            ..spec()
        };
        let err = spec.validate().unwrap_err();
        assert_eq!(
            err,
            SpecError::BackoffTooLong {
                steps: 2,
                max_deliver: 2
            }
        );
        assert!(err.to_string().contains("max_deliver > steps"), "{err}");
    }

    #[test]
    fn a_zero_nak_delay_is_refused() {
        let err = ConsumerSpec {
            nak_delay: Duration::ZERO,
            ..spec()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err, SpecError::ZeroNakDelay);
    }

    #[test]
    fn unlimited_deliveries_are_refused_because_nothing_would_be_dead_lettered() {
        let err = ConsumerSpec {
            max_deliver: -1,
            ..spec()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err, SpecError::MaxDeliver(-1));
    }

    #[test]
    fn progress_acks_slower_than_the_shortest_backoff_step_are_refused() {
        let spec = ConsumerSpec {
            backoff: vec![Duration::from_secs(5), Duration::from_secs(60)],
            progress_every: Duration::from_secs(10),
            ..spec()
        };
        assert!(matches!(
            spec.validate(),
            Err(SpecError::ProgressInterval { .. })
        ));
    }

    #[test]
    fn max_ack_pending_below_concurrency_is_refused() {
        let err = ConsumerSpec {
            max_ack_pending: 4,
            concurrency: 8,
            ..spec()
        }
        .validate()
        .unwrap_err();
        assert!(matches!(err, SpecError::AckPendingBelowConcurrency { .. }));
    }

    #[test]
    fn a_durable_name_with_a_dot_is_refused() {
        let err = ConsumerSpec {
            durable: "a.b".into(),
            ..spec()
        }
        .validate()
        .unwrap_err();
        assert!(matches!(err, SpecError::DurableName(_)));
    }

    #[test]
    fn the_nak_delay_doubles_per_delivery_up_to_its_cap() {
        let spec = ConsumerSpec {
            nak_delay: Duration::from_millis(100),
            max_nak_delay: Duration::from_millis(500),
            ..spec()
        };
        let delays: Vec<_> = (1..=5)
            .map(|a| spec.nak_delay_after(a).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }
}
