//! Who the plugin says it is, and what it trusts: the kubeconfig user's
//! client certificate or token against a router that trusts client
//! certificates only (no Kubernetes), refusals in kubectl's words, and the
//! STE CA's sources. (RBAC through a real kube-apiserver: kube_e2e.)

use std::path::Path;

use rcgen::ExtendedKeyUsagePurpose;
use ste_tests::ShardedRouter;
use ste_tests::pki::{self, Ca, dn};
use ste_tests::plugin::{KubeUser, Plugin, local_kubeconfig};

use crate::json;

const UNAUTHORIZED: &str = "error: You must be logged in to the server (Unauthorized)\n";

#[tokio::test]
async fn credentials_from_the_kubeconfig_user_and_refusals_in_kubectls_words() {
    let sharded = ShardedRouter::start(1, &[]).await.unwrap();
    let user = sharded.router.user.to_string();
    let ca = sharded.router.ca_file();
    let ca = ca.to_str().unwrap();
    let plugin = Plugin::new().unwrap();
    let kubeconfig_for = |name: &str, who: KubeUser| {
        plugin
            .write(
                name,
                &local_kubeconfig("https://127.0.0.1:1", &user, Path::new(ca), who),
            )
            .unwrap()
    };

    // The admin certificate may do everything.
    let (cert, key) = plugin.admin_identity().unwrap();
    let admin = kubeconfig_for(
        "admin.yaml",
        KubeUser::Certificate {
            cert: &cert,
            key: &key,
        },
    );
    let show = plugin
        .run(&[
            "ring",
            "show",
            "-o",
            "json",
            "--kubeconfig",
            admin.to_str().unwrap(),
        ])
        .await
        .unwrap()
        .ok();
    assert_eq!(json(&show)["members"].as_array().map(Vec::len), Some(1));

    // No kubeconfig, only the CA: no credentials at all.
    let anonymous = plugin
        .run_with(&["status", "--router", &user], &[("STE_ROUTER_CA", ca)])
        .await
        .unwrap()
        .failed();
    assert_eq!(anonymous.stderr, UNAUTHORIZED, "{anonymous:#?}");
    let nobody = kubeconfig_for("anonymous.yaml", KubeUser::Anonymous);
    let run = plugin
        .run(&["ring", "show", "--kubeconfig", nobody.to_str().unwrap()])
        .await
        .unwrap()
        .failed();
    assert_eq!(run.stderr, UNAUTHORIZED, "{run:#?}");

    // A bearer token: a router without Kubernetes has no TokenReview to
    // ask, so it is not accepted.
    let token = kubeconfig_for("token.yaml", KubeUser::Token("not-a-real-token"));
    let run = plugin
        .run(&["ring", "show", "--kubeconfig", token.to_str().unwrap()])
        .await
        .unwrap()
        .failed();
    assert_eq!(run.stderr, UNAUTHORIZED, "{run:#?}");

    // The same token user sent to the admin port (agents' port, client
    // certificate required) is told so, not given a bare transport error.
    let admin_port = sharded.router.admin.to_string();
    let run = plugin
        .run(&[
            "ring",
            "show",
            "--router",
            &admin_port,
            "--kubeconfig",
            token.to_str().unwrap(),
        ])
        .await
        .unwrap()
        .failed();
    assert!(
        run.stderr.contains("requires a client certificate")
            && run.stderr.contains("user port (default 2492)"),
        "{run:#?}"
    );
    // And http:// to the TLS user port says to drop it.
    let run = plugin
        .run(&[
            "ring",
            "show",
            "--router",
            &format!("http://{user}"),
            "--kubeconfig",
            token.to_str().unwrap(),
        ])
        .await
        .unwrap()
        .failed();
    assert!(run.stderr.contains("drop http://"), "{run:#?}");

    // A node's certificate: a node may read, and change the ring only as
    // itself (leave its own member).
    let node = pki::ste()
        .ca
        .issue(
            &["node-z"],
            dn("system:node:node-z", Some("system:nodes")),
            &[ExtendedKeyUsagePurpose::ClientAuth],
        )
        .unwrap();
    let (node_cert, node_key) = node.write(&plugin.home(), "node").unwrap();
    let as_node = kubeconfig_for(
        "node.yaml",
        KubeUser::Certificate {
            cert: &node_cert,
            key: &node_key,
        },
    );
    let as_node = ["--kubeconfig", as_node.to_str().unwrap()];
    plugin
        .run(&[&["ring", "show"][..], &as_node].concat())
        .await
        .unwrap()
        .ok();
    let run = plugin
        .run(&[&["ring", "leave", "shard-a", "--yes"][..], &as_node].concat())
        .await
        .unwrap()
        .failed();
    assert_eq!(
        run.stderr,
        "Error from server (Forbidden): node \"system:node:node-z\" may not act as node \
         \"shard-a\"\n",
        "{run:#?}"
    );
}

