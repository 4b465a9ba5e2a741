//! Request budgets per key — a client's address at the edge, an authenticated customer in the
//! API: a token bucket each (a rate per second, bursts to twice that), idle keys forgotten
//! now and then so the table does not grow with every key seen. Refusing is the caller's:
//! [`Budgets::check`] only says how long to wait.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::problem::Problem;

/// One budget per key.
pub struct Budgets<K: Hash + Eq + Clone + Send + Sync + 'static> {
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> std::fmt::Debug for Budgets<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgets")
            .field("keys", &self.limiter.len())
            .finish()
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Budgets<K> {
    /// `per_second` requests per key, bursts up to twice that; `None` when 0 (no limit).
    /// Needs a Tokio runtime (idle keys are forgotten by a task of its own).
    pub fn new(per_second: u32) -> Option<Arc<Self>> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
        let budgets = Arc::new(Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        });
        let weak = Arc::downgrade(&budgets);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                let Some(budgets) = weak.upgrade() else {
                    return;
                };
                budgets.limiter.retain_recent();
            }
        });
        Some(budgets)
    }

    /// Spends one request of `key`'s budget, or says how long until it may try again.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// The 429 problem for a request over its budget, with `Retry-After`; `who` says whose
/// budget ("this client", "this customer").
pub fn too_many_requests(who: &str, wait: Duration) -> Problem {
    Problem::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
    )
    .with_detail(format!(
        "{who} exceeded its request rate; retry after the given delay"
    ))
    .with_retry_after(wait.as_secs().max(1))
}
