//! CPU time the system spends per order, read from `/proc/<pid>/stat` of every process of the
//! system (`--system-pids name=pid,…`, set by `scripts/bench`): user + system time before and
//! after a run, divided by the orders accepted in it.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::Serialize;

/// The processes of the system under load.
#[derive(Debug, Clone, Default)]
pub struct Processes(Vec<(String, u32)>);

impl std::str::FromStr for Processes {
    type Err = String;

    /// `name=pid,name=pid,…`
    fn from_str(list: &str) -> Result<Self, String> {
        list.split(',')
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| {
                let (name, pid) = entry
                    .split_once('=')
                    .ok_or_else(|| format!("{entry:?} is not name=pid"))?;
                let pid = pid
                    .trim()
                    .parse()
                    .map_err(|_| format!("{pid:?} is not a process id"))?;
                Ok((name.trim().to_owned(), pid))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// CPU seconds used so far by each process.
#[derive(Debug, Clone, Default)]
pub struct Sample(BTreeMap<String, f64>);

/// CPU per order over a run: the whole system and each process, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct PerOrder {
    pub total_ms: f64,
    pub by_process_ms: BTreeMap<String, f64>,
}

impl Processes {
    /// Whether any process is known.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The processes, as (name, pid).
    pub fn iter(&self) -> impl Iterator<Item = &(String, u32)> {
        self.0.iter()
    }

    /// The CPU seconds of every process now.
    pub fn sample(&self) -> anyhow::Result<Sample> {
        // USER_HZ, fixed at 100 on Linux for the values /proc reports.
        const TICKS_PER_SECOND: f64 = 100.0;
        let mut seconds = BTreeMap::new();
        for (name, pid) in &self.0 {
            let path = format!("/proc/{pid}/stat");
            let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            // The command name may hold spaces; the fields after its closing parenthesis do not.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
            // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
            let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
                anyhow::bail!("{path} does not have the expected fields");
            };
            *seconds.entry(name.clone()).or_default() += (user + system) / TICKS_PER_SECOND;
        }
        Ok(Sample(seconds))
    }
}

impl Sample {
    /// What each process used between `self` and `after`, per order of `orders`.
    pub fn per_order(&self, after: &Sample, orders: u64) -> Option<PerOrder> {
        if orders == 0 {
            return None;
        }
        let by_process_ms: BTreeMap<String, f64> = after
            .0
            .iter()
            .map(|(name, seconds)| {
                let used = seconds - self.0.get(name).copied().unwrap_or(0.0);
                (name.clone(), round3(used * 1000.0 / orders as f64))
            })
            .collect();
        Some(PerOrder {
            total_ms: round3(by_process_ms.values().sum()),
            by_process_ms,
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_list_parses_and_a_bad_entry_is_named() {
        let list: Processes = "nats-server=10, order-service=11".parse().unwrap();
        assert_eq!(
            list.0,
            [("nats-server".into(), 10), ("order-service".into(), 11)]
        );
        assert!(
            "nats-server"
                .parse::<Processes>()
                .unwrap_err()
                .contains("name=pid")
        );
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        let me: Processes = format!("self={}", std::process::id()).parse().unwrap();
        let sample = me.sample().unwrap();
        assert!(sample.0["self"] >= 0.0);
    }

    #[test]
    fn cpu_per_order_divides_what_each_process_used() {
        let before = Sample(BTreeMap::from([("a".into(), 1.0), ("b".into(), 2.0)]));
        let after = Sample(BTreeMap::from([("a".into(), 2.0), ("b".into(), 2.5)]));
        let per = before.per_order(&after, 1000).unwrap();
        assert_eq!(per.by_process_ms["a"], 1.0);
        assert_eq!(per.by_process_ms["b"], 0.5);
        assert_eq!(per.total_ms, 1.5);
    }
}
