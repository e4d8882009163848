//! Latency statistics and the side-by-side table.

use std::time::Duration;

use crate::router_metrics::PhaseView;
use crate::target::{Disk, Target};

/// What one phase measured on one system.
#[derive(Debug, Clone)]
pub struct PhaseStats {
    /// create, update, get, list or delete.
    pub phase: &'static str,
    /// Per-operation latencies, sorted.
    pub latencies: Vec<Duration>,
    /// From the first operation's start to the last one's end.
    pub wall: Duration,
    /// CPU time the server's parts used during the phase.
    pub server_cpu: Vec<Duration>,
    /// CPU time the load generator (this process) used during the phase.
    pub client_cpu: Duration,
    /// What the STE router's metrics saw during the phase (STE only).
    pub router: Option<PhaseView>,
}

impl PhaseStats {
    /// Stats from unsorted latencies and the phase's wall time.
    pub fn new(phase: &'static str, mut latencies: Vec<Duration>, wall: Duration) -> Self {
        latencies.sort();
        PhaseStats {
            phase,
            latencies,
            wall,
            server_cpu: Vec::new(),
            client_cpu: Duration::ZERO,
            router: None,
        }
    }

    /// Operations done.
    pub fn ops(&self) -> usize {
        self.latencies.len()
    }

    /// Operations per second of wall time.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Median latency.
    pub fn p50(&self) -> Duration {
        percentile(&self.latencies, 50.0)
    }

    /// 99th percentile latency.
    pub fn p99(&self) -> Duration {
        percentile(&self.latencies, 99.0)
    }

    /// Mean latency (zero for no operations).
    pub fn mean(&self) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.iter().sum::<Duration>() / self.latencies.len() as u32
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

/// Milliseconds with as many decimals as are worth reading.
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

/// ops/s with as many decimals as are worth reading.
pub fn rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// One target measured at one client count on one disk model.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Which target.
    pub target: Target,
    /// The disk model its data was on.
    pub disk: Disk,
    /// Concurrent requests in flight.
    pub clients: usize,
    /// Names of the processes in each phase's `server_cpu`, in order.
    pub parts: Vec<String>,
    /// What ran, in one line.
    pub describe: String,
    /// The phases that completed.
    pub phases: Vec<PhaseStats>,
    /// Why the run stopped early, if it did.
    pub failure: Option<String>,
}

impl Measurement {
    /// The stats of `phase`, if it completed.
    pub fn phase(&self, phase: &str) -> Option<&PhaseStats> {
        self.phases.iter().find(|p| p.phase == phase)
    }
}

/// The phases, in the order they run.
pub const PHASES: [&str; 5] = ["create", "update", "get", "list", "delete"];

/// The measurement of `target` at `clients` on `disk`; targets on tmpfs
/// (shard, ste) are measured on the plain disk only and stand for every
/// disk model.
pub fn find(
    results: &[Measurement],
    target: Target,
    disk: Disk,
    clients: usize,
) -> Option<&Measurement> {
    let disk = if target.persistent() {
        disk
    } else {
        Disk::Plain
    };
    results
        .iter()
        .find(|m| m.target == target && m.disk == disk && m.clients == clients)
}

fn targets_in(results: &[Measurement]) -> Vec<Target> {
    Target::ALL
        .into_iter()
        .filter(|t| results.iter().any(|m| m.target == *t))
        .collect()
}

fn clients_in(results: &[Measurement]) -> Vec<usize> {
    let mut c: Vec<usize> = results.iter().map(|m| m.clients).collect();
    c.sort_unstable();
    c.dedup();
    c
}

