//! The shard's door (2279 in a cluster): a real agent runs its etcd with TLS
//! and client-certificate authentication, and only the router's client
//! certificate (SAN `DNS:ste-router`) gets in. Each caller is a real etcd
//! client (the `etcd-client` crate).

use std::net::Ipv4Addr;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, TlsOptions};
use ste_tests::pki::{self, Ca};
use ste_tests::{AgentOptions, TestAgent};

/// Puts and reads back one key as the client `tls` describes; the error
/// says why the shard did not serve. Bounded as a whole: a refused
/// handshake can leave a lazily connecting client waiting.
async fn put_get(url: &str, tls: Option<TlsOptions>) -> Result<(), String> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        options = options.with_tls(tls);
    }
    let round_trip = async {
        let mut client = Client::connect([url], Some(options))
            .await
            .map_err(|e| e.to_string())?;
        client
            .put("/registry/pods/default/door", "knock", None)
            .await
            .map_err(|e| e.to_string())?;
        let got = client
            .get("/registry/pods/default/door", None)
            .await
            .map_err(|e| e.to_string())?;
        match got.kvs().first().map(|kv| kv.value()) {
            Some(b"knock") => Ok(()),
            other => Err(format!("read back {other:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(15), round_trip)
        .await
        .unwrap_or_else(|_| Err("no answer within 15s".into()))
}

/// `put_get` must fail, and not because the shard is down: the same shard
/// serves the router's certificate right before and after.
async fn assert_refused(agent: &TestAgent, who: &str, tls: Option<TlsOptions>) {
    let url = &agent.addrs.client_url;
    let refused = put_get(url, tls).await;
    assert!(refused.is_err(), "{who} was served by the shard");
    put_get(url, Some(pki::ste().router_tls()))
        .await
        .unwrap_or_else(|e| panic!("the router's certificate was refused after {who}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_routers_certificate_gets_into_the_shard() -> anyhow::Result<()> {
    let agent = TestAgent::start(AgentOptions::new("door-a", Ipv4Addr::new(127, 0, 0, 41))).await?;
    let url = agent.addrs.client_url.clone();
    assert!(url.starts_with("https://"), "{url}");
    let ste = pki::ste();

    // The router's client certificate is served.
    put_get(&url, Some(ste.router_tls()))
        .await
        .map_err(|e| anyhow::anyhow!("router certificate refused: {e}"))?;

    // No client certificate: etcd (--client-cert-auth) ends the handshake.
    let anonymous =
        TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(&ste.ca.cert_pem));
    assert_refused(&agent, "a client without a certificate", Some(anonymous)).await;

    // Plain HTTP to the TLS port.
    let plain = url.replacen("https://", "http://", 1);
    assert!(
        put_get(&plain, None).await.is_err(),
        "plain HTTP was served"
    );

    // The router's name, signed by another CA.
    let other_ca = Ca::new("not-the-ste-ca")?;
    let forged = other_ca.client(pki::ROUTER_CLIENT)?;
    let tls = forged
        .etcd_tls(&other_ca)
        .ca_certificate(etcd_client::Certificate::from_pem(&ste.ca.cert_pem));
    assert_refused(&agent, "a certificate of another CA", Some(tls)).await;

    // The right CA, the wrong identity: some client, and another node's
    // shard certificate (which carries clientAuth for its own agent).
    let intruder = ste.ca.client("intruder")?;
    assert_refused(&agent, "CN/SAN intruder", Some(intruder.etcd_tls(&ste.ca))).await;
    let neighbour = ste.ca.shard("door-b", "127.0.0.42".parse()?)?;
    assert_refused(
        &agent,
        "another node's shard certificate",
        Some(neighbour.etcd_tls(&ste.ca)),
    )
    .await;

    // The agent itself gets in with the shard's own certificate: it serves.
    let status = agent.wait_serving().await?;
    assert!(status.shard.unwrap_or_default().healthy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_rereads_a_rotated_certificate_at_the_next_handshake() -> anyhow::Result<()> {
    let agent = TestAgent::start(AgentOptions::new("rotor", Ipv4Addr::new(127, 0, 0, 43))).await?;
    let url = agent.addrs.client_url.clone();
    let ste = pki::ste();
    let files = agent.addrs.tls.clone().expect("a TLS agent");

    // Replace the serving certificate with one of another CA (the trusted
    // client CA stays): only a client that trusts the new CA can now finish
    // a new handshake, which shows etcd read the new files without a restart.
    let new_ca = Ca::new("rotated-ca")?;
    let rotated = new_ca.shard("rotor", "127.0.0.43".parse()?)?;
    let dir = files.cert.parent().unwrap();
    let (cert, key) = rotated.write(dir, "rotated")?;
    // Key first: a handshake in between would fail, not serve a mismatch.
    std::fs::rename(key, &files.key)?;
    std::fs::rename(cert, &files.cert)?;

    let trusts_new = ste.router_client.etcd_tls(&new_ca);
    ste_tests::eventually(
        "a handshake with the rotated certificate",
        Duration::from_secs(30),
        || put_get(&url, Some(trusts_new.clone())),
    )
    .await?;
    assert!(
        put_get(&url, Some(ste.router_tls())).await.is_err(),
        "the old certificate is still served"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_serves_plain_http_and_says_so() -> anyhow::Result<()> {
    let mut options = AgentOptions::new("open-door", Ipv4Addr::new(127, 0, 0, 44));
    options.insecure = true;
    let agent = TestAgent::start(options).await?;
    assert!(agent.addrs.client_url.starts_with("http://"));
    put_get(&agent.addrs.client_url, None)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let log = agent.log();
    assert!(
        log.contains("plain HTTP, unauthenticated:"),
        "no warning in the log:\n{log}"
    );
    Ok(())
}
