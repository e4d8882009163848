//! `kubectl ste` end to end: the real plugin binary (and the real
//! `kubectl` running it) against a real ste-router with real etcd shards
//! and agents. The Kubernetes API is the one stand-in: a small fake API
//! server (tests/src/plugin.rs) for the node list, pod lookups, router
//! discovery and port-forwarding.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use ste_tests::etcd::TestEtcd;
use ste_tests::keys::{self, PODS};
use ste_tests::plugin::{
    FakeApiServer, Plugin, Reply, Run, list_json, node_json, pod_json, status_json,
};
use ste_tests::procs::free_port;
use ste_tests::{AgentOptions, ShardedRouter, TestAgent, eventually};

const WAIT: Duration = Duration::from_secs(60);

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:#?}"))
}

/// Rows of a table as whitespace-split cells (headers and summary lines
/// excluded by the caller).
fn cells(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

async fn put_pods(router: &ShardedRouter, namespace: &str, names: &[String]) {
    let mut client = router.router.client().await.expect("router client");
    for name in names {
        let key = format!("/registry/pods/{namespace}/{name}");
        let outcome = ste_tests::kube::create(&mut client, &key, format!("pod {name}").as_bytes())
            .await
            .expect("create");
        assert!(
            matches!(outcome, ste_tests::kube::Outcome::Written(_)),
            "{key}: {outcome:?}"
        );
    }
}

/// Pseudo-random pod names (xorshift, seeded from the clock and printed,
/// so a failure can be replayed).
fn random_names(n: usize) -> Vec<String> {
    let mut x = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("pod name seed: {x}");
    let mut names = BTreeSet::new();
    while names.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        names.insert(format!("web-{:x}-{}", x % 0xffff_ffff, x % 1000));
    }
    names.into_iter().collect()
}

/// kubectl's completion of `kubectl ste <args>`, via kubectl_complete-ste.
async fn complete(plugin: &Plugin, args: &[&str]) -> String {
    let mut all = vec!["__complete", "ste"];
    all.extend(args);
    plugin.kubectl(&all).await.unwrap().ok().stdout
}

/// `ring show -o json`.
async fn ring_json(plugin: &Plugin, router: &str) -> Value {
    json(
        &plugin
            .run(&["ring", "show", "-o", "json", "--router", router])
            .await
            .unwrap()
            .ok(),
    )
}

#[tokio::test]
async fn usage_errors_exit_1_in_kubectls_words() {
    let plugin = Plugin::new().unwrap();
    // Nothing listens there: every case must fail before contacting it.
    let router = format!("127.0.0.1:{}", free_port(Ipv4Addr::LOCALHOST.into()));
    let cases: &[(&[&str], &str)] = &[
        (
            &["where", "foo/bar"],
            "error: the server doesn't have a resource type \"foo\"\n",
        ),
        (
            &["where", "foo", "bar"],
            "error: the server doesn't have a resource type \"foo\"\n",
        ),
        (
            &["where", "a/b/c"],
            "error: arguments in resource/name form may not have more than one slash\n",
        ),
        (
            &["where", "pod"],
            "error: resource(s) were provided, but no name was specified\n",
        ),
        (
            &["where", "pod/"],
            "error: arguments in resource/name form must have a single resource and name\n",
        ),
        (
            &["where", "pod/web-0", "-A"],
            "error: a resource cannot be retrieved by name across all namespaces\n",
        ),
        (
            &["status", "-o", "xml"],
            "error: unable to match a printer suitable for the output format \"xml\", allowed \
             formats are: table,wide,json,yaml\n",
        ),
        (
            &["status", "--request-timeout", "soon"],
            "error: Invalid timeout value. Timeout must be a single integer in seconds, or an \
             integer followed by a corresponding time unit (e.g. 1s | 2m | 3h)\n",
        ),
    ];
    for (args, expected) in cases {
        let mut all = args.to_vec();
        all.extend(["--router", &router]);
        let run = plugin.run(&all).await.unwrap().failed();
        assert_eq!(run.stderr, *expected, "{args:?}");
        assert_eq!(run.stdout, "", "{args:?}");
    }
    // clap's usage errors exit 1 too (not clap's 2).
    for args in [
        &["status", "--bogus"][..],
        &["ring", "join"],
        &["where", "--placement", "x"],
    ] {
        let run = plugin.run(args).await.unwrap().failed();
        assert!(run.stderr.starts_with("error: "), "{run:#?}");
    }
    // A missing subcommand prints the help, as an error.
    for args in [&[][..], &["ring"]] {
        let run = plugin.run(args).await.unwrap().failed();
        assert!(run.stderr.contains("Usage: kubectl ste"), "{run:#?}");
    }
    // --help is not an error.
    let help = plugin.run(&["--help"]).await.unwrap().ok();
    assert!(help.stdout.contains("ring"), "{help:#?}");
}