/// Per disk model and phase: one row per client count, p50, p99 and ops/s
/// of every target side by side, and STE's ops/s over the 3-member etcd's.
pub fn sweep_tables(results: &[Measurement], disks: &[Disk]) -> String {
    let targets = targets_in(results);
    let clients = clients_in(results);
    let mut out = String::new();
    for &disk in disks {
        if disk != Disk::Plain && !targets.iter().any(|t| t.persistent()) {
            continue;
        }
        for phase in PHASES {
            let unit = if phase == "list" {
                " (one op = one full paginated list)"
            } else {
                ""
            };
            out.push_str(&format!("{phase}{unit}, disk: {}", disk.label()));
            if disk != Disk::Plain {
                out.push_str(" (shard and ste: tmpfs, from the plain run)");
            }
            out.push('\n');
            let mut head1 = format!("{:>7} |", "");
            let mut head2 = format!("{:>7} |", "clients");
            for t in &targets {
                head1.push_str(&format!(" {:^26} |", t.name()));
                head2.push_str(&format!(
                    " {:>7} {:>7} {:>10} |",
                    "p50 ms", "p99 ms", "ops/s"
                ));
            }
            head2.push_str(" ste/etcd3");
            out.push_str(&format!("{head1}\n{head2}\n{}\n", "-".repeat(head2.len())));
            for &c in &clients {
                let mut row = format!("{c:>7} |");
                for &t in &targets {
                    match find(results, t, disk, c).and_then(|m| m.phase(phase)) {
                        Some(s) => row.push_str(&format!(
                            " {:>7} {:>7} {:>10} |",
                            ms(s.p50()),
                            ms(s.p99()),
                            rate(s.ops_per_sec())
                        )),
                        None => {
                            let why = match find(results, t, disk, c) {
                                Some(m) if m.failure.is_some() => "refused/failed",
                                _ => "-",
                            };
                            row.push_str(&format!(" {why:^26} |"));
                        }
                    }
                }
                let ratio = |t| find(results, t, disk, c).and_then(|m| m.phase(phase));
                match (ratio(Target::Ste), ratio(Target::Etcd3)) {
                    (Some(s), Some(e)) => row.push_str(&format!(
                        " {:>8.2}x",
                        s.ops_per_sec() / e.ops_per_sec().max(1e-9)
                    )),
                    _ => row.push_str(&format!(" {:>9}", "-")),
                }
                out.push_str(&row);
                out.push('\n');
            }
            out.push('\n');
        }
    }
    out
}

