//! `etcdctl watch` from a revision, and compaction cutting history for
//! get and watch.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use ste_tests::ShardedRouter;

use crate::etcdctl::{Etcdctl, b64, revision};
use crate::{assert_router_quiet, placement};

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
