use ste_proto::v1::{
    AgentState, AgentStatus, MemberHealth, NodeStatus, RegisteredAgent, RingMember, RouterStatus,
    ShardStatus, TmpfsStatus,
};

use super::*;

const MI: u64 = 1024 * 1024;

fn member(name: &str, keys: u64, healthy: bool) -> RingMember {
    RingMember {
        name: name.into(),
        endpoint: format!("http://{name}:2279"),
        weight: 1,
        health: if healthy {
            MemberHealth::Healthy
        } else {
            MemberHealth::Unavailable
        } as i32,
        key_count: keys,
        last_error: if healthy {
            String::new()
        } else {
            "connection refused".into()
        },
        shard_revision: 7,
    }
}

fn registered(name: &str, generation_seen: u64) -> RegisteredAgent {
    RegisteredAgent {
        name: name.into(),
        agent_address: format!("{name}:2290"),
        endpoint: format!("http://{name}:2279"),
        epoch: 2,
        weight: 1,
        no_join: false,
        held_out: false,
        member: true,
        last_heartbeat_seconds_ago: 1,
        generation_seen,
        healthy: true,
        user_address: format!("{name}:2292"),
    }
}

fn agent(tmpfs_used: u64) -> AgentStatus {
    AgentStatus {
        node_name: "b".into(),
        version: "0.1.0".into(),
        state: AgentState::Serving as i32,
        epoch: 2,
        restarts: 1,
        last_error: String::new(),
        shard: Some(ShardStatus {
            endpoint: "http://b:2279".into(),
            healthy: true,
            etcd_version: "3.4.23".into(),
            revision: 9,
            db_size_bytes: (20 * MI) as i64,
            key_count: 3,
            alarms: vec![],
            quota_backend_bytes: (300 * MI) as i64,
            pid: 1,
        }),
        tmpfs: Some(TmpfsStatus {
            path: "/x".into(),
            size_bytes: 512 * MI,
            used_bytes: tmpfs_used,
            managed: true,
            mounted: true,
        }),
        node: Some(NodeStatus {
            memory_total_bytes: 8 * 1024 * MI,
            memory_available_bytes: 6 * 1024 * MI,
            cpu_usage_percent: 1.0,
        }),
        uptime_seconds: 100,
        epoch_started_unix: 1_000,
    }
}

fn router_status() -> RouterStatus {
    RouterStatus {
        version: "0.1.0".into(),
        revision: 500,
        keys: 30,
        generation: 4,
        // Out of order on purpose: rows are sorted by name.
        members: vec![
            member("c", 10, false),
            member("a", 8, true),
            member("b", 12, true),
        ],
        serving: true,
        agents: vec![registered("b", 3), registered("c", 4)],
        // Generation 4 for a minute; b heartbeated a second ago and still
        // reports 3: it lags.
        generation_age_seconds: Some(60),
        key_index: "betree".into(),
        ..Default::default()
    }
}

#[test]
fn report_joins_router_and_agents() {
    let status = router_status();
    let agents = vec![
        None,
        Some(Ok(agent(500 * MI))),
        Some(Err("agent at c:2290 unreachable: Connection refused".into())),
    ];
    let r = report("127.0.0.1:2490", &status, agents, 1_000 + 200);
    let names: Vec<&str> = r.members.iter().map(|m| m.node.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);

    let a = &r.members[0];
    assert!(a.agent.is_none());
    assert!(
        a.agent_error
            .as_deref()
            .unwrap()
            .contains("no agent registered")
    );
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    assert_eq!(a.generation, None);

    let b = &r.members[1];
    let facts = b.agent.as_ref().unwrap();
    assert_eq!(facts.state, "Serving");
    assert_eq!(facts.age_seconds, Some(200));
    assert_eq!(facts.memory_used_bytes, 2 * 1024 * MI);
    assert_eq!(b.generation, Some(3));
    assert!(
        b.warnings.iter().any(|w| w.starts_with("old generation")),
        "{:?}",
        b.warnings
    );
    assert!(
        b.warnings.iter().any(|w| w.starts_with("tmpfs 98% full")),
        "{:?}",
        b.warnings
    );

    let c = &r.members[2];
    assert_eq!(c.health, "Unavailable");
    assert!(c.agent_error.as_deref().unwrap().contains("unreachable"));
    assert!(
        c.warnings.iter().any(|w| w.contains("connection refused")),
        "{:?}",
        c.warnings
    );

    assert_eq!(r.summary.members, 3);
    assert_eq!(r.summary.keys, 30);
    assert!((r.summary.balance.unwrap() - 1.2).abs() < 1e-9);
    assert_eq!(
        summary_line(&r),
        "3 members, 30 keys, balance 1.20 (max/mean), router revision 500, generation 4"
    );

    let text = table(&r, false).render(true, false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "NODE",
            "SHARD",
            "STATE",
            "EPOCH",
            "KEYS",
            "DB",
            "SIZE",
            "TMPFS",
            "GENERATION",
            "AGE"
        ]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [
            "a",
            "http://a:2279",
            "<unknown>",
            "<unknown>",
            "8",
            "<unknown>",
            "<unknown>",
            "<unknown>",
            "<unknown>"
        ]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        [
            "b",
            "http://b:2279",
            "Serving",
            "2",
            "12",
            "20Mi",
            "500Mi/512Mi",
            "3",
            "3m20s"
        ]
    );
    let wide = table(&r, true).render(true, false);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header[10..],
        [
            "REVISION", "RESTARTS", "VERSION", "MEMORY", "HEALTH", "INDEX"
        ]
    );
    assert!(wide.contains("2Gi/8Gi"));
    assert!(
        wide.lines()
            .skip(1)
            .all(|row| row.split_whitespace().last() == Some("betree")),
        "{wide}"
    );
}

