//! How full the stores are. Every few seconds a service reads the state of the streams and
//! buckets it watches and reports each as `orderflow_store_used_ratio{store}`; order-service,
//! which takes new work, also refuses it ([`Admission`]) while any store the saga writes is
//! above the admission limit — below the bound, so orders already accepted have room to
//! finish, and nothing is ever accepted that could not be stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bus::{Bus, CancellationToken};
use telemetry::metric;

use crate::problem::Problem;

/// How often the stores are read: the admission limit's margin must hold what the orders
/// accepted meanwhile write (at 1,000 orders/s, about 1.5 MB; the default margin is 200 MiB).
const EVERY: Duration = Duration::from_millis(500);

/// Whether new work is taken; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Admission(Arc<AtomicBool>);

impl Admission {
    /// Ok, or the 503 problem new work gets while a store is nearly full.
    pub fn check(&self) -> Result<(), Problem> {
        if self.0.load(Ordering::Relaxed) {
            Err(Problem::store_full())
        } else {
            Ok(())
        }
    }

    fn refuse(&self, refuse: bool) {
        if self.0.swap(refuse, Ordering::Relaxed) != refuse {
            if refuse {
                tracing::warn!("a store is above the admission limit: refusing new orders");
            } else {
                tracing::info!("every store has room again: taking new orders");
            }
        }
    }
}

/// Reports how full `stores` are until `shutdown`; with `admission`, refuses new work while any
/// is at or above `limit` of its bound.
pub async fn watch(
    bus: Bus,
    stores: Vec<String>,
    admission: Option<Admission>,
    limit: f64,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match bus.usage(&stores).await {
            Ok(usage) => {
                for store in &usage {
                    let name = store.store.strip_prefix("KV_").unwrap_or(&store.store);
                    metrics::gauge!(metric::STORE_USED_RATIO, "store" => name.to_owned())
                        .set(store.ratio());
                }
                if let Some(admission) = &admission {
                    admission.refuse(usage.iter().any(|store| store.ratio() >= limit));
                }
            }
            // NATS away: publishes fail on their own; the last verdict stands meanwhile.
            Err(e) => tracing::debug!(error = %e, "cannot read how full the stores are"),
        }
    }
}
