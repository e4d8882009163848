//! `status`, `ring show` and `version`: against a router alone, with
//! registered agents, and through port-forwards.

use ste_tests::plugin::{
    FakeApiServer, KubeUser, Plugin, Reply, Run, configmap_json, list_json, pod_json,
};
use ste_tests::{AgentOptions, ShardedRouter, TestAgent, eventually};

use crate::{WAIT, cells, json, put_pods, random_names};

#[tokio::test]
async fn status_ring_show_and_version_against_a_router() {
    let sharded = ShardedRouter::start(3, &[]).await.unwrap();
    let user = sharded.router.user.to_string();
    let names = random_names(60);
    put_pods(&sharded, "default", &names).await;
    let plugin = Plugin::for_router(&sharded.router).unwrap();
    let r = ["--router", user.as_str()];

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
    assert_eq!(unknown_agent_columns(&table), 3, "{table:#?}");
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

/// Agents registered with the router fill the agent columns; `--no-join`
/// agents show in `ring show`; and the same works with the router and
/// agents reached only through port-forwards of the (fake) API server.
#[tokio::test]
async fn status_with_registered_agents_directly_and_through_port_forwards() {
    let sharded = ShardedRouter::start(1, &[]).await.unwrap();
    let user = sharded.router.user.to_string();
    // Registered as AgentOptions arranges it with the test router (its
    // admin port, with the agents' certificates).
    let joined = AgentOptions::registering_with("node-x", 1, &sharded.router);
    let mut spare = AgentOptions::registering_with("node-y", 1, &sharded.router);
    spare.extra_args.push("--no-join".into());
    let node_x = TestAgent::start(joined).await.unwrap();
    let _node_y = TestAgent::start(spare).await.unwrap();
    let plugin = Plugin::for_router(&sharded.router).unwrap();
    let r = ["--router", user.as_str()];
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
    // The address the plugin asked: the agent's user port.
    assert_eq!(x["agent"]["address"], node_x.addrs.user.to_string());
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
        unknown_agent_columns(&table),
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
    // and port-forwards to it, and to the agent pod of each member, with
    // the STE CA from the ConfigMap kube-system/ste-ca (TLS over the
    // forwarded stream, the router verified as ste-router, the agent as
    // its node).
    let ca = std::fs::read_to_string(sharded.router.ca_file()).unwrap();
    let api = FakeApiServer::start(vec![
        (
            "/api/v1/namespaces/kube-system/configmaps/ste-ca".into(),
            Reply::Json(200, configmap_json("kube-system", "ste-ca", &[("ca.crt", &ca)])),
        ),
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
            Reply::PortForward(sharded.router.user),
        ),
        (
            "/api/v1/namespaces/kube-system/pods/ste-agent-x/portforward".into(),
            Reply::PortForward(node_x.addrs.user),
        ),
    ])
    .await
    .unwrap();
    let (cert, key) = plugin.admin_identity().unwrap();
    let kubeconfig = plugin
        .write(
            "kubeconfig",
            &api.kubeconfig_as(
                None,
                KubeUser::Certificate {
                    cert: &cert,
                    key: &key,
                },
            ),
        )
        .unwrap();
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
        "kube-system/ste-router-0 port 2492 (port-forward)"
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
            && r.contains("ports=2492")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r
                .starts_with("GET /api/v1/namespaces/kube-system/pods/ste-agent-x/portforward?")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/kube-system/configmaps/ste-ca")),
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

/// How many shards the plugin warned about, on stderr, as having no agent
/// columns (no agent registered for them).
fn unknown_agent_columns(run: &Run) -> usize {
    run.stderr
        .lines()
        .filter(|l| l.contains("agent columns <unknown>"))
        .count()
}
