//! TLS on both sides of the router: etcdctl ⇄ router with mutual TLS, and
//! router ⇄ shard over https with the router's shard client certificate
//! (the test PKI of `ste_tests::pki`, which TestRouter passes as
//! `--shard-ca/--shard-cert/--shard-key`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ste_tests::{TestEtcd, TestRouter};

/// The test PKI's CA, a certificate for 127.0.0.1 serving both the router
/// and the shard (SAN `DNS:ste-router`, so the shard lets it in), and a
/// client certificate for etcdctl, written into `dir`.
fn make_pki(dir: &Path) -> anyhow::Result<()> {
    let ste = ste_tests::pki::ste();
    ste.ca.write(&dir.join("ca.pem"))?;
    let node = ste.ca.issue(
        &["127.0.0.1", "localhost", ste_tests::pki::ROUTER_CLIENT],
        ste_tests::pki::dn("ste-test", None),
        &[
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    let (cert, key) = node.write(dir, "node")?;
    std::fs::rename(cert, dir.join("node.pem"))?;
    std::fs::rename(key, dir.join("node.key"))?;
    Ok(())
}

fn etcdctl(endpoint: &str, tls: &[String], args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(ste_tests::procs::etcdctl_bin())
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(tls)
        .args(args)
        .output()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_reaches_a_tls_shard_through_a_mutual_tls_router() -> anyhow::Result<()> {
    let pki = tempfile::tempdir()?;
    make_pki(pki.path())?;
    let path = |name: &str| pki.path().join(name).display().to_string();

    let shard = TestEtcd::spawn_tls(
        "tls-shard",
        vec![
            format!("--cert-file={}", path("node.pem")),
            format!("--key-file={}", path("node.key")),
            format!("--trusted-ca-file={}", path("ca.pem")),
            "--client-cert-auth".into(),
            format!(
                "--client-cert-allowed-hostname={}",
                ste_tests::pki::ROUTER_CLIENT
            ),
        ],
    )?;
    let client_tls = vec![
        format!("--cacert={}", path("ca.pem")),
        format!("--cert={}", path("node.pem")),
        format!("--key={}", path("node.key")),
    ];
    ste_tests::eventually(
        "the TLS shard to answer",
        Duration::from_secs(60),
        || async {
            let out = etcdctl(&shard.url, &client_tls, &["endpoint", "health"])
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    )
    .await?;

    let router = TestRouter::start(
        &[("tls-shard", shard.url.as_str())],
        &[
            "--cert",
            &path("node.pem"),
            "--key",
            &path("node.key"),
            "--client-ca",
            &path("ca.pem"),
        ],
    )
    .await?;
    let endpoint = format!("https://{}", router.listen);

    let put = etcdctl(
        &endpoint,
        &client_tls,
        &["put", "/registry/pods/default/secure", "sealed"],
    )?;
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = etcdctl(
        &endpoint,
        &client_tls,
        &["get", "/registry/pods/default/secure", "--print-value-only"],
    )?;
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "sealed");
    // The value reached the shard (inside STE's envelope).
    let raw = etcdctl(
        &shard.url,
        &client_tls,
        &["get", "/registry/pods/default/secure", "--print-value-only"],
    )?;
    assert!(String::from_utf8_lossy(&raw.stdout).contains("sealed"));

    // Without a client certificate the router refuses the client.
    let anonymous = etcdctl(
        &endpoint,
        &[format!("--cacert={}", path("ca.pem"))],
        &["--dial-timeout=3s", "get", "/registry/pods/default/secure"],
    )?;
    assert!(
        !anonymous.status.success(),
        "a client without a certificate was served"
    );
    // Plain HTTP to a TLS listener does not work either.
    let plain = etcdctl(
        &format!("http://{}", router.listen),
        &[],
        &["--dial-timeout=3s", "get", "x"],
    )?;
    assert!(!plain.status.success());
    Ok(())
}

#[test]
fn tls_flags_that_need_each_other_are_refused() {
    let router = ste_tests::procs::workspace_bin("ste-router");
    for (args, words) in [
        (vec!["--cert", "/nonexistent/c.pem"], "--key"),
        (vec!["--shard-cert", "/nonexistent/c.pem"], "--shard-key"),
    ] {
        let out = Command::new(&router)
            .args(&args)
            .args(["--member", "a=http://127.0.0.1:1"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(words), "{stderr}");
    }
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(&router)
        .args([
            "--cert",
            "/nonexistent/c.pem",
            "--key",
            "/nonexistent/k.pem",
        ])
        .args(["--member", "a=http://127.0.0.1:1"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--user-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            // Only the etcd port's TLS is at issue here.
            "--insecure",
        ])
        .arg("--state-file")
        .arg(state.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--cert /nonexistent/c.pem"), "{stderr}");
}

/// The router reads its shard client certificate again when the files
/// change: a new connection after the change presents the new one. Shown
/// both ways against a shard that lets only `ste-router` in: an identity
/// it refuses makes the router lose the shard after a reconnect, and the
/// right one brings it back, without restarting the router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_presents_a_rotated_shard_client_certificate_on_new_connections()
-> anyhow::Result<()> {
    let pki = tempfile::tempdir()?;
    make_pki(pki.path())?;
    let path = |name: &str| pki.path().join(name).display().to_string();
    let mut shard = TestEtcd::spawn_tls(
        "rotating-shard",
        vec![
            format!("--cert-file={}", path("node.pem")),
            format!("--key-file={}", path("node.key")),
            format!("--trusted-ca-file={}", path("ca.pem")),
            "--client-cert-auth".into(),
            format!(
                "--client-cert-allowed-hostname={}",
                ste_tests::pki::ROUTER_CLIENT
            ),
        ],
    )?;
    let router = ste_tests::eventually(
        "the router to serve the TLS shard",
        Duration::from_secs(60),
        || async {
            TestRouter::start(&[("rotating-shard", shard.url.as_str())], &[])
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await?;
    let mut client = router.client().await?;
    client.put("/registry/pods/default/rot", "v1", None).await?;

    let (cert, key) = router.shard_client_files();
    let replace = |identity: &ste_tests::pki::Identity| -> anyhow::Result<()> {
        let (new_cert, new_key) = identity.write(pki.path(), "replacement")?;
        std::fs::rename(new_key, &key)?;
        std::fs::rename(new_cert, &cert)?;
        Ok(())
    };
    let ste = ste_tests::pki::ste();
    replace(&ste.ca.client("not-the-router")?)?;
    // A new connection: the shard restarts on its data. Once it answers
    // the router's identity again, the router must still be refused, for
    // its certificate (a restart alone would only refuse the connection).
    shard.restart_process()?;
    let direct = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
        .with_tls(ste.router_tls());
    ste_tests::eventually(
        "the restarted shard to answer the router's certificate",
        Duration::from_secs(60),
        || async {
            let status = async {
                let mut c =
                    etcd_client::Client::connect([&shard.url], Some(direct.clone())).await?;
                c.status().await
            };
            match tokio::time::timeout(Duration::from_secs(10), status).await {
                Ok(Ok(_)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    ste_tests::eventually(
        "the router to be refused with the new identity",
        Duration::from_secs(60),
        || async {
            let status = router.status().await.map_err(|e| e.to_string())?;
            let member = &status.members[0];
            let error = member.last_error.to_lowercase();
            let tls_refusal = ["certificate", "handshake", "tls"]
                .iter()
                .any(|w| error.contains(w));
            if tls_refusal {
                Ok(())
            } else {
                Err(format!("{member:?}"))
            }
        },
    )
    .await
    .map_err(|e| e.context(router.log()))?;

    replace(&ste.router_client)?;
    ste_tests::eventually(
        "the router to be served again with the router's identity",
        Duration::from_secs(60),
        || {
            let mut client = client.clone();
            async move {
                let got = client
                    .get("/registry/pods/default/rot", None)
                    .await
                    .map_err(|e| e.to_string())?;
                match got.kvs().first().map(|kv| kv.value().to_vec()) {
                    Some(v) if v == b"v1" => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await
    .map_err(|e| e.context(router.log()))?;
    Ok(())
}
