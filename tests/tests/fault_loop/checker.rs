//! The checker: the run's history held against docs/faults.md once every
//! fault is healed, and the report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use etcd_client::GetOptions;
use ste_tests::{TestRouter, eventually};

use crate::history::{History, Outcome, Write};
use crate::nemesis::{Fault, FaultKind};
use crate::watchers::WatchLog;
use crate::{DEADLINE, MARGIN, connect};

/// What the checker counted.
#[derive(Debug, Default)]
pub struct Checked {
    pub keys: usize,
    /// Acknowledged writes the end state or a read at their revision
    /// contradicts, on members never lost.
    pub lost: usize,
    /// Acknowledged writes on a member that was lost before they could be
    /// read back (allowed to be gone).
    pub exempt: usize,
    pub history_reads: usize,
    /// Reads at a revision refused as compacted (history before a router
    /// restart, a fence or a resync).
    pub compacted: usize,
    pub watch_violations: usize,
    pub events: usize,
}

/// The current value and mod revision of `key` (`None`: absent), or its
/// state at `revision`.
async fn read(
    endpoint: &str,
    key: &str,
    revision: Option<i64>,
) -> Result<Option<(i64, Vec<u8>)>, String> {
    let mut client = connect(endpoint).await.map_err(|e| e.to_string())?;
    let options = revision.map(|r| GetOptions::new().with_revision(r));
    let got = client.get(key, options).await.map_err(|e| e.to_string())?;
    Ok(got
        .kvs()
        .first()
        .map(|kv| (kv.mod_revision(), kv.value().to_vec())))
}

fn describe(state: &Option<(i64, Vec<u8>)>) -> String {
    match state {
        None => "absent".into(),
        Some((r, v)) => format!("{} at {r}", String::from_utf8_lossy(v)),
    }
}

/// Whether `state` is what `write` leaves, at revision `at` if given.
fn left_by(write: &Write, state: &Option<(i64, Vec<u8>)>, at: impl Fn(i64) -> bool) -> bool {
    match (&write.value, state) {
        (Some(value), Some((r, v))) => v == value && at(*r),
        (None, None) => true,
        _ => false,
    }
}