fn generation_warnings(status: &RouterStatus) -> Vec<String> {
    let agents = status
        .members
        .iter()
        .map(|_| Some(Ok(agent(10 * MI))))
        .collect();
    report("127.0.0.1:2490", status, agents, 1_000)
        .members
        .into_iter()
        .flat_map(|m| m.warnings)
        .filter(|w| w.contains("generation"))
        .collect()
}

/// Right after `local-cluster.sh up` the third join has just moved the ring
/// to generation 3 and every agent still reports 2 (each heartbeat carries
/// the generation of the router's previous answer): nothing is wrong.
#[test]
fn fresh_ring_change_is_not_an_old_generation() {
    let mut status = RouterStatus {
        generation: 3,
        members: vec![
            member("node-a", 1, true),
            member("node-b", 1, true),
            member("node-c", 0, true),
        ],
        agents: ["node-a", "node-b", "node-c"]
            .map(|n| RegisteredAgent {
                last_heartbeat_seconds_ago: 0,
                ..registered(n, 2)
            })
            .to_vec(),
        generation_age_seconds: Some(1),
        ..Default::default()
    };
    assert_eq!(generation_warnings(&status), Vec::<String>::new());
    let r = report("x", &status, vec![None, None, None], 0);
    assert!(r.members.iter().all(|m| !m.generation_behind));
    // Still within the grace period.
    status.generation_age_seconds = Some(GENERATION_GRACE_SECONDS - 1);
    assert_eq!(generation_warnings(&status), Vec::<String>::new());
    // An older router that does not say how old the generation is.
    status.generation_age_seconds = None;
    assert_eq!(generation_warnings(&status), Vec::<String>::new());
    // Caught up.
    status.generation_age_seconds = Some(60);
    for a in &mut status.agents {
        a.generation_seen = 3;
    }
    assert_eq!(generation_warnings(&status), Vec::<String>::new());
}

/// An agent that heartbeats but still reports the old generation well after
/// the change really lags; one that has been silent since the change is
/// flagged as silent, not as behind.
#[test]
fn an_agent_that_really_lags_is_flagged() {
    let status = RouterStatus {
        generation: 3,
        members: vec![member("node-a", 1, true), member("node-b", 1, true)],
        agents: vec![
            RegisteredAgent {
                last_heartbeat_seconds_ago: 0,
                ..registered("node-a", 2)
            },
            RegisteredAgent {
                last_heartbeat_seconds_ago: 30,
                ..registered("node-b", 2)
            },
        ],
        generation_age_seconds: Some(30),
        ..Default::default()
    };
    assert_eq!(
        generation_warnings(&status),
        [
            "old generation: the agent still reports ring generation 2, the router has been at 3 \
          for 30s and heard from the agent since"
        ]
    );
    let r = report("x", &status, vec![None, None], 0);
    assert!(r.members[0].generation_behind && !r.members[1].generation_behind);
    assert!(
        r.members[1]
            .warnings
            .iter()
            .any(|w| w.starts_with("no heartbeat from the agent for 30s")),
        "{:?}",
        r.members[1].warnings
    );
}

#[test]
fn balance_of_counts() {
    assert_eq!(balance(&[]), None);
    assert_eq!(balance(&[0, 0]), None);
    assert_eq!(balance(&[5, 5]), Some(1.0));
    assert_eq!(balance(&[3, 1]), Some(1.5));
}
