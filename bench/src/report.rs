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
    /// CPU time the server's parts used during the phase.
    pub server_cpu: Vec<Duration>,
    /// CPU time the load generator (this process) used during the phase.
    pub client_cpu: Duration,
}

impl PhaseStats {
    pub fn new(phase: &'static str, mut latencies: Vec<Duration>, wall: Duration) -> Self {
        latencies.sort();
        PhaseStats {
            phase,
            latencies,
            wall,
            server_cpu: Vec::new(),
            client_cpu: Duration::ZERO,
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

fn us_per_op(cpu: Duration, ops: usize) -> String {
    format!("{:.0}", cpu.as_secs_f64() * 1e6 / ops.max(1) as f64)
}

/// Share of the machine's CPUs the server and the load generator kept busy.
fn busy(s: &PhaseStats, cpus: usize) -> String {
    let used: Duration = s.server_cpu.iter().sum::<Duration>() + s.client_cpu;
    format!(
        "{:.0}%",
        100.0 * used.as_secs_f64() / (s.wall.as_secs_f64() * cpus.max(1) as f64).max(1e-9)
    )
}

/// CPU per operation of each server part and of the load generator, and
/// how busy the machine was, per phase: on a small machine this says
/// whether a system was limited by the CPU it shares with the others.
pub fn cpu_table(
    baseline: &[PhaseStats],
    baseline_parts: &[&str],
    ste: &[PhaseStats],
    ste_parts: &[&str],
    cpus: usize,
) -> String {
    let mut left = String::new();
    for p in baseline_parts.iter().chain(&["client"]) {
        left.push_str(&format!(" {p:>8}"));
    }
    left.push_str(&format!(" {:>6}", "busy"));
    let mut right = String::new();
    for p in ste_parts.iter().chain(&["client"]) {
        right.push_str(&format!(" {p:>8}"));
    }
    right.push_str(&format!(" {:>6}", "busy"));
    let mut out = format!(
        "CPU per op in microseconds (client = ste-bench, the load generator); busy = CPU used / ({cpus} CPUs x wall time)
"
    );
    let head1 = format!(
        "{:<8} |{:^w1$} |{:^w2$}",
        "",
        "baseline etcd",
        "STE",
        w1 = left.len(),
        w2 = right.len()
    );
    let head2 = format!("{:<8} |{left} |{right}", "phase");
    out.push_str(&format!("{head1}\n{head2}\n{}\n", "-".repeat(head2.len())));
    for b in baseline {
        let Some(s) = ste.iter().find(|s| s.phase == b.phase) else {
            continue;
        };
        let mut row = format!("{:<8} |", b.phase);
        for cpu in b.server_cpu.iter().chain([&b.client_cpu]) {
            row.push_str(&format!(" {:>8}", us_per_op(*cpu, b.ops())));
        }
        row.push_str(&format!(" {:>6} |", busy(b, cpus)));
        for cpu in s.server_cpu.iter().chain([&s.client_cpu]) {
            row.push_str(&format!(" {:>8}", us_per_op(*cpu, s.ops())));
        }
        row.push_str(&format!(" {:>6}", busy(s, cpus)));
        out.push_str(&row);
        out.push('\n');
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

    #[test]
    fn cpu_table_per_op_and_busy() {
        let mut b = PhaseStats::new(
            "get",
            vec![Duration::from_millis(1); 1000],
            Duration::from_secs(1),
        );
        b.server_cpu = vec![Duration::from_millis(500)];
        b.client_cpu = Duration::from_millis(300);
        let mut s = b.clone();
        s.server_cpu = vec![Duration::from_millis(200), Duration::from_millis(900)];
        let t = cpu_table(&[b], &["etcd"], &[s], &["router", "shards"], 2);
        let row = t.lines().find(|l| l.starts_with("get")).expect(&t);
        let cells: Vec<&str> = row.split_whitespace().filter(|c| *c != "|").collect();
        // etcd 500 us/op, client 300, busy 40%; router 200, shards 900, client 300, busy 70%.
        assert_eq!(
            cells,
            ["get", "500", "300", "40%", "200", "900", "300", "70%"],
            "{t}"
        );
    }
}
