//! TLS with client-certificate authentication on the shard's client port
//! (2279), the way a kubeadm etcd is secured: etcd's own `--cert-file`,
//! `--key-file`, `--trusted-ca-file` and `--client-cert-auth`, plus
//! `--client-cert-allowed-hostname` so that a certificate of the right CA
//! is not enough: its SAN must also name an allowed client.
//!
//! Who may connect: the router (its `--shard-cert` carries the SAN
//! `DNS:ste-router` by default, `--etcd-client-cert-allowed-hostname`) and
//! this node's own agent, which probes its shard presenting the shard's own
//! certificate (SAN `DNS:<node name>`, extended key usage serverAuth and
//! clientAuth). The node name is therefore always added to the allowed
//! list: the shard's key is on this node already, next to the tmpfs holding
//! the data, so it grants nothing new; another node's shard certificate
//! names another node and is refused.
//!
//! Rotation: etcd reads `--cert-file`/`--key-file` again at every TLS
//! handshake (checked in the tests), so replacing the files takes effect
//! for new connections without a restart; the agent's probe reads them
//! again at every (re)connect. The CA file is read when etcd starts.

use std::path::PathBuf;

use crate::config::ConfigError;

/// The client identity the shard accepts besides its own node name, unless
/// `--etcd-client-cert-allowed-hostname` says otherwise: the SAN that
/// `deploy/pki.sh` puts in the router's shard client certificate.
pub const DEFAULT_ALLOWED_CLIENT: &str = "ste-router";

/// The shard's TLS files and the client identities it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardTls {
    /// The shard's certificate (PEM): serving certificate of the client
    /// URL (SAN: the node's IP) and the agent's client certificate towards
    /// its own shard (SAN: `DNS:<node name>`, EKU clientAuth). etcd's
    /// `--cert-file`.
    pub cert_file: PathBuf,
    /// Its private key (PEM); etcd's `--key-file`.
    pub key_file: PathBuf,
    /// The CA (PEM) client certificates must be signed by; also the CA the
    /// probe verifies the shard with. etcd's `--trusted-ca-file`.
    pub trusted_ca_file: PathBuf,
    /// SAN host names (DNS names or IP addresses) of the clients allowed
    /// besides the node itself; etcd's `--client-cert-allowed-hostname`.
    /// Not empty.
    pub allowed_hostnames: Vec<String>,
}

impl ShardTls {
    /// The etcd flags: TLS on the client URL, client certificates required
    /// and signed by the trusted CA, and only `allowed_hostnames` plus
    /// `node_name` (the agent's own probe) let through.
    pub fn etcd_args(&self, node_name: &str) -> Vec<String> {
        let mut allowed = self.allowed_hostnames.clone();
        if !allowed.iter().any(|h| h == node_name) {
            allowed.push(node_name.to_owned());
        }
        vec![
            format!("--cert-file={}", self.cert_file.display()),
            format!("--key-file={}", self.key_file.display()),
            format!("--trusted-ca-file={}", self.trusted_ca_file.display()),
            "--client-cert-auth".into(),
            format!("--client-cert-allowed-hostname={}", allowed.join(",")),
        ]
    }

    /// The probe's TLS settings towards its own shard: trust
    /// `trusted_ca_file`, present `cert_file`/`key_file`. Reads the files
    /// now, so a new connection picks up rotated files.
    ///
    /// # Errors
    ///
    /// [`ConfigError::TlsFile`] naming the flag of a file that cannot be read.
    pub fn client_options(&self) -> Result<etcd_client::TlsOptions, ConfigError> {
        let ca = read("--etcd-trusted-ca-file", &self.trusted_ca_file)?;
        let cert = read("--etcd-cert-file", &self.cert_file)?;
        let key = read("--etcd-key-file", &self.key_file)?;
        Ok(etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(ca))
            .identity(etcd_client::Identity::from_pem(cert, key)))
    }

    /// Checks that the files can be read and the allowed list is usable,
    /// before anything is mounted or started.
    ///
    /// # Errors
    ///
    /// [`ConfigError::TlsFile`] for an unreadable file,
    /// [`ConfigError::BadAllowedClient`] for an empty list or an empty name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.client_options()?;
        let unusable =
            |h: &String| h.is_empty() || h.contains(|c: char| c == ',' || c.is_whitespace());
        if self.allowed_hostnames.is_empty() || self.allowed_hostnames.iter().any(unusable) {
            return Err(ConfigError::BadAllowedClient(
                self.allowed_hostnames.join(","),
            ));
        }
        Ok(())
    }
}

fn read(flag: &'static str, path: &PathBuf) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::TlsFile {
        flag,
        path: path.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(allowed: &[&str]) -> ShardTls {
        ShardTls {
            cert_file: "/pki/shard.crt".into(),
            key_file: "/pki/shard.key".into(),
            trusted_ca_file: "/pki/ca.crt".into(),
            allowed_hostnames: allowed.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn etcd_requires_client_certificates_of_the_router_or_the_node() {
        assert_eq!(
            tls(&["ste-router"]).etcd_args("node-a"),
            [
                "--cert-file=/pki/shard.crt",
                "--key-file=/pki/shard.key",
                "--trusted-ca-file=/pki/ca.crt",
                "--client-cert-auth",
                "--client-cert-allowed-hostname=ste-router,node-a",
            ]
        );
        assert_eq!(
            tls(&["node-a", "r"]).etcd_args("node-a")[4],
            "--client-cert-allowed-hostname=node-a,r"
        );
    }

    #[test]
    fn unreadable_files_name_their_flag() {
        let err = tls(&["ste-router"]).validate().unwrap_err();
        assert!(
            err.to_string()
                .contains("--etcd-trusted-ca-file /pki/ca.crt"),
            "{err}"
        );
    }
}
