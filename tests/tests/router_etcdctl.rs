//! The real `etcdctl` (ETCDCTL_API=3) through the router: every command an
//! operator would reach for, checked on exit status and output, with keys
//! spread over three shards.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use serde_json::Value;
use ste_tests::keys::PODS;
use ste_tests::{ShardedRouter, ring};

/// Runs etcdctl against one endpoint.
struct Etcdctl {
    endpoint: String,
}

impl Etcdctl {
    fn for_router(cluster: &ShardedRouter) -> Self {
        Etcdctl {
            endpoint: cluster.router.listen.to_string(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(ste_tests::procs::etcdctl_bin());
        command
            .arg("--endpoints")
            .arg(&self.endpoint)
            // Generous: the machine may be loaded; a hang still fails the test.
            .arg("--command-timeout=20s")
            .arg("--dial-timeout=10s")
            .args(args);
        command
    }

    fn output(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut command = self.command(args);
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("spawning etcdctl")?;
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().context("etcdctl stdin")?;
            pipe.write_all(text.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// Runs etcdctl, requires exit status 0 and returns stdout.
    fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        self.ok_with_stdin(args, None)
    }

    fn ok_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let output = self.output(args, stdin)?;
        let stdout = String::from_utf8(output.stdout)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            output.status.success(),
            "etcdctl {args:?} failed with {}:\nstdout: {stdout}\nstderr: {stderr}",
            output.status
        );
        Ok(stdout)
    }

    /// Runs etcdctl, requires a failure and returns stdout + stderr.
    fn fails(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.output(args, None)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        ensure!(
            !output.status.success(),
            "etcdctl {args:?} should have failed but exited 0:\n{text}"
        );
        Ok(text)
    }

    fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-w", "json"]);
        let stdout = self.ok(&all)?;
        serde_json::from_str(&stdout).with_context(|| format!("etcdctl {args:?} printed {stdout}"))
    }

    /// `put -w json`; returns the revision of the write.
    fn put(&self, key: &str, value: &str) -> anyhow::Result<i64> {
        let response = self.json(&["put", key, value])?;
        revision(&response)
    }
}

fn revision(response: &Value) -> anyhow::Result<i64> {
    response["header"]["revision"]
        .as_i64()
        .with_context(|| format!("no header.revision in {response}"))
}

fn b64(value: &Value) -> String {
    let text = value.as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("etcdctl printed invalid base64 {text:?}: {e}"));
    String::from_utf8(bytes).expect("utf-8")
}

/// One key of `get -w json`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Kv {
    key: String,
    value: String,
    create: i64,
    modified: i64,
    version: i64,
    lease: i64,
}

