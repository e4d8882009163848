//! Keys through etcdctl: put, get with limits and revisions, del and del
//! --prefix across shards, and txn.

use std::collections::BTreeSet;

use serde_json::Value;
use ste_tests::ShardedRouter;
use ste_tests::keys::PODS;

use crate::etcdctl::{Etcdctl, kvs, revision};
use crate::{assert_router_quiet, held_by_shards, placement};

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
