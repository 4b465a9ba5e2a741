//! Upgrading a deployment's subject layout, step by step, as part of `orderflow-admin migrate`:
//! each step moves every event whose subject the new layout spells differently to its new
//! subject — in the same stream, in the order they were stored — and records the new layout on
//! every stream. Offline: the services are stopped and every consumer of a stream a step
//! rewrites has drained, since the events move to new sequences; those consumers start again
//! after the moved events.
//!
//! A moved event is published again — with the headers it was stored with, create-only on its
//! new subject, so a repeated run stores it once — and then deleted; where the stream's
//! consumers start again is kept on the stream until they exist: interrupted (even between
//! recording the new layout on one stream and the next), the command is run again and
//! finishes. It is stored anew, so the hot window counts its age from the upgrade.
//! A dead letter keeps naming the message it was made from; one of a moved event can no longer
//! be redriven (its original is gone): handle it before upgrading, or discard it after.
//!
//! The steps:
//!
//! - **2 → 3**: a notification outcome's subject names the state change as the order event
//!   does — `notifications.<p>.<customer>.<order>.confirmed.sent`, not `.order_confirmed.sent`
//!   — one token per state change across the domains.

use std::collections::BTreeMap;

use async_nats::jetstream::stream::RawMessageErrorKind;
use bus::{Bus, StreamSettings};
use events::layout::{self, Domain};
use events::names::header;

/// One layout upgrade: `from` to `from + 1`.
struct Step {
    from: u32,
    /// What it changes, for the report.
    what: &'static str,
    /// The event domains whose subjects it rewrites.
    domains: &'static [Domain],
    /// The new subject of an event stored on `subject`; `None`: unchanged.
    rewrite: fn(&str) -> Option<String>,
}

const STEPS: [Step; 1] = [Step {
    from: 2,
    what: "notification outcomes name the state change as the order event does",
    domains: &[Domain::Notifications],
    rewrite: notification_tokens,
}];

/// 2 → 3: `notifications.<p>.<c>.<o>.order_confirmed.<verb>` → `….confirmed.<verb>`.
fn notification_tokens(subject: &str) -> Option<String> {
    let mut tokens: Vec<&str> = subject.split('.').collect();
    if tokens.len() != 6 || tokens[0] != Domain::Notifications.token() {
        return None;
    }
    tokens[4] = match tokens[4] {
        "order_confirmed" => "confirmed",
        "order_cancelled" => "cancelled",
        _ => return None,
    };
    Some(tokens.join("."))
}

/// What an upgrade did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Upgraded {
    /// The layout the streams recorded before (`None`: already this build's, or none).
    pub from: Option<u32>,
    /// The steps applied, in order.
    pub steps: Vec<String>,
    /// Events moved to a new subject, per stream.
    pub moved: BTreeMap<String, u64>,
    /// Where each consumer of a rewritten stream starts again: after the moved events.
    #[serde(skip)]
    pub restarts: BTreeMap<(String, String), u64>,
}

/// An upgrade could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeFailed {
    /// The streams record a layout no step of this build starts from.
    #[error(
        "the streams record subject layout {found}, and this build upgrades layouts {oldest} to {} only",
        layout::LAYOUT_VERSION
    )]
    Unknown {
        /// The layout found.
        found: String,
        /// The oldest layout a step starts from.
        oldest: u32,
    },
    /// The streams record different layouts (an upgrade was cut short before it recorded
    /// the new one everywhere — run it again — or streams were changed by hand).
    #[error("the streams record different subject layouts: {0:?}")]
    Mixed(BTreeMap<String, String>),
    /// A consumer of a stream to rewrite has not drained.
    #[error(
        "consumer {durable} of {stream} has {pending} events not yet handled: stop taking orders, let every consumer drain, stop the services, then migrate"
    )]
    NotDrained {
        /// The stream.
        stream: String,
        /// The consumer.
        durable: String,
        /// Events pending or unacknowledged.
        pending: u64,
    },
    /// A service is pulling from a stream to rewrite.
    #[error("consumer {durable} of {stream} is being pulled from: stop the services, then migrate")]
    Running {
        /// The stream.
        stream: String,
        /// The consumer.
        durable: String,
    },
    /// NATS failed.
    #[error("{what}: {reason}")]
    Nats {
        /// What was being done.
        what: String,
        /// The error.
        reason: String,
    },
}

