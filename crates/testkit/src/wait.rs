//! Waiting for something that should happen soon: one helper and one patience for every test,
//! so a slow machine is given the same time everywhere and a failure always names what it
//! waited for.

use std::future::Future;
use std::time::Duration;

/// How long a test waits for something that should take milliseconds to a few seconds.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Waits until `condition` holds, checking every 20 ms; panics naming `what` after
/// [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_some(what, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await;
}

/// Waits until `probe` finds something and returns it, checking every 20 ms; panics naming
/// `what` after [`PATIENCE`].
pub async fn eventually_some<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_until(PATIENCE, what, probe).await
}

/// [`eventually`] for what can only happen after a retry scheduled up to `delay` from now (a
/// consumer's growing nak delays, whose longest is its `max_nak_delay`): the patience counts
/// from the end of that delay.
pub async fn eventually_after<F, Fut>(delay: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until(delay + PATIENCE, what, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await;
}

async fn wait_until<T, F, Fut>(patience: Duration, what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    match until(deadline, probe).await {
        Ok(found) => found,
        Err(TimedOut) => panic!("timed out waiting until {what}"),
    }
}

/// The deadline passed before what was waited for came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// The wait under [`eventually`], for a check that reports rather than panics (the fault
/// suite's invariants): `probe` every 20 ms until it finds something or `deadline` passes —
/// probed once more at the deadline, so a wait that starts late still looks.
pub async fn until<T, F, Fut>(deadline: tokio::time::Instant, mut probe: F) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    loop {
        if let Some(found) = probe().await {
            return Ok(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TimedOut);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