pub async fn check(
    router: &TestRouter,
    history: &History,
    watch_logs: &[(usize, WatchLog)],
) -> anyhow::Result<Checked> {
    let endpoint = router.endpoint();
    let writes = history.writes();
    let mut checked = Checked::default();
    // Acknowledged writes at or below a key's bound may have been lost
    // with a fenced member (docs/faults.md, "Fencing a lost member").
    let mut exempt_to: BTreeMap<&str, i64> = BTreeMap::new();
    let losses = history.losses();
    for loss in &losses {
        for key in &loss.keys {
            let bound = exempt_to.entry(key.as_str()).or_default();
            *bound = (*bound).max(loss.up_to);
        }
    }
    let mut by_key: BTreeMap<&str, Vec<&Write>> = BTreeMap::new();
    let mut acked: BTreeMap<i64, &Write> = BTreeMap::new();
    for write in &writes {
        by_key.entry(write.key.as_str()).or_default().push(write);
        if let Outcome::Acked(r) = write.outcome
            && let Some(other) = acked.insert(r, write)
        {
            history.violation(format!(
                "revision {r} acknowledged twice: {other:?} and {write:?}"
            ));
        }
    }
    checked.keys = by_key.len();

    // (a) Every acknowledged write not on a lost member is readable: the
    // key's last one is its current state (or a later write whose outcome
    // the writer did not learn is), and each is readable at its revision
    // unless that revision was compacted.
    for (key, ops) in &mut by_key {
        ops.sort_by_key(|w| w.seq);
        let bound = exempt_to.get(key).copied().unwrap_or(0);
        let state = eventually(&format!("a read of {key}"), Duration::from_secs(60), || {
            read(&endpoint, key, None)
        })
        .await?;
        let last = ops
            .iter()
            .rposition(|w| matches!(w.outcome, Outcome::Acked(r) if r > bound));
        let explained = match last {
            Some(i) => {
                let Outcome::Acked(r) = ops[i].outcome else {
                    unreachable!()
                };
                left_by(ops[i], &state, |at| at == r)
                    || ops[i + 1..]
                        .iter()
                        .filter(|w| w.outcome.unknown())
                        .any(|w| left_by(w, &state, |at| at > r))
            }
            None => match &state {
                None => true,
                Some((_, v)) => ops.iter().any(|w| w.value.as_deref() == Some(v)),
            },
        };
        if !explained {
            checked.lost += 1;
            history.violation(format!(
                "{key} is {} but its writes were {:?} (lost up to revision {bound})",
                describe(&state),
                ops.iter()
                    .map(|w| (w.writer, w.seq, &w.outcome, w.value.is_some()))
                    .collect::<Vec<_>>()
            ));
        }
        // Each key has one writer, which reads it again after every
        // unknown outcome: its guard is the key's revision unless the
        // key changed behind its back — a lost write, or one of its own
        // unknown writes applied late (a shard that was stopped with the
        // request in its socket). Such a late write can only be one sent
        // after the writer's last answered write of the key.
        for (i, write) in ops.iter().enumerate() {
            let answered = ops[..i]
                .iter()
                .rposition(|w| !w.outcome.unknown())
                .map_or(0, |j| j + 1);
            // A loss explains it if it took the key after the writer
            // learned `guard` and before this answer.
            let fenced = losses.iter().any(|l| {
                l.keys.contains(*key) && l.up_to >= write.guard && l.since <= write.answered
            });
            if let Outcome::Conflict(current) = write.outcome
                && !fenced
                && !ops[answered..i].iter().any(|w| w.outcome.unknown())
            {
                checked.lost += 1;
                history.violation(format!(
                    "{key}: write {} of writer {} found the key at {current}, not at {} as \
                     its only writer last saw it (no loss of the key since)",
                    write.seq, write.writer, write.guard
                ));
            }
        }
        for write in ops.iter() {
            let Outcome::Acked(r) = write.outcome else {
                continue;
            };
            if r <= bound {
                checked.exempt += 1;
                continue;
            }
            checked.history_reads += 1;
            let at = eventually(
                &format!("a read of {key} at {r}"),
                Duration::from_secs(60),
                || async {
                    match read(&endpoint, key, Some(r)).await {
                        Err(e) if e.contains("compacted") => Ok(None),
                        Err(e) => Err(e),
                        Ok(state) => Ok(Some(state)),
                    }
                },
            )
            .await?;
            match at {
                None => checked.compacted += 1,
                Some(state) if left_by(write, &state, |at| at == r) => {}
                Some(state) => {
                    checked.lost += 1;
                    history.violation(format!(
                        "{key} at revision {r} is {}, not {:?} acknowledged at {r}",
                        describe(&state),
                        write.value.as_deref().map(String::from_utf8_lossy)
                    ));
                }
            }
        }
    }

    // (c) Each watcher saw every event once and in order, with nothing
    // missing between its list and its last event, until it was canceled
    // and relisted.
    let unknown: BTreeSet<(&str, Option<&[u8]>)> = writes
        .iter()
        .filter(|w| w.outcome.unknown())
        .map(|w| (w.key.as_str(), w.value.as_deref()))
        .collect();
    for (id, log) in watch_logs {
        for segment in &log.segments {
            let mut previous = segment.start - 1;
            let mut seen = BTreeSet::new();
            let mut violations = Vec::new();
            for event in &segment.events {
                checked.events += 1;
                if event.revision <= previous {
                    violations.push(format!(
                        "event {} of {} after {previous}: repeated or out of order",
                        event.revision, event.key
                    ));
                }
                previous = previous.max(event.revision);
                seen.insert(event.revision);
                let matches = match acked.get(&event.revision) {
                    Some(w) => w.key == event.key && w.value == event.value,
                    None => unknown.contains(&(event.key.as_str(), event.value.as_deref())),
                };
                if !matches {
                    violations.push(format!(
                        "event {} of {} ({:?}) matches no write",
                        event.revision,
                        event.key,
                        event.value.as_deref().map(String::from_utf8_lossy)
                    ));
                }
            }
            let range = if segment.start <= previous {
                acked.range(segment.start..=previous)
            } else {
                acked.range(0..0)
            };
            for (r, w) in range {
                if !seen.contains(r) {
                    violations.push(format!("missed the event of {} at {r}", w.key));
                }
            }
            checked.watch_violations += violations.len();
            for v in violations {
                history.violation(format!(
                    "watcher {id}, segment from {} (ended: {:?}): {v}",
                    segment.start, segment.end
                ));
            }
        }
    }
    Ok(checked)
}

