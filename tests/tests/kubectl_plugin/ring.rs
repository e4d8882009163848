//! Ring changes: join and leave of a fourth shard (tables and json), leave
//! on a terminal (the question and the progress bar), and leave of a node
//! with no keys.

use ste_tests::etcd::TestEtcd;
use ste_tests::keys::{self, PODS};
use ste_tests::plugin::Plugin;
use ste_tests::{ShardedRouter, eventually};

use crate::{WAIT, cells, json, put_pods, random_names, ring_json};

#[tokio::test]
async fn ring_join_and_leave_a_fourth_shard() {
    let sharded = ShardedRouter::start(3, &["--migration-pause", "50ms"])
        .await
        .unwrap();
    let fourth = TestEtcd::start("shard-d").await.unwrap();
    let user = sharded.router.user.to_string();
    let names = random_names(400);
    put_pods(&sharded, "default", &names).await;
    let plugin = Plugin::for_router(&sharded.router).unwrap();
    let r = ["--router", user.as_str()];
    let generation = ring_json(&plugin, &user).await["generation"]
        .as_u64()
        .unwrap();

    // Dry run: the plan, nothing moves.
    let dry = plugin
        .run(
            &[
                &[
                    "ring",
                    "join",
                    "shard-d",
                    "--endpoint",
                    &fourth.url,
                    "--dry-run",
                    "-o",
                    "json",
                ][..],
                &r,
            ]
            .concat(),
        )
        .await
        .unwrap()
        .ok();
    let dry = json(&dry);
    assert_eq!(dry["dryRun"], true);
    assert_eq!(dry["plan"]["phase"], "PLANNED");
    assert_eq!(dry["plan"]["fromGeneration"], generation);
    assert_eq!(dry["plan"]["toGeneration"], generation + 1);
    let planned = dry["plan"]["keysTotal"].as_u64().unwrap();
    assert!(planned > 0);
    let flows = dry["plan"]["flows"].as_array().unwrap();
    assert!(flows.iter().all(|f| f["to"] == "shard-d"));
    assert_eq!(
        flows
            .iter()
            .map(|f| f["keys"].as_u64().unwrap())
            .sum::<u64>(),
        planned
    );
    assert!(dry["result"].is_null());
    assert_eq!(ring_size(&plugin, &user).await, 3);

    // Join follows the move by default (as kubectl drain does): plan table,
    // progress lines (stderr is not a terminal), the outcome.
    let join = plugin
        .run(
            &[
                &["ring", "join", "shard-d", "--endpoint", &fourth.url][..],
                &r,
            ]
            .concat(),
        )
        .await
        .unwrap()
        .ok();
    let lines: Vec<&str> = join.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "join shard-d: generation {generation} -> {}, ",
            generation + 1
        )),
        "{join:#?}"
    );
    assert_eq!(cells(lines[1]), ["FROM", "TO", "KEYS", "BYTES"]);
    assert!(
        lines.last().unwrap().starts_with(&format!(
            "shard-d joined the ring: generation {}, ",
            generation + 1
        )),
        "{join:#?}"
    );
    assert!(join.stderr.contains("join shard-d: moving "), "{join:#?}");
    let after = ring_json(&plugin, &user).await;
    assert_eq!(after["generation"], generation + 1);
    let members = after["members"].as_array().unwrap();
    assert_eq!(members.len(), 4);
    let d = members.iter().find(|m| m["name"] == "shard-d").unwrap();
    let mut direct = fourth.client().await.unwrap();
    let on_d = keys::count_under(&mut direct, PODS).await.unwrap();
    assert_eq!(d["keys"].as_i64().unwrap(), on_d);
    assert!(on_d > 0);

    // Leave refuses without --yes when stdin is not a terminal.
    let refused = plugin
        .run(&[&["ring", "leave", "shard-d"][..], &r].concat())
        .await
        .unwrap()
        .failed();
    assert!(refused.stderr.contains("pass --yes"), "{refused:#?}");
    assert_eq!(ring_size(&plugin, &user).await, 4);
    // A node that is not a member is named as such, not asked about.
    let stranger = plugin
        .run(&[&["ring", "leave", "no-such-node"][..], &r].concat())
        .await
        .unwrap()
        .failed();
    assert!(
        stranger.stderr.contains("not a ring member") && !stranger.stderr.contains("--yes"),
        "{stranger:#?}"
    );

    // Leave for real, as json.
    let leave = plugin
        .run(&[&["ring", "leave", "shard-d", "--yes", "-o", "json"][..], &r].concat())
        .await
        .unwrap()
        .ok();
    let leave = json(&leave);
    assert_eq!(leave["kind"], "leave");
    assert_eq!(leave["result"]["phase"], "DONE");
    assert_eq!(leave["result"]["keysMoved"], leave["plan"]["keysTotal"]);
    assert_eq!(leave["plan"]["keysTotal"].as_i64().unwrap(), on_d);
    let after = ring_json(&plugin, &user).await;
    assert_eq!(after["generation"], generation + 2);
    assert_eq!(after["members"].as_array().unwrap().len(), 3);
    let left = keys::count_under(&mut direct, PODS).await.unwrap();
    assert_eq!(left, 0, "keys left on shard-d after it left");
    let keys: u64 = after["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["keys"].as_u64().unwrap())
        .sum();
    assert_eq!(keys, names.len() as u64);

    // Errors from the router are printed as it words them.
    let unknown = plugin
        .run(&[&["ring", "leave", "nobody", "--yes"][..], &r].concat())
        .await
        .unwrap()
        .failed();
    assert_eq!(unknown.stderr, "error: nobody is not a ring member\n");

    // Waiting gives up at --timeout; the move goes on in the router.
    let hurried = plugin
        .run(
            &[
                &[
                    "ring",
                    "join",
                    "shard-d",
                    "--endpoint",
                    &fourth.url,
                    "--timeout",
                    "10ms",
                ][..],
                &r,
            ]
            .concat(),
        )
        .await
        .unwrap()
        .failed();
    assert!(
        hurried.stderr.contains("timed out after 10ms"),
        "{hurried:#?}"
    );
    wait_ring_size(&plugin, &user, 4, "shard-d to be a member again").await;

    // --timeout bounds a wait; there is none with --wait=false.
    let conflicting = plugin
        .run(
            &[
                &[
                    "ring",
                    "leave",
                    "shard-d",
                    "--yes",
                    "--wait=false",
                    "--timeout",
                    "1m",
                ][..],
                &r,
            ]
            .concat(),
        )
        .await
        .unwrap()
        .failed();
    assert!(
        conflicting
            .stderr
            .contains("cannot be combined with --wait=false"),
        "{conflicting:#?}"
    );
    // --wait=false returns once the router accepted the change; the move
    // finishes in the router.
    let early = plugin
        .run(
            &[
                &["ring", "leave", "shard-d", "--yes", "--wait=false"][..],
                &r,
            ]
            .concat(),
        )
        .await
        .unwrap()
        .ok();
    assert!(
        early
            .stdout
            .contains("leave of shard-d started (--wait=false)"),
        "{early:#?}"
    );
    assert!(!early.stdout.contains("left the ring"), "{early:#?}");
    wait_ring_size(&plugin, &user, 3, "shard-d to leave").await;
}