fn kvs(response: &Value) -> Vec<Kv> {
    response["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| Kv {
                    key: b64(&kv["key"]),
                    value: b64(&kv["value"]),
                    create: kv["create_revision"].as_i64().unwrap_or(0),
                    modified: kv["mod_revision"].as_i64().unwrap_or(0),
                    version: kv["version"].as_i64().unwrap_or(0),
                    lease: kv["lease"].as_i64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// No shard failed in these tests: the router must not have panicked, nor
/// resynchronised a shard (which cuts every watch, making every client
/// relist).
fn assert_router_quiet(cluster: &ShardedRouter) {
    let log = cluster.router.log();
    assert!(!log.contains("panicked"), "the router panicked:\n{log}");
    assert!(
        !log.contains("needs a resync"),
        "the router resynchronised a shard although none failed:\n{log}"
    );
}

/// The member the router places each key on.
async fn placement(
    cluster: &ShardedRouter,
    keys: &[String],
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut admin = cluster.router.admin().await?;
    let mut placed = BTreeMap::new();
    for key in keys {
        placed.insert(key.clone(), ring::member_of(&mut admin, key).await?);
    }
    Ok(placed)
}

/// Keys under `prefix` that each shard holds, read from the shards directly.
async fn held_by_shards(
    cluster: &ShardedRouter,
    prefix: &str,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut held = BTreeMap::new();
    for shard in &cluster.shards {
        let count = shard.count_under(prefix).await?;
        held.insert(shard.name.clone(), count);
    }
    Ok(held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_limit_rev_and_json_revisions() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(3, &[]).await?;
    let ctl = Etcdctl::for_router(&cluster);

    // Plain put prints OK.
    assert_eq!(
        ctl.ok(&["put", "/registry/pods/default/first", "hello"])?,
        "OK\n"
    );
    assert_eq!(
        ctl.ok(&["get", "/registry/pods/default/first"])?,
        "/registry/pods/default/first\nhello\n"
    );

    let keys: Vec<String> = (0..12)
        .map(|i| format!("/registry/pods/ns-a/pod-{i:02}"))
        .collect();
    let mut put_revisions = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        put_revisions.push(ctl.put(key, &format!("value-{i}"))?);
    }
    assert!(
        put_revisions.windows(2).all(|w| w[0] < w[1]),
        "put revisions increase: {put_revisions:?}"
    );
    let members: BTreeSet<String> = placement(&cluster, &keys).await?.into_values().collect();
    assert_eq!(
        members.len(),
        3,
        "the 12 keys use all 3 shards: {members:?}"
    );

    // A full prefix get in JSON: every key with the revisions its put reported.
    let all = ctl.json(&["get", "--prefix", "/registry/pods/ns-a/"])?;
    let last = *put_revisions.last().unwrap();
    assert_eq!(
        revision(&all)?,
        last,
        "header revision is the last write: {all}"
    );
    assert_eq!(all["count"].as_i64(), Some(12), "{all}");
    assert!(!all["more"].as_bool().unwrap_or(false), "{all}");
    let listed = kvs(&all);
    assert_eq!(listed.len(), 12);
    for (i, kv) in listed.iter().enumerate() {
        assert_eq!(kv.key, keys[i], "keys in order");
        assert_eq!(kv.value, format!("value-{i}"));
        assert_eq!(kv.create, put_revisions[i], "create revision of {}", kv.key);
        assert_eq!(kv.modified, put_revisions[i], "mod revision of {}", kv.key);
        assert_eq!(kv.version, 1);
        assert_eq!(kv.lease, 0);
    }

    // --limit: the first keys in key order across shards, exact count, more.
    let limited = ctl.ok(&["get", "--prefix", "--limit", "5", "/registry/pods/ns-a/"])?;
    let expected: String = (0..5)
        .map(|i| format!("{}\nvalue-{i}\n", keys[i]))
        .collect();
    assert_eq!(limited, expected);
    let limited = ctl.json(&["get", "--prefix", "--limit", "5", "/registry/pods/ns-a/"])?;
    assert_eq!(
        limited["count"].as_i64(),
        Some(12),
        "count is the total: {limited}"
    );
    assert_eq!(limited["more"].as_bool(), Some(true), "{limited}");
    assert_eq!(kvs(&limited), listed[..5].to_vec());
    // --keys-only.
    let keys_only = ctl.ok(&["get", "--prefix", "--keys-only", "/registry/pods/ns-a/"])?;
    let expected: String = keys.iter().map(|k| format!("{k}\n\n")).collect();
    assert_eq!(keys_only, expected);

    // Overwrite one key; --rev reads the history.
    let updated = ctl.put(&keys[3], "value-3-new")?;
    assert_eq!(updated, last + 1);
    let now = ctl.json(&["get", &keys[3]])?;
    assert_eq!(revision(&now)?, updated);
    let kv = &kvs(&now)[0];
    assert_eq!(
        (kv.create, kv.modified, kv.version, kv.value.as_str()),
        (put_revisions[3], updated, 2, "value-3-new")
    );
    let at = |rev: i64, key: &str| ctl.ok(&["get", "--rev", &rev.to_string(), key]);
    assert_eq!(
        at(updated, &keys[3])?,
        format!("{}\nvalue-3-new\n", keys[3])
    );
    assert_eq!(
        at(updated - 1, &keys[3])?,
        format!("{}\nvalue-3\n", keys[3])
    );
    assert_eq!(
        at(put_revisions[3], &keys[3])?,
        format!("{}\nvalue-3\n", keys[3])
    );
    assert_eq!(at(put_revisions[3] - 1, &keys[3])?, "", "not created yet");
    // A pinned list sees exactly the keys created by then, on every shard.
    let pinned = ctl.json(&[
        "get",
        "--prefix",
        "--rev",
        &put_revisions[6].to_string(),
        "/registry/pods/ns-a/",
    ])?;
    assert_eq!(
        kvs(&pinned),
        listed[..7].to_vec(),
        "list at revision {}",
        put_revisions[6]
    );
    assert_eq!(pinned["count"].as_i64(), Some(7));
    let pinned = ctl.json(&[
        "get",
        "--prefix",
        "--limit",
        "2",
        "--rev",
        &put_revisions[6].to_string(),
        "/registry/pods/ns-a/",
    ])?;
    assert_eq!(kvs(&pinned), listed[..2].to_vec());
    assert_eq!(pinned["count"].as_i64(), Some(7));
    assert_eq!(pinned["more"].as_bool(), Some(true));

    // A future revision is refused with etcd's message.
    let error = ctl.fails(&["get", "--rev", &(updated + 100).to_string(), &keys[0]])?;
    assert!(
        error.contains("required revision is a future revision"),
        "{error}"
    );

    // A missing key: empty output, exit 0; JSON count 0.
    assert_eq!(ctl.ok(&["get", "/registry/pods/ns-a/missing"])?, "");
    let missing = ctl.json(&["get", "/registry/pods/ns-a/missing"])?;
    assert_eq!(missing["count"].as_i64().unwrap_or(0), 0);
    assert_eq!(revision(&missing)?, updated);

    // put --prev-kv prints the previous pair after OK.
    assert_eq!(
        ctl.ok(&["put", "--prev-kv", &keys[0], "value-0-new"])?,
        format!("OK\n{}\nvalue-0\n", keys[0])
    );
    assert_router_quiet(&cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_and_del_prefix_across_shards() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(3, &[]).await?;
    let ctl = Etcdctl::for_router(&cluster);
    let doomed: Vec<String> = (0..10)
        .map(|i| format!("/registry/pods/doomed/pod-{i}"))
        .collect();
    let other: Vec<String> = (0..10)
        .map(|i| format!("/registry/pods/other/pod-{i}"))
        .collect();
    for key in doomed.iter().chain(&other) {
        assert_eq!(ctl.ok(&["put", key, "x"])?, "OK\n");
    }
    let members: BTreeSet<String> = placement(&cluster, &doomed).await?.into_values().collect();
    assert_eq!(
        members.len(),
        3,
        "the keys to delete are on all 3 shards: {members:?}"
    );

    // One key: the deleted count is printed; deleting it again prints 0.
    assert_eq!(ctl.ok(&["del", &doomed[0]])?, "1\n");
    assert_eq!(ctl.ok(&["del", &doomed[0]])?, "0\n");
    assert_eq!(ctl.ok(&["get", &doomed[0]])?, "");
    // --prev-kv prints the deleted pair.
    assert_eq!(
        ctl.ok(&["del", "--prev-kv", &doomed[1]])?,
        format!("1\n{}\nx\n", doomed[1])
    );

    // A prefix on several shards: one count, one revision, nothing left anywhere.
    let before = revision(&ctl.json(&["get", "/registry/pods/other/pod-0"])?)?;
    assert_eq!(
        ctl.ok(&["del", "--prefix", "/registry/pods/doomed/"])?,
        "8\n"
    );
    assert_eq!(ctl.ok(&["get", "--prefix", "/registry/pods/doomed/"])?, "");
    let after = ctl.json(&["get", "--prefix", "/registry/pods/doomed/"])?;
    assert_eq!(
        revision(&after)?,
        before + 1,
        "a multi-shard delete uses one revision"
    );
    let held = held_by_shards(&cluster, "/registry/pods/doomed/").await?;
    assert!(
        held.values().all(|n| *n == 0),
        "shards still hold deleted keys: {held:?}"
    );
    assert_eq!(
        ctl.ok(&["del", "--prefix", "/registry/pods/doomed/"])?,
        "0\n"
    );

    // The other keys are untouched; delete them with JSON output.
    let remaining = ctl.json(&["get", "--prefix", "/registry/pods/other/"])?;
    assert_eq!(remaining["count"].as_i64(), Some(10));
    let deleted = ctl.json(&["del", "--prefix", PODS])?;
    assert_eq!(deleted["deleted"].as_i64(), Some(10), "{deleted}");
    assert_eq!(revision(&deleted)?, before + 2, "{deleted}");
    let held = held_by_shards(&cluster, PODS).await?;
    assert!(
        held.values().all(|n| *n == 0),
        "shards still hold deleted keys: {held:?}"
    );
    assert_eq!(ctl.ok(&["get", "--prefix", PODS])?, "");
    assert_router_quiet(&cluster);
    Ok(())
}

/// Lines of a running `etcdctl watch`, read on a thread.
struct WatchProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl WatchProcess {
    fn spawn(ctl: &Etcdctl, args: &[&str]) -> anyhow::Result<Self> {
        let mut command = ctl.command(args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().context("watch stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(WatchProcess {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Collects lines until `done(lines)` holds, or fails after `timeout`.
    fn until(&mut self, timeout: Duration, done: impl Fn(&[String]) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!(
                        "timed out after {timeout:?}; watch printed {:#?}",
                        self.seen
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    let mut stderr = String::new();
                    if let Some(mut pipe) = self.child.stderr.take() {
                        let _ = pipe.read_to_string(&mut stderr);
                    }
                    bail!(
                        "etcdctl watch ended ({status}); printed {:#?}; stderr: {stderr}",
                        self.seen
                    )
                }
            }
        }
        Ok(())
    }
}

impl Drop for WatchProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(text: &[&str]) -> Vec<String> {
    text.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_revision_with_prev_kv() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(3, &[]).await?;
    let ctl = Etcdctl::for_router(&cluster);
    let (a, b, c) = (
        "/registry/pods/w/pod-a",
        "/registry/pods/w/pod-b",
        "/registry/pods/w/pod-c",
    );
    let r_a = ctl.put(a, "a1")?;
    let r_b = ctl.put(b, "b1")?;
    ctl.put("/registry/pods/elsewhere", "not watched")?;
    let r_c = ctl.put(c, "c1")?;
    let r_a2 = ctl.put(a, "a2")?;
    assert_eq!(ctl.ok(&["del", b])?, "1\n");
    let members: BTreeSet<String> = placement(&cluster, &[a.into(), b.into(), c.into()])
        .await?
        .into_values()
        .collect();
    assert!(
        members.len() >= 2,
        "watched keys on several shards: {members:?}"
    );

    // From r_b: history (b, c created; a updated; b deleted) in revision
    // order with previous values, then a live event.
    let mut watch = WatchProcess::spawn(
        &ctl,
        &[
            "watch",
            "--rev",
            &r_b.to_string(),
            "--prev-kv",
            "--prefix",
            "/registry/pods/w/",
        ],
    )?;
    let mut expected = lines(&[
        "PUT", b, "b1", //
        "PUT", c, "c1", //
        "PUT", a, "a1", a, "a2", //
        "DELETE", b, "b1", b, "",
    ]);
    watch.until(Duration::from_secs(30), |seen| seen.len() >= expected.len())?;
    assert_eq!(watch.seen, expected, "history from revision {r_b}");
    // Live: the watch is established (it printed the history), so a new
    // write must arrive.
    let r_c2 = ctl.put(c, "c2")?;
    expected.extend(lines(&["PUT", c, "c1", c, "c2"]));
    watch.until(Duration::from_secs(30), |seen| seen.len() >= expected.len())?;
    assert_eq!(watch.seen, expected, "the live event after the history");
    drop(watch);

    // The same in JSON: event revisions are the writes' revisions.
    let mut watch = WatchProcess::spawn(
        &ctl,
        &[
            "watch",
            "-w",
            "json",
            "--rev",
            &r_a.to_string(),
            "--prev-kv",
            a,
        ],
    )?;
    watch.until(Duration::from_secs(30), |seen| {
        let events: usize = seen
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| v["Events"].as_array().map(Vec::len).unwrap_or(0))
            .sum();
        events >= 2
    })?;
    let mut events = Vec::new();
    for line in &watch.seen {
        let response: Value = serde_json::from_str(line)?;
        for event in response["Events"].as_array().into_iter().flatten() {
            let header_revision = response["Header"]["revision"].as_i64().unwrap_or(0);
            let kv = &event["kv"];
            let modified = kv["mod_revision"].as_i64().unwrap_or(0);
            assert!(
                header_revision >= modified,
                "header {header_revision} < event {modified}"
            );
            events.push((
                b64(&kv["value"]),
                modified,
                kv["create_revision"].as_i64().unwrap_or(0),
                event["prev_kv"]["mod_revision"].as_i64(),
            ));
        }
    }
    assert_eq!(
        events,
        vec![
            ("a1".to_string(), r_a, r_a, None),
            ("a2".to_string(), r_a2, r_a, Some(r_a)),
        ]
    );
    assert!(r_a < r_b && r_b < r_c && r_c < r_a2 && r_a2 < r_c2);
    assert_router_quiet(&cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_cuts_history_for_get_and_watch() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(3, &[]).await?;
    let ctl = Etcdctl::for_router(&cluster);
    let key = "/registry/pods/c/pod";
    let revs: Vec<i64> = (1..=4)
        .map(|i| ctl.put(key, &format!("v{i}")))
        .collect::<Result<_, _>>()?;
    // Writes on the other shards too, so every shard has history to compact.
    for i in 0..9 {
        ctl.put(&format!("/registry/pods/c/other-{i}"), "x")?;
    }
    let current = revision(&ctl.json(&["get", key])?)?;

    assert_eq!(
        ctl.ok(&["compaction", &revs[2].to_string()])?,
        format!("compacted revision {}\n", revs[2])
    );
    let error = ctl.fails(&["get", "--rev", &revs[1].to_string(), key])?;
    assert!(
        error.contains("required revision has been compacted"),
        "{error}"
    );
    assert_eq!(
        ctl.ok(&["get", "--rev", &revs[2].to_string(), key])?,
        format!("{key}\nv3\n")
    );
    assert_eq!(ctl.ok(&["get", key])?, format!("{key}\nv4\n"));
    // A pinned list above the compaction point still reads every shard.
    let pinned = ctl.json(&[
        "get",
        "--prefix",
        "--rev",
        &revs[3].to_string(),
        "/registry/pods/c/",
    ])?;
    assert_eq!(pinned["count"].as_i64(), Some(1));

    // A watch from before the compaction point is cancelled with the
    // compacted error (the apiserver relists on it).
    let output = ctl.output(&["watch", "--rev", &revs[0].to_string(), key], None)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("required revision has been compacted"),
        "{text}"
    );

    // Compacting again at or below the point is refused as etcd does;
    // --physical and a future revision.
    let error = ctl.fails(&["compaction", &revs[1].to_string()])?;
    assert!(
        error.contains("required revision has been compacted"),
        "{error}"
    );
    assert_eq!(
        ctl.ok(&["compaction", "--physical", &current.to_string()])?,
        format!("compacted revision {current}\n")
    );
    let error = ctl.fails(&["compaction", &(current + 100).to_string()])?;
    assert!(
        error.contains("required revision is a future revision"),
        "{error}"
    );
    assert_eq!(ctl.ok(&["get", key])?, format!("{key}\nv4\n"));
    let all = ctl.json(&["get", "--prefix", "/registry/pods/c/"])?;
    assert_eq!(all["count"].as_i64(), Some(10));
    assert_router_quiet(&cluster);
    Ok(())
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_with_a_mod_revision_compare_takes_either_branch() -> anyhow::Result<()> {
    let cluster = ShardedRouter::start(3, &[]).await?;
    let ctl = Etcdctl::for_router(&cluster);
    let key = "/registry/pods/t/pod";
    let created = ctl.put(key, "v1")?;
    // Concurrent activity elsewhere moves the global revision on.
    for i in 0..5 {
        ctl.put(&format!("/registry/pods/t/other-{i}"), "x")?;
    }

    // Success: compare holds, the put applies.
    let update = format!("mod(\"{key}\") = \"{created}\"\n\nput {key} v2\n\nget {key}\n\n");
    assert_eq!(
        ctl.ok_with_stdin(&["txn"], Some(&update))?,
        "SUCCESS\n\nOK\n"
    );
    let now = kvs(&ctl.json(&["get", key])?);
    let updated = now[0].modified;
    assert!(updated > created);
    assert_eq!(
        (now[0].value.as_str(), now[0].version, now[0].create),
        ("v2", 2, created)
    );

    // Failure: the same compare no longer holds; the get of the failure
    // branch runs and nothing is written.
    assert_eq!(
        ctl.ok_with_stdin(&["txn"], Some(&update))?,
        format!("FAILURE\n\n{key}\nv2\n")
    );
    let json: Value =
        serde_json::from_str(&ctl.ok_with_stdin(&["txn", "-w", "json"], Some(&update))?)?;
    assert!(!json["succeeded"].as_bool().unwrap_or(false), "{json}");
    assert_eq!(
        revision(&json)?,
        updated,
        "a failed txn writes nothing: {json}"
    );
    // etcdctl 3.4 names the oneof field ResponseRange, 3.6 response_range.
    let response = &json["responses"][0]["Response"];
    let read = if response["ResponseRange"].is_null() {
        &response["response_range"]
    } else {
        &response["ResponseRange"]
    };
    let read = kvs(read);
    assert_eq!(read.len(), 1, "{json}");
    assert_eq!((read[0].modified, read[0].value.as_str()), (updated, "v2"));
    assert_eq!(kvs(&ctl.json(&["get", key])?)[0].modified, updated);

    // JSON success: the response header carries the write's revision.
    let update = format!("mod(\"{key}\") = \"{updated}\"\n\nput {key} v3\n\nget {key}\n\n");
    let json: Value =
        serde_json::from_str(&ctl.ok_with_stdin(&["txn", "-w", "json"], Some(&update))?)?;
    assert_eq!(json["succeeded"].as_bool(), Some(true), "{json}");
    let written = revision(&json)?;
    assert_eq!(written, updated + 1, "{json}");
    assert_eq!(kvs(&ctl.json(&["get", key])?)[0].modified, written);

    // A create (mod == 0) on an existing key fails, on a new key succeeds.
    let create = |k: &str| format!("mod(\"{k}\") = \"0\"\n\nput {k} new\n\n\n");
    assert_eq!(
        ctl.ok_with_stdin(&["txn"], Some(&create(key)))?,
        "FAILURE\n"
    );
    let fresh = "/registry/pods/t/fresh";
    assert_eq!(
        ctl.ok_with_stdin(&["txn"], Some(&create(fresh)))?,
        "SUCCESS\n\nOK\n"
    );
    assert_eq!(ctl.ok(&["get", fresh])?, format!("{fresh}\nnew\n"));

    // A value compare with a delete in the success branch.
    let delete = format!("val(\"{key}\") = \"v3\"\n\ndel {key}\n\n\n");
    assert_eq!(
        ctl.ok_with_stdin(&["txn"], Some(&delete))?,
        "SUCCESS\n\n1\n"
    );
    assert_eq!(ctl.ok(&["get", key])?, "");
    assert_eq!(ctl.ok_with_stdin(&["txn"], Some(&delete))?, "FAILURE\n");
    assert_router_quiet(&cluster);
    Ok(())
}
