//! `kubectl ste ring show`: the ring's generation and virtual nodes, its
//! members with weight and share, registered agents that are not members,
//! and the ring change in progress.
//!
//! Two shares per member: KEY SHARE is its part of the keys the router
//! indexes now; RING SHARE is its part of the hash space, computed here
//! from the members, weights and vnodes with STE's placement function
//! (what the key share tends to with many keys).

use std::time::Duration;

use serde::Serialize;
use ste_core::ring::point_hash;
use ste_proto::v1::{RegisteredAgent, RingInfo, RouterStatus};

use super::migration::MigrationFacts;
use super::status::health_name;
use crate::error::CliResult;
use crate::output::human;
use crate::output::{Cell, Format, Style, Table};
use crate::session::Session;

/// What `-o json|yaml` prints.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RingReport {
    /// Ring generation.
    pub generation: u64,
    /// Points per unit of weight.
    pub vnodes: u32,
    /// Keys over all members.
    pub keys: u64,
    /// Members sorted by name.
    pub members: Vec<MemberShare>,
    /// Registered agents that are not members.
    pub agents_not_in_ring: Vec<AgentEntry>,
    /// The ring change in progress.
    pub migration: Option<MigrationFacts>,
}

/// One member.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberShare {
    /// Member name.
    pub name: String,
    /// Shard etcd URL.
    pub endpoint: String,
    /// Weight.
    pub weight: u32,
    /// Healthy or Unavailable.
    pub health: String,
    /// Why unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Keys placed here.
    pub keys: u64,
    /// keys / all keys, in percent (absent without keys).
    pub key_share_percent: Option<f64>,
    /// Part of the hash space, in percent.
    pub ring_share_percent: f64,
    /// The shard's revision as last seen by the router.
    pub shard_revision: i64,
}

/// A registered agent outside the ring.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentEntry {
    /// Node name.
    pub name: String,
    /// Agent gRPC address.
    pub agent_address: String,
    /// Shard etcd URL.
    pub endpoint: String,
    /// Requested weight.
    pub weight: u32,
    /// Shard epoch.
    pub epoch: u64,
    /// Started with --no-join.
    pub no_join: bool,
    /// Taken out by an operator's `ring leave`: not joined automatically
    /// until `ring join` names it.
    pub held_out: bool,
    /// Heartbeat reported its shard serving.
    pub healthy: bool,
    /// Seconds since the last heartbeat.
    pub last_heartbeat_seconds_ago: u64,
}

/// Each member's share of the 64-bit hash space, in member order, by
/// STE's placement (points `xxh64("<name>#<i>")`, owner = first point
/// strictly greater). Ties between equal points are ignored (measure 0).
pub fn ring_shares(vnodes: u32, members: &[(String, u32)]) -> Vec<f64> {
    let mut points: Vec<(u64, usize)> = Vec::new();
    for (slot, (name, weight)) in members.iter().enumerate() {
        let count = vnodes.saturating_mul((*weight).max(1));
        points.extend((0..count).map(|i| (point_hash(name, i), slot)));
    }
    let mut shares = vec![0.0; members.len()];
    if points.is_empty() {
        return shares;
    }
    points.sort_unstable();
    // A point owns the hashes from its predecessor (inclusive) up to
    // itself (exclusive); the first point also owns the wrap-around arc.
    let mut previous = points[points.len() - 1].0;
    for &(hash, slot) in &points {
        let arc = hash.wrapping_sub(previous);
        shares[slot] += arc as f64;
        previous = hash;
    }
    let total = 2f64.powi(64);
    if points.len() == 1 {
        // A lone point's arc is the whole circle, not 0.
        shares[points[0].1] = total;
    }
    shares.iter().map(|s| 100.0 * s / total).collect()
}

/// Builds the report from GetRing and GetStatus.
pub fn report(ring: &RingInfo, status: &RouterStatus) -> RingReport {
    let mut members = ring.members.clone();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let weights: Vec<(String, u32)> = members.iter().map(|m| (m.name.clone(), m.weight)).collect();
    let shares = ring_shares(ring.vnodes, &weights);
    let keys: u64 = members.iter().map(|m| m.key_count).sum();
    let members = members
        .iter()
        .zip(shares)
        .map(|(m, share)| MemberShare {
            name: m.name.clone(),
            endpoint: m.endpoint.clone(),
            weight: m.weight,
            health: health_name(m.health).to_owned(),
            last_error: (!m.last_error.is_empty()).then(|| m.last_error.clone()),
            keys: m.key_count,
            key_share_percent: (keys > 0).then(|| 100.0 * m.key_count as f64 / keys as f64),
            ring_share_percent: share,
            shard_revision: m.shard_revision,
        })
        .collect::<Vec<_>>();
    let mut agents: Vec<&RegisteredAgent> = status
        .agents
        .iter()
        .filter(|a| !members.iter().any(|m| m.name == a.name))
        .collect();
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    RingReport {
        generation: ring.generation,
        vnodes: ring.vnodes,
        keys,
        members,
        agents_not_in_ring: agents
            .into_iter()
            .map(|a| AgentEntry {
                name: a.name.clone(),
                agent_address: a.agent_address.clone(),
                endpoint: a.endpoint.clone(),
                weight: a.weight,
                epoch: a.epoch,
                no_join: a.no_join,
                held_out: a.held_out,
                healthy: a.healthy,
                last_heartbeat_seconds_ago: a.last_heartbeat_seconds_ago,
            })
            .collect(),
        migration: status.migration.as_ref().map(MigrationFacts::from),
    }
}