/// On a terminal `ring leave` shows the plan, asks, and draws a progress
/// bar; "n" cancels.
#[tokio::test]
async fn leave_asks_on_a_terminal_and_draws_a_bar() {
    let sharded = ShardedRouter::start(3, &["--migration-pause", "50ms"])
        .await
        .unwrap();
    let user = sharded.router.user.to_string();
    put_pods(&sharded, "default", &random_names(300)).await;
    let plugin = Plugin::for_router(&sharded.router).unwrap();
    let args = ["ring", "leave", "shard-c", "--router", user.as_str()];
    let Some(no) = plugin.run_in_terminal(&args, "n\n").await.unwrap() else {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    };
    assert_eq!(no.code, Some(1), "{no:#?}");
    assert!(
        no.stdout.contains("leave shard-c: generation 1 -> 2, "),
        "{no:#?}"
    );
    assert!(
        no.stdout.contains("to the other members? [y/N]: "),
        "{no:#?}"
    );
    assert!(
        no.stdout.contains("error: leave of shard-c cancelled"),
        "{no:#?}"
    );
    assert_eq!(ring_size(&plugin, &user).await, 3);

    let yes = plugin.run_in_terminal(&args, "y\n").await.unwrap().unwrap();
    assert_eq!(yes.code, Some(0), "{yes:#?}");
    assert!(
        yes.stdout.contains("\r\u{1b}[2Kleave shard-c ["),
        "a redrawn bar: {yes:#?}"
    );
    assert!(
        yes.stdout.contains(&format!("[{}]", "#".repeat(30))),
        "{yes:#?}"
    );
    assert!(
        yes.stdout.contains("shard-c left the ring: generation 2, "),
        "{yes:#?}"
    );
    assert!(
        yes.stdout
            .contains("shard-c stays out of the ring, also when the router or its agent restarts"),
        "{yes:#?}"
    );
    let ring = ring_json(&plugin, &user).await;
    assert_eq!(ring["members"].as_array().unwrap().len(), 2);
    assert_eq!(ring["keys"], 300);
}

