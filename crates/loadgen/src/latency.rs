//! Latency recording: HdrHistograms in microseconds, summarised as the percentiles a report
//! prints (p50/p90/p99/p99.9/max, in milliseconds).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// One latency distribution.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

/// The percentiles of a distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty distribution (1 µs to 1 h, 3 significant figures).
    #[allow(clippy::expect_used, reason = "constant, valid bounds")]
    pub fn new() -> Self {
        Self(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"))
    }

    /// Records one sample (clamped into the histogram's range).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    /// The percentiles.
    pub fn summary(&self) -> Summary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Summary {
            count: self.0.len(),
            p50: ms(self.0.value_at_quantile(0.50)),
            p90: ms(self.0.value_at_quantile(0.90)),
            p99: ms(self.0.value_at_quantile(0.99)),
            p999: ms(self.0.value_at_quantile(0.999)),
            max: ms(self.0.max()),
        }
    }
}

impl Summary {
    /// `p50 1.2 p90 … max …` for text reports.
    pub fn line(&self) -> String {
        format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms  (n={})",
            self.p50, self.p90, self.p99, self.p999, self.max, self.count
        )
    }
}
