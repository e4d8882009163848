//! The cluster-level commands: endpoint status and health, member list,
//! and leases.

use std::collections::BTreeSet;

use anyhow::Context;
use ste_tests::ShardedRouter;

use crate::etcdctl::{Etcdctl, kvs};
use crate::{assert_router_quiet, held_by_shards, placement};

fn version_at_least(version: &str, want: (u64, u64, u64)) -> bool {
    let parts: Vec<u64> = version
        .split(['.', '-', '+'])
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    let have = (
        parts.first().copied().unwrap_or(0),
        parts.get(1).copied().unwrap_or(0),
        parts.get(2).copied().unwrap_or(0),
    );
    have >= want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_status_health_and_member_list() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(3, &[]).await?;
    let ctl = Etcdctl::for_router(&cluster);
    let written = ctl.put("/registry/pods/s/pod", "x")?;

    let status = ctl.json(&["endpoint", "status"])?;
    let entry = &status[0];
    assert_eq!(
        entry["Endpoint"].as_str(),
        Some(ctl.endpoint.as_str()),
        "{status}"
    );
    let version = entry["Status"]["version"].as_str().unwrap_or_default();
    assert!(
        version_at_least(version, (3, 5, 13)),
        "version {version:?} must be ≥ 3.5.13 so kube-apiserver uses watch progress: {status}"
    );
    let db_size = entry["Status"]["dbSize"].as_i64().unwrap_or(0);
    assert!(db_size > 0, "db size {db_size}: {status}");
    assert_eq!(
        entry["Status"]["header"]["revision"].as_i64(),
        Some(written),
        "{status}"
    );
    assert!(
        entry["Status"]["errors"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "no errors with all shards up: {status}"
    );
    // The table output too.
    let table = ctl.ok(&["endpoint", "status", "-w", "table"])?;
    assert!(
        table.contains(&ctl.endpoint) && table.contains(version),
        "{table}"
    );

    // endpoint health prints to stderr in etcdctl 3.4.
    let output = ctl.output(&["endpoint", "health"], None)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(&format!("{} is healthy", ctl.endpoint)),
        "{text}"
    );

    // member list: one member, the router, with its client URL.
    let members = ctl.ok(&["member", "list"])?;
    let rows: Vec<&str> = members.lines().collect();
    assert_eq!(rows.len(), 1, "{members}");
    let fields: Vec<&str> = rows[0].split(", ").collect();
    assert_eq!(fields.len(), 6, "{members}");
    assert_eq!(fields[1], "started");
    assert_eq!(fields[2], "ste-router");
    assert_eq!(fields[4], cluster.router.endpoint());
    assert_eq!(fields[5], "false", "not a learner");
    let json = ctl.json(&["member", "list"])?;
    let member = &json["members"][0];
    assert_eq!(member["name"].as_str(), Some("ste-router"));
    assert_eq!(
        member["clientURLs"][0].as_str(),
        Some(cluster.router.endpoint().as_str()),
        "{json}"
    );
    let id = member["ID"].as_u64().context("member ID")?;
    assert_eq!(format!("{id:x}"), fields[0], "the same ID in both outputs");
    assert_router_quiet(&cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grant_attach_timetolive_revoke() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(3, &[]).await?;
    let ctl = Etcdctl::for_router(&cluster);
    let granted = ctl.ok(&["lease", "grant", "300"])?;
    // "lease 694d7c2a5b6c3e1f granted with TTL(300s)"
    let words: Vec<&str> = granted.split_whitespace().collect();
    assert_eq!(
        (words.first().copied(), words.get(2..).map(|w| w.join(" "))),
        (Some("lease"), Some("granted with TTL(300s)".to_string())),
        "{granted}"
    );
    let id = words[1].to_string();
    let id_number = i64::from_str_radix(&id, 16).context("lease id is hex")?;

    let keys: Vec<String> = (0..6)
        .map(|i| format!("/registry/pods/l/pod-{i}"))
        .collect();
    for key in &keys {
        assert_eq!(ctl.ok(&["put", "--lease", &id, key, "leased"])?, "OK\n");
    }
    ctl.put("/registry/pods/l/unleased", "stays")?;
    let members: BTreeSet<String> = placement(&cluster, &keys).await?.into_values().collect();
    assert!(
        members.len() >= 2,
        "leased keys on several shards: {members:?}"
    );
    let got = kvs(&ctl.json(&["get", &keys[0]])?);
    assert_eq!(got[0].lease, id_number, "the key carries the lease");

    let ttl = ctl.ok(&["lease", "timetolive", "--keys", &id])?;
    let prefix = format!("lease {id} granted with TTL(300s), remaining(");
    assert!(ttl.starts_with(&prefix), "{ttl}");
    let attached = ttl
        .split_once("attached keys([")
        .and_then(|(_, rest)| rest.trim_end().strip_suffix("])"))
        .with_context(|| format!("no attached keys in {ttl:?}"))?;
    let attached: BTreeSet<&str> = attached.split(' ').collect();
    let want: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(attached, want, "{ttl}");
    let remaining: i64 = ttl[prefix.len()..]
        .split_once("s)")
        .and_then(|(n, _)| n.parse().ok())
        .with_context(|| format!("no remaining TTL in {ttl:?}"))?;
    assert!((1..=300).contains(&remaining), "{ttl}");

    assert!(ctl.ok(&["lease", "list"])?.contains(&id));
    assert_eq!(
        ctl.ok(&["lease", "keep-alive", "--once", &id])?,
        format!("lease {id} keepalived with TTL(300)\n")
    );

    // Revoking deletes every attached key, on every shard.
    assert_eq!(
        ctl.ok(&["lease", "revoke", &id])?,
        format!("lease {id} revoked\n")
    );
    for key in &keys {
        assert_eq!(ctl.ok(&["get", key])?, "", "{key} deleted with its lease");
    }
    let held = held_by_shards(&cluster, "/registry/pods/l/pod-").await?;
    assert!(
        held.values().all(|n| *n == 0),
        "shards still hold leased keys: {held:?}"
    );
    assert_eq!(
        ctl.ok(&["get", "/registry/pods/l/unleased"])?,
        "/registry/pods/l/unleased\nstays\n"
    );
    assert_eq!(
        ctl.ok(&["lease", "timetolive", &id])?,
        format!("lease {id} already expired\n")
    );
    // Putting with a revoked lease fails as etcd does.
    let error = ctl.fails(&["put", "--lease", &id, &keys[0], "again"])?;
    assert!(error.contains("requested lease not found"), "{error}");
    assert_router_quiet(&cluster);
    Ok(())
}
