//! Reading kube-apiserver's log (klog) for a storm of etcd errors.
//!
//! A fault is allowed to cause etcd errors: a killed shard fails the
//! requests that touch it until it is fenced, a killed router fails every
//! request until it is back, and each watch that ends is logged once.
//! What must not happen is the API server retrying in a tight loop (the
//! classic sign of a reply shape it cannot digest): the same error again
//! and again, many times a second, or without end.
//!
//! An *etcd error line* is a klog line at level E or W whose text
//! mentions etcd or gRPC (`etcd`, `grpc`, `rpc error`). Lines are grouped
//! by their message with the klog header and every number removed (so
//! `... revision 12345` and `... revision 12399` are one message). The log
//! is a storm when
//!
//! - one message appears more than [`STORM_PER_WINDOW`] times within any
//!   [`STORM_WINDOW`]: a tight loop, or a loop that never ends, like
//!   kube-apiserver's compactor failing its watch once a second (it did,
//!   before a history cut took a revision of its own). The faults the
//!   tests cause last at most about 30 s (`--member-dead-after`), and
//!   kube-apiserver's reflectors back off from 800 ms, so a relist after a
//!   fault logs a handful of lines per watch, far below this; or
//! - there are more than [`STORM_TOTAL`] etcd error lines in all.

use std::collections::BTreeMap;
use std::time::Duration;

/// The window in which one message may repeat [`STORM_PER_WINDOW`] times.
pub const STORM_WINDOW: Duration = Duration::from_secs(60);

/// How often one message may appear within [`STORM_WINDOW`].
pub const STORM_PER_WINDOW: usize = 30;

/// How many etcd error lines one control plane's log may hold in all.
pub const STORM_TOTAL: usize = 600;

/// One etcd error line.
#[derive(Debug, Clone)]
pub struct EtcdErrorLine {
    /// Seconds since the start of the month (from the klog header).
    pub at: f64,
    /// The message without header and numbers.
    pub message: String,
    /// The line as logged.
    pub line: String,
}

/// The etcd error lines of a klog text.
pub fn etcd_error_lines(log: &str) -> Vec<EtcdErrorLine> {
    log.lines()
        .filter_map(|line| {
            let (at, text) = parse_klog(line)?;
            let lower = text.to_ascii_lowercase();
            let about_etcd =
                lower.contains("etcd") || lower.contains("grpc") || lower.contains("rpc error");
            about_etcd.then(|| EtcdErrorLine {
                at,
                message: normalize(text),
                line: line.to_owned(),
            })
        })
        .collect()
}

/// `Err` describing the storm if `log` holds one (see the module docs).
pub fn check_no_storm(log: &str) -> Result<usize, String> {
    let lines = etcd_error_lines(log);
    if lines.len() > STORM_TOTAL {
        return Err(format!(
            "{} etcd error lines (more than {STORM_TOTAL}); the most frequent:\n{}",
            lines.len(),
            most_frequent(&lines)
        ));
    }
    let mut by_message: BTreeMap<&str, Vec<&EtcdErrorLine>> = BTreeMap::new();
    for line in &lines {
        by_message.entry(&line.message).or_default().push(line);
    }
    for same in by_message.values() {
        // Lines are in time order: slide a window over them.
        let mut start = 0;
        for end in 0..same.len() {
            while same[end].at - same[start].at > STORM_WINDOW.as_secs_f64() {
                start += 1;
            }
            if end - start + 1 > STORM_PER_WINDOW {
                return Err(format!(
                    "{} times within {STORM_WINDOW:?} (more than {STORM_PER_WINDOW}):\n{}\n...\n{}",
                    end - start + 1,
                    same[start].line,
                    same[end].line
                ));
            }
        }
    }
    Ok(lines.len())
}

fn most_frequent(lines: &[EtcdErrorLine]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for line in lines {
        *counts.entry(&line.message).or_default() += 1;
    }
    let mut counts: Vec<(&str, usize)> = counts.into_iter().collect();
    counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    counts
        .iter()
        .take(5)
        .map(|(message, n)| format!("{n:6}  {message}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `(seconds since the month began, message)` of an E or W klog line:
/// `E1129 11:30:00.123456   12345 file.go:123] message`.
fn parse_klog(line: &str) -> Option<(f64, &str)> {
    let level = line.as_bytes().first()?;
    if !matches!(level, b'E' | b'W') {
        return None;
    }
    let day: f64 = line.get(3..5)?.parse().ok()?;
    let time = line.get(6..21)?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    let (_, text) = line.split_once("] ")?;
    Some((day * 86_400.0 + h * 3_600.0 + m * 60.0 + s, text))
}

/// The message with digit runs replaced by `#`, at most 200 characters.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_error_is_a_storm_and_a_few_are_not() {
        let line = |s: u32, rev: u32| {
            format!(
                "E1129 11:30:{:02}.{:06}   4242 watcher.go:342] watch chan error: etcdserver: mvcc: required revision {rev} has been compacted",
                s / 1000,
                s % 1000 * 1000
            )
        };
        let few: Vec<String> = (0..30).map(|i| line(i * 500, 100 + i)).collect();
        assert_eq!(check_no_storm(&few.join("\n")), Ok(30));
        let storm: Vec<String> = (0..100).map(|i| line(i * 50, 100 + i)).collect();
        let err = check_no_storm(&storm.join("\n")).unwrap_err();
        assert!(err.contains("within"), "{err}");
        // Once a second for two minutes: the compactor that never recovers.
        let endless: Vec<String> = (0..120)
            .map(|i| {
                format!(
                    "E1129 11:{:02}:{:02}.000000   4242 compact.go:273] etcd: endpoint ([http://127.0.0.1:2479]): etcdserver: mvcc: required revision has been compacted",
                    30 + i / 60,
                    i % 60
                )
            })
            .collect();
        assert!(check_no_storm(&endless.join("\n")).is_err());
        let info = "I1129 11:30:00.000000   4242 x.go:1] etcd is fine".to_owned();
        assert_eq!(check_no_storm(&vec![info; 1000].join("\n")), Ok(0));
    }
}