/// The members table (`wide` adds REVISION and LAST ERROR).
pub fn members_table(report: &RingReport, wide: bool) -> Table {
    let mut headers = vec![
        "MEMBER",
        "SHARD",
        "WEIGHT",
        "HEALTH",
        "KEYS",
        "KEY SHARE",
        "RING SHARE",
    ];
    if wide {
        headers.extend(["REVISION", "LAST ERROR"]);
    }
    let mut table = Table::new(headers);
    for m in &report.members {
        let mut row = vec![
            Cell::from(m.name.as_str()),
            Cell::from(m.endpoint.as_str()),
            Cell::from(m.weight.to_string()),
            Cell::styled(&m.health, (m.health != "Healthy").then_some(Style::Red)),
            Cell::from(m.keys.to_string()),
            Cell::from(
                m.key_share_percent
                    .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}%")),
            ),
            Cell::from(format!("{:.1}%", m.ring_share_percent)),
        ];
        if wide {
            row.push(Cell::from(m.shard_revision.to_string()));
            row.push(Cell::from(
                m.last_error.clone().unwrap_or_else(|| "<none>".into()),
            ));
        }
        table.row(row);
    }
    table
}

/// The table of registered agents outside the ring.
pub fn agents_table(report: &RingReport) -> Table {
    let mut table = Table::new([
        "NODE",
        "AGENT",
        "SHARD",
        "WEIGHT",
        "EPOCH",
        "HEALTHY",
        "NO-JOIN",
        "HELD OUT",
        "LAST HEARTBEAT",
    ]);
    for a in &report.agents_not_in_ring {
        table.row(vec![
            Cell::from(a.name.as_str()),
            Cell::from(a.agent_address.as_str()),
            Cell::from(a.endpoint.as_str()),
            Cell::from(a.weight.to_string()),
            Cell::from(a.epoch.to_string()),
            Cell::from(a.healthy.to_string()),
            Cell::from(a.no_join.to_string()),
            Cell::from(a.held_out.to_string()),
            Cell::from(format!(
                "{} ago",
                human::age(Duration::from_secs(a.last_heartbeat_seconds_ago))
            )),
        ]);
    }
    table
}

/// Runs `ring show`.
pub async fn run(session: &mut Session) -> CliResult<()> {
    let router = session.router().await?;
    let ring = router.ring().await?;
    let status = router.status().await?;
    let report = report(&ring, &status);
    if session.format.is_document() {
        return session.print_document(&report);
    }
    let color = session.term.out_color;
    let headers = session.headers;
    if headers {
        session.term.out_line(&format!(
            "Ring generation {}, {} virtual nodes per unit of weight, {} members, {} keys",
            report.generation,
            report.vnodes,
            report.members.len(),
            report.keys
        ));
    }
    let wide = session.format == Format::Wide;
    session
        .term
        .out(&members_table(&report, wide).render(headers, color));
    if !report.agents_not_in_ring.is_empty() {
        session.term.out_line("");
        if headers {
            session.term.out_line("Registered agents not in the ring:");
        }
        session
            .term
            .out(&agents_table(&report).render(headers, color));
    }
    if let Some(m) = &report.migration {
        session.term.out_line("");
        session.term.out_line(&format!(
            "Ring change in progress: {} {} ({}), {} of {} keys moved, generation {} -> {}",
            m.kind,
            m.member,
            m.phase,
            m.keys_moved,
            m.keys_total,
            m.from_generation,
            m.to_generation
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ste_core::ring::{Member, Ring};

    #[test]
    fn shares_sum_to_100_and_follow_weights() {
        let members = vec![
            ("a".to_string(), 1),
            ("b".to_string(), 1),
            ("c".to_string(), 2),
        ];
        let shares = ring_shares(1024, &members);
        let total: f64 = shares.iter().sum();
        assert!((total - 100.0).abs() < 1e-6, "{shares:?}");
        assert!((shares[2] - 50.0).abs() < 3.0, "{shares:?}");
        assert_eq!(ring_shares(8, &[("solo".into(), 1)]), vec![100.0]);
        assert!(ring_shares(8, &[]).is_empty());
    }

    /// The computed shares agree with where ste-core's ring puts keys.
    #[test]
    fn shares_agree_with_the_ring() {
        let names = ["node-a", "node-b", "node-c"];
        let mut ring = Ring::new(64).unwrap();
        for n in names {
            ring.add_member(Member::new(n, format!("http://{n}:2379")))
                .unwrap();
        }
        let shares = ring_shares(64, &names.map(|n| (n.to_string(), 1)));
        let mut counts = [0u32; 3];
        let samples = 60_000;
        for i in 0..samples {
            let key = format!("/registry/pods/default/pod-{i}");
            let owner = ring.locate(key.as_bytes()).unwrap();
            counts[names.iter().position(|n| *n == owner.name).unwrap()] += 1;
        }
        for (count, share) in counts.iter().zip(&shares) {
            let measured = 100.0 * f64::from(*count) / f64::from(samples);
            assert!((measured - share).abs() < 1.5, "{counts:?} vs {shares:?}");
        }
    }
}
