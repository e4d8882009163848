//! `kubectl ste status`: one row per ring member, from the router's view
//! (shard, keys, health, the registered agent's generation) and the member's
//! own agent (state, epoch, sizes, age).
//!
//! Flags are printed as `! NODE: …` notes on stderr after the table and
//! carried in `warnings` in json/yaml: a member the router cannot use, an
//! agent not serving, a shard restarted into a new epoch, an agent that
//! really lags behind the ring generation (still behind well after a change
//! although it heartbeated since; see [`agent_lags`]) or is silent, a tmpfs
//! or etcd quota at 90 % or more. A warning means something is wrong.
//! A member whose agent is not registered or does not answer gets
//! `<unknown>` agent columns and a note saying why; the command still
//! succeeds when the router answered.

mod report;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;

use report::share;
pub use report::{
    AgentFacts, GENERATION_ACK_SECONDS, GENERATION_GRACE_SECONDS, HEARTBEAT_STALE_SECONDS,
    MemberStatus, NEAR_FULL, RouterFacts, StatusReport, Summary, agent_lags, balance, health_name,
    report,
};

use ste_core::units::format_bytes;

use crate::error::CliResult;
use crate::output::human;
use crate::output::{Cell, Format, Style, Table};
use crate::session::Session;

const UNKNOWN: &str = "<unknown>";

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn state_style(state: &str) -> Option<Style> {
    match state {
        "Serving" => None,
        "Starting" | "Draining" => Some(Style::Yellow),
        _ => Some(Style::Red),
    }
}

fn unknown() -> Cell {
    Cell::from(UNKNOWN)
}

/// The table (`wide` adds REVISION, RESTARTS, VERSION, MEMORY, HEALTH and
/// the router's key index, INDEX).
pub fn table(report: &StatusReport, wide: bool) -> Table {
    let mut headers = vec![
        "NODE",
        "SHARD",
        "STATE",
        "EPOCH",
        "KEYS",
        "DB SIZE",
        "TMPFS",
        "GENERATION",
        "AGE",
    ];
    if wide {
        headers.extend([
            "REVISION", "RESTARTS", "VERSION", "MEMORY", "HEALTH", "INDEX",
        ]);
    }
    let mut table = Table::new(headers);
    for m in &report.members {
        let a = m.agent.as_ref();
        let generation = match m.generation {
            Some(g) if m.generation_behind => Cell::styled(g.to_string(), Some(Style::Yellow)),
            Some(g) => Cell::from(g.to_string()),
            None => unknown(),
        };
        let mut row = vec![
            Cell::from(m.node.as_str()),
            Cell::from(m.shard.as_str()),
            a.map_or_else(unknown, |a| Cell::styled(&a.state, state_style(&a.state))),
            a.map_or_else(unknown, |a| Cell::from(a.epoch.to_string())),
            Cell::from(m.keys.to_string()),
            a.map_or_else(unknown, |a| Cell::from(format_bytes(a.db_size_bytes))),
            a.map_or_else(unknown, |a| {
                let text = format!(
                    "{}/{}",
                    format_bytes(a.tmpfs_used_bytes),
                    format_bytes(a.tmpfs_size_bytes)
                );
                let near =
                    share(a.tmpfs_used_bytes, a.tmpfs_size_bytes).is_some_and(|s| s >= NEAR_FULL);
                Cell::styled(text, near.then_some(Style::Yellow))
            }),
            generation,
            a.map_or_else(unknown, |a| {
                Cell::from(
                    a.age_seconds
                        .map(|s| human::age(Duration::from_secs(s)))
                        .unwrap_or_else(|| "<none>".into()),
                )
            }),
        ];
        if wide {
            row.extend([
                Cell::from(m.shard_revision.to_string()),
                a.map_or_else(unknown, |a| Cell::from(a.restarts.to_string())),
                a.map_or_else(unknown, |a| Cell::from(a.version.as_str())),
                a.map_or_else(unknown, |a| {
                    Cell::from(format!(
                        "{}/{}",
                        format_bytes(a.memory_used_bytes),
                        format_bytes(a.memory_total_bytes)
                    ))
                }),
                Cell::styled(&m.health, (m.health != "Healthy").then_some(Style::Red)),
                match report.router.key_index.as_str() {
                    "" => unknown(),
                    kind => Cell::from(kind),
                },
            ]);
        }
        table.row(row);
    }
    table
}

/// The summary line under the table.
pub fn summary_line(report: &StatusReport) -> String {
    let s = &report.summary;
    let balance = s
        .balance
        .map(|b| format!("{b:.2}"))
        .unwrap_or_else(|| "-".into());
    let mut line = format!(
        "{}, {}, balance {balance} (max/mean), router revision {}, generation {}",
        human::count(s.members as u64, "member", "members"),
        human::count(s.keys, "key", "keys"),
        s.router_revision,
        report.router.generation
    );
    if !report.router.serving {
        line.push_str("; the router is not serving yet (start-up scan)");
    }
    if let Some(m) = &report.router.migration {
        line.push_str(&format!(
            "; {} {} in progress: {} of {} keys moved",
            m.kind, m.member, m.keys_moved, m.keys_total
        ));
    }
    line
}

/// Runs `status`.
pub async fn run(session: &mut Session) -> CliResult<()> {
    let router = session.router().await?;
    let status = router.status().await?;
    let mut members = status.members.clone();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let queries = members.iter().map(|m| {
        let registered = status
            .agents
            .iter()
            .find(|a| a.name == m.name && !a.agent_address.is_empty());
        let router = &router;
        async move {
            match registered {
                Some(reg) => Some(router.agent_status(reg).await),
                None => None,
            }
        }
    });
    let agents = join_all(queries).await;
    let report = report(&router.address, &status, agents, unix_now());
    match session.format {
        Format::Json | Format::Yaml => session.print_document(&report)?,
        format => {
            let table = table(&report, format == Format::Wide);
            let text = table.render(session.headers, session.term.out_color);
            session.term.out(&text);
            if session.headers {
                session.term.out_line("");
                session.term.out_line(&summary_line(&report));
            }
        }
    }
    for m in &report.members {
        if let Some(why) = &m.agent_error {
            session
                .term
                .warn(&format!("{}: agent columns {UNKNOWN}: {why}", m.node));
        }
        for w in &m.warnings {
            session.term.warn(&format!("{}: {w}", m.node));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
