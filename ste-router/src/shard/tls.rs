//! TLS towards `https://` shards, with the router's client certificate
//! (`--shard-cert`, `--shard-key`) read again whenever its files change:
//! like etcd on the other side, which rereads its certificate at every
//! handshake, a rotated certificate counts from the next connection without
//! a restart. Connections already open keep the certificate they were made
//! with (TLS authenticates a connection once).
//!
//! tonic's own TLS takes the certificate as bytes once, so the channel gets
//! its own connector instead: TCP, then a rustls handshake whose client
//! certificate comes from [`ReloadingIdentity`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;

/// The router's TLS client settings towards the shards.
#[derive(Debug, Clone)]
pub struct ShardTls {
    config: Arc<rustls::ClientConfig>,
}

impl ShardTls {
    /// Trusts the CA certificates in `ca` (PEM, `--shard-ca`; none: no
    /// server is trusted) and presents `identity` (certificate and key PEM
    /// files, `--shard-cert`/`--shard-key`), read now and again whenever a
    /// file's modification time changes.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or holds no usable certificate or key,
    /// named by its flag.
    pub fn new(ca: Option<&Path>, identity: Option<(PathBuf, PathBuf)>) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = ca {
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| anyhow::anyhow!("--shard-ca {}: {e}", ca.display()))?
            {
                let cert = cert.map_err(|e| anyhow::anyhow!("--shard-ca {}: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("--shard-ca {}: {e}", ca.display()))?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => {
                let resolver = ReloadingIdentity::new(cert, key, provider)?;
                builder.with_client_cert_resolver(Arc::new(resolver))
            }
            None => builder.with_no_client_auth(),
        };
        // gRPC servers (etcd's grpc-go among them) insist on HTTP/2 by ALPN.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ShardTls {
            config: Arc::new(config),
        })
    }

    /// Opens a TLS connection to `host:port` (TCP_NODELAY), verifying the
    /// shard's certificate for `host` (an IP address or a DNS name).
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
    }
}

/// The client certificate and key, reloaded when either file's modification
/// time changes. A reload that fails (a half-written file) keeps the last
/// good pair and says so in the log.
#[derive(Debug)]
struct ReloadingIdentity {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>, Arc<CertifiedKey>)>,
}

impl ReloadingIdentity {
    fn new(
        cert: PathBuf,
        key: PathBuf,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> anyhow::Result<Self> {
        let stamps = (modified(&cert), modified(&key));
        let identity = load(&cert, &key, &provider)?;
        Ok(ReloadingIdentity {
            cert,
            key,
            provider,
            loaded: Mutex::new((stamps.0, stamps.1, identity)),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let stamps = (modified(&self.cert), modified(&self.key));
        if (loaded.0, loaded.1) != stamps {
            match load(&self.cert, &self.key, &self.provider) {
                Ok(identity) => {
                    tracing::info!(cert = %self.cert.display(), "shard client certificate reloaded");
                    *loaded = (stamps.0, stamps.1, identity);
                }
                Err(error) => tracing::warn!(
                    error = %error,
                    "cannot reload the shard client certificate; keeping the previous one"
                ),
            }
        }
        loaded.2.clone()
    }
}

impl ResolvesClientCert for ReloadingIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("--shard-cert {}: {e}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "--shard-cert {}: no certificate in it",
        cert.display()
    );
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("--shard-key {}: {e}", key.display()))?;
    let signer = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| anyhow::anyhow!("--shard-key {}: {e}", key.display()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}