#[tokio::test]
async fn an_unreachable_router_is_one_line_naming_it_and_how_to_set_it() {
    let plugin = Plugin::new().unwrap();
    let address = format!("127.0.0.1:{}", free_port(Ipv4Addr::LOCALHOST.into()));
    for command in [
        &["status"][..],
        &["ring", "show"],
        &["where", "pod/web-0"],
        &["version"],
    ] {
        let mut args = command.to_vec();
        args.extend(["--router", &address]);
        let run = plugin.run(&args).await.unwrap().failed();
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{run:#?}");
        assert!(
            lines[0].starts_with(&format!(
                "error: cannot reach the STE router at {address} (from --router)"
            )),
            "{run:#?}"
        );
        assert!(lines[0].contains("--router HOST:PORT"), "{run:#?}");
        assert!(lines[0].contains("STE_ROUTER"), "{run:#?}");
    }
    // From the environment, it says so.
    let run = plugin
        .run_with(&["status"], &[("STE_ROUTER", address.as_str())])
        .await
        .unwrap()
        .failed();
    assert!(run.stderr.contains("(from STE_ROUTER)"), "{run:#?}");
    // From the kubeconfig context's extension, it says which context.
    let kubeconfig = plugin
        .write("kubeconfig-ext.yaml", &router_kubeconfig(&address))
        .unwrap();
    let run = plugin
        .run_with(&["status"], &[("KUBECONFIG", kubeconfig.to_str().unwrap())])
        .await
        .unwrap()
        .failed();
    assert!(
        run.stderr.contains(&format!(
            "cannot reach the STE router at {address} (from the ste.io/router extension of \
             kubeconfig context \"ste-local\")"
        )),
        "{run:#?}"
    );
}

/// A kubeconfig like the one `scripts/local-cluster.sh up` writes: the
/// current context `ste-local` carries the router's admin address in its
/// `ste.io/router` extension; its API server does not exist.
fn router_kubeconfig(address: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
current-context: ste-local
clusters:
- name: ste-local
  cluster:
    server: https://127.0.0.1:1
contexts:
- name: ste-local
  context:
    cluster: ste-local
    user: ste-local
    extensions:
    - name: ste.io/router
      extension:
        address: {address}
users:
- name: ste-local
  user: {{}}
"
    )
}

/// Without --router or STE_ROUTER the plugin finds the router in the
/// current kubeconfig context; --router and STE_ROUTER still win over it.
#[tokio::test]
async fn the_kubeconfig_context_extension_names_the_router() {
    let sharded = ShardedRouter::start(1, &[]).await.unwrap();
    let admin = sharded.router.admin.to_string();
    let plugin = Plugin::new().unwrap();
    let kubeconfig = plugin
        .write("kubeconfig-router.yaml", &router_kubeconfig(&admin))
        .unwrap();
    let kubeconfig = kubeconfig.to_str().unwrap();
    let show = plugin
        .run_with(
            &["ring", "show", "-o", "json"],
            &[("KUBECONFIG", kubeconfig)],
        )
        .await
        .unwrap()
        .ok();
    assert_eq!(json(&show)["members"].as_array().map(Vec::len), Some(1));
    // Found as kubectl finds ~/.kube/config, too.
    let dot_kube = plugin.home().join(".kube");
    std::fs::create_dir_all(&dot_kube).unwrap();
    std::fs::write(dot_kube.join("config"), router_kubeconfig(&admin)).unwrap();
    let status = plugin.run(&["status"]).await.unwrap().ok();
    assert!(status.stdout.starts_with("NODE "), "{status:#?}");
    let nowhere = format!("127.0.0.1:{}", free_port(Ipv4Addr::LOCALHOST.into()));
    let run = plugin
        .run_with(&["status"], &[("STE_ROUTER", nowhere.as_str())])
        .await
        .unwrap()
        .failed();
    assert!(run.stderr.contains("(from STE_ROUTER)"), "{run:#?}");
    let run = plugin
        .run(&["status", "--router", &nowhere])
        .await
        .unwrap()
        .failed();
    assert!(run.stderr.contains("(from --router)"), "{run:#?}");
}

/// `--router` at a web server (HTTP/2 answering 404, or HTTP/1 only) says
/// what is probably wrong instead of tonic's bare mapping.
#[tokio::test]
async fn a_web_server_at_the_router_address_is_named_as_such() {
    let plugin = Plugin::new().unwrap();
    let web = ste_tests::web::http2_not_found().await.unwrap();
    let address = web.addr.to_string();
    let run = plugin
        .run(&["status", "--router", &address])
        .await
        .unwrap()
        .failed();
    assert_eq!(
        run.stderr,
        format!(
            "error: the server at {address} (from --router) answered HTTP 404 without a gRPC \
             status: this is probably not the STE router's admin API (default port 2490); check \
             --router\n"
        )
    );
    let old = ste_tests::web::http1_only().await.unwrap();
    let address = old.addr.to_string();
    let run = plugin
        .run_with(&["ring", "show"], &[("STE_ROUTER", address.as_str())])
        .await
        .unwrap()
        .failed();
    assert_eq!(
        run.stderr,
        format!(
            "error: the server at {address} (from STE_ROUTER) answers in HTTP/1, not HTTP/2: \
             this is probably a plain HTTP server, not the STE router's admin API (default port \
             2490); check STE_ROUTER\n"
        ),
    );
}