/// A node that holds no keys leaves (and joins again) without a progress
/// line or a count of nothing: the plan and the outcome say "no keys".
#[tokio::test]
async fn leave_of_a_node_with_no_keys_says_so() {
    let sharded = ShardedRouter::start(3, &[]).await.unwrap();
    let user = sharded.router.user.to_string();
    let plugin = Plugin::for_router(&sharded.router).unwrap();
    let leave = plugin
        .run(&[
            "ring",
            "leave",
            "shard-c",
            "--yes",
            "--router",
            user.as_str(),
        ])
        .await
        .unwrap()
        .ok();
    let lines: Vec<&str> = leave.stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("leave shard-c: generation 1 -> 2, no keys to move"),
        "{leave:#?}"
    );
    assert!(
        lines.contains(&"shard-c left the ring: generation 2, no keys moved"),
        "{leave:#?}"
    );
    assert!(!leave.stderr.contains("moving"), "{leave:#?}");
    assert_eq!(ring_size(&plugin, &user).await, 2);

    // With nothing to move, --wait=false has nothing to leave running: the
    // outcome is shown, not "the router moves the keys now".
    assert_eq!(sharded.shards[2].name, "shard-c");
    let url = &sharded.shards[2].url;
    let join = plugin
        .run(&[
            "ring",
            "join",
            "shard-c",
            "--endpoint",
            url,
            "--wait=false",
            "--router",
            user.as_str(),
        ])
        .await
        .unwrap()
        .ok();
    assert!(
        join.stdout
            .lines()
            .any(|l| l == "shard-c joined the ring: generation 3, no keys moved"),
        "{join:#?}"
    );
    assert_eq!(ring_size(&plugin, &user).await, 3);
}

/// How many members `ring show -o json` lists.
async fn ring_size(plugin: &Plugin, router: &str) -> usize {
    ring_json(plugin, router).await["members"]
        .as_array()
        .unwrap()
        .len()
}

/// Waits until `ring show` lists `members` members and no ring change runs
/// any more (for `what`). The new ring is committed a moment before the
/// change ends, and the router refuses another change until it has.
async fn wait_ring_size(plugin: &Plugin, router: &str, members: usize, what: &str) {
    eventually(what, WAIT, || async {
        let ring = ring_json(plugin, router).await;
        let have = ring["members"].as_array().unwrap().len();
        let running = !ring["migration"].is_null();
        if have == members && !running {
            Ok(())
        } else {
            Err(format!("{have} members, a change running: {running}"))
        }
    })
    .await
    .unwrap();
}
