//! The simulated control plane's PKI, made fresh for every control plane
//! (ECDSA P-256 keys, as kubeadm can use): a CA, kube-apiserver's serving
//! certificate, the service-account signing key and a `system:masters`
//! client certificate that every component and kubectl use.

use std::path::{Path, PathBuf};

use rcgen::ExtendedKeyUsagePurpose;

pub use crate::pki::Identity;
use crate::pki::{Ca, dn};

/// The admin client certificate's common name (the user kube-apiserver sees).
pub const ADMIN_USER: &str = "ste-e2e-admin";

/// The PEM files written to a directory, and the client identity in
/// memory (for the health poller's TLS client).
pub struct Pki {
    /// The CA certificate (`--client-ca-file`, the kubeconfig's CA).
    pub ca_cert: PathBuf,
    /// kube-apiserver's serving certificate (SAN 127.0.0.1, localhost).
    pub serving_cert: PathBuf,
    /// Its key.
    pub serving_key: PathBuf,
    /// The service-account signing key (private, PKCS#8).
    pub sa_key: PathBuf,
    /// The service-account verification key (public, SPKI).
    pub sa_pub: PathBuf,
    /// The CA certificate, PEM (embedded in the kubeconfig).
    pub ca_pem: String,
    /// The CA certificate, DER (the health poller's trust root).
    pub ca_der: Vec<u8>,
    /// The admin client certificate (CN ste-e2e-admin, O system:masters).
    pub admin: Identity,
}

impl Pki {
    /// Makes the CA and everything it signs, and writes the files into `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Pki> {
        let ca = Ca::new("ste-e2e-ca")?;
        let serving = ca.issue(
            &["127.0.0.1", "localhost"],
            dn("kube-apiserver", None),
            &[ExtendedKeyUsagePurpose::ServerAuth],
        )?;
        let admin = ca.issue(
            &[],
            dn(ADMIN_USER, Some("system:masters")),
            &[ExtendedKeyUsagePurpose::ClientAuth],
        )?;
        let sa = rcgen::KeyPair::generate()?;

        let pki = Pki {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
            ca_pem: ca.cert_pem.clone(),
            ca_der: ca.cert_der.clone(),
            admin,
        };
        std::fs::write(&pki.ca_cert, &pki.ca_pem)?;
        std::fs::write(&pki.serving_cert, &serving.cert_pem)?;
        std::fs::write(&pki.serving_key, &serving.key_pem)?;
        std::fs::write(&pki.sa_key, sa.serialize_pem())?;
        std::fs::write(&pki.sa_pub, sa.public_key_pem())?;
        Ok(pki)
    }
}