#[tokio::test]
async fn the_router_certificate_is_verified_against_the_ste_ca() {
    let sharded = ShardedRouter::start(1, &[]).await.unwrap();
    let user = sharded.router.user.to_string();
    let plugin = Plugin::for_router(&sharded.router).unwrap();

    // Another CA than the one that signed the router's certificate.
    let other = Ca::new("not-the-ste-ca").unwrap();
    let other_file = plugin.home().join("other-ca.crt");
    other.write(&other_file).unwrap();
    let (cert, key) = plugin.admin_identity().unwrap();
    let wrong = plugin
        .write(
            "wrong-ca.yaml",
            &local_kubeconfig(
                "https://127.0.0.1:1",
                &user,
                &other_file,
                KubeUser::Certificate {
                    cert: &cert,
                    key: &key,
                },
            ),
        )
        .unwrap();
    let run = plugin
        .run(&["status", "--kubeconfig", wrong.to_str().unwrap()])
        .await
        .unwrap()
        .failed();
    assert!(
        run.stderr.starts_with(&format!(
            "error: cannot reach the STE router at {user} (from the ste.io/router extension of \
             kubeconfig context \"ste-local\"): invalid peer certificate"
        )) && run.stderr.contains(&format!(
            "(verified with the STE CA from {} (certificate-authority of the ste.io/router \
             extension of kubeconfig context \"ste-local\"))",
            other_file.display()
        )),
        "{run:#?}"
    );

    // The context's CA wins over STE_ROUTER_CA.
    let run = plugin
        .run_with(
            &["ring", "show", "--kubeconfig", wrong.to_str().unwrap()],
            &[("STE_ROUTER_CA", sharded.router.ca_file().to_str().unwrap())],
        )
        .await
        .unwrap()
        .failed();
    assert!(run.stderr.contains("invalid peer certificate"), "{run:#?}");

    // No CA anywhere (no kubeconfig, no STE_ROUTER_CA, no cluster for the
    // ConfigMap): all three ways are named.
    let bare = Plugin::new().unwrap();
    let run = bare
        .run(&["status", "--router", &user])
        .await
        .unwrap()
        .failed();
    assert!(
        run.stderr.starts_with(
            "error: no STE CA to verify the router's certificate with, and no cluster to read \
             the ConfigMap from"
        ),
        "{run:#?}"
    );
    for way in [
        "certificate-authority",
        "STE_ROUTER_CA",
        "ConfigMap kube-system/ste-ca (key ca.crt)",
        "http://HOST:PORT",
    ] {
        assert!(run.stderr.contains(way), "{way}: {run:#?}");
    }
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
}

/// Exec plugins run as kubectl runs them (kube's own auth layer); one that
/// cannot run is an error naming the user, not an anonymous call.
#[tokio::test]
async fn an_exec_plugin_that_fails_names_the_user() {
    let plugin = Plugin::new().unwrap();
    let ca = plugin.ste_ca().unwrap();
    let missing = plugin.home().join("no-such-plugin");
    let kubeconfig = local_kubeconfig(
        "https://127.0.0.1:1",
        "127.0.0.1:1",
        &ca,
        KubeUser::Anonymous,
    )
    .replace(
        "  user: {}\n",
        &format!(
            "  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      \
             command: {}\n      interactiveMode: Never\n",
            missing.display()
        ),
    );
    let path = plugin.write("exec.yaml", &kubeconfig).unwrap();
    let run = plugin
        .run(&["status", "--kubeconfig", path.to_str().unwrap()])
        .await
        .unwrap()
        .failed();
    assert!(
        run.stderr
            .starts_with("error: kubeconfig user \"ste-local\": cannot get its token: "),
        "{run:#?}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
}