/// Where STE's advantage stands on each disk model: its create ops/s over
/// the 3-member etcd's (and over kine's), per client count.
pub fn advantage_table(results: &[Measurement], disks: &[Disk]) -> String {
    let clients = clients_in(results);
    let mut out = String::from("create ops/s, STE / 3-member etcd (STE / kine) by disk model\n");
    let mut head = format!("{:<14} |", "disk");
    for c in &clients {
        head.push_str(&format!(" {:>17} |", format!("{c} clients")));
    }
    out.push_str(&format!("{head}\n{}\n", "-".repeat(head.len())));
    for &disk in disks {
        let mut row = format!("{:<14} |", disk.label());
        for &c in &clients {
            let ops = |t| {
                find(results, t, disk, c)
                    .and_then(|m| m.phase("create"))
                    .map(|s| s.ops_per_sec())
            };
            let cell = match (ops(Target::Ste), ops(Target::Etcd3), ops(Target::Kine)) {
                (Some(s), Some(e), k) => format!(
                    "{:.2}x ({})",
                    s / e.max(1e-9),
                    k.map(|k| format!("{:.2}x", s / k.max(1e-9)))
                        .unwrap_or_else(|| "-".into())
                ),
                _ => "-".into(),
            };
            row.push_str(&format!(" {cell:>17} |"));
        }
        out.push_str(&row);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// CPU per operation of `phase`: microseconds per write, milliseconds
/// (with its unit) per full list, which takes thousands of times longer.
fn per_op(phase: &str, cpu: Duration, ops: usize) -> String {
    let seconds = cpu.as_secs_f64() / ops.max(1) as f64;
    if phase == "list" {
        format!("{:.0}ms", seconds * 1e3)
    } else {
        format!("{:.0}", seconds * 1e6)
    }
}

/// Share of the machine's CPUs the server and the load generator kept busy.
fn busy(s: &PhaseStats, cpus: usize) -> String {
    let used: Duration = s.server_cpu.iter().sum::<Duration>() + s.client_cpu;
    format!(
        "{:.0}%",
        100.0 * used.as_secs_f64() / (s.wall.as_secs_f64() * cpus.max(1) as f64).max(1e-9)
    )
}

/// CPU per write (create, update, delete) and per full paginated list of
/// each process of each run, of the load generator, and how busy the
/// machine was: on a small machine this says whether a target was limited
/// by the CPU it shares.
pub fn cpu_table(results: &[Measurement], cpus: usize) -> String {
    let mut out = format!(
        "CPU per write in microseconds (per full paginated list in ms), per process \
         (client = ste-bench, the load generator; fuseN = ste-fsync-delay); \
         busy = CPU used / ({cpus} CPUs x wall time)\n"
    );
    let head = format!(
        "{:<7} {:>7} {:<12} {:<7} | {}",
        "target", "clients", "disk", "phase", "process=CPU per op ..."
    );
    out.push_str(&format!("{head}\n{}\n", "-".repeat(head.len() + 40)));
    for m in results {
        for s in m
            .phases
            .iter()
            .filter(|s| matches!(s.phase, "create" | "update" | "list" | "delete"))
        {
            let mut row = format!(
                "{:<7} {:>7} {:<12} {:<7} |",
                m.target.name(),
                m.clients,
                m.disk.label(),
                s.phase
            );
            let mut total = Duration::ZERO;
            for (name, cpu) in m.parts.iter().zip(&s.server_cpu) {
                row.push_str(&format!(" {name}={}", per_op(s.phase, *cpu, s.ops())));
                total += *cpu;
            }
            row.push_str(&format!(
                " | server={} client={} busy={}",
                per_op(s.phase, total, s.ops()),
                per_op(s.phase, s.client_cpu, s.ops()),
                busy(s, cpus)
            ));
            out.push_str(&row);
            out.push('\n');
        }
    }
    out.push('\n');
    out
}

/// Where STE's requests spent their time in each phase, from the router's
/// own metrics (see `router_metrics.rs`) beside what the load generator
/// saw: the rest of a request's time is its hop to the router and back
/// and the load generator's own work. Empty when no run has the figures.
pub fn router_table(results: &[Measurement]) -> String {
    let rows: Vec<(&Measurement, &PhaseStats, &PhaseView)> = results
        .iter()
        .flat_map(|m| {
            m.phases
                .iter()
                .filter_map(move |s| s.router.as_ref().map(|r| (m, s, r)))
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "where STE's requests spend their time: means from the router's /metrics \
         (ste_router_request_duration_seconds, ste_router_shard_request_duration_seconds, \
         shard writes / write Txns) beside the bench's own mean; a list is one request per page\n",
    );
    let head = format!(
        "{:<7} {:<12} {:<7} | {:>8} | {:>8} {:>9} | {:>11} {:>13} | {:>10}",
        "clients",
        "disk",
        "phase",
        "bench ms",
        "requests",
        "router ms",
        "shard calls",
        "shard call ms",
        "writes/Txn"
    );
    out.push_str(&format!("{head}\n{}\n", "-".repeat(head.len())));
    for (m, s, r) in rows {
        out.push_str(&format!(
            "{:<7} {:<12} {:<7} | {:>8} | {:>8.0} {:>9} | {:>11.2} {:>13} | {:>10}\n",
            m.clients,
            m.disk.label(),
            s.phase,
            ms(s.mean()),
            r.requests,
            ms(r.request_mean),
            r.shard_calls_per_request,
            ms(r.shard_call_mean),
            r.writes_per_txn
                .map_or_else(|| "-".to_owned(), |w| format!("{w:.2}"))
        ));
    }
    out.push('\n');
    out
}

/// The runs that stopped early, and why (kine refuses some request shapes).
pub fn failures(results: &[Measurement]) -> String {
    let mut out = String::new();
    for m in results {
        if let Some(why) = &m.failure {
            out.push_str(&format!(
                "{} clients={} disk={}: stopped after {} phase(s): {why}\n",
                m.target.name(),
                m.clients,
                m.disk.label(),
                m.phases.len()
            ));
        }
    }
    if !out.is_empty() {
        out.insert_str(0, "runs that did not complete:\n");
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

    fn measurement(target: Target, clients: usize, ops_per_sec: u64) -> Measurement {
        let mut s = PhaseStats::new(
            "create",
            vec![Duration::from_millis(1); ops_per_sec as usize],
            Duration::from_secs(1),
        );
        s.server_cpu = vec![Duration::from_millis(ops_per_sec / 2)];
        s.client_cpu = Duration::from_millis(300);
        Measurement {
            target,
            disk: Disk::Plain,
            clients,
            parts: vec!["etcd".into()],
            describe: String::new(),
            phases: vec![s],
            failure: None,
        }
    }

    #[test]
    fn sweep_table_has_a_row_per_client_count_and_the_ratio() {
        let results = [
            measurement(Target::Etcd3, 1, 100),
            measurement(Target::Ste, 1, 200),
            measurement(Target::Etcd3, 16, 400),
            measurement(Target::Ste, 16, 200),
        ];
        let t = sweep_tables(&results, &[Disk::Plain]);
        let rows: Vec<&str> = t
            .lines()
            .filter(|l| l.trim_start().starts_with("16 |"))
            .collect();
        assert_eq!(rows.len(), 5, "one per phase table: {t}");
        assert!(rows[0].ends_with("0.50x"), "{t}");
        assert!(
            t.lines()
                .any(|l| l.trim_start().starts_with("1 |") && l.ends_with("2.00x")),
            "{t}"
        );
    }

    #[test]
    fn cpu_table_per_write_and_busy() {
        let t = cpu_table(&[measurement(Target::Etcd1, 4, 1000)], 2);
        let row = t.lines().find(|l| l.starts_with("etcd1")).expect(&t);
        // 500 ms of etcd over 1000 ops = 500 us; client 300 us; 800 ms of 2 CPUs in 1 s = 40%.
        assert!(
            row.contains("etcd=500 | server=500 client=300 busy=40%"),
            "{row}"
        );
    }

    #[test]
    fn router_table_shows_stes_phases_that_have_router_figures() {
        let mut ste = measurement(Target::Ste, 32, 1000);
        ste.phases[0].router = Some(PhaseView {
            requests: 1000.0,
            request_mean: Duration::from_micros(2420),
            shard_calls_per_request: 0.25,
            shard_call_mean: Duration::from_micros(1110),
            writes_per_txn: Some(4.05),
        });
        let etcd = measurement(Target::Etcd1, 32, 1000);
        assert_eq!(router_table(std::slice::from_ref(&etcd)), "");
        let t = router_table(&[etcd, ste]);
        let rows: Vec<&str> = t.lines().filter(|l| l.starts_with("32 ")).collect();
        assert_eq!(rows.len(), 1, "{t}");
        let cells: Vec<&str> = rows[0].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "32", "plain", "create", "|", "1.00", "|", "1000", "2.42", "|", "0.25", "1.11",
                "|", "4.05"
            ],
            "{t}"
        );
    }

    #[test]
    fn cpu_table_gives_a_full_list_in_milliseconds() {
        let mut m = measurement(Target::Ste, 4, 1000);
        let mut list = PhaseStats::new(
            "list",
            vec![Duration::from_millis(400); 4],
            Duration::from_secs(2),
        );
        // 4 lists: 1.3 s of the server's CPU, 0.2 s of the client's.
        list.server_cpu = vec![Duration::from_millis(1300)];
        list.client_cpu = Duration::from_millis(200);
        m.phases.push(list);
        let t = cpu_table(&[m], 2);
        let rows = || t.lines().filter(|l| l.starts_with("ste "));
        let row = rows().find(|l| l.contains(" list ")).expect(&t);
        assert!(
            row.contains("etcd=325ms | server=325ms client=50ms busy=38%"),
            "{row}"
        );
        let create = rows().find(|l| l.contains(" create ")).expect(&t);
        assert!(create.contains("etcd=500 |"), "{create}");
    }
}