fn nats(what: impl std::fmt::Display, reason: impl std::fmt::Display) -> UpgradeFailed {
    UpgradeFailed::Nats {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// Upgrades the streams of the deployment `settings` describe to this build's layout, if they
/// record an older one.
pub async fn upgrade(bus: &Bus, settings: &StreamSettings) -> Result<Upgraded, UpgradeFailed> {
    let mut recorded = BTreeMap::new();
    for name in bus::stream_names(settings) {
        if let Ok(stream) = bus.jetstream().get_stream(&name).await
            && let Some(found) = stream
                .cached_info()
                .config
                .metadata
                .get(layout::LAYOUT_METADATA)
        {
            recorded.insert(name, found.clone());
        }
    }
    let mut versions = Vec::new();
    for found in recorded.values() {
        match found.parse::<u32>() {
            Ok(version) => versions.push(version),
            Err(_) => return Err(UpgradeFailed::Mixed(recorded)),
        }
    }
    let finished = Upgraded {
        restarts: left_restart_points(bus, settings).await,
        ..Upgraded::default()
    };
    let (Some(&lowest), Some(&highest)) = (versions.iter().min(), versions.iter().max()) else {
        return Ok(finished);
    };
    // An upgrade cut short records the new layout on some streams only: it goes on from the
    // older one (its steps move only what is still on an old subject).
    if highest - lowest > 1 {
        return Err(UpgradeFailed::Mixed(recorded));
    }
    if lowest == layout::LAYOUT_VERSION {
        return Ok(finished);
    }
    let oldest = STEPS
        .iter()
        .map(|s| s.from)
        .min()
        .unwrap_or(layout::LAYOUT_VERSION);
    if !(oldest..layout::LAYOUT_VERSION).contains(&lowest) || highest > layout::LAYOUT_VERSION {
        return Err(UpgradeFailed::Unknown {
            found: highest.max(lowest).to_string(),
            oldest,
        });
    }
    let from = lowest;
    let mut upgraded = Upgraded {
        from: Some(from),
        ..finished
    };
    for step in STEPS.iter().filter(|s| s.from >= from) {
        let streams: Vec<String> = step
            .domains
            .iter()
            .flat_map(|d| {
                settings
                    .partitions
                    .all()
                    .map(|p| d.stream(p, settings.partitions))
            })
            .collect();
        for name in &streams {
            drained(bus, name).await?;
        }
        for name in &streams {
            let (moved, end) = rewrite(bus, name, step).await?;
            upgraded.moved.insert(name.clone(), moved);
            // Where its consumers start again, kept on the stream until they exist again: a run
            // cut short after deleting them still restarts them there.
            let end = restart_point(bus, name, end).await?;
            upgraded
                .restarts
                .insert((name.clone(), "*".to_owned()), end + 1);
            for durable in consumers(bus, name).await? {
                let stream = bus
                    .jetstream()
                    .get_stream(name)
                    .await
                    .map_err(|e| nats(format!("stream {name}"), e))?;
                stream
                    .delete_consumer(&durable)
                    .await
                    .map_err(|e| nats(format!("consumer {durable} of {name}"), e))?;
                upgraded.restarts.insert((name.clone(), durable), end + 1);
            }
        }
        upgraded
            .steps
            .push(format!("{} → {}: {}", step.from, step.from + 1, step.what));
        record(bus, settings, step.from + 1).await?;
    }
    Ok(upgraded)
}

/// The stream metadata that keeps where the consumers of a rewritten stream start again.
const RESTART_AFTER: &str = "orderflow.upgrade.restart_after";

/// The sequence after which `stream`'s consumers start again: the one an earlier, interrupted
/// run recorded, else `end`, recorded now.
async fn restart_point(bus: &Bus, name: &str, end: u64) -> Result<u64, UpgradeFailed> {
    let stream = bus
        .jetstream()
        .get_stream(name)
        .await
        .map_err(|e| nats(format!("stream {name}"), e))?;
    let mut config = stream.cached_info().config.clone();
    if let Some(recorded) = config
        .metadata
        .get(RESTART_AFTER)
        .and_then(|v| v.parse().ok())
    {
        return Ok(recorded);
    }
    config
        .metadata
        .insert(RESTART_AFTER.to_owned(), end.to_string());
    bus.jetstream()
        .update_stream(&config)
        .await
        .map_err(|e| nats(format!("stream {name}"), e))?;
    Ok(end)
}

/// Forgets the restart points once every consumer exists again.
pub async fn forget_restart_points(
    bus: &Bus,
    settings: &StreamSettings,
) -> Result<(), UpgradeFailed> {
    for name in bus::stream_names(settings) {
        let Ok(stream) = bus.jetstream().get_stream(&name).await else {
            continue;
        };
        let mut config = stream.cached_info().config.clone();
        if config.metadata.remove(RESTART_AFTER).is_some() {
            bus.jetstream()
                .update_stream(&config)
                .await
                .map_err(|e| nats(format!("stream {name}"), e))?;
        }
    }
    Ok(())
}

/// The restart points an interrupted run left, as `(stream, "*")` starts.
async fn left_restart_points(
    bus: &Bus,
    settings: &StreamSettings,
) -> BTreeMap<(String, String), u64> {
    let mut left = BTreeMap::new();
    for name in bus::stream_names(settings) {
        if let Ok(stream) = bus.jetstream().get_stream(&name).await
            && let Some(after) = stream
                .cached_info()
                .config
                .metadata
                .get(RESTART_AFTER)
                .and_then(|v| v.parse::<u64>().ok())
        {
            left.insert((name, "*".to_owned()), after + 1);
        }
    }
    left
}

/// The durable consumers of `stream`.
async fn consumers(bus: &Bus, stream: &str) -> Result<Vec<String>, UpgradeFailed> {
    Ok(listed(bus, stream)
        .await?
        .into_iter()
        .filter(|c| c.config.durable_name.is_some())
        .map(|c| c.name)
        .collect())
}

async fn listed(
    bus: &Bus,
    stream: &str,
) -> Result<Vec<async_nats::jetstream::consumer::Info>, UpgradeFailed> {
    crate::consumers_of(bus, stream)
        .await
        .map_err(|reason| nats(format!("stream {stream}"), reason))
}

/// Refuses if a consumer of `stream` has events pending or unacknowledged.
async fn drained(bus: &Bus, stream: &str) -> Result<(), UpgradeFailed> {
    for info in listed(bus, stream).await? {
        if info.num_waiting > 0 {
            return Err(UpgradeFailed::Running {
                stream: stream.to_owned(),
                durable: info.name,
            });
        }
        let pending = info.num_pending + info.num_ack_pending as u64;
        if pending > 0 {
            return Err(UpgradeFailed::NotDrained {
                stream: stream.to_owned(),
                durable: info.name,
                pending,
            });
        }
    }
    Ok(())
}

/// Moves every event of `stream` that `step` spells differently; how many, and the stream's
/// last sequence after.
async fn rewrite(bus: &Bus, name: &str, step: &Step) -> Result<(u64, u64), UpgradeFailed> {
    let mut stream = bus
        .jetstream()
        .get_stream(name)
        .await
        .map_err(|e| nats(format!("stream {name}"), e))?;
    let state = stream
        .info()
        .await
        .map_err(|e| nats(format!("stream {name}"), e))?
        .state
        .clone();
    let mut moved = 0;
    for sequence in state.first_sequence..=state.last_sequence {
        let message = match stream.get_raw_message(sequence).await {
            Ok(message) => message,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => continue,
            Err(e) => return Err(nats(format!("{name} event {sequence}"), e)),
        };
        let Some(subject) = (step.rewrite)(&message.subject) else {
            continue;
        };
        let mut headers = async_nats::HeaderMap::new();
        for (key, values) in message.headers.iter() {
            let name = key.to_string();
            // A precondition held when the event was appended; its own id stays its original's.
            if name.starts_with("Nats-Expected") || name == header::MSG_ID {
                continue;
            }
            for value in values {
                headers.append(name.as_str(), value.as_str());
            }
        }
        headers.insert(
            header::MSG_ID,
            format!("layout-{}:{name}:{sequence}", step.from + 1).as_str(),
        );
        // Create-only (every subject of a layout holds at most one event): a run cut short
        // between storing the copy and deleting the original stores it once, however late.
        headers.insert(header::EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
        let stored = bus
            .jetstream()
            .publish_with_headers(subject, headers, message.payload.clone())
            .await
            .map_err(|e| nats(format!("{name} event {sequence}"), e))?
            .await;
        match stored {
            Ok(_) => {}
            Err(e)
                if e.kind()
                    == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence => {}
            Err(e) => return Err(nats(format!("{name} event {sequence}"), e)),
        }
        stream
            .delete_message(sequence)
            .await
            .map_err(|e| nats(format!("{name} event {sequence}"), e))?;
        moved += 1;
    }
    let end = stream
        .info()
        .await
        .map_err(|e| nats(format!("stream {name}"), e))?
        .state
        .last_sequence;
    Ok((moved, end))
}

/// Records layout `version` on every stream of the deployment.
async fn record(bus: &Bus, settings: &StreamSettings, version: u32) -> Result<(), UpgradeFailed> {
    for name in bus::stream_names(settings) {
        let Ok(stream) = bus.jetstream().get_stream(&name).await else {
            continue;
        };
        let mut config = stream.cached_info().config.clone();
        config
            .metadata
            .insert(layout::LAYOUT_METADATA.to_owned(), version.to_string());
        bus.jetstream()
            .update_stream(&config)
            .await
            .map_err(|e| nats(format!("stream {name}"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_3_names_a_notifications_state_change_as_the_order_event_does() {
        let order = events::OrderId::new();
        assert_eq!(
            notification_tokens(&format!("notifications.0.ann.{order}.order_confirmed.sent"))
                .unwrap(),
            format!("notifications.0.ann.{order}.confirmed.sent")
        );
        assert_eq!(
            notification_tokens(&format!(
                "notifications.2.ann.{order}.order_cancelled.failed"
            ))
            .unwrap(),
            format!("notifications.2.ann.{order}.cancelled.failed")
        );
        assert!(
            notification_tokens(&format!("notifications.0.ann.{order}.confirmed.sent")).is_none()
        );
        assert!(notification_tokens(&format!("orders.0.ann.{order}.confirmed")).is_none());
    }
}
