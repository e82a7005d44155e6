//! Latency samples and their summary (median, p99, ops/s), and the process's memory.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a set of latency samples comes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// How many operations were timed.
    pub samples: usize,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Mean latency, microseconds.
    pub mean_us: f64,
    /// Operations per second of one caller: timed operations over their summed time.
    pub ops_per_sec: f64,
}

impl Summary {
    /// Summarises `samples` (sorted in place). Empty input gives all zeros.
    pub fn of(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let total: Duration = samples.iter().sum();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        Summary {
            samples: samples.len(),
            p50_us: us(percentile(samples, 0.50)),
            p99_us: us(percentile(samples, 0.99)),
            mean_us: us(total) / samples.len() as f64,
            ops_per_sec: samples.len() as f64 / total.as_secs_f64().max(1e-12),
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Formats microseconds for a table: `12.3 µs`, `1.24 ms`, `2.10 s`.
pub fn fmt_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else if us >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

/// Formats the ratio `a / b` for a table (`1.05`), or `–` when `b` is not positive.
pub fn fmt_ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".to_owned()
    }
}

/// Formats a rate: `1234`, `12.3k`, `1.23M`.
pub fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e4 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// Resident memory of this process, from `/proc/self/status` (Linux), in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident size so far.
    pub hwm_kib: u64,
}

impl Memory {
    /// Reads the current values; zeros where `/proc` is not available.
    pub fn now() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rates() {
        let mut s: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        s.reverse();
        let sum = Summary::of(&mut s);
        assert_eq!(sum.samples, 100);
        assert_eq!(sum.p50_us, 50.0);
        assert_eq!(sum.p99_us, 99.0);
        assert!((sum.mean_us - 50.5).abs() < 1e-9);
        assert_eq!(Summary::of(&mut []), Summary::default());
        assert_eq!(fmt_us(12.34), "12.3 µs");
        assert_eq!(fmt_us(1234.0), "1.23 ms");
        assert_eq!(fmt_rate(123_456.0), "123.5k");
    }
}
