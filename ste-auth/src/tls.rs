//! TLS of the API ports, from PEM files named by the flags Kubernetes
//! components use for theirs (`--tls-cert-file`, `--tls-private-key-file`,
//! `--client-ca-file`).

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

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
    /// The TLS settings of a port that is `door`: a [`Door::Certificates`]
    /// port refuses the handshake without a client certificate of
    /// `client_ca`; a [`Door::Users`] port asks for one but lets the
    /// client go on without (it then needs a bearer token).
    ///
    /// The files are read now, once (a changed file takes a restart).
    pub fn server_config(&self, door: Door) -> anyhow::Result<ServerTlsConfig> {
        let identity = Identity::from_pem(
            read_pem("--tls-cert-file", &self.cert)?,
            read_pem("--tls-private-key-file", &self.key)?,
        );
        Ok(ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(Certificate::from_pem(read_pem(
                "--client-ca-file",
                &self.client_ca,
            )?))
            .client_auth_optional(door == Door::Users))
    }
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
