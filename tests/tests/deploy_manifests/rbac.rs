//! deploy/rbac.yaml in a real kube-apiserver (RBAC on, no STE): applied as
//! docs/install.md says, then asked with `kubectl auth can-i` what each
//! subject may do — the SubjectAccessReviews the router and the agents
//! make for users, and the TokenReview/SubjectAccessReview permission the
//! router and the agents need themselves.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ste_tests::control_plane::flags::{apiserver_base_args, kubeconfig_yaml};
use ste_tests::control_plane::health;
use ste_tests::control_plane::pki::Pki;
use ste_tests::control_plane::process::KubeProcess;
use ste_tests::procs::{free_port, kube_bin};
use ste_tests::{TestEtcd, eventually};

use crate::deploy;

/// `kubectl` as the cluster's admin, its output and whether it succeeded.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(kube_bin("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Who asks: a user and its groups.
struct Who<'a> {
    user: &'a str,
    groups: &'a [&'a str],
}

/// What is asked: `verb` on `resource` of API group `group` (the core
/// group when empty), in `namespace` (cluster-wide when empty), the object
/// `name` if not empty.
struct Ask<'a> {
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    namespace: &'a str,
    name: &'a str,
}

/// Whether `who` may do `ask`: a SubjectAccessReview as the router and the
/// agents send one (`kubectl auth can-i` cannot name a resource of a
/// group the server does not serve, such as rings.ste.io).
fn allowed(kubeconfig: &Path, dir: &Path, who: &Who, ask: &Ask) -> bool {
    let review = serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": who.user,
            "groups": who.groups,
            "resourceAttributes": {
                "verb": ask.verb,
                "group": ask.group,
                "resource": ask.resource,
                "namespace": ask.namespace,
                "name": ask.name,
            },
        },
    });
    let file = dir.join("review.json");
    std::fs::write(&file, review.to_string()).unwrap();
    let (created, out) = kubectl(
        kubeconfig,
        &[
            "create",
            "-f",
            &file.display().to_string(),
            "-o",
            "jsonpath={.status.allowed}",
        ],
    );
    assert!(created, "SubjectAccessReview {review}: {out}");
    match out.trim() {
        "true" => true,
        // status.allowed is omitted when false.
        "" | "false" => false,
        other => panic!("SubjectAccessReview {review}: {other}"),
    }
}

/// An Ask for the ring, as the router and the agents make it.
fn rings(verb: &str) -> Ask<'_> {
    Ask {
        verb,
        group: "ste.io",
        resource: "rings",
        namespace: "",
        name: "",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_yaml_in_a_real_kube_apiserver_grants_what_the_doors_ask() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::create(dir).unwrap();
    let etcd = TestEtcd::start("rbac").await.unwrap();
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let apiserver = SocketAddr::new(ip, free_port(ip));
    let process = KubeProcess::spawn(
        "kube-apiserver",
        &kube_bin("kube-apiserver"),
        &apiserver_base_args(&pki, &etcd, apiserver.port(), dir),
        dir,
    )
    .unwrap();
    let kubeconfig = dir.join("kubeconfig");
    // No router here: no ste.io/router extension.
    std::fs::write(&kubeconfig, kubeconfig_yaml(&pki, apiserver, None)).unwrap();
    eventually(
        "kube-apiserver /readyz",
        Duration::from_secs(180),
        || async { health::probe_once(apiserver, &pki, "/readyz").await },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", process.log_tail(60)));

    let rbac = deploy("rbac.yaml").display().to_string();
    let (applied, out) = kubectl(&kubeconfig, &["apply", "-f", &rbac]);
    assert!(applied, "kubectl apply -f deploy/rbac.yaml: {out}");
    let can = |who: &Who, ask: &Ask| allowed(&kubeconfig, dir, who, ask);
    let user = |user| Who { user, groups: &[] };

    // Users: nothing until bound; then what the ClusterRole says, and the
    // binding commands of docs/install.md work as written.
    let (alice, bob) = (user("alice"), user("bob"));
    for who in [&alice, &bob] {
        assert!(!can(who, &rings("get")));
        assert!(!can(who, &rings("update")));
    }
    for (user, role) in [("alice", "ste-operator"), ("bob", "ste-viewer")] {
        let (created, out) = kubectl(
            &kubeconfig,
            &[
                "create",
                "clusterrolebinding",
                &format!("{user}-ste"),
                &format!("--clusterrole={role}"),
                &format!("--user={user}"),
            ],
        );
        assert!(created, "{out}");
    }
    // The authorizer sees new bindings through its informers: a moment.
    eventually(
        "the new bindings in effect",
        Duration::from_secs(30),
        || async {
            if can(&alice, &rings("update")) && can(&bob, &rings("get")) {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        },
    )
    .await
    .unwrap();
    assert!(can(&alice, &rings("get")));
    assert!(!can(&alice, &rings("delete")));
    assert!(!can(&bob, &rings("update")));

    // The example group: the ring and what the plugin reaches it through.
    let operator = Who {
        user: "carol",
        groups: &["ste-operators", "system:authenticated"],
    };
    assert!(can(&operator, &rings("update")));
    let core = |verb, resource, namespace| Ask {
        verb,
        group: "",
        resource,
        namespace,
        name: "",
    };
    assert!(can(&operator, &core("list", "nodes", "")));
    assert!(can(
        &operator,
        &core("create", "pods/portforward", "kube-system")
    ));
    assert!(!can(
        &operator,
        &core("create", "pods/portforward", "default")
    ));

    // The STE CA, for everyone signed in; no other ConfigMap.
    let anyone = Who {
        user: "dave",
        groups: &["system:authenticated"],
    };
    let configmap = |name| Ask {
        verb: "get",
        group: "",
        resource: "configmaps",
        namespace: "kube-system",
        name,
    };
    assert!(can(&anyone, &configmap("ste-ca")));
    assert!(!can(&anyone, &configmap("kubeadm-config")));
    assert!(!can(&anyone, &rings("get")));

    // The router (its kubeconfig's user) and the agents (their
    // ServiceAccount) ask about tokens and users, and may do nothing else
    // with the ring.
    let agent = Who {
        user: "system:serviceaccount:kube-system:ste-agent",
        groups: &[
            "system:serviceaccounts",
            "system:serviceaccounts:kube-system",
        ],
    };
    let router = user("ste-router");
    let review = |group, resource| Ask {
        verb: "create",
        group,
        resource,
        namespace: "",
        name: "",
    };
    for who in [&agent, &router] {
        assert!(can(who, &review("authentication.k8s.io", "tokenreviews")));
        assert!(can(
            who,
            &review("authorization.k8s.io", "subjectaccessreviews")
        ));
        assert!(!can(who, &rings("update")));
    }
    drop(process);
}
