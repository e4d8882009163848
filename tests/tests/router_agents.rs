//! The router with real agents: agents register and are joined
//! automatically, a member agent drains on SIGTERM, and a killed agent is
//! fenced and later rejoins empty.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{GetOptions, WatchOptions};
use nix::sys::signal::Signal;
use ste_proto::v1::RouterStatus;
use ste_tests::keys::{self, PODS};
use ste_tests::watch::until_canceled;
use ste_tests::{AgentOptions, TestAgent, TestRouter, ring};

/// Agents node-a, node-b, node-c on 127.0.0.2-4, registering with `router`.
fn spawn_three(router: &TestRouter) -> anyhow::Result<Vec<TestAgent>> {
    ["node-a", "node-b", "node-c"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            TestAgent::spawn_new(AgentOptions::registering_with(name, 2 + i as u8, router))
        })
        .collect()
}

/// Waits until the ring has exactly `members` and no change is running.
async fn wait_members(router: &TestRouter, members: &[&str]) -> anyhow::Result<RouterStatus> {
    router.wait_members(members, Duration::from_secs(120)).await
}

async fn put_keys(router: &TestRouter, n: usize) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut client = router.client().await?;
    let mut written = BTreeMap::new();
    for i in 0..n {
        let key = format!("{PODS}ns-{}/pod-{i:04}", i % 5);
        let response = client.put(key.clone(), format!("v{i}"), None).await?;
        written.insert(
            key,
            response.header().map(|h| h.revision()).unwrap_or_default(),
        );
    }
    Ok(written)
}