#[tokio::test]
async fn a_silent_router_fails_within_the_request_timeout() {
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap().to_string();
    let plugin = Plugin::new().unwrap();
    let run = plugin
        .run(&["status", "--router", &address, "--request-timeout", "1s"])
        .await
        .unwrap()
        .failed();
    assert!(
        run.stderr.starts_with(&format!(
            "error: the STE router at {address} did not answer within 1s"
        )),
        "{run:#?}"
    );
    assert!(run.stderr.contains("STE_ROUTER"), "{run:#?}");
    // 1s for the request, plus process start-up on a loaded machine.
    assert!(run.elapsed < Duration::from_secs(3), "{run:#?}");
    drop(silent);
}

#[tokio::test]
async fn without_router_or_cluster_it_says_how_to_set_the_router() {
    let plugin = Plugin::new().unwrap();
    let run = plugin.run(&["ring", "show"]).await.unwrap().failed();
    assert!(
        run.stderr.starts_with("error: no router address"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("--router HOST:PORT"), "{run:#?}");
    let missing = plugin.home().join("nope.yaml");
    let run = plugin
        .run(&["status", "--kubeconfig", missing.to_str().unwrap()])
        .await
        .unwrap()
        .failed();
    assert!(run.stderr.contains("error loading config file"), "{run:#?}");
}

#[tokio::test]
async fn real_kubectl_runs_the_plugin_and_its_completion() {
    let sharded = ShardedRouter::start(3, &[]).await.unwrap();
    let admin = sharded.router.admin.to_string();
    let plugin = Plugin::new().unwrap();

    let list = plugin.kubectl(&["plugin", "list"]).await.unwrap().ok();
    assert!(
        list.stdout
            .contains(&plugin.bin_dir().join("kubectl-ste").display().to_string()),
        "{list:#?}"
    );

    let version = plugin
        .kubectl(&["ste", "version", "--router", &admin])
        .await
        .unwrap()
        .ok();
    assert!(
        version.stdout.starts_with(&format!(
            "Plugin Version: {}\nRouter Version: ",
            env!("CARGO_PKG_VERSION")
        )),
        "{version:#?}"
    );
    let failed = plugin.kubectl(&["ste", "where", "a/b/c"]).await.unwrap();
    assert_eq!(failed.code, Some(1), "{failed:#?}");

    // kubectl ≥ 1.26 asks kubectl_complete-ste.
    assert_eq!(
        complete(&plugin, &["ri"]).await,
        "ring\tShow or change the placement ring\n:4\n"
    );
    assert_eq!(
        complete(&plugin, &["ring", "le"]).await,
        "leave\tRemove a member from the ring\n:4\n"
    );
    assert_eq!(
        complete(&plugin, &["status", "-o", "j"]).await,
        "json\n:4\n"
    );
    assert_eq!(
        complete(&plugin, &["ring", "leave", "--router", &admin, ""]).await,
        "shard-a\nshard-b\nshard-c\n:4\n"
    );
    // Nothing to join, and no router: no candidates, no file completion.
    assert_eq!(
        complete(&plugin, &["ring", "join", "--router", &admin, ""]).await,
        ":4\n"
    );
    assert_eq!(
        complete(&plugin, &["ring", "leave", "--router", "127.0.0.1:1", ""]).await,
        ":4\n"
    );
}

#[tokio::test]
async fn status_ring_show_and_version_against_a_router() {
    let sharded = ShardedRouter::start(3, &[]).await.unwrap();
    let admin = sharded.router.admin.to_string();
    let names = random_names(60);
    put_pods(&sharded, "default", &names).await;
    let plugin = Plugin::new().unwrap();
    let r = ["--router", admin.as_str()];

    // status: table and json carry the same facts.
    let table = plugin
        .run(&[&["status"][..], &r].concat())
        .await
        .unwrap()
        .ok();
    let json_run = plugin
        .run(&[&["status", "-o", "json"][..], &r].concat())
        .await
        .unwrap()
        .ok();
    let doc = json(&json_run);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(
        cells(lines[0]),
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
    let members = doc["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for (line, member) in lines[1..4].iter().zip(members) {
        let row = cells(line);
        assert_eq!(row[0], member["node"], "{line}");
        assert_eq!(row[1], member["shard"], "{line}");
        assert_eq!(row[4], member["keys"].to_string(), "{line}");
        // No agents: the agent columns are unknown, and json says why.
        assert_eq!(row[2], "<unknown>");
        assert_eq!(row[8], "<unknown>");
        assert!(member["agent"].is_null());
        assert!(
            member["agentError"]
                .as_str()
                .unwrap()
                .contains("no agent registered")
        );
        let shard = sharded
            .shards
            .iter()
            .find(|s| s.name == row[0])
            .expect("a shard of that name");
        assert_eq!(row[1], shard.url);
    }
    let total: u64 = members.iter().map(|m| m["keys"].as_u64().unwrap()).sum();
    assert_eq!(total, names.len() as u64);
    assert_eq!(doc["summary"]["keys"], names.len() as u64);
    assert_eq!(lines[4], "");
    let balance = doc["summary"]["balance"].as_f64().unwrap();
    assert_eq!(
        lines[5],
        format!(
            "3 members, {} keys, balance {balance:.2} (max/mean), router revision {}, generation {}",
            names.len(),
            doc["summary"]["routerRevision"],
            doc["router"]["generation"]
        )
    );
    assert_eq!(lines.len(), 6, "{table:#?}");
    assert_eq!(
        table
            .stderr
            .lines()
            .filter(|l| l.contains("agent columns <unknown>"))
            .count(),
        3,
        "{table:#?}"
    );
    // yaml has the same document.
    let yaml = plugin
        .run(&[&["status", "-o", "yaml"][..], &r].concat())
        .await
        .unwrap()
        .ok();
    assert!(yaml.stdout.contains("members:\n"), "{yaml:#?}");
    assert!(
        yaml.stdout.contains(&format!("  keys: {}\n", names.len())),
        "{yaml:#?}"
    );
    // Colour: --color always paints the notes on stderr; never (and auto
    // into a pipe) does not.
    let painted = plugin
        .run(&[&["status", "--color", "always"][..], &r].concat())
        .await
        .unwrap()
        .ok();
    assert!(painted.stderr.contains("\u{1b}[33m! "), "{painted:#?}");
    assert!(!table.stderr.contains('\u{1b}') && !table.stdout.contains('\u{1b}'));
    // --no-headers: rows only; -o wide: more columns.
    let bare = plugin
        .run(&[&["status", "--no-headers"][..], &r].concat())
        .await
        .unwrap()
        .ok();
    assert_eq!(bare.stdout.lines().count(), 3, "{bare:#?}");
    let wide = plugin
        .run(&[&["status", "-o", "wide"][..], &r].concat())
        .await
        .unwrap()
        .ok();
    assert_eq!(
        cells(wide.stdout.lines().next().unwrap())[10..],
        [
            "REVISION", "RESTARTS", "VERSION", "MEMORY", "HEALTH", "INDEX"
        ]
    );
    // The router's --key-index (from STE_KEY_INDEX when set, else btree).
    let index = std::env::var("STE_KEY_INDEX").unwrap_or_else(|_| "btree".into());
    let rows: Vec<&str> = wide
        .stdout
        .lines()
        .filter(|row| row.starts_with("shard-"))
        .collect();
    assert_eq!(rows.len(), 3, "{wide:#?}");
    assert!(
        rows.iter()
            .all(|row| cells(row).last() == Some(&index.as_str())),
        "{wide:#?}"
    );

    // ring show
    let ring = plugin
        .run(&[&["ring", "show", "-o", "json"][..], &r].concat())
        .await
        .unwrap()
        .ok();
    let ring = json(&ring);
    assert_eq!(ring["vnodes"], 1024);
    assert_eq!(ring["members"].as_array().unwrap().len(), 3);
    let ring_share: f64 = ring["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ringSharePercent"].as_f64().unwrap())
        .sum();
    assert!((ring_share - 100.0).abs() < 1e-6);
    assert_eq!(ring["agentsNotInRing"].as_array().unwrap().len(), 0);
    let ring_table = plugin
        .run(&[&["ring", "show"][..], &r].concat())
        .await
        .unwrap()
        .ok();
    let lines: Vec<&str> = ring_table.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "Ring generation {}, 1024 virtual nodes",
            ring["generation"]
        )),
        "{ring_table:#?}"
    );
    assert_eq!(
        cells(lines[1]),
        [
            "MEMBER", "SHARD", "WEIGHT", "HEALTH", "KEYS", "KEY", "SHARE", "RING", "SHARE"
        ]
    );
    assert_eq!(
        cells(lines[2])[0..4],
        ["shard-a", sharded.shards[0].url.as_str(), "1", "Healthy"]
    );

    // version
    let version = plugin
        .run(&[&["version", "-o", "json"][..], &r].concat())
        .await
        .unwrap()
        .ok();
    let version = json(&version);
    assert_eq!(version["pluginVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["routerVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["skew"].as_array().unwrap().len(), 0);
    let client_only = plugin.run(&["version", "--client"]).await.unwrap().ok();
    assert_eq!(
        client_only.stdout,
        format!("Plugin Version: {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn where_agrees_with_reading_every_shard_for_200_random_pods() {
    let sharded = ShardedRouter::start(3, &[]).await.unwrap();
    let admin = sharded.router.admin.to_string();
    let names = random_names(200);
    put_pods(&sharded, "team-a", &names).await;
    let plugin = Plugin::new().unwrap();

    let mut args = vec![
        "where",
        "-n",
        "team-a",
        "-o",
        "json",
        "--router",
        admin.as_str(),
    ];
    let pods: Vec<String> = names.iter().map(|n| format!("pod/{n}")).collect();
    args.extend(pods.iter().map(String::as_str));
    let run = plugin.run(&args).await.unwrap().ok();
    let doc = json(&run);
    assert_eq!(doc["placement"], "router");
    let items = doc["items"].as_array().unwrap();
    assert_eq!(items.len(), 200);

    let mut shards = Vec::new();
    for shard in &sharded.shards {
        shards.push((
            shard.name.clone(),
            shard.url.clone(),
            shard.client().await.unwrap(),
        ));
    }
    for (item, name) in items.iter().zip(&names) {
        let key = format!("/registry/pods/team-a/{name}");
        assert_eq!(item["key"], key.as_str());
        assert_eq!(item["present"], true);
        assert!(item["revision"].as_i64().unwrap() > 0);
        let mut holders = Vec::new();
        for (shard_name, url, client) in &mut shards {
            if client.get(key.as_str(), None).await.unwrap().count() > 0 {
                holders.push((shard_name.clone(), url.clone()));
            }
        }
        assert_eq!(holders.len(), 1, "{key} is on {holders:?}");
        assert_eq!(item["member"], holders[0].0.as_str(), "{key}");
        assert_eq!(item["node"], holders[0].0.as_str(), "{key}");
        assert_eq!(item["shard"], holders[0].1.as_str(), "{key}");
    }

    // The table says the same for a few, in each accepted form.
    for form in [
        vec![format!("pod/{}", names[0])],
        vec![format!("pods/{}", names[0])],
        vec![format!("po/{}", names[0])],
        vec!["pod".to_owned(), names[0].clone()],
        vec![names[0].clone()],
    ] {
        let mut args = vec!["where", "-n", "team-a", "--router", admin.as_str()];
        args.extend(form.iter().map(String::as_str));
        let run = plugin.run(&args).await.unwrap().ok();
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(
            cells(lines[0]),
            [
                "NAMESPACE",
                "POD",
                "KEY",
                "MEMBER",
                "NODE",
                "SHARD",
                "PRESENT",
                "REVISION",
                "SIZE"
            ]
        );
        let row = cells(lines[1]);
        assert_eq!(
            row[..3],
            [
                "team-a",
                names[0].as_str(),
                items[0]["key"].as_str().unwrap()
            ]
        );
        assert_eq!(row[3], items[0]["member"]);
        assert_eq!(row[6], "true");
        assert_eq!(row[7], items[0]["revision"].to_string());
    }
}

#[tokio::test]
async fn where_a_missing_pod_prints_its_row_and_says_not_found() {
    let sharded = ShardedRouter::start(3, &[]).await.unwrap();
    let admin = sharded.router.admin.to_string();
    put_pods(&sharded, "default", &["web-0".to_owned()]).await;
    let plugin = Plugin::new().unwrap();
    let run = plugin
        .run(&["where", "pod/web-0", "pod/gone", "--router", &admin])
        .await
        .unwrap()
        .failed();
    assert_eq!(
        run.stderr,
        "Error from server (NotFound): pods \"gone\" not found\n"
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{run:#?}");
    assert_eq!(cells(lines[1])[6], "true");
    let gone = cells(lines[2]);
    assert_eq!(gone[1], "gone");
    assert_eq!(gone[6..], ["false", "<none>", "<none>"]);
    // The would-be owner is a member all the same.
    assert!(gone[3].starts_with("shard-"), "{run:#?}");
}

#[tokio::test]
async fn ring_join_and_leave_a_fourth_shard() {
    let sharded = ShardedRouter::start(3, &["--migration-pause", "50ms"])
        .await
        .unwrap();
    let fourth = TestEtcd::start("shard-d").await.unwrap();
    let admin = sharded.router.admin.to_string();
    let names = random_names(400);
    put_pods(&sharded, "default", &names).await;
    let plugin = Plugin::new().unwrap();
    let r = ["--router", admin.as_str()];
    let generation = ring_json(&plugin, &admin).await["generation"]
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
    assert_eq!(
        ring_json(&plugin, &admin).await["members"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

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
    let after = ring_json(&plugin, &admin).await;
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
    assert_eq!(
        ring_json(&plugin, &admin).await["members"]
            .as_array()
            .unwrap()
            .len(),
        4
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
    let after = ring_json(&plugin, &admin).await;
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
    eventually("shard-d to be a member again", WAIT, || async {
        let members = ring_json(&plugin, &admin).await["members"]
            .as_array()
            .unwrap()
            .len();
        if members == 4 {
            Ok(())
        } else {
            Err(format!("{members} members"))
        }
    })
    .await
    .unwrap();

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
    eventually("shard-d to leave", WAIT, || async {
        let members = ring_json(&plugin, &admin).await["members"]
            .as_array()
            .unwrap()
            .len();
        if members == 3 {
            Ok(())
        } else {
            Err(format!("{members} members"))
        }
    })
    .await
    .unwrap();
}

/// Agents registered with the router fill the agent columns; `--no-join`
/// agents show in `ring show`; and the same works with the router and
/// agents reached only through port-forwards of the (fake) API server.
#[tokio::test]
async fn status_with_registered_agents_directly_and_through_port_forwards() {
    let sharded = ShardedRouter::start(1, &[]).await.unwrap();
    let admin = sharded.router.admin.to_string();
    let mut joined = AgentOptions::new("node-x", Ipv4Addr::new(127, 0, 0, 1));
    joined.extra_args = vec![
        "--router".into(),
        admin.clone(),
        "--heartbeat-interval".into(),
        "200ms".into(),
    ];
    let mut spare = AgentOptions::new("node-y", Ipv4Addr::new(127, 0, 0, 1));
    spare.extra_args = vec![
        "--router".into(),
        admin.clone(),
        "--no-join".into(),
        "--heartbeat-interval".into(),
        "200ms".into(),
    ];
    let node_x = TestAgent::start(joined).await.unwrap();
    let _node_y = TestAgent::start(spare).await.unwrap();
    let plugin = Plugin::new().unwrap();
    let r = ["--router", admin.as_str()];
    let status = || async {
        json(
            &plugin
                .run(&[&["status", "-o", "json"][..], &r].concat())
                .await
                .unwrap()
                .ok(),
        )
    };
    eventually("node-x to join and node-y to register", WAIT, || async {
        let doc = status().await;
        let members = doc["members"].as_array().unwrap().len();
        let ring = json(
            &plugin
                .run(&[&["ring", "show", "-o", "json"][..], &r].concat())
                .await
                .unwrap()
                .ok(),
        );
        let spare = ring["agentsNotInRing"].as_array().unwrap().len();
        let caught_up =
            doc["members"].as_array().unwrap().iter().all(|m| {
                m["generation"].is_null() || m["generation"] == doc["router"]["generation"]
            });
        if members == 2 && spare == 1 && caught_up {
            Ok(())
        } else {
            Err(format!("{members} members, {spare} spare agents: {doc}"))
        }
    })
    .await
    .unwrap();

    let doc = status().await;
    let x = doc["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node"] == "node-x")
        .unwrap();
    assert_eq!(x["agent"]["state"], "Serving");
    assert_eq!(x["agent"]["epoch"], 1);
    assert_eq!(x["agent"]["address"], node_x.addrs.grpc.to_string());
    assert!(x["agent"]["tmpfsSizeBytes"].as_u64().unwrap() >= 256 * 1024 * 1024);
    assert!(x["warnings"].as_array().unwrap().is_empty(), "{x}");
    let table = plugin
        .run(&[&["status"][..], &r].concat())
        .await
        .unwrap()
        .ok();
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("node-x "))
        .map(cells)
        .unwrap();
    assert_eq!(row[1], node_x.addrs.client_url);
    assert_eq!(row[2..4], ["Serving", "1"]);
    assert_eq!(row[8].chars().last(), Some('s'), "AGE in seconds: {row:?}");
    assert_eq!(
        table
            .stderr
            .lines()
            .filter(|l| l.contains("agent columns <unknown>"))
            .count(),
        1,
        "only the plain shard: {table:#?}"
    );

    let ring = plugin
        .run(&[&["ring", "show"][..], &r].concat())
        .await
        .unwrap()
        .ok();
    assert!(
        ring.stdout.contains("Registered agents not in the ring:"),
        "{ring:#?}"
    );
    let spare_row = ring
        .stdout
        .lines()
        .find(|l| l.starts_with("node-y "))
        .map(cells)
        .unwrap();
    assert_eq!(spare_row[6], "true", "NO-JOIN: {spare_row:?}");

    let version = json(
        &plugin
            .run(&[&["version", "-o", "json"][..], &r].concat())
            .await
            .unwrap()
            .ok(),
    );
    let agents = version["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2);
    assert!(
        agents
            .iter()
            .all(|a| a["version"] == env!("CARGO_PKG_VERSION"))
    );

    // No --router: the plugin finds the router pod through the API server
    // and port-forwards to it, and to the agent pod of each member.
    let api = FakeApiServer::start(vec![
        (
            "/api/v1/namespaces/kube-system/pods?labelSelector=app.kubernetes.io%2Fname%3Dste-router".into(),
            Reply::Json(200, list_json("PodList", &[pod_json("kube-system", "ste-router-0", "5", "cp-1")])),
        ),
        (
            "/api/v1/namespaces/kube-system/pods?labelSelector=app.kubernetes.io%2Fname%3Dste-agent".into(),
            Reply::Json(200, list_json("PodList", &[pod_json("kube-system", "ste-agent-x", "6", "node-x")])),
        ),
        (
            "/api/v1/namespaces/kube-system/pods/ste-router-0/portforward".into(),
            Reply::PortForward(sharded.router.admin),
        ),
        (
            "/api/v1/namespaces/kube-system/pods/ste-agent-x/portforward".into(),
            Reply::PortForward(node_x.addrs.grpc),
        ),
    ])
    .await
    .unwrap();
    let kubeconfig = plugin.write("kubeconfig", &api.kubeconfig(None)).unwrap();
    let kc = ["--kubeconfig", kubeconfig.to_str().unwrap()];
    let forwarded = json(
        &plugin
            .run(&[&["status", "-o", "json"][..], &kc].concat())
            .await
            .unwrap()
            .ok(),
    );
    assert_eq!(
        forwarded["router"]["address"],
        "kube-system/ste-router-0 port 2490 (port-forward)"
    );
    let x = forwarded["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node"] == "node-x")
        .unwrap();
    assert_eq!(x["agent"]["state"], "Serving", "{forwarded}");
    let requests = api.requests();
    assert!(
        requests.iter().any(
            |r| r.starts_with("GET /api/v1/namespaces/kube-system/pods?")
                && r.contains("labelSelector=app.kubernetes.io%2Fname%3Dste-router")
        ),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r
            .starts_with("GET /api/v1/namespaces/kube-system/pods/ste-router-0/portforward?")
            && r.contains("ports=2490")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r
                .starts_with("GET /api/v1/namespaces/kube-system/pods/ste-agent-x/portforward?")),
        "{requests:?}"
    );
    // The same through the real kubectl, KUBECONFIG from the environment.
    let ring = plugin
        .kubectl(&[
            "ste",
            "ring",
            "show",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ])
        .await
        .unwrap()
        .ok();
    assert!(ring.stdout.contains("node-x"), "{ring:#?}");
}

#[tokio::test]
async fn router_discovery_failures_through_the_api_server() {
    let plugin = Plugin::new().unwrap();
    // No router pod.
    let empty = FakeApiServer::start(vec![(
        "/api/v1/namespaces/kube-system/pods".into(),
        Reply::Json(200, list_json("PodList", &[])),
    )])
    .await
    .unwrap();
    let kubeconfig = plugin.write("empty", &empty.kubeconfig(None)).unwrap();
    let run = plugin
        .run_with(&["status"], &[("KUBECONFIG", kubeconfig.to_str().unwrap())])
        .await
        .unwrap()
        .failed();
    assert!(
        run.stderr.starts_with("error: no running STE router pod in kube-system (label app.kubernetes.io/name=ste-router"),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains("--router HOST:PORT, the STE_ROUTER environment variable, or the extension ste.io/router"),
        "{run:#?}"
    );

    // A router pod, but port-forwarding is forbidden.
    let forbidden = FakeApiServer::start(vec![
        (
            "/api/v1/namespaces/kube-system/pods".into(),
            Reply::Json(
                200,
                list_json(
                    "PodList",
                    &[pod_json("kube-system", "ste-router-0", "5", "cp-1")],
                ),
            ),
        ),
        (
            "/api/v1/namespaces/kube-system/pods/ste-router-0/portforward".into(),
            Reply::Json(
                403,
                status_json(403, "Forbidden", "pods \"ste-router-0\" is forbidden"),
            ),
        ),
    ])
    .await
    .unwrap();
    let kubeconfig = plugin
        .write("forbidden", &forbidden.kubeconfig(None))
        .unwrap();
    let run = plugin
        .run(&["ring", "show", "--kubeconfig", kubeconfig.to_str().unwrap()])
        .await
        .unwrap()
        .failed();
    assert!(
        run.stderr.starts_with("error: cannot reach the STE router at kube-system/ste-router-0 port 2490 (port-forward)"),
        "{run:#?}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
}

/// The original prototype's placements, from the node list of the (fake)
/// API server, checked against ste-core's golden vectors; presence from
/// the API server; the namespace from the kubeconfig context.
#[tokio::test]
async fn fork_placements_from_the_node_list() {
    let nodes = list_json(
        "NodeList",
        &[
            node_json("worker-3", "10.0.0.3", "{}"),
            node_json("worker-1", "10.0.0.1", "{}"),
            node_json("worker-2", "10.0.0.2", "{}"),
            node_json("control", "10.0.0.9", r#"{"no-shard":"true"}"#),
        ],
    );
    let api = FakeApiServer::start(vec![
        ("/api/v1/nodes".into(), Reply::Json(200, nodes)),
        (
            "/api/v1/namespaces/team-a/pods/nginx".into(),
            Reply::Json(200, pod_json("team-a", "nginx", "1234", "worker-3")),
        ),
        (
            "/api/v1/namespaces/default/pods/web-0-1b2wj30".into(),
            Reply::Json(200, pod_json("default", "web-0-1b2wj30", "77", "worker-2")),
        ),
        (
            "/api/v1/namespaces/default/pods/x-024k8tr".into(),
            Reply::Json(
                404,
                status_json(404, "NotFound", "pods \"x-024k8tr\" not found"),
            ),
        ),
    ])
    .await
    .unwrap();
    let plugin = Plugin::new().unwrap();
    let kubeconfig = plugin
        .write("config", &api.kubeconfig(Some("team-a")))
        .unwrap();
    // KUBECONFIG is a colon list; a missing file in it is skipped.
    let list = format!(
        "{}:{}",
        plugin.home().join("missing").display(),
        kubeconfig.display()
    );
    let env = [("KUBECONFIG", list.as_str())];

    let ring = plugin
        .run_with(
            &[
                "where",
                "pod/nginx",
                "--placement",
                "fork-ring",
                "-o",
                "json",
            ],
            &env,
        )
        .await
        .unwrap()
        .ok();
    let item = &json(&ring)["items"][0];
    assert_eq!(item["namespace"], "team-a", "the context's namespace");
    assert_eq!(item["key"], "/pods/team-a/nginx");
    assert_eq!(item["present"], true);
    assert_eq!(item["revision"], 1234);
    let requests = api.requests();
    assert!(
        requests.contains(&"GET /api/v1/nodes".to_string())
            || requests.iter().any(|r| r.starts_with("GET /api/v1/nodes?")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/team-a/pods/nginx")),
        "{requests:?}"
    );
    // The golden vector is for default/nginx: ask in that namespace too.
    let golden = plugin
        .run_with(
            &[
                "where",
                "nginx",
                "-n",
                "default",
                "--placement",
                "fork-ring",
                "-o",
                "json",
            ],
            &env,
        )
        .await
        .unwrap()
        .failed();
    let item = &json(&golden)["items"][0];
    assert_eq!(item["member"], "https://10.0.0.2:2279");
    assert_eq!(item["node"], "worker-2");
    assert_eq!(item["present"], false);
    assert_eq!(
        golden.stderr,
        "Error from server (NotFound): pods \"nginx\" not found\n"
    );

    let suffix = plugin
        .run_with(
            &[
                "where",
                "-n",
                "default",
                "--placement",
                "fork-suffix",
                "pod/web-0-1b2wj30",
                "pod/x-024k8tr",
            ],
            &env,
        )
        .await
        .unwrap()
        .failed();
    let lines: Vec<&str> = suffix.stdout.lines().collect();
    assert_eq!(
        cells(lines[1]),
        [
            "default",
            "web-0-1b2wj30",
            "/pods/default/web-0-1b2wj30",
            "https://10.0.0.1:2279",
            "worker-1",
            "https://10.0.0.1:2279",
            "true",
            "77",
            "<none>"
        ]
    );
    assert_eq!(cells(lines[2])[4], "worker-2");
    assert_eq!(cells(lines[2])[6], "false");
    assert_eq!(
        suffix.stderr,
        "Error from server (NotFound): pods \"x-024k8tr\" not found\n"
    );

    // A pod name without a suffix code cannot be placed by that scheme.
    let bad = plugin
        .run_with(
            &[
                "where",
                "-n",
                "default",
                "--placement",
                "fork-suffix",
                "nginx",
            ],
            &env,
        )
        .await
        .unwrap()
        .failed();
    assert_eq!(
        bad.stderr,
        "error: pod name \"nginx\" has no '-'-separated shard suffix\n"
    );
    // --context that does not exist: kubectl's error.
    let run = plugin
        .run_with(
            &[
                "where",
                "nginx",
                "--context",
                "nope",
                "--placement",
                "fork-ring",
            ],
            &env,
        )
        .await
        .unwrap()
        .failed();
    assert_eq!(
        run.stderr,
        "error: context was not found for specified context: nope\n"
    );
}

/// On a terminal `ring leave` shows the plan, asks, and draws a progress
/// bar; "n" cancels.
#[tokio::test]
async fn leave_asks_on_a_terminal_and_draws_a_bar() {
    let sharded = ShardedRouter::start(3, &["--migration-pause", "50ms"])
        .await
        .unwrap();
    let admin = sharded.router.admin.to_string();
    put_pods(&sharded, "default", &random_names(300)).await;
    let plugin = Plugin::new().unwrap();
    let args = ["ring", "leave", "shard-c", "--router", admin.as_str()];
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
    assert_eq!(
        ring_json(&plugin, &admin).await["members"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

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
    let ring = ring_json(&plugin, &admin).await;
    assert_eq!(ring["members"].as_array().unwrap().len(), 2);
    assert_eq!(ring["keys"], 300);
}
