//! What a long run reports while it runs (`saga --every <seconds>`): one line per interval with
//! that interval's POST → confirmed latency, the memory of each of the system's processes, and
//! how far the archive's projection is behind — the figures that show whether a soak stays
//! stable (BENCHMARKS.md, the soak) or degrades with what the servers hold.

use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use futures::TryStreamExt as _;

use crate::cpu::Processes;
use crate::latency::Summary;

/// How far the archive's projection (the durable consumer `order-archive`) is behind, over
/// every `ORDERS` partition stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct ArchiveLag {
    /// Order events not yet archived (pending and unacknowledged).
    pub events: u64,
    /// Age of the oldest of them.
    pub oldest: Duration,
}

/// Reads [`ArchiveLag`]; `None` when no stream has the consumer (a system without archive).
pub async fn archive_lag(js: &jetstream::Context) -> anyhow::Result<Option<ArchiveLag>> {
    let streams: Vec<jetstream::stream::Info> = js.streams().try_collect().await?;
    let mut lag: Option<ArchiveLag> = None;
    for info in streams.iter().filter(|s| {
        let base = events::Domain::Orders.stream_base();
        let partition = s.config.name.strip_prefix(base);
        partition.is_some_and(|p| p.is_empty() || p.starts_with('_'))
    }) {
        let stream = js.get_stream_no_info(&info.config.name).await?;
        let Ok(consumer) = stream
            .get_consumer::<jetstream::consumer::pull::Config>(
                events::topology::ORDER_ARCHIVE.durable,
            )
            .await
        else {
            continue;
        };
        let consumer = consumer.cached_info().clone();
        let entry = lag.get_or_insert_with(ArchiveLag::default);
        let waiting = consumer.num_pending + consumer.num_ack_pending as u64;
        entry.events += waiting;
        if waiting > 0 {
            let next = consumer.ack_floor.stream_sequence + 1;
            if let Ok(message) = stream.direct_get(next).await {
                let sent: SystemTime = message.time.into();
                let age = SystemTime::now().duration_since(sent).unwrap_or_default();
                entry.oldest = entry.oldest.max(age);
            }
        }
    }
    Ok(lag)
}

/// Resident memory of each process, in MB (`VmRSS` of `/proc/<pid>/status`).
pub fn resident_mb(processes: &Processes) -> Vec<(String, f64)> {
    processes
        .iter()
        .map(|(name, pid)| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kb = status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            (name.clone(), kb / 1024.0)
        })
        .collect()
}

/// One interval's line.
pub fn line(
    elapsed: Duration,
    accepted: u64,
    confirmed: &Summary,
    memory: &[(String, f64)],
    lag: Option<ArchiveLag>,
) -> String {
    let mut line = format!(
        "t={:>5.0}s accepted {accepted:>7}  confirmed p50 {:>6.2} p99 {:>6.2} p99.9 {:>7.2} max {:>7.2} ms",
        elapsed.as_secs_f64(),
        confirmed.p50,
        confirmed.p99,
        confirmed.p999,
        confirmed.max
    );
    for (name, mb) in memory {
        line += &format!("  {name} {mb:.0} MB");
    }
    if let Some(lag) = lag {
        line += &format!(
            "  archive behind {} events, oldest {:.2} s",
            lag.events,
            lag.oldest.as_secs_f64()
        );
    }
    line
}
