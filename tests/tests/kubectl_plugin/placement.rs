//! Where a pod's key is: `where` against every shard read directly, a
//! missing pod, and the fork placements from the node list.

use ste_tests::ShardedRouter;
use ste_tests::plugin::{
    FakeApiServer, Plugin, Reply, list_json, node_json, pod_json, status_json,
};

use crate::{cells, json, put_pods, random_names};

#[tokio::test]
async fn where_agrees_with_reading_every_shard_for_200_random_pods() {
    let sharded = ShardedRouter::start(3, &[]).await.unwrap();
    let user = sharded.router.user.to_string();
    let names = random_names(200);
    put_pods(&sharded, "team-a", &names).await;
    let plugin = Plugin::for_router(&sharded.router).unwrap();

    let mut args = vec![
        "where",
        "-n",
        "team-a",
        "-o",
        "json",
        "--router",
        user.as_str(),
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
        let mut args = vec!["where", "-n", "team-a", "--router", user.as_str()];
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
    let user = sharded.router.user.to_string();
    put_pods(&sharded, "default", &["web-0".to_owned()]).await;
    let plugin = Plugin::for_router(&sharded.router).unwrap();
    let run = plugin
        .run(&["where", "pod/web-0", "pod/gone", "--router", &user])
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
