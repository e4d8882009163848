//! Latency statistics and the side-by-side table.

use std::time::Duration;

/// What one phase measured on one system.
#[derive(Debug, Clone)]
pub struct PhaseStats {
    pub phase: &'static str,
    /// Per-operation latencies, sorted.
    pub latencies: Vec<Duration>,
    /// From the first operation's start to the last one's end.
    pub wall: Duration,
}

impl PhaseStats {
    pub fn new(phase: &'static str, mut latencies: Vec<Duration>, wall: Duration) -> Self {
        latencies.sort();
        PhaseStats {
            phase,
            latencies,
            wall,
        }
    }

    pub fn ops(&self) -> usize {
        self.latencies.len()
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.ops() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn p50(&self) -> Duration {
        percentile(&self.latencies, 50.0)
    }

    pub fn p99(&self) -> Duration {
        percentile(&self.latencies, 99.0)
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

fn rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// The table: one row per phase, baseline and STE side by side.
pub fn table(baseline: &[PhaseStats], ste: &[PhaseStats]) -> String {
    let mut out = String::new();
    let head1 = format!(
        "{:<8} {:>5} | {:^29} | {:^29} | {:>7}",
        "", "", "baseline etcd", "STE", "speedup"
    );
    let head2 = format!(
        "{:<8} {:>5} | {:>8} {:>8} {:>11} | {:>8} {:>8} {:>11} | {:>7}",
        "phase", "ops", "p50 ms", "p99 ms", "ops/s", "p50 ms", "p99 ms", "ops/s", "(ops/s)"
    );
    out.push_str(&head1);
    out.push('\n');
    out.push_str(&head2);
    out.push('\n');
    out.push_str(&"-".repeat(head2.len()));
    out.push('\n');
    for b in baseline {
        let Some(s) = ste.iter().find(|s| s.phase == b.phase) else {
            continue;
        };
        let unit = if b.phase == "list" { "*" } else { "" };
        out.push_str(&format!(
            "{:<8} {:>5} | {:>8} {:>8} {:>11} | {:>8} {:>8} {:>11} | {:>6.2}x\n",
            format!("{}{unit}", b.phase),
            b.ops(),
            ms(b.p50()),
            ms(b.p99()),
            rate(b.ops_per_sec()),
            ms(s.p50()),
            ms(s.p99()),
            rate(s.ops_per_sec()),
            s.ops_per_sec() / b.ops_per_sec().max(1e-9),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&samples[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn table_has_one_row_per_phase() {
        let b = PhaseStats::new(
            "create",
            vec![Duration::from_millis(2); 10],
            Duration::from_secs(1),
        );
        let s = PhaseStats::new(
            "create",
            vec![Duration::from_millis(1); 10],
            Duration::from_millis(500),
        );
        let t = table(&[b], &[s]);
        assert!(t.contains("create"), "{t}");
        assert!(t.contains("2.00x"), "{t}");
    }
}
