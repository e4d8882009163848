//! A ring change as the router streams it (`MigrationProgress`): the plan
//! as a table, and progress as a bar on a terminal or plain lines.

use std::time::{Duration, Instant};

use serde::Serialize;
use ste_core::units::format_bytes;
use ste_proto::v1::{MigrationPhase, MigrationProgress};

use crate::output::human;
use crate::output::{Cell, Table, Term};

/// One source → destination pair of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowFacts {
    /// Member the keys leave.
    pub from: String,
    /// Member the keys go to.
    pub to: String,
    /// Keys.
    pub keys: u64,
    /// Key and value bytes.
    pub bytes: u64,
}

/// A `MigrationProgress` for json/yaml and for the tables.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationFacts {
    /// `join` or `leave` (or `fence`).
    pub kind: String,
    /// The member joining or leaving.
    pub member: String,
    /// PLANNED, MOVING or DONE.
    pub phase: String,
    /// Ring generation before and after.
    pub from_generation: u64,
    /// Ring generation after.
    pub to_generation: u64,
    /// Keys to move.
    pub keys_total: u64,
    /// Keys moved so far.
    pub keys_moved: u64,
    /// Bytes to move.
    pub bytes_total: u64,
    /// Bytes moved so far.
    pub bytes_moved: u64,
    /// Estimated seconds left.
    pub eta_seconds: f64,
    /// The plan per source and destination.
    pub flows: Vec<FlowFacts>,
}

/// PLANNED, MOVING, DONE.
pub fn phase_name(phase: i32) -> &'static str {
    match MigrationPhase::try_from(phase).unwrap_or(MigrationPhase::Unspecified) {
        MigrationPhase::Planned => "PLANNED",
        MigrationPhase::Moving => "MOVING",
        MigrationPhase::Done => "DONE",
        MigrationPhase::Unspecified => "UNKNOWN",
    }
}

impl From<&MigrationProgress> for MigrationFacts {
    fn from(p: &MigrationProgress) -> MigrationFacts {
        MigrationFacts {
            kind: p.kind.clone(),
            member: p.member.clone(),
            phase: phase_name(p.phase).to_owned(),
            from_generation: p.from_generation,
            to_generation: p.to_generation,
            keys_total: p.keys_total,
            keys_moved: p.keys_moved,
            bytes_total: p.bytes_total,
            bytes_moved: p.bytes_moved,
            eta_seconds: p.eta_seconds,
            flows: p
                .flows
                .iter()
                .map(|f| FlowFacts {
                    from: f.from.clone(),
                    to: f.to.clone(),
                    keys: f.keys,
                    bytes: f.bytes,
                })
                .collect(),
        }
    }
}

/// Keys and their bytes in words: `1 key (379B)`, `1200 keys (2.1Mi)`.
pub fn key_amount(keys: u64, bytes: u64) -> String {
    format!(
        "{} ({})",
        human::count(keys, "key", "keys"),
        format_bytes(bytes)
    )
}

/// The plan's first line, e.g. `join node-d: generation 3 -> 4, 1200 keys
/// (2.1Mi) to move`.
pub fn plan_line(plan: &MigrationFacts, dry_run: bool) -> String {
    let what = if plan.keys_total == 0 {
        "no keys to move".to_owned()
    } else {
        format!("{} to move", key_amount(plan.keys_total, plan.bytes_total))
    };
    let dry = if dry_run { " (dry run)" } else { "" };
    format!(
        "{} {}: generation {} -> {}, {what}{dry}",
        plan.kind, plan.member, plan.from_generation, plan.to_generation
    )
}

/// The plan's flows as a table: FROM, TO, KEYS, BYTES.
pub fn plan_table(plan: &MigrationFacts) -> Table {
    let mut table = Table::new(["FROM", "TO", "KEYS", "BYTES"]);
    for f in &plan.flows {
        table.row(vec![
            Cell::from(f.from.as_str()),
            Cell::from(f.to.as_str()),
            Cell::from(f.keys.to_string()),
            Cell::from(format_bytes(f.bytes)),
        ]);
    }
    table
}

const BAR_WIDTH: usize = 30;
/// Plain progress lines are printed at most this often.
const LINE_EVERY: Duration = Duration::from_secs(1);

