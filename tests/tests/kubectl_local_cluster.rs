//! The end-to-end check: the packaged plugin installed in krew's
//! layout, run by the real kubectl, against a real local cluster — a router
//! with three registered agents on tmpfs, and a fourth agent that registered
//! with --no-join for `ring join`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use etcd_client::GetOptions;
use ste_tests::keys::{self, PODS};
use ste_tests::krew::KrewRoot;
use ste_tests::plugin::{KubeUser, local_kubeconfig};
use ste_tests::{AgentOptions, TestAgent, TestRouter};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Packs the built plugin (stripped) and installs it with the real krew
/// (`kubectl krew install --manifest --archive`) into a krew root.
fn krew_install(tmp: &Path) -> anyhow::Result<KrewRoot> {
    let bins = tmp.join("bins");
    std::fs::create_dir_all(&bins)?;
    for bin in ["kubectl-ste", "kubectl_complete-ste"] {
        let out = Command::new("strip")
            .arg("-o")
            .arg(bins.join(bin))
            .arg(ste_tests::procs::workspace_bin(bin))
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "strip: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let krew = KrewRoot::new(&tmp.join("krew"))?;
    let out = Command::new(repo().join("scripts/package-plugin.sh"))
        .env("STE_PLUGIN_BIN_DIR", &bins)
        .env("STE_DIST_DIR", tmp.join("dist"))
        .env_remove("STE_PLUGIN_TARGETS")
        .arg("--install-krew-root")
        .arg(&krew.root)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "package-plugin.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(krew)
}

/// kubectl as a user runs it after `scripts/local-cluster.sh up`: the
/// plugin on PATH, the router named only by the current kubeconfig
/// context's `ste.io/router` extension (no --router, no STE_ROUTER).
struct Kubectl {
    path: String,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("PATH", &self.path)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("STE_ROUTER")
            .env_remove("STE_ROUTER_CA")
            .output()
            .expect("kubectl is installed")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn agent(name: &str, ip: u8, router: &TestRouter, extra: &[&str]) -> anyhow::Result<TestAgent> {
    let mut options = AgentOptions::registering_with(name, ip, router);
    options
        .extra_args
        .extend(extra.iter().map(|s| s.to_string()));
    TestAgent::spawn_new(options)
}

async fn members(router: &TestRouter) -> anyhow::Result<Vec<String>> {
    let status = router.status().await?;
    if status.migration.is_some() || !status.serving {
        return Ok(Vec::new());
    }
    Ok(status.members.into_iter().map(|m| m.name).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn krew_installed_plugin_operates_a_local_cluster() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let krew = krew_install(tmp.path())?;
    assert_eq!(
        krew.krew_ok(&["list"]).lines().collect::<Vec<_>>(),
        ["detached/ste"]
    );
    let root = krew.root.clone();
    let router = TestRouter::spawn_new(&[], &[])?;
    let agents = vec![
        agent("node-a", 2, &router, &[])?,
        agent("node-b", 3, &router, &[])?,
        agent("node-c", 4, &router, &[])?,
    ];
    let spare = agent("node-d", 5, &router, &["--no-join"])?;
    spare.wait_serving().await?;
    ste_tests::eventually("three members", Duration::from_secs(120), || async {
        let m = members(&router).await.map_err(|e| e.to_string())?;
        if m == ["node-a", "node-b", "node-c"] {
            Ok(())
        } else {
            Err(format!("{m:?}"))
        }
    })
    .await?;
    let mut client = router.client().await?;
    for i in 0..60 {
        client
            .put(
                format!("/registry/pods/ns-{}/web-{i}", i % 3),
                format!("pod {i}"),
                None,
            )
            .await?;
    }

    let kubectl = Kubectl {
        path: format!(
            "{}:{}",
            root.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        ),
        kubeconfig: tmp.path().join("kubeconfig"),
    };
    // The user `scripts/local-cluster.sh up` would be: a client
    // certificate of the STE CA, which a router without Kubernetes trusts.
    let (cert, key) = ste_tests::pki::ste().admin.write(tmp.path(), "admin")?;
    std::fs::write(
        &kubectl.kubeconfig,
        local_kubeconfig(
            "https://127.0.0.1:6443",
            &router.user.to_string(),
            &router.ca_file(),
            KubeUser::Certificate {
                cert: &cert,
                key: &key,
            },
        ),
    )?;
    // kubectl exits 1 when another kubectl-ste further down PATH is
    // overshadowed (e.g. /usr/local/bin/kubectl-ste, which
    // `scripts/local-cluster.sh up` links when the krew root is not on
    // PATH): the krew root's plugin, first on PATH, is the one it runs.
    let listed = kubectl.run(&["plugin", "list"]);
    let plugins = String::from_utf8_lossy(&listed.stdout);
    let warnings = String::from_utf8_lossy(&listed.stderr);
    let installed = root.join("bin/kubectl-ste").display().to_string();
    assert!(
        plugins.lines().find(|l| l.ends_with("kubectl-ste")) == Some(installed.as_str()),
        "{plugins}{warnings}"
    );
    assert!(
        listed.status.success()
            || warnings.contains(&format!(
                "overshadowed by a similarly named plugin: {installed}"
            )),
        "{plugins}{warnings}"
    );

    let status = kubectl.ok(&["ste", "status"]);
    // Nothing is wrong, so nothing is flagged (the ring changed moments ago).
    let stderr = String::from_utf8_lossy(&kubectl.run(&["ste", "status"]).stderr).into_owned();
    assert_eq!(stderr, "", "warnings on a healthy cluster");
    for node in ["node-a", "node-b", "node-c"] {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with(node) && l.contains("Serving")),
            "{status}"
        );
    }
    assert!(status.contains("3 members, 60 keys"), "{status}");
    let json: serde_json::Value =
        serde_json::from_str(&kubectl.ok(&["ste", "status", "-o", "json"]))?;
    let text = json.to_string();
    for node in ["node-a", "node-b", "node-c"] {
        assert!(text.contains(node), "{text}");
    }

    // `where` agrees with the shards themselves.
    let mut held: BTreeMap<String, String> = BTreeMap::new();
    for a in &agents {
        let keys = a
            .etcd()
            .await?
            .get(PODS, Some(GetOptions::new().with_prefix().with_keys_only()))
            .await?;
        for kv in keys.kvs() {
            held.insert(kv.key_str()?.to_owned(), a.options.node_name.clone());
        }
    }
    for i in (0..60).step_by(7) {
        let ns = format!("ns-{}", i % 3);
        let out = kubectl.ok(&["ste", "where", &format!("pod/web-{i}"), "-n", &ns]);
        let row = out.lines().nth(1).unwrap_or_default().to_owned();
        let owner = &held[&format!("/registry/pods/{ns}/web-{i}")];
        assert!(
            row.split_whitespace().nth(3) == Some(owner.as_str()),
            "web-{i} on {owner}: {out}"
        );
    }

    let ring = kubectl.ok(&["ste", "ring", "show"]);
    assert!(
        ring.contains("node-d") && ring.contains("not in the ring"),
        "{ring}"
    );
    kubectl.ok(&["ste", "ring", "join", "node-d"]);
    assert_eq!(
        members(&router).await?,
        ["node-a", "node-b", "node-c", "node-d"]
    );
    kubectl.ok(&["ste", "ring", "leave", "node-b", "--yes"]);
    assert_eq!(members(&router).await?, ["node-a", "node-c", "node-d"]);
    let listed = keys::count_under(&mut client, PODS).await?;
    assert_eq!(listed, 60, "nothing lost by the join and the leave");

    let version = kubectl.ok(&["ste", "version"]);
    for line in ["Plugin Version", "Router Version", "node-a", "node-d"] {
        assert!(version.contains(line), "{version}");
    }

    // krew removes it again; kubectl no longer finds it in the krew root.
    krew.krew_ok(&["uninstall", "ste"]);
    assert_eq!(krew.krew_ok(&["list"]).trim(), "");
    assert!(!root.join("bin/kubectl-ste").exists());
    drop(spare);
    Ok(())
}
