//! The simulated control plane's PKI, made fresh for every control plane
//! (ECDSA P-256 keys, as kubeadm can use): a CA, kube-apiserver's serving
//! certificate, the service-account signing key and a `system:masters`
//! client certificate that every component and kubectl use.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The admin client certificate's common name (the user kube-apiserver sees).
pub const ADMIN_USER: &str = "ste-e2e-admin";

/// One certificate and its key, in PEM and DER.
pub struct Identity {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

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
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name = dn("ste-e2e-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let serving = issue(
            &issuer,
            vec!["127.0.0.1".into(), "localhost".into()],
            dn("kube-apiserver", None),
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let admin = issue(
            &issuer,
            Vec::new(),
            dn(ADMIN_USER, Some("system:masters")),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let sa = KeyPair::generate()?;

        let pki = Pki {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().to_vec(),
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

fn dn(common_name: &str, organization: Option<&str>) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(organization) = organization {
        dn.push(DnType::OrganizationName, organization);
    }
    dn
}

fn issue(
    issuer: &Issuer<'_, KeyPair>,
    sans: Vec<String>,
    subject: rcgen::DistinguishedName,
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<Identity> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name = subject;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer)?;
    Ok(Identity {
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
    })
}