/// Every key readable through the router with its revision, and held by
/// exactly the agent Locate names.
async fn check(
    router: &TestRouter,
    agents: &[&TestAgent],
    written: &BTreeMap<String, i64>,
) -> anyhow::Result<()> {
    let mut client = router.client().await?;
    let listed = client
        .get(PODS, Some(GetOptions::new().with_prefix()))
        .await?;
    let got: BTreeMap<String, i64> = listed
        .kvs()
        .iter()
        .map(|kv| Ok((kv.key_str()?.to_owned(), kv.mod_revision())))
        .collect::<Result<_, etcd_client::Error>>()?;
    assert_eq!(&got, written, "every key with its original revision");
    let mut admin = router.admin().await?;
    let held = ste_tests::agent::keys_held(agents.iter().copied(), PODS).await?;
    for key in written.keys() {
        let owner = ring::member_of(&mut admin, key).await?;
        assert_eq!(
            held.get(key),
            Some(&vec![owner.clone()]),
            "{key} should be on {owner} only"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_register_and_join_and_a_fourth_joins_with_data() -> anyhow::Result<()> {
    let router = TestRouter::spawn_new(&[], &[])?;
    let agents = spawn_three(&router)?;
    wait_members(&router, &["node-a", "node-b", "node-c"]).await?;
    let written = put_keys(&router, 600).await?;

    let fourth = TestAgent::start(AgentOptions::registering_with("node-d", 5, &router)).await?;
    let status = wait_members(&router, &["node-a", "node-b", "node-c", "node-d"]).await?;
    let d = status
        .members
        .iter()
        .find(|m| m.name == "node-d")
        .expect("node-d");
    assert!(d.key_count > 0, "the new member received keys: {status:?}");
    let registered: Vec<&str> = status.agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(registered, ["node-a", "node-b", "node-c", "node-d"]);
    assert!(status.agents.iter().all(|a| a.member));
    let all: Vec<&TestAgent> = agents.iter().chain([&fourth]).collect();
    check(&router, &all, &written).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_agent_moves_its_keys_off_before_it_stops() -> anyhow::Result<()> {
    let router = TestRouter::spawn_new(&[], &[])?;
    let mut agents = spawn_three(&router)?;
    wait_members(&router, &["node-a", "node-b", "node-c"]).await?;
    let written = put_keys(&router, 600).await?;

    let mut leaving = agents.pop().expect("node-c");
    leaving.signal(Signal::SIGTERM)?;
    let exit = leaving.wait_exit(Duration::from_secs(120)).await?;
    assert!(exit.success(), "{}", leaving.log());
    assert!(leaving.log().contains("drained"), "{}", leaving.log());
    let status = wait_members(&router, &["node-a", "node-b"]).await?;
    assert_eq!(status.keys as usize, written.len());
    let remaining: Vec<&TestAgent> = agents.iter().collect();
    check(&router, &remaining, &written).await?;

    // A drain is not an operator's leave: started again, the agent
    // registers anew and is joined again.
    leaving.respawn()?;
    wait_members(&router, &["node-a", "node-b", "node-c"]).await?;
    let all: Vec<&TestAgent> = agents.iter().chain([&leaving]).collect();
    check(&router, &all, &written).await?;
    Ok(())
}

/// Waits until every agent in `names` has registered with `router` (again,
/// after a restart of the router) and heartbeats.
async fn wait_registered(router: &TestRouter, names: &[&str]) -> anyhow::Result<()> {
    ste_tests::eventually(
        "the agents to register",
        Duration::from_secs(60),
        || async {
            let status = router.status().await.map_err(|e| e.to_string())?;
            let fresh: Vec<&str> = status
                .agents
                .iter()
                .filter(|a| a.healthy && a.last_heartbeat_seconds_ago < 5)
                .map(|a| a.name.as_str())
                .collect();
            if names.iter().all(|n| fresh.contains(n)) {
                Ok(())
            } else {
                Err(format!("registered and heartbeating: {fresh:?}"))
            }
        },
    )
    .await
    .map(|_| ())
}

/// An operator's `ring leave` lasts: after a router restart every agent
/// registers again, and auto-join still leaves the node out (a fourth agent
/// that registers later is joined, so the loop did look); `ring join`
/// takes it back, and that lasts across a restart too. Found in the
/// newcomer checks: a restarted router used to join the node back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_leave_lasts_across_router_restarts_until_a_join() -> anyhow::Result<()> {
    let mut router = TestRouter::spawn_new(&[], &[])?;
    let mut agents = spawn_three(&router)?;
    wait_members(&router, &["node-a", "node-b", "node-c"]).await?;
    let written = put_keys(&router, 300).await?;

    ring::leave(&mut router.admin().await?, "node-b").await?;
    wait_members(&router, &["node-a", "node-c"]).await?;
    let state = std::fs::read_to_string(router.state_file())?;
    assert!(state.contains("held_out node-b\n"), "{state}");

    router.restart().await?;
    wait_registered(&router, &["node-a", "node-b", "node-c"]).await?;
    agents.push(TestAgent::start(AgentOptions::registering_with("node-d", 5, &router)).await?);
    wait_members(&router, &["node-a", "node-c", "node-d"]).await?;
    let log = router.log();
    assert!(log.contains("held out of auto-join"), "{log}");
    let status = router.status().await?;
    let held: Vec<&str> = status
        .agents
        .iter()
        .filter(|a| a.held_out)
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(held, ["node-b"], "{status:?}");

    ring::join(&mut router.admin().await?, "node-b", "").await?;
    wait_members(&router, &["node-a", "node-b", "node-c", "node-d"]).await?;
    let state = std::fs::read_to_string(router.state_file())?;
    assert!(!state.contains("held_out"), "{state}");
    router.restart().await?;
    wait_members(&router, &["node-a", "node-b", "node-c", "node-d"]).await?;
    let all: Vec<&TestAgent> = agents.iter().collect();
    check(&router, &all, &written).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_is_fenced_and_rejoins_empty() -> anyhow::Result<()> {
    let router = TestRouter::spawn_new(&[], &["--member-dead-after", "3s"])?;
    let mut agents = spawn_three(&router)?;
    let before = wait_members(&router, &["node-a", "node-b", "node-c"]).await?;
    let written = put_keys(&router, 300).await?;
    let mut client = router.client().await?;
    let mut watch = client
        .watch(PODS, Some(WatchOptions::new().with_prefix()))
        .await?;
    assert!(watch.message().await?.is_some_and(|r| r.created()));

    let mut victim = agents.pop().expect("node-c");
    let lost: Vec<String> = {
        let keys = victim
            .etcd()
            .await?
            .get(PODS, Some(GetOptions::new().with_prefix().with_keys_only()))
            .await?;
        keys.kvs()
            .iter()
            .map(|kv| kv.key_str().map(str::to_owned))
            .collect::<Result<_, _>>()?
    };
    assert!(!lost.is_empty());
    victim.signal(Signal::SIGKILL)?;
    victim.wait_exit(Duration::from_secs(10)).await?;

    // Reads of keys on the other members keep working while it is down.
    let survivor = written
        .keys()
        .find(|k| !lost.contains(k))
        .expect("a key elsewhere")
        .clone();
    assert_eq!(client.get(survivor.as_str(), None).await?.kvs().len(), 1);

    let after = wait_members(&router, &["node-a", "node-b"]).await?;
    assert_eq!(after.generation, before.generation + 1);
    let canceled = until_canceled(&mut watch, Duration::from_secs(30)).await?;
    assert!(canceled.compact_revision() > 0, "{canceled:?}");
    let mut expected = written.clone();
    for key in &lost {
        expected.remove(key);
    }
    let remaining: Vec<&TestAgent> = agents.iter().collect();
    check(&router, &remaining, &expected).await?;
    assert!(router.log().contains("fencing member"), "{}", router.log());
    let metrics = ste_tests::metrics::scrape(router.metrics).await?;
    assert!(
        metrics.contains("ste_router_members_fenced_total 1"),
        "{metrics}"
    );

    // Still registered, and shown unhealthy once its heartbeats are stale
    // (the last one it sent said healthy).
    ste_tests::eventually(
        "node-c shown unhealthy",
        Duration::from_secs(60),
        || async {
            let status = router.status().await.map_err(|e| e.to_string())?;
            match status.agents.iter().find(|a| a.name == "node-c") {
                Some(agent) if !agent.healthy => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;

    // The agent comes back (a new, empty shard) and joins again.
    victim.respawn()?;
    victim.wait_serving().await?;
    wait_members(&router, &["node-a", "node-b", "node-c"]).await?;
    let mut more = put_keys(&router, 300).await?;
    more.retain(|k, _| lost.contains(k));
    assert!(!more.is_empty());
    let held = keys::count_under(&mut victim.etcd().await?, PODS).await?;
    assert!(held > 0, "the rejoined member receives keys again");
    Ok(())
}

/// An agent killed and restarted at once, well within
/// `--member-dead-after`, comes back at epoch 1 again with its shard wiped,
/// under the same name and address. The epoch cannot tell, but its etcd is
/// a new member: the router's next probe sees the new member ID and
/// resynchronises the shard. The lost keys leave the index, watches are cut
/// so kube-apiserver relists, and the node stays a member and takes keys
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_at_once_is_known_by_its_new_etcd_member() -> anyhow::Result<()> {
    let router = TestRouter::spawn_new(&[], &["--member-dead-after", "1h"])?;
    let mut agents = spawn_three(&router)?;
    let before = wait_members(&router, &["node-a", "node-b", "node-c"]).await?;
    let written = put_keys(&router, 90).await?;
    let mut client = router.client().await?;
    let mut watch = client
        .watch(PODS, Some(WatchOptions::new().with_prefix()))
        .await?;
    assert!(watch.message().await?.is_some_and(|r| r.created()));
    let lost = keys::count_under(&mut agents[2].etcd().await?, PODS).await?;
    assert!(lost > 0);

    let victim = &mut agents[2];
    victim.signal(Signal::SIGKILL)?;
    victim.wait_exit(Duration::from_secs(10)).await?;
    victim.respawn()?;
    assert_eq!(
        victim.wait_serving().await?.epoch,
        1,
        "the same epoch number"
    );

    let canceled = until_canceled(&mut watch, Duration::from_secs(60)).await?;
    assert!(canceled.compact_revision() > 0, "{canceled:?}");
    let mut expected = written.clone();
    let mut admin = router.admin().await?;
    for key in written.keys() {
        if ring::member_of(&mut admin, key).await? == "node-c" {
            expected.remove(key);
        }
    }
    assert_eq!(expected.len() as i64, written.len() as i64 - lost);
    ste_tests::eventually(
        "the lost keys leave the index",
        Duration::from_secs(60),
        || {
            let mut client = client.clone();
            let expected = &expected;
            async move {
                let listed = client
                    .get(PODS, Some(GetOptions::new().with_prefix().with_keys_only()))
                    .await
                    .map_err(|e| e.to_string())?;
                let keys: Vec<&[u8]> = listed.kvs().iter().map(|kv| kv.key()).collect();
                let want: Vec<&[u8]> = expected.keys().map(|k| k.as_bytes()).collect();
                if keys == want {
                    Ok(())
                } else {
                    Err(format!(
                        "{} keys listed, {} expected",
                        keys.len(),
                        want.len()
                    ))
                }
            }
        },
    )
    .await?;
    let remaining: Vec<&TestAgent> = agents.iter().collect();
    check(&router, &remaining, &expected).await?;
    assert!(
        router.log().contains("came back as a new etcd member"),
        "{}",
        router.log()
    );

    // Not fenced: the same ring, and node-c takes keys again.
    let status = router.status().await?;
    assert_eq!(status.generation, before.generation);
    put_keys(&router, 120).await?;
    let held = keys::count_under(&mut agents[2].etcd().await?, PODS).await?;
    assert!(held > 0, "node-c receives keys again");
    Ok(())
}

/// Found by the fault loop (`tests/tests/fault_loop.rs`, seed 0x2): a
/// member fenced while its shard still held keys — here a shard that only
/// stopped answering for longer than `--member-dead-after`; in the loop, a
/// shard that came back empty and took writes before the fence — could
/// never join again ("only an empty shard can join", retried forever), and
/// the ring stayed a member short. Its keys were dropped and their loss
/// announced by the fence, so the router clears them before it joins the
/// agent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_fenced_with_keys_on_its_shard_rejoins_empty() -> anyhow::Result<()> {
    let router = TestRouter::spawn_new(&[], &["--member-dead-after", "2s"])?;
    let agents = spawn_three(&router)?;
    wait_members(&router, &["node-a", "node-b", "node-c"]).await?;
    put_keys(&router, 200).await?;
    let victim = &agents[2];
    let etcd = victim.etcd_pids();
    assert!(!etcd.is_empty());
    for pid in &etcd {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), Signal::SIGSTOP)?;
    }
    let fenced = wait_members(&router, &["node-a", "node-b"]).await;
    for pid in &etcd {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), Signal::SIGCONT)?;
    }
    fenced?;
    let left = keys::count_under(&mut victim.etcd().await?, PODS).await?;
    assert!(left > 0, "the fenced shard still holds its keys");

    let status = router
        .wait_members(&["node-a", "node-b", "node-c"], Duration::from_secs(60))
        .await?;
    assert!(
        status.agents.iter().all(|a| a.member),
        "{:?}",
        status.agents
    );
    assert!(
        router
            .log()
            .contains("cleared the keys a fenced member left"),
        "{}",
        router.log()
    );
    // What the shard holds now is exactly what the router placed on it.
    let mut admin = router.admin().await?;
    let held = ste_tests::agent::keys_held(agents.iter(), PODS).await?;
    for (key, holders) in &held {
        let owner = ring::member_of(&mut admin, key).await?;
        assert_eq!(
            holders,
            &vec![owner.clone()],
            "{key} should be on {owner} only"
        );
    }
    Ok(())
}

/// The weight an agent registers is its node's word: the router joins it
/// automatically at no more than `--max-auto-join-weight`, so a node cannot
/// draw the ring onto itself (found by the newcomer check: a node
/// certificate re-registering at weight 1000 took 99.8 % of the ring).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_is_joined_no_heavier_than_the_routers_maximum() -> anyhow::Result<()> {
    let router = TestRouter::spawn_new(&[], &["--max-auto-join-weight", "2"])?;
    let mut heavy = AgentOptions::registering_with("node-a", 2, &router);
    heavy.extra_args.extend(["--weight".into(), "1000".into()]);
    let _agent = TestAgent::spawn_new(heavy)?;
    wait_members(&router, &["node-a"]).await?;
    let ring = router
        .admin()
        .await?
        .get_ring(ste_proto::v1::GetRingRequest {})
        .await?
        .into_inner();
    assert_eq!(ring.members.len(), 1);
    assert_eq!(ring.members[0].weight, 2, "{ring:?}");
    let log = router.log();
    assert!(log.contains("--max-auto-join-weight"), "{log}");
    Ok(())
}
