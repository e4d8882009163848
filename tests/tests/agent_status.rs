//! What the agent reports, through every channel a user or a generic tool
//! would read it: ste.v1 status, grpc.health.v1, reflection, /metrics.

use std::net::Ipv4Addr;
use std::time::Duration;

use nix::sys::signal::Signal;
use ste_proto::v1::AgentState;
use ste_tests::metrics::{http_get, sample};
use ste_tests::procs::sigkill;
use ste_tests::{AgentOptions, TestAgent};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

async fn health(agent: &TestAgent, service: &str) -> anyhow::Result<ServingStatus> {
    let channel = ste_tests::pki::ste()
        .admin_channel(agent.addrs.grpc)
        .await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(response.into_inner().status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_follow_the_shard() -> anyhow::Result<()> {
    let agent = TestAgent::start(AgentOptions::new("observed", LOCALHOST)).await?;
    agent
        .etcd()
        .await?
        .put("/registry/pods/default/p", "v", None)
        .await?;
    let status = agent
        .wait_status("key counted", |s| {
            s.shard.as_ref().is_some_and(|sh| sh.key_count == 1)
        })
        .await?;

    let (code, text) = http_get(agent.addrs.metrics, "/metrics").await?;
    assert_eq!(code, 200);
    assert_eq!(sample(&text, "ste_agent_shard_up"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "ste_agent_serving"), Some(1.0));
    assert_eq!(sample(&text, "ste_agent_shard_epoch"), Some(1.0));
    assert_eq!(sample(&text, "ste_agent_etcd_restarts_total"), Some(0.0));
    assert_eq!(sample(&text, "ste_agent_shard_keys"), Some(1.0));
    assert_eq!(
        sample(&text, "ste_agent_tmpfs_size_bytes"),
        Some((256u64 << 20) as f64)
    );
    assert!(sample(&text, "ste_agent_tmpfs_used_bytes").unwrap_or(0.0) > 0.0);
    assert!(sample(&text, "ste_agent_shard_db_size_bytes").unwrap_or(0.0) > 0.0);
    assert!(sample(&text, "ste_agent_shard_revision").unwrap_or(0.0) >= 2.0);
    assert!(text.contains("# TYPE ste_agent_etcd_restarts counter"));
    assert!(text.contains("node=\"observed\""));
    assert_eq!(http_get(agent.addrs.metrics, "/healthz").await?.0, 200);
    assert_eq!(health(&agent, "").await?, ServingStatus::Serving);
    assert_eq!(
        health(&agent, "ste.v1.Agent").await?,
        ServingStatus::Serving
    );

    // Shard down → NOT_SERVING everywhere, then back.
    sigkill(status.shard.unwrap_or_default().pid);
    agent
        .wait_status("DEGRADED", |s| s.state() == AgentState::Degraded)
        .await?;
    ste_tests::eventually("health NOT_SERVING", Duration::from_secs(30), || async {
        match health(&agent, "ste.v1.Agent").await {
            Ok(ServingStatus::NotServing) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    agent.wait_serving().await?;
    ste_tests::eventually("health SERVING again", Duration::from_secs(30), || async {
        match health(&agent, "").await {
            Ok(ServingStatus::Serving) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    let (_, text) = http_get(agent.addrs.metrics, "/metrics").await?;
    assert_eq!(sample(&text, "ste_agent_shard_epoch"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "ste_agent_etcd_restarts_total"), Some(1.0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_shard_raises_nospace_and_the_agent_keeps_reporting() -> anyhow::Result<()> {
    let agent = TestAgent::start(AgentOptions::new("full", LOCALHOST)).await?;
    let quota = agent
        .status()
        .await?
        .shard
        .unwrap_or_default()
        .quota_backend_bytes;
    assert_eq!(quota, 51 << 20);
    let mut etcd = agent.etcd().await?;
    let value = vec![b'x'; 100_000];
    let mut refused = None;
    // 51 MiB of quota / 100 KB values: NOSPACE well before 2,000 writes.
    for i in 0..2_000 {
        let key = format!("/registry/pods/fill/pod-{i}");
        if let Err(err) = etcd.put(key, value.clone(), None).await {
            refused = Some(err.to_string());
            break;
        }
    }
    let refused = refused.expect("etcd never refused a write");
    assert!(refused.contains("database space exceeded"), "{refused}");

    let status = agent
        .wait_status("NOSPACE alarm", |s| {
            s.shard
                .as_ref()
                .is_some_and(|sh| sh.alarms.iter().any(|a| a == "NOSPACE"))
        })
        .await?;
    // etcd survived (no ENOSPC on the tmpfs): same epoch, no restart.
    assert_eq!(status.epoch, 1);
    assert_eq!(status.restarts, 0);
    assert!(
        status
            .shard
            .as_ref()
            .is_some_and(|s| s.healthy && s.key_count > 100)
    );
    let tmpfs = status.tmpfs.unwrap_or_default();
    assert!(tmpfs.used_bytes < tmpfs.size_bytes, "{tmpfs:?}");
    let (_, text) = http_get(agent.addrs.metrics, "/metrics").await?;
    assert_eq!(sample(&text, "ste_agent_shard_alarms"), Some(1.0));
    // Status stays available for as long as the agent runs.
    for _ in 0..3 {
        assert!(agent.status().await.is_ok());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_tmpfs_is_used_as_is_and_left_mounted() -> anyhow::Result<()> {
    let mut options = AgentOptions::new("external", LOCALHOST);
    options.external = true;
    options.tmpfs_size = "300Mi".into();
    let mut agent = TestAgent::start(options).await?;
    let status = agent.status().await?;
    let tmpfs = status.tmpfs.unwrap_or_default();
    assert!(!tmpfs.managed);
    assert_eq!(tmpfs.size_bytes, 300 << 20);
    assert_eq!(
        status.shard.unwrap_or_default().quota_backend_bytes,
        ((300 - 128) * 2 / 5) << 20
    );

    agent.signal(Signal::SIGTERM)?;
    assert!(agent.wait_exit(Duration::from_secs(30)).await?.success());
    assert!(agent.etcd_pids().is_empty());
    assert_eq!(
        agent.mount_count(),
        1,
        "an external tmpfs belongs to its owner"
    );
    Ok(())
}

/// Exactly what the agent serves, sorted: reflection lists nothing else
/// (not the router's `ste.v1.Ring` nor the etcd API, whose descriptors sit
/// in the same files).
const SERVED: [&str; 4] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "ste.v1.Agent",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_exactly_the_services_served() -> anyhow::Result<()> {
    let agent = TestAgent::start(AgentOptions::new("listed", LOCALHOST)).await?;
    let (v1, v1alpha) = ste_tests::reflection::listed_services(
        ste_tests::pki::ste()
            .admin_channel(agent.addrs.grpc)
            .await?,
    )
    .await?;
    assert_eq!(v1, SERVED, "grpc.reflection.v1");
    assert_eq!(v1alpha, SERVED, "grpc.reflection.v1alpha");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_grpc_client_reads_status_through_reflection() -> anyhow::Result<()> {
    let agent = TestAgent::start(AgentOptions::new("reflected", LOCALHOST)).await?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/reflect_status.py");
    let pki = tempfile::tempdir()?;
    let (cert, key) = ste_tests::pki::ste().admin.write(pki.path(), "admin")?;
    let ca = pki.path().join("ca.crt");
    ste_tests::pki::ste().ca.write(&ca)?;
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(agent.addrs.grpc.to_string())
        .args([&ca, &cert, &key])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed (needs pip packages grpcio grpcio-reflection; \
         scripts/install-deps.sh installs them): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(answer["services"], serde_json::json!(SERVED), "{stdout}");
    assert!(stdout.contains("\"node_name\": \"reflected\""), "{stdout}");
    assert!(
        stdout.contains("\"state\": \"AGENT_STATE_SERVING\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"epoch\": \"1\""), "{stdout}");
    Ok(())
}

/// `ste-agent-status` (what scripts/local-cluster.sh prints) asks over TLS
/// with etcdctl's flags; without a client certificate the agent's port
/// refuses it, and the tool says which agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_tool_presents_a_client_certificate() -> anyhow::Result<()> {
    let agent = TestAgent::start(AgentOptions::new("tabled", LOCALHOST)).await?;
    let pki = tempfile::tempdir()?;
    let (cert, key) = ste_tests::pki::ste().admin.write(pki.path(), "admin")?;
    let ca = pki.path().join("ca.crt");
    ste_tests::pki::ste().ca.write(&ca)?;
    let address = agent.addrs.grpc.to_string();
    let tool = ste_tests::procs::workspace_bin("ste-agent-status");
    let with = tokio::process::Command::new(&tool)
        .arg("--cacert")
        .arg(&ca)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg(&address)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&with.stdout);
    assert!(with.status.success(), "{with:?}");
    assert!(stdout.contains("tabled"), "{stdout}");
    let without = tokio::process::Command::new(&tool)
        .arg("--cacert")
        .arg(&ca)
        .arg(&address)
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(!without.status.success(), "{without:?}");
    assert!(stderr.contains(&address), "{stderr}");
    Ok(())
}
