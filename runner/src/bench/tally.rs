//! The times of every measured repetition, per workload, and what they
//! make: a median, a range and a throughput for each.

use std::time::Duration;

use super::data::{BenchDriver, Measurement, Workload};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The times of every measured repetition, and what one run moves, per workload.
pub(super) struct Tally {
    pub times: Vec<Vec<f64>>,
    pub amounts: Vec<(u64, u64)>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally { times: vec![Vec::new(); Workload::ALL.len()], amounts: vec![(0, 0); Workload::ALL.len()] }
    }

    fn index(w: Workload) -> usize {
        Workload::ALL.iter().position(|x| *x == w).unwrap_or(0)
    }

    pub fn record(&mut self, w: Workload, d: Duration, bytes: u64, ops: u64) {
        self.times[Self::index(w)].push(ms(d));
        self.amounts[Self::index(w)] = (bytes, ops);
    }

    /// One measurement per workload asked for and timed: median, range, throughput.
    pub fn measurements(&self, driver: BenchDriver, workloads: &[Workload]) -> Vec<Measurement> {
        let mut out = Vec::new();
        for w in Workload::ALL {
            let i = Self::index(w);
            if !workloads.contains(&w) || self.times[i].is_empty() {
                continue;
            }
            let mut t = self.times[i].clone();
            t.sort_by(f64::total_cmp);
            let (bytes, ops) = self.amounts[i];
            let median = t[t.len() / 2];
            let (throughput, unit) = if bytes > 0 {
                (bytes as f64 / (1 << 20) as f64 / (median / 1e3), "MiB/s".to_string())
            } else {
                (ops as f64 / (median / 1e3), "ops/s".to_string())
            };
            out.push(Measurement {
                driver,
                workload: w,
                bytes,
                ops,
                times_ms: self.times[i].clone(),
                min_ms: t[0],
                median_ms: median,
                max_ms: t[t.len() - 1],
                throughput,
                unit,
                ratio_to_plain: None,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_throughput_come_from_the_measured_repetitions() {
        let mut t = Tally::new();
        for ms in [30, 10, 20] {
            t.record(Workload::CopyUp, Duration::from_millis(ms), 2 << 20, 1);
            t.record(Workload::Stat, Duration::from_millis(ms), 0, 100);
        }
        let m = t.measurements(BenchDriver::Kernel, &[Workload::CopyUp, Workload::Stat, Workload::Readdir]);
        assert_eq!(m.len(), 2, "readdir was asked for but not timed");
        assert_eq!((m[0].workload, m[0].min_ms, m[0].median_ms, m[0].max_ms), (Workload::CopyUp, 10.0, 20.0, 30.0));
        assert_eq!(m[0].times_ms, [30.0, 10.0, 20.0], "in the order they ran");
        assert!((m[0].throughput - 100.0).abs() < 1e-9 && m[0].unit == "MiB/s", "2 MiB in 20 ms");
        assert!((m[1].throughput - 5000.0).abs() < 1e-9 && m[1].unit == "ops/s", "100 stats in 20 ms");
        assert!(t.measurements(BenchDriver::Kernel, &[Workload::Stat]).len() == 1, "only what was asked");
    }
}
