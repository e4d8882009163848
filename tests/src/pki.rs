//! Every certificate the tests use, made with rcgen (ECDSA P-256 keys, no
//! OpenSSL): a [`Ca`] that issues [`Identity`]s, and [`ste`], the STE PKI
//! of this test process (made once): the CA the shards trust, the router's
//! shard client certificate and, per node, a shard certificate — the same
//! shapes `deploy/pki.sh` makes, so the tests run the secure path.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The SAN of the router's shard client certificate, which the agents
/// accept by default (`ste_agent::tls::DEFAULT_ALLOWED_CLIENT`).
pub const ROUTER_CLIENT: &str = ste_agent::tls::DEFAULT_ALLOWED_CLIENT;

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

impl Identity {
    /// Writes `NAME.crt` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }

    /// The identity as an etcd client presents it, trusting `ca`.
    pub fn etcd_tls(&self, ca: &Ca) -> etcd_client::TlsOptions {
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&ca.cert_pem))
            .identity(etcd_client::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
    }
}

/// A self-signed certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA certificate, DER.
    pub cert_der: Vec<u8>,
}

impl Ca {
    /// A new CA whose subject is `CN=common_name`.
    pub fn new(common_name: &str) -> anyhow::Result<Ca> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(common_name, None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Writes the CA certificate to `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        Ok(std::fs::write(path, &self.cert_pem)?)
    }

    /// A certificate signed by this CA for `subject`, with the subject
    /// alternative names `sans` (IP addresses become IP SANs, anything else
    /// a DNS SAN) and the extended key usages `usages`.
    pub fn issue(
        &self,
        sans: &[&str],
        subject: rcgen::DistinguishedName,
        usages: &[ExtendedKeyUsagePurpose],
    ) -> anyhow::Result<Identity> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = sans
            .iter()
            .map(|san| match san.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*san).try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.distinguished_name = subject;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages.to_vec();
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Identity {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        })
    }

    /// A node's certificate as `deploy/pki.sh --shard NODE=IP` makes it:
    /// the node's identity (`CN=system:node:NODE`, `O=system:nodes`, as
    /// Kubernetes names nodes) towards the router, the serving certificate
    /// of its shard and API for `ip`, and the agent's client certificate
    /// towards its own shard (SAN `DNS:node`).
    pub fn shard(&self, node: &str, ip: IpAddr) -> anyhow::Result<Identity> {
        self.issue(
            &[node, &ip.to_string()],
            dn(&format!("system:node:{node}"), Some("system:nodes")),
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client-only certificate with CN and SAN `DNS:name`.
    pub fn client(&self, name: &str) -> anyhow::Result<Identity> {
        self.issue(
            &[name],
            dn(name, None),
            &[ExtendedKeyUsagePurpose::ClientAuth],
        )
    }
}

/// A subject with this common name and, if given, organization.
pub fn dn(common_name: &str, organization: Option<&str>) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(organization) = organization {
        dn.push(DnType::OrganizationName, organization);
    }
    dn
}

/// The STE PKI of this test process: the CA the shards trust, the
/// router's shard client certificate (SAN `DNS:ste-router`), the router's
/// admin serving certificate and an operator's client certificate.
pub struct StePki {
    /// The STE CA.
    pub ca: Ca,
    /// The router's client certificate towards the shards.
    pub router_client: Identity,
    /// The router's serving certificate on its admin and user ports (SANs
    /// 127.0.0.1, localhost, ste-router).
    pub router_admin: Identity,
    /// An operator: `CN=ste-test-admin`, `O=system:masters`, the cluster's
    /// superusers: a router or agent lets it do everything, with or without
    /// Kubernetes (`ste_auth::access::ALWAYS_ALLOWED_GROUP`), so the
    /// fixtures can look at the ring before kube-apiserver runs.
    pub admin: Identity,
}

/// The user name of [`StePki::admin`].
pub const ADMIN_USER: &str = "ste-test-admin";

/// The shard TLS files of one agent, as its flags name them.
#[derive(Debug, Clone)]
pub struct ShardFiles {
    /// `--etcd-cert-file`.
    pub cert: PathBuf,
    /// `--etcd-key-file`.
    pub key: PathBuf,
    /// `--etcd-trusted-ca-file`.
    pub ca: PathBuf,
}

impl StePki {
    /// Writes a shard certificate for `node` at `ip` and the CA into `dir`.
    pub fn write_shard(&self, dir: &Path, node: &str, ip: IpAddr) -> anyhow::Result<ShardFiles> {
        std::fs::create_dir_all(dir)?;
        let (cert, key) = self.ca.shard(node, ip)?.write(dir, "shard")?;
        let ca = dir.join("ca.crt");
        self.ca.write(&ca)?;
        Ok(ShardFiles { cert, key, ca })
    }

    /// Writes the CA and the router's shard client certificate into `dir`
    /// and returns the router flags that use them (`--shard-ca`,
    /// `--shard-cert`, `--shard-key`).
    pub fn router_flags(&self, dir: &Path) -> anyhow::Result<Vec<String>> {
        let ca = dir.join("ste-ca.crt");
        self.ca.write(&ca)?;
        let (cert, key) = self.router_client.write(dir, "router-shard-client")?;
        Ok(vec![
            "--shard-ca".into(),
            ca.display().to_string(),
            "--shard-cert".into(),
            cert.display().to_string(),
            "--shard-key".into(),
            key.display().to_string(),
        ])
    }

    /// Writes the router's admin serving certificate and the client CA
    /// bundle (the STE CA, then `more_client_cas`, PEM) into `dir` and
    /// returns the router flags that use them (`--tls-cert-file`,
    /// `--tls-private-key-file`, `--client-ca-file`).
    pub fn router_api_flags(
        &self,
        dir: &Path,
        more_client_cas: &str,
    ) -> anyhow::Result<Vec<String>> {
        let ca = dir.join("client-ca.crt");
        std::fs::write(&ca, format!("{}{more_client_cas}", self.ca.cert_pem))?;
        let (cert, key) = self.router_admin.write(dir, "router-admin")?;
        Ok(vec![
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-private-key-file".into(),
            key.display().to_string(),
            "--client-ca-file".into(),
            ca.display().to_string(),
        ])
    }

    /// TLS towards an STE API port (the router's admin and user ports, an
    /// agent's), trusting the STE CA and presenting `identity`, if any.
    pub fn client_tls(&self, identity: Option<&Identity>) -> tonic::transport::ClientTlsConfig {
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca.cert_pem));
        match identity {
            Some(id) => config.identity(tonic::transport::Identity::from_pem(
                &id.cert_pem,
                &id.key_pem,
            )),
            None => config,
        }
    }

    /// TLS of a server that stands in for the router's admin port: its
    /// certificate, and a client certificate of the STE CA required.
    pub fn router_admin_server_tls(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.router_admin.cert_pem,
                &self.router_admin.key_pem,
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(&self.ca.cert_pem))
    }

    /// A channel to an STE API port at `address` over TLS as the operator
    /// [`StePki::admin`].
    pub async fn admin_channel(
        &self,
        address: std::net::SocketAddr,
    ) -> anyhow::Result<tonic::transport::Channel> {
        Ok(
            tonic::transport::Endpoint::from_shared(format!("https://{address}"))?
                .tls_config(self.client_tls(Some(&self.admin)))?
                .connect_timeout(std::time::Duration::from_secs(2))
                .timeout(std::time::Duration::from_secs(10))
                .connect()
                .await?,
        )
    }

    /// What the router presents to the shards, for an etcd client that
    /// reads a shard directly.
    pub fn router_tls(&self) -> etcd_client::TlsOptions {
        self.router_client.etcd_tls(&self.ca)
    }
}

/// The STE PKI of this test process, made on first use. Only the PEM lives
/// here; every fixture writes the files it needs into its own temp dir.
pub fn ste() -> &'static StePki {
    static PKI: OnceLock<StePki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = Ca::new("ste-test-ca").expect("making the test CA");
        let router_client = ca
            .client(ROUTER_CLIENT)
            .expect("making the router's shard client certificate");
        let router_admin = ca
            .issue(
                &["127.0.0.1", "localhost", "ste-router"],
                dn("ste-router", None),
                &[ExtendedKeyUsagePurpose::ServerAuth],
            )
            .expect("making the router's admin certificate");
        let admin = ca
            .issue(
                &[],
                dn(ADMIN_USER, Some(ste_auth::access::ALWAYS_ALLOWED_GROUP)),
                &[ExtendedKeyUsagePurpose::ClientAuth],
            )
            .expect("making the operator's certificate");
        StePki {
            ca,
            router_client,
            router_admin,
            admin,
        }
    })
}
