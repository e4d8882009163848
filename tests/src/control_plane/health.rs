//! A background poller of kube-apiserver's `/readyz` and `/livez` that
//! records every failed probe with when it happened, so that a test can
//! check that the API server stayed green except during the fault it
//! caused.
//!
//! Plain HTTP/1.1 over rustls with the admin client certificate, one
//! connection per probe: a probe costs no process start, which matters
//! on 2 cores.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types};

use super::pki::Pki;

/// How often each endpoint is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// How long one probe may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One failed probe.
#[derive(Debug, Clone)]
pub struct HealthFailure {
    /// `/readyz` or `/livez`.
    pub path: &'static str,
    /// When the probe was sent.
    pub started: Instant,
    /// When it failed.
    pub finished: Instant,
    /// The status line, or the error.
    pub detail: String,
}

impl HealthFailure {
    /// True if the probe overlapped `[from, to]`.
    pub fn within(&self, from: Instant, to: Instant) -> bool {
        self.finished >= from && self.started <= to
    }
}

/// The poller; stops when dropped.
pub struct HealthPoller {
    failures: Arc<Mutex<Vec<HealthFailure>>>,
    successes: Arc<Mutex<u64>>,
    task: JoinHandle<()>,
}

impl HealthPoller {
    /// Starts probing `https://addr/readyz` and `/livez` (trusting the
    /// PKI's CA, authenticating as the admin).
    pub fn start(addr: SocketAddr, pki: &Pki) -> anyhow::Result<HealthPoller> {
        let connector = connector(pki)?;
        let failures = Arc::new(Mutex::new(Vec::new()));
        let successes = Arc::new(Mutex::new(0));
        let task = {
            let failures = failures.clone();
            let successes = successes.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PROBE_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    for path in ["/readyz", "/livez"] {
                        let started = Instant::now();
                        let result =
                            tokio::time::timeout(PROBE_TIMEOUT, probe(&connector, addr, path))
                                .await
                                .unwrap_or_else(|_| Err(format!("no answer in {PROBE_TIMEOUT:?}")));
                        match result {
                            Ok(()) => *successes.lock().expect("successes") += 1,
                            Err(detail) => failures.lock().expect("failures").push(HealthFailure {
                                path,
                                started,
                                finished: Instant::now(),
                                detail,
                            }),
                        }
                    }
                }
            })
        };
        Ok(HealthPoller {
            failures,
            successes,
            task,
        })
    }

    /// Every failed probe so far.
    pub fn failures(&self) -> Vec<HealthFailure> {
        self.failures.lock().expect("failures").clone()
    }

    /// How many probes succeeded so far.
    pub fn successes(&self) -> u64 {
        *self.successes.lock().expect("successes")
    }

    /// The failed probes that did not overlap any of `windows`, i.e. that
    /// no fault the test caused explains.
    pub fn unexpected_failures(&self, windows: &[(Instant, Instant)]) -> Vec<HealthFailure> {
        self.failures()
            .into_iter()
            .filter(|f| !windows.iter().any(|(from, to)| f.within(*from, *to)))
            .collect()
    }
}

impl Drop for HealthPoller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One probe of `https://addr{path}` (`Ok` for 200), outside a poller.
pub async fn probe_once(addr: SocketAddr, pki: &Pki, path: &str) -> Result<(), String> {
    let connector = connector(pki).map_err(|e| e.to_string())?;
    tokio::time::timeout(PROBE_TIMEOUT, probe(&connector, addr, path))
        .await
        .unwrap_or_else(|_| Err(format!("no answer in {PROBE_TIMEOUT:?}")))
}

fn connector(pki: &Pki) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki_types::CertificateDer::from(pki.ca_der.clone()))?;
    let key = pki_types::PrivateKeyDer::Pkcs8(pki_types::PrivatePkcs8KeyDer::from(
        pki.admin.key_der.clone(),
    ));
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![pki_types::CertificateDer::from(pki.admin.cert_der.clone())],
        key,
    )?;
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One GET; `Ok` only for `200`.
async fn probe(connector: &TlsConnector, addr: SocketAddr, path: &str) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    // kube-apiserver closes after the body (Connection: close); a TLS
    // close_notify missing at EOF is not an error for this purpose.
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or("").to_owned();
    if status.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        let failed: Vec<&str> = body.lines().filter(|l| l.starts_with("[-]")).collect();
        Err(format!("{status:?} {}", failed.join("; ")))
    }
}
