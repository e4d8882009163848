//! `--state-etcd` over TLS, as against a kubeadm control-plane etcd: a real
//! etcd 3.6 with `--client-cert-auth`, and the router presenting
//! kube-apiserver's kind of etcd client certificate through
//! `--state-etcd-cafile/--state-etcd-certfile/--state-etcd-keyfile`
//! (kube-apiserver's `--etcd-cafile/--etcd-certfile/--etcd-keyfile`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
use ste_tests::pki::{Ca, dn};
use ste_tests::procs::{free_port, workspace_bin};
use ste_tests::{TestEtcd, TestRouter};

/// The control-plane etcd's PKI, as kubeadm lays it out.
struct EtcdPki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    client_tls: etcd_client::TlsOptions,
}

fn etcd_pki(dir: &Path) -> anyhow::Result<EtcdPki> {
    let ca = Ca::new("etcd-ca")?;
    let ca_path = dir.join("etcd-ca.crt");
    ca.write(&ca_path)?;
    let (server_cert, server_key) = ca
        .issue(
            &["127.0.0.1", "localhost"],
            dn("etcd-server", None),
            &[ServerAuth, ClientAuth],
        )?
        .write(dir, "etcd-server")?;
    let client = ca.issue(&[], dn("kube-apiserver-etcd-client", None), &[ClientAuth])?;
    let (client_cert, client_key) = client.write(dir, "apiserver-etcd-client")?;
    Ok(EtcdPki {
        ca: ca_path,
        server_cert,
        server_key,
        client_cert,
        client_key,
        client_tls: client.etcd_tls(&ca),
    })
}

/// A control-plane etcd that serves only TLS clients with a certificate of
/// its CA, once it answers such a client.
async fn secure_etcd(pki: &EtcdPki) -> anyhow::Result<TestEtcd> {
    let etcd = TestEtcd::spawn_tls(
        "control-plane",
        vec![
            format!("--cert-file={}", pki.server_cert.display()),
            format!("--key-file={}", pki.server_key.display()),
            format!("--trusted-ca-file={}", pki.ca.display()),
            "--client-cert-auth".into(),
        ],
    )?;
    ste_tests::eventually(
        "the TLS control-plane etcd to answer",
        Duration::from_secs(60),
        || async {
            let mut client = client(&etcd.url, pki).await.map_err(|e| e.to_string())?;
            client.status().await.map(drop).map_err(|e| e.to_string())
        },
    )
    .await?;
    Ok(etcd)
}

async fn client(url: &str, pki: &EtcdPki) -> anyhow::Result<etcd_client::Client> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(10))
        .with_tls(pki.client_tls.clone());
    Ok(etcd_client::Client::connect([url], Some(options)).await?)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_keeps_its_state_in_an_etcd_that_requires_client_certificates() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let pki = etcd_pki(dir.path())?;
    let control_plane = secure_etcd(&pki).await?;
    let shard = TestEtcd::start("shard-a").await?;

    let router = TestRouter::start(
        &[("shard-a", shard.url.as_str())],
        &[
            "--state-etcd",
            &control_plane.url,
            "--state-etcd-cafile",
            &path(&pki.ca),
            "--state-etcd-certfile",
            &path(&pki.client_cert),
            "--state-etcd-keyfile",
            &path(&pki.client_key),
        ],
    )
    .await?;
    router
        .client()
        .await?
        .put("/registry/pods/default/stateful", "x", None)
        .await?;

    // The ring and the revision high-water mark are in the secure etcd.
    let state = client(&control_plane.url, &pki)
        .await?
        .get("/ste/router/state", None)
        .await?;
    let value = state
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
        .unwrap_or_default();
    assert!(value.contains("shard-a"), "state: {value:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_certificate_the_router_does_not_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = etcd_pki(dir.path())?;
    let control_plane = secure_etcd(&pki).await?;
    let local = std::net::IpAddr::from([127, 0, 0, 1]);
    let ports = [(); 4].map(|_| format!("127.0.0.1:{}", free_port(local)));
    let router = |tls: &[String]| {
        Command::new(workspace_bin("ste-router"))
            .args(["--listen", &ports[0], "--admin-listen", &ports[1]])
            .args(["--metrics-listen", &ports[2], "--user-listen", &ports[3]])
            // Only --state-etcd's TLS is at issue here.
            .arg("--insecure")
            .args(["--member", "a=http://127.0.0.1:1"])
            .args(["--state-etcd", &control_plane.url])
            .args(tls)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
    };

    // Trusting the CA is not enough: etcd asks for a client certificate.
    let mut child = router(&[format!("--state-etcd-cafile={}", path(&pki.ca))])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("the router kept running without a client certificate");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("--state-etcd"), "{stderr}");

    // TLS files with a plain http:// URL is a mistake, said at once.
    let output = Command::new(workspace_bin("ste-router"))
        .args(["--member", "a=http://127.0.0.1:1"])
        .args(["--state-etcd", "http://127.0.0.1:1"])
        .arg(format!("--state-etcd-cafile={}", path(&pki.ca)))
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("write https://"), "{stderr}");
    Ok(())
}