/// The run's report: faults by kind, writes by outcome, what was lost,
/// watch violations, the slowest request and the router's peak RSS.
pub fn report(
    seed: u64,
    took: Duration,
    faults: &[Fault],
    history: &History,
    checked: &Checked,
    watch_logs: &[(usize, WatchLog)],
    (max_rss, rss_bound): (u64, u64),
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fault loop: seed {seed:#x}, {:.0} s, {} faults",
        took.as_secs_f64(),
        faults.len()
    );
    let mut by_kind: BTreeMap<FaultKind, usize> = BTreeMap::new();
    for fault in faults {
        *by_kind.entry(fault.kind).or_default() += 1;
    }
    let kinds: Vec<String> = FaultKind::ALL
        .iter()
        .map(|k| format!("{} {}", k.name(), by_kind.get(k).copied().unwrap_or(0)))
        .collect();
    let _ = writeln!(out, "  faults injected: {}", kinds.join(", "));
    for fault in faults {
        let _ = writeln!(
            out,
            "    {:>6.1}s {:<11} {:<7} healed in {:>5.1}s{}",
            fault.at.as_secs_f64(),
            fault.kind.name(),
            fault.victim,
            fault.healed_after.as_secs_f64(),
            if fault.lost.is_empty() {
                String::new()
            } else {
                format!(", lost member(s) {:?}", fault.lost)
            }
        );
    }
    let writes = history.writes();
    let count = |f: fn(&Outcome) -> bool| writes.iter().filter(|w| f(&w.outcome)).count();
    let _ = writeln!(
        out,
        "  writes: attempted {}, acknowledged {}, conflicts {}, failed {}, timed out {}",
        writes.len(),
        count(|o| matches!(o, Outcome::Acked(_))),
        count(|o| matches!(o, Outcome::Conflict(_))),
        count(|o| matches!(o, Outcome::Failed(_))),
        count(|o| matches!(o, Outcome::TimedOut)),
    );
    let _ = writeln!(
        out,
        "  keys {}, acknowledged writes on a lost member (allowed to be gone) {}, \
         read back at their revision {} ({} compacted)",
        checked.keys, checked.exempt, checked.history_reads, checked.compacted
    );
    let losses: Vec<String> = history
        .losses()
        .iter()
        .map(|l| format!("{} ({} keys, up to {})", l.member, l.keys.len(), l.up_to))
        .collect();
    let _ = writeln!(out, "  members lost by design: {losses:?}");
    let _ = writeln!(out, "  lost: {}", checked.lost);
    let restarts = history.restarts();
    let _ = writeln!(
        out,
        "  router restarts {}: revision after each above every acknowledged before: {:?}",
        restarts.len(),
        restarts
            .iter()
            .map(|r| (r.acked_before, r.read_after))
            .collect::<Vec<_>>()
    );
    let segments: usize = watch_logs.iter().map(|(_, l)| l.segments.len()).sum();
    let resumes: u64 = watch_logs.iter().map(|(_, l)| l.resumes).sum();
    let _ = writeln!(
        out,
        "  watchers {}: events {}, lists {segments}, resumed streams {resumes}",
        watch_logs.len(),
        checked.events
    );
    let _ = writeln!(out, "  watch violations: {}", checked.watch_violations);
    let (requests, max_latency) = history.requests();
    let _ = writeln!(
        out,
        "  requests {requests}, max request latency {max_latency:.2?} (deadline {DEADLINE:?} + margin {MARGIN:?})"
    );
    let _ = writeln!(
        out,
        "  max router RSS {} MiB (bound {} MiB: --event-log-bytes {} MiB + {} MiB)",
        max_rss >> 20,
        rss_bound >> 20,
        crate::EVENT_LOG_BYTES >> 20,
        crate::RSS_BASE_BYTES >> 20
    );
    let _ = write!(out, "  violations: {}", history.violations().len());
    out
}
