//! The plugin as kubectl runs it: discovery on PATH, completion, and the
//! router named by the current kubeconfig context.

use std::net::Ipv4Addr;

use ste_tests::ShardedRouter;
use ste_tests::plugin::Plugin;
use ste_tests::procs::free_port;

use crate::{complete, json, router_kubeconfig};

#[tokio::test]
async fn real_kubectl_runs_the_plugin_and_its_completion() {
    let sharded = ShardedRouter::start(3, &[]).await.unwrap();
    let user = sharded.router.user.to_string();
    let plugin = Plugin::for_router(&sharded.router).unwrap();

    let list = plugin.kubectl(&["plugin", "list"]).await.unwrap().ok();
    assert!(
        list.stdout
            .contains(&plugin.bin_dir().join("kubectl-ste").display().to_string()),
        "{list:#?}"
    );

    let version = plugin
        .kubectl(&["ste", "version", "--router", &user])
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
        complete(&plugin, &["ring", "leave", "--router", &user, ""]).await,
        "shard-a\nshard-b\nshard-c\n:4\n"
    );
    // Nothing to join, and no router: no candidates, no file completion.
    assert_eq!(
        complete(&plugin, &["ring", "join", "--router", &user, ""]).await,
        ":4\n"
    );
    assert_eq!(
        complete(&plugin, &["ring", "leave", "--router", "127.0.0.1:1", ""]).await,
        ":4\n"
    );
}

/// Without --router or STE_ROUTER the plugin finds the router in the
/// current kubeconfig context; --router and STE_ROUTER still win over it.
#[tokio::test]
async fn the_kubeconfig_context_extension_names_the_router() {
    let sharded = ShardedRouter::start(1, &[]).await.unwrap();
    let user = sharded.router.user.to_string();
    let plugin = Plugin::new().unwrap();
    let kubeconfig = plugin
        .write("kubeconfig-router.yaml", &router_kubeconfig(&plugin, &user))
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
    std::fs::write(dot_kube.join("config"), router_kubeconfig(&plugin, &user)).unwrap();
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
