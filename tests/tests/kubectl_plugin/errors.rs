//! What the plugin says when it cannot do its job: usage errors in
//! kubectl's words, and a router that is unreachable, silent, a web server,
//! not set, or not discoverable through the API server.

use std::net::Ipv4Addr;
use std::time::Duration;

use ste_tests::plugin::{FakeApiServer, Plugin, Reply, list_json, pod_json, status_json};
use ste_tests::procs::free_port;

use crate::router_kubeconfig;

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
        &["ring", "join", "node-x", "--weight", "0"],
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
    let ca = plugin.ste_ca().unwrap();
    let plugin = plugin.with_env("STE_ROUTER_CA", ca.to_str().unwrap());
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
        .write("kubeconfig-ext.yaml", &router_kubeconfig(&plugin, &address))
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

/// `--router` at a web server (HTTP/2 answering 404, or HTTP/1 only) says
/// what is probably wrong instead of tonic's bare mapping; over TLS (the
/// default), a server that does not speak it says so.
#[tokio::test]
async fn a_web_server_at_the_router_address_is_named_as_such() {
    let plugin = Plugin::new().unwrap();
    let ca = plugin.ste_ca().unwrap();
    let plugin = plugin.with_env("STE_ROUTER_CA", ca.to_str().unwrap());
    let web = ste_tests::web::http2_not_found().await.unwrap();
    let address = web.addr.to_string();
    let run = plugin
        .run(&["status", "--router", &address])
        .await
        .unwrap()
        .failed();
    assert!(
        run.stderr.starts_with(&format!(
            "error: cannot reach the STE router at {address} (from --router): "
        )) && run.stderr.contains(
            "(the server does not speak TLS; a router run with --insecure is reached with \
             http://HOST:PORT)"
        ),
        "{run:#?}"
    );
    // Plain, as asked for with http://.
    let run = plugin
        .run(&["status", "--router", &format!("http://{address}")])
        .await
        .unwrap()
        .failed();
    assert_eq!(
        run.stderr,
        format!(
            "error: the server at {address} (from --router) answered HTTP 404 without a gRPC \
             status: this is probably not the STE router's admin API (default ports 2490 for agents, 2492 for users); check \
             --router\n"
        )
    );
    let old = ste_tests::web::http1_only().await.unwrap();
    let address = old.addr.to_string();
    let run = plugin
        .run_with(
            &["ring", "show"],
            &[("STE_ROUTER", format!("http://{address}").as_str())],
        )
        .await
        .unwrap()
        .failed();
    assert_eq!(
        run.stderr,
        format!(
            "error: the server at {address} (from STE_ROUTER) answers in HTTP/1, not HTTP/2: \
             this is probably a plain HTTP server, not the STE router's user API (default port \
             2492); check STE_ROUTER\n"
        ),
    );
}

#[tokio::test]
async fn a_silent_router_fails_within_the_request_timeout() {
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap().to_string();
    let plugin = Plugin::new().unwrap();
    let ca = plugin.ste_ca().unwrap();
    let plugin = plugin.with_env("STE_ROUTER_CA", ca.to_str().unwrap());
    let run = plugin
        .run(&["status", "--router", &address, "--request-timeout", "1s"])
        .await
        .unwrap()
        .failed();
    // The TLS handshake is part of connecting: it is what never finishes.
    assert!(
        run.stderr.starts_with(&format!(
            "error: cannot reach the STE router at {address} (from --router): no answer within 1s"
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
async fn router_discovery_failures_through_the_api_server() {
    let plugin = Plugin::new().unwrap();
    let ca = plugin.ste_ca().unwrap();
    let plugin = plugin.with_env("STE_ROUTER_CA", ca.to_str().unwrap());
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
        run.stderr.starts_with("error: cannot reach the STE router at kube-system/ste-router-0 port 2492 (port-forward)"),
        "{run:#?}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
}
