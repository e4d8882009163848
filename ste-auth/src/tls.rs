//! TLS of the API ports, from PEM files named by the flags Kubernetes
//! components use for theirs (`--tls-cert-file`, `--tls-private-key-file`,
//! `--client-ca-file`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::access::Door;

/// Reads a PEM file named by `flag`; the error names both.
pub fn read_pem(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
    anyhow::ensure!(
        String::from_utf8_lossy(&bytes).contains("-----BEGIN "),
        "{flag} {}: not a PEM file",
        path.display()
    );
    Ok(bytes)
}

/// The serving side: the port's certificate and the CAs its clients'
/// certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// `--tls-cert-file`: the serving certificate (PEM, chain allowed).
    pub cert: PathBuf,
    /// `--tls-private-key-file`: its private key (PEM).
    pub key: PathBuf,
    /// `--client-ca-file`: a PEM bundle of the CAs that sign client
    /// certificates (the STE CA for nodes, Kubernetes' client CA for users).
    pub client_ca: PathBuf,
}

impl ServerFiles {
    /// The TLS settings of a port that is `door`, read from the files now:
    /// a [`Door::Certificates`] port refuses the handshake without a client
    /// certificate of `client_ca`; a [`Door::Users`] port asks for one but
    /// lets the client go on without (it then needs a bearer token). HTTP/2
    /// only (ALPN `h2`), as gRPC.
    ///
    /// Errors: a file that cannot be read or parsed, naming its flag.
    pub fn server_config(&self, door: Door) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_slice_iter(&read_pem("--tls-cert-file", &self.cert)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("--tls-cert-file {}: {e}", self.cert.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&read_pem("--tls-private-key-file", &self.key)?)
            .map_err(|e| anyhow::anyhow!("--tls-private-key-file {}: {e}", self.key.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_slice_iter(&read_pem("--client-ca-file", &self.client_ca)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("--client-ca-file {}: {e}", self.client_ca.display()))?;
        for ca in cas {
            roots.add(ca).map_err(|e| {
                anyhow::anyhow!("--client-ca-file {}: {e}", self.client_ca.display())
            })?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let verifier = match door {
            Door::Certificates => verifier.build(),
            Door::Users => verifier.allow_unauthenticated().build(),
        }
        .map_err(|e| anyhow::anyhow!("--client-ca-file {}: {e}", self.client_ca.display()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| {
                anyhow::anyhow!(
                    "--tls-cert-file {} and --tls-private-key-file {}: {e}",
                    self.cert.display(),
                    self.key.display()
                )
            })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// What the files look like now (modification time and size of each),
    /// to notice a change without reading them.
    fn stamp(&self) -> Stamp {
        [&self.cert, &self.key, &self.client_ca].map(|path| {
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
    }
}

/// Modification time and size of each of the three files (`None`: cannot
/// be read).
type Stamp = [Option<(SystemTime, u64)>; 3];

/// How long a client may take over its TLS handshake before the
/// connection is dropped (a client that connects and says nothing holds
/// nothing but its socket, and not for longer).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS acceptor for one port that rereads [`ServerFiles`] when they change
/// (checked at each new connection, by modification time and size), as
/// kube-apiserver's dynamic serving certificate and client CA do: a rotated
/// certificate or CA bundle is used from the next connection on, without a
/// restart. Files that change into something unusable are reported and the
/// last good settings stay.
pub struct ReloadingAcceptor {
    files: ServerFiles,
    door: Door,
    current: Mutex<(Stamp, Arc<rustls::ServerConfig>)>,
}

impl ReloadingAcceptor {
    /// Reads the files now for a port that is `door`.
    ///
    /// Errors: as [`ServerFiles::server_config`].
    pub fn new(files: ServerFiles, door: Door) -> anyhow::Result<ReloadingAcceptor> {
        let stamp = files.stamp();
        let config = files.server_config(door)?;
        Ok(ReloadingAcceptor {
            files,
            door,
            current: Mutex::new((stamp, config)),
        })
    }

    /// The settings for a new connection: read again if the files changed.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        let stamp = self.files.stamp();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != stamp {
            match self.files.server_config(self.door) {
                Ok(config) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS files changed; read again");
                    *current = (stamp, config);
                }
                Err(error) => {
                    tracing::warn!(%error, "TLS files changed but cannot be used; keeping the last good ones");
                    // Not again for the same broken state.
                    current.0 = stamp;
                }
            }
        }
        current.1.clone()
    }
}

/// The connections of `listener` after their TLS handshake with
/// `acceptor`'s settings, for tonic's `serve_with_incoming`: handshakes run
/// concurrently, each bounded by [`HANDSHAKE_TIMEOUT`]; a failed one is
/// logged at debug (a client refused for want of a certificate is no
/// server error). tonic reads the client's certificates from each stream
/// (`Request::peer_certs`).
pub fn incoming(
    listener: TcpListener,
    acceptor: Arc<ReloadingAcceptor>,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors and the like: back off a little
                        // instead of spinning.
                        tracing::warn!(%error, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let tls = TlsAcceptor::from(acceptor.config());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake refused")
                    }
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A client's TLS towards a certificate door: the CA that signed the
/// server's certificate, and the client's own certificate and key, each
/// file with the flag that named it (for messages).
pub fn client_config(
    (ca_flag, ca): (&str, &Path),
    identity: Option<[(&str, &Path); 2]>,
) -> anyhow::Result<ClientTlsConfig> {
    let mut config =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem(ca_flag, ca)?));
    if let Some([(cert_flag, cert), (key_flag, key)]) = identity {
        config = config.identity(Identity::from_pem(
            read_pem(cert_flag, cert)?,
            read_pem(key_flag, key)?,
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_non_pem_files_name_flag_and_path() {
        let dir = std::env::temp_dir().join(format!("ste-auth-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.crt");
        std::fs::write(&junk, "hello").unwrap();
        let files = ServerFiles {
            cert: dir.join("absent.crt"),
            key: junk.clone(),
            client_ca: junk.clone(),
        };
        let error = files.server_config(Door::Users).unwrap_err().to_string();
        assert!(error.starts_with("--tls-cert-file "), "{error}");
        assert!(error.contains("absent.crt"), "{error}");
        let error = read_pem("--client-ca-file", &junk).unwrap_err().to_string();
        assert!(error.contains("not a PEM file"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
