//! The command-line flags of kube-apiserver and the kubeconfig every
//! component and kubectl use.

use std::net::SocketAddr;
use std::path::Path;

use base64::Engine;

use super::pki::{self, Pki};
use crate::etcd::TestEtcd;
use crate::router::TestRouter;

/// kube-apiserver's flags (docs/counterparts.md, A simulated cluster, with
/// client certificates instead of a token): [`apiserver_base_args`] with
/// the Pods in `router`.
pub fn apiserver_args(
    pki: &Pki,
    etcd: &TestEtcd,
    router: &TestRouter,
    port: u16,
    dir: &Path,
) -> Vec<String> {
    let mut args = apiserver_base_args(pki, etcd, port, dir);
    args.push(format!(
        "--etcd-servers-overrides=/pods#http://{}",
        router.listen
    ));
    args
}

/// kube-apiserver with client certificates, RBAC and service-account
/// tokens, everything in `etcd`.
pub fn apiserver_base_args(pki: &Pki, etcd: &TestEtcd, port: u16, dir: &Path) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    vec![
        format!("--etcd-servers={}", etcd.url),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        "--endpoint-reconciler-type=none".into(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", dir.join("cert-dir").display()),
        format!("--tls-cert-file={}", path(&pki.serving_cert)),
        format!("--tls-private-key-file={}", path(&pki.serving_key)),
        format!("--client-ca-file={}", path(&pki.ca_cert)),
        "--authorization-mode=Node,RBAC".into(),
        "--service-account-issuer=https://kubernetes.default.svc".into(),
        format!("--service-account-key-file={}", path(&pki.sa_pub)),
        format!("--service-account-signing-key-file={}", path(&pki.sa_key)),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
    ]
}

/// The kubeconfig: server, CA and admin client certificate embedded, and,
/// given the router's user port and the CA of its certificate, the
/// context's `ste.io/router` extension (where `kubectl ste` looks for them).
pub fn kubeconfig_yaml(
    pki: &Pki,
    apiserver: SocketAddr,
    router: Option<(SocketAddr, &Path)>,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let credentials = format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&pki.admin.cert_pem),
        b64(&pki.admin.key_pem)
    );
    kubeconfig_for(pki, apiserver, router, pki::ADMIN_USER, &credentials)
}

/// The kubeconfig of a user who holds only a bearer `token` (a
/// ServiceAccount token from `kubectl create token`), otherwise as
/// [`kubeconfig_yaml`].
pub fn token_kubeconfig_yaml(
    pki: &Pki,
    apiserver: SocketAddr,
    router: Option<(SocketAddr, &Path)>,
    token: &str,
) -> String {
    kubeconfig_for(
        pki,
        apiserver,
        router,
        "token-user",
        &format!("    token: {token}\n"),
    )
}

fn kubeconfig_for(
    pki: &Pki,
    apiserver: SocketAddr,
    router: Option<(SocketAddr, &Path)>,
    user: &str,
    credentials: &str,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let extensions = match router {
        Some((user, ca)) => format!(
            "    extensions:
    - name: ste.io/router
      extension:
        address: {user}
        certificate-authority: {}
",
            ca.display()
        ),
        None => String::new(),
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: ste-e2e
  cluster:
    server: https://{apiserver}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
{credentials}contexts:
- name: ste-e2e
  context:
    cluster: ste-e2e
    user: {user}
    namespace: default
{extensions}current-context: ste-e2e
",
        ca = b64(&pki.ca_pem),
    )
}
