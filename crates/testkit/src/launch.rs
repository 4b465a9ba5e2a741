//! Starting a server process a test owns (nats-server, postgres) and waiting until it says it
//! is ready — once, for both.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Spawns `command()` until `ready` holds for the child, retrying while it exits early (a port
/// still in TIME_WAIT right after a kill, a pid file not yet gone) until `timeout`; panics with
/// `log` if it never gets ready.
pub(crate) fn until_ready(
    what: &str,
    timeout: Duration,
    log: &Path,
    mut command: impl FnMut() -> Command,
    ready: impl Fn(&Child) -> bool,
) -> Child {
    let deadline = Instant::now() + timeout;
    // What the last attempt that exited early said: the next attempt starts a new log.
    let mut exited_saying = String::new();
    loop {
        let mut child = command()
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let exited = loop {
            if ready(&child) {
                return child;
            }
            if let Ok(Some(_)) = child.try_wait() {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !exited || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!(
                "{what} did not become ready within {timeout:?}:\n{text}\n\
                 (an earlier attempt exited saying:)\n{exited_saying}"
            );
        }
        exited_saying = std::fs::read_to_string(log).unwrap_or_default();
        std::thread::sleep(Duration::from_millis(100));
    }
}
