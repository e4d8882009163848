//! The scenario: the request shapes kube-apiserver sends, in the order a
//! cluster's life sends them, run once against each system.

use std::collections::HashMap;

use etcd_client::{Client, GetOptions, WatchOptions};
use ste_tests::keys::PODS;

use crate::compare::WATCH_AT_COMPACTION;
use crate::outcome::Outcome;
use crate::run::{COMPACT_KEY, Run, Step, value};

const NAMESPACES: usize = 5;
const PODS_PER_NAMESPACE: usize = 6;

fn pod(ns: usize, pod: usize) -> String {
    format!("{PODS}ns{ns}/pod-{pod}")
}

/// The whole scenario. Every response lands in `run.steps`.
pub(crate) async fn script(side: &'static str, client: Client) -> Vec<Step> {
    let mut run = Run {
        side,
        client,
        steps: Vec::new(),
        writes: Vec::new(),
        mods: HashMap::new(),
    };
    let all: Vec<String> = (0..PODS_PER_NAMESPACE)
        .flat_map(|p| (0..NAMESPACES).map(move |n| pod(n, p)))
        .collect();
    let start = run
        .get(&pod(0, 0), None, "get before anything exists".into())
        .await
        .header();

    // Creates, spread over namespaces (and so over shards), plus keys just
    // outside the listed prefixes.
    for key in &all {
        run.create(key, &value(key, 1)).await;
    }
    run.create("/registry/pods/ns10/pod-0", &value("ns10", 1))
        .await;
    run.create("/registry/podtemplates/ns0/t", &value("t", 1))
        .await;
    run.create("/registry/pods", "not a pod").await;
    let after_create = run
        .get(&pod(4, 5), None, "get after creates".into())
        .await
        .header();
    run.create(&pod(0, 0), "again").await; // already exists: not succeeded, no responses

    run.get(&pod(0, 0), None, "get".into()).await;
    run.get(&pod(3, 4), None, "get".into()).await;
    run.get("/registry/pods/ns0/missing", None, "get missing".into())
        .await;

    // Updates with the right revision, some twice.
    for p in 0..3 {
        for n in 0..NAMESPACES {
            let key = pod(n, p);
            let rev = run.mod_of(&key);
            run.update(&key, rev, &value(&key, 2), "right R").await;
        }
    }
    let key = pod(1, 0);
    let rev = run.mod_of(&key);
    run.update(&key, rev, &value(&key, 3), "right R again")
        .await;

    // Updates with a stale revision: compare fails, else-branch reads.
    let stale = run.stale_mod_of(&pod(1, 0));
    run.update(&pod(1, 0), stale, "lost update", "stale R")
        .await;
    let stale = run.stale_mod_of(&pod(2, 1));
    run.update(&pod(2, 1), stale, "lost update", "stale R")
        .await;
    run.update(
        &pod(4, 5),
        run.mod_of(&pod(4, 5)) - 1,
        "lost update",
        "wrong R",
    )
    .await;
    run.update(
        "/registry/pods/ns0/missing",
        after_create,
        "ghost",
        "missing key",
    )
    .await;

    // Deletes: right R, stale R, missing key with R = 0 (compare holds,
    // nothing deleted, no new revision), already deleted key.
    for (n, p) in [(0, 5), (1, 4), (2, 3), (3, 2), (4, 1)] {
        let key = pod(n, p);
        let rev = run.mod_of(&key);
        run.delete(&key, rev, "right R").await;
    }
    let stale = run.stale_mod_of(&pod(0, 1));
    run.delete(&pod(0, 1), stale, "stale R").await;
    run.delete(&pod(4, 4), run.mod_of(&pod(4, 4)) - 1, "wrong R")
        .await;
    run.delete("/registry/pods/ns0/missing", 0, "missing key, R = 0")
        .await;
    let gone = pod(0, 5);
    run.delete(&gone, after_create, "already deleted").await;
    let mid = run
        .get(&pod(0, 0), None, "get after deletes".into())
        .await
        .header();

    // After `mid`: more changes, including re-creating a deleted key.
    run.create(&gone, &value(&gone, 10)).await;
    let key = pod(0, 0);
    let rev = run.mod_of(&key);
    run.update(&key, rev, &value(&key, 3), "right R").await;
    run.get(&gone, None, "get re-created".into()).await;

    // Lists, paginated as kube does, at the current revision.
    for limit in [2, 3, 500] {
        run.list(
            PODS,
            limit,
            0,
            "all pods, a write between pages",
            Some(&pod(2, 5)),
        )
        .await;
    }
    run.list("/registry/pods/ns2/", 2, 0, "one namespace", None)
        .await;
    run.list("/registry/pods/ns1", 4, 0, "ns1 and ns10", None)
        .await;
    // The range shapes over one prefix.
    let list = || GetOptions::new().with_prefix();
    for (prefix, options, label) in [
        (PODS, list(), "list without limit"),
        (PODS, list().with_count_only(), "count only"),
        (
            PODS,
            list().with_count_only().with_limit(1),
            "count only, limit 1",
        ),
        (PODS, list().with_keys_only(), "keys only"),
        (
            PODS,
            list().with_keys_only().with_limit(4),
            "keys only, limit 4",
        ),
        ("/registry/pods/ns9/", list().with_limit(2), "empty prefix"),
    ] {
        run.get(prefix, Some(options), label.into()).await;
    }

    // Lists and gets at old revisions.
    run.list(
        PODS,
        4,
        after_create,
        "at the revision after the creates",
        None,
    )
    .await;
    run.list(PODS, 7, mid, "at the revision after the deletes", None)
        .await;
    for (key, revision, label) in [
        (pod(1, 0), after_create, "get at old revision"),
        (
            gone.clone(),
            after_create,
            "get deleted key at old revision",
        ),
        (gone.clone(), mid, "get key at a revision it was deleted at"),
        (pod(0, 0), start, "get at the initial revision"),
    ] {
        run.get(
            &key,
            Some(GetOptions::new().with_revision(revision)),
            label.into(),
        )
        .await;
    }

    // Reads at a future revision.
    let current = run
        .get(&pod(0, 0), None, "get current".into())
        .await
        .header();
    run.get(
        &pod(0, 0),
        Some(GetOptions::new().with_revision(current + 1)),
        "get at current + 1".into(),
    )
    .await;
    run.get(
        PODS,
        Some(
            GetOptions::new()
                .with_prefix()
                .with_limit(2)
                .with_revision(current + 10),
        ),
        "list at current + 10".into(),
    )
    .await;

    // Watches from the past, with prev_kv over a prefix (kube's shape), on
    // one key, and without prev_kv.
    let watch_all = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_progress_notify();
    let expected = run.writes_since(after_create, PODS);
    run.watch(
        PODS,
        watch_all.clone().with_start_revision(after_create),
        expected,
        "watch all pods from after_create".into(),
    )
    .await;
    let from = mid + 1;
    let expected = run.writes_since(from, PODS);
    run.watch(
        PODS,
        watch_all.clone().with_start_revision(from),
        expected,
        "watch all pods from mid + 1".into(),
    )
    .await;
    let ns1 = "/registry/pods/ns1/";
    let expected = run.writes_since(start, ns1);
    run.watch(
        ns1,
        WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(start),
        expected,
        "watch ns1 from the initial revision".into(),
    )
    .await;
    let expected = run.writes_since(start + 1, &pod(1, 0));
    run.watch(
        &pod(1, 0),
        WatchOptions::new()
            .with_prev_key()
            .with_start_revision(start + 1),
        expected,
        "watch one key".into(),
    )
    .await;
    let expected = run.writes_since(after_create, "/registry/pods/ns2/");
    run.watch(
        "/registry/pods/ns2/",
        WatchOptions::new()
            .with_prefix()
            .with_start_revision(after_create),
        expected,
        "watch ns2 without prev_kv".into(),
    )
    .await;

    // A watch at a future revision: current + 2, then two writes; only the
    // second (and a third, to see nothing was skipped) arrive.
    let current = run
        .get(&pod(3, 0), None, "get before the future watch".into())
        .await
        .header();
    let ns3 = "/registry/pods/ns3/";
    match run
        .open_watch(
            ns3,
            WatchOptions::new()
                .with_prefix()
                .with_prev_key()
                .with_start_revision(current + 2),
        )
        .await
    {
        Ok((mut stream, mut out)) => {
            for (p, what) in [
                (0, "first write after a future watch"),
                (1, "second write"),
                (3, "third write"),
            ] {
                let key = pod(3, p);
                let rev = run.mod_of(&key);
                run.update(&key, rev, &value(&key, 40 + p as u32), what)
                    .await;
            }
            Run::collect(run.side, &mut stream, &mut out, 2).await;
            let events: Vec<&str> = out.events.iter().map(|e| e.kv.key.as_str()).collect();
            assert_eq!(
                events,
                [pod(3, 1), pod(3, 3)],
                "the future watch sees the second and third writes only"
            );
            run.record("watch at current + 2", Outcome::Watch(out));
        }
        Err(outcome) => {
            run.record("watch at current + 2", outcome);
        }
    }

    // Compaction, as kube-apiserver's compactor does it.
    let first = run.kube_compact(0, 0, "bootstrap: no compaction").await;
    let curr = first.header();
    run.kube_compact(0, mid, "stale version: not succeeded, no compaction")
        .await;
    run.kube_compact(1, mid, "compact at mid").await;
    // `mid` is a delete's revision. etcd's compaction at `mid` drops that
    // tombstone (unless the watch is quicker than the compaction), so etcd's
    // watch from `mid` may silently start after it; the router delivers it
    // (see `known_difference`).
    let expected = match side {
        "etcd" => run.writes_since(mid + 1, PODS),
        _ => run.writes_since(mid, PODS),
    };
    run.watch(
        PODS,
        watch_all.clone().with_start_revision(mid),
        expected,
        WATCH_AT_COMPACTION.into(),
    )
    .await;
    run.compact(mid, "again at the same revision").await;
    run.compact(mid - 1, "below the compacted revision").await;
    let current = run
        .get(COMPACT_KEY, None, "get compact_rev_key".into())
        .await
        .header();
    run.compact(current + 5, "at a future revision").await;
    run.kube_compact(2, curr, "compact at the bootstrap cycle's revision")
        .await;

    // Reads and watches at compacted revisions fail; at the compaction
    // revision itself they work.
    run.get(
        &pod(1, 0),
        Some(GetOptions::new().with_revision(curr - 1)),
        "get at a compacted revision".into(),
    )
    .await;
    run.get(
        PODS,
        Some(
            GetOptions::new()
                .with_prefix()
                .with_limit(3)
                .with_revision(after_create),
        ),
        "list at a compacted revision".into(),
    )
    .await;
    run.get(
        &pod(1, 0),
        Some(GetOptions::new().with_revision(curr)),
        "get at the compaction revision".into(),
    )
    .await;
    run.list(PODS, 5, curr, "at the compaction revision", None)
        .await;
    run.watch(
        PODS,
        watch_all.clone().with_start_revision(mid),
        1,
        "watch from a compacted revision".into(),
    )
    .await;
    run.watch(
        PODS,
        watch_all.clone().with_start_revision(start),
        1,
        "watch from the initial revision after compaction".into(),
    )
    .await;
    // After compaction, writes keep going.
    let key = pod(4, 0);
    let rev = run.mod_of(&key);
    run.update(&key, rev, &value(&key, 50), "after compaction")
        .await;
    let rev = run.mod_of(&key);
    run.delete(&key, rev, "after compaction").await;
    let expected = run.writes_since(curr + 1, PODS);
    run.watch(
        PODS,
        watch_all.clone().with_start_revision(curr + 1),
        expected,
        "watch from the compaction revision + 1".into(),
    )
    .await;
    run.list(PODS, 500, 0, "final state", None).await;
    run.steps
}
