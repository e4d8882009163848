//! ste-agent against a fake `ste.v1.Ring` (an in-process tonic server that
//! records calls): Register once SERVING, heartbeats, registering again
//! after a new shard epoch or when the router forgot the agent, Leave
//! before etcd stops on SIGTERM, and an unreachable router that neither
//! blocks serving nor shutdown. The agents are real (real etcd, real tmpfs).

// The fake router and the tests live in agent_registration/, by concern;
// this file keeps the target's root and the waits the tests share.
#[path = "agent_registration/fake_ring.rs"]
mod fake_ring;
#[path = "agent_registration/registration.rs"]
mod registration;
#[path = "agent_registration/shutdown.rs"]
mod shutdown;
#[path = "agent_registration/unreachable.rs"]
mod unreachable;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ste_tests::metrics;
use ste_tests::{TestAgent, eventually};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::fake_ring::{Calls, FakeRing};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

const WAIT: Duration = Duration::from_secs(60);

async fn agent_health(address: &str) -> Option<i32> {
    let channel = ste_tests::pki::ste()
        .admin_channel(address.parse().ok()?)
        .await
        .ok()?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(response.into_inner().status)
}

/// Waits until `/metrics` shows `name` = `value`.
async fn wait_metric(agent: &TestAgent, name: &str, value: f64) -> anyhow::Result<()> {
    let result = eventually(&format!("{name} = {value}"), WAIT, || async {
        let text = metrics::scrape(agent.addrs.metrics)
            .await
            .map_err(|e| e.to_string())?;
        match metrics::sample(&text, name) {
            Some(v) if v == value => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    result.map_err(|e| e.context(format!("agent log:\n{}", agent.log())))
}

/// Waits until the fake's recorded calls satisfy `check`.
async fn wait_calls<T>(
    agent: &TestAgent,
    ring: &FakeRing,
    what: &str,
    check: impl Fn(&Calls) -> Option<T>,
) -> anyhow::Result<T> {
    let result = eventually(what, WAIT, || async {
        ring.calls(|c| check(c).ok_or_else(|| format!("{c:?}")))
    })
    .await;
    result.map_err(|e| e.context(format!("agent log:\n{}", agent.log())))
}

/// Waits until the agent's log contains `needle` at least `times` times.
async fn wait_log(agent: &TestAgent, needle: &str, times: usize) -> anyhow::Result<()> {
    eventually(&format!("{times}× {needle:?} in the log"), WAIT, || async {
        let log = agent.log();
        if log.matches(needle).count() >= times {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await
}

fn router_args(addr: SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--router".to_owned(),
        addr.to_string(),
        "--heartbeat-interval".to_owned(),
        "200ms".to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}