fn progress_text(p: &MigrationProgress) -> String {
    let fraction = if p.keys_total == 0 {
        1.0
    } else {
        (p.keys_moved as f64 / p.keys_total as f64).min(1.0)
    };
    let eta = if p.eta_seconds > 0.0 {
        format!(
            ", eta {}",
            human::age(Duration::from_secs(p.eta_seconds.ceil() as u64))
        )
    } else {
        String::new()
    };
    format!(
        "{}/{} keys ({:.0}%), {}/{}{eta}",
        p.keys_moved,
        p.keys_total,
        fraction * 100.0,
        format_bytes(p.bytes_moved),
        format_bytes(p.bytes_total)
    )
}

/// The bar for `p`, e.g. `[##########--------------------]`.
pub fn bar(p: &MigrationProgress) -> String {
    let filled = if p.keys_total == 0 {
        BAR_WIDTH
    } else {
        ((p.keys_moved as f64 / p.keys_total as f64).min(1.0) * BAR_WIDTH as f64) as usize
    };
    format!("[{}{}]", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled))
}

/// Shows MOVING updates on stderr: a redrawn bar on a terminal, else a
/// plain line at most once a second.
pub struct ProgressView {
    bar: bool,
    drawn: bool,
    last_line: Option<Instant>,
}

impl ProgressView {
    /// A view for this terminal.
    pub fn new(term: &Term) -> ProgressView {
        ProgressView {
            bar: term.err_tty,
            drawn: false,
            last_line: None,
        }
    }

    /// Shows one update. A change that moves no keys shows none: its plan
    /// line already says "no keys to move".
    pub fn update(&mut self, term: &mut Term, p: &MigrationProgress) {
        if p.keys_total == 0 {
            return;
        }
        if self.bar {
            term.err(&format!(
                "\r\u{1b}[2K{} {} {} {}",
                p.kind,
                p.member,
                bar(p),
                progress_text(p)
            ));
            self.drawn = true;
        } else if self.last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY) {
            term.err(&format!(
                "{} {}: moving {}\n",
                p.kind,
                p.member,
                progress_text(p)
            ));
            self.last_line = Some(Instant::now());
        }
    }

    /// Ends the bar's line so later output starts on a fresh one.
    pub fn finish(&mut self, term: &mut Term) {
        if self.drawn {
            term.err("\n");
            self.drawn = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ste_proto::v1::MigrationFlow;

    fn progress(moved: u64, total: u64) -> MigrationProgress {
        MigrationProgress {
            phase: MigrationPhase::Moving as i32,
            kind: "join".into(),
            member: "node-d".into(),
            keys_total: total,
            keys_moved: moved,
            bytes_total: total * 1000,
            bytes_moved: moved * 1000,
            eta_seconds: 3.2,
            flows: vec![MigrationFlow {
                from: "node-a".into(),
                to: "node-d".into(),
                keys: total,
                bytes: total * 1000,
            }],
            from_generation: 3,
            to_generation: 4,
        }
    }

    #[test]
    fn plan_rendering() {
        let facts = MigrationFacts::from(&progress(0, 1200));
        assert_eq!(
            plan_line(&facts, true),
            "join node-d: generation 3 -> 4, 1200 keys (1.1Mi) to move (dry run)"
        );
        assert_eq!(
            plan_table(&facts).render(true, false),
            "FROM     TO       KEYS   BYTES\nnode-a   node-d   1200   1.1Mi\n"
        );
        let none = MigrationFacts::from(&progress(0, 0));
        assert!(plan_line(&none, false).ends_with("no keys to move"));
        let one = MigrationFacts::from(&progress(0, 1));
        assert!(
            plan_line(&one, false).ends_with(", 1 key (1000B) to move"),
            "{}",
            plan_line(&one, false)
        );
    }

    #[test]
    fn bars() {
        assert_eq!(bar(&progress(0, 10)), format!("[{}]", "-".repeat(30)));
        assert_eq!(
            bar(&progress(5, 10)),
            format!("[{}{}]", "#".repeat(15), "-".repeat(15))
        );
        assert_eq!(bar(&progress(0, 0)), format!("[{}]", "#".repeat(30)));
        assert_eq!(
            progress_text(&progress(5, 10)),
            "5/10 keys (50%), 4.9Ki/9.8Ki, eta 4s"
        );
    }
}
