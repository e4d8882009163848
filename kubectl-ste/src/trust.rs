//! Which CA the plugin trusts for the router's and agents' certificates:
//! the STE CA, looked for in this order.
//!
//! 1. The `ste.io/router` extension of the kubeconfig context in use:
//!    `certificate-authority-data` (base64 PEM), else
//!    `certificate-authority` (a file, relative to the kubeconfig's
//!    directory); data wins as it does for a kubeconfig cluster.
//! 2. `STE_ROUTER_CA`: a PEM file.
//! 3. The ConfigMap `kube-system/ste-ca`, key `ca.crt`, through the
//!    Kubernetes API (the deployment publishes it there, as the cluster
//!    publishes its own CA in `kube-root-ca.crt`).
//!
//! A set source that cannot be read is an error, never skipped for the
//! next: trusting another CA than the one the user named would be a
//! surprise. `http://` routers (`--insecure`) need none of this.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::credentials::read_file;
use crate::error::{CliError, CliResult};
use crate::kubeconfig::{ROUTER_CA_DATA, ROUTER_CA_FILE, ROUTER_EXTENSION};

/// The environment variable naming the STE CA file.
pub const CA_ENV: &str = "STE_ROUTER_CA";

/// The three ways to give the plugin the STE CA, for the error that found
/// none.
pub const HOW_TO_TRUST: &str = "set certificate-authority (a file) or certificate-authority-data \
     (base64 PEM) in the ste.io/router extension of the kubeconfig context, or STE_ROUTER_CA (a \
     file), or publish the CA in the ConfigMap kube-system/ste-ca (key ca.crt); a router run with \
     --insecure is reached with --router http://HOST:PORT";

/// Where the STE CA came from, for messages when a certificate does not
/// verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// `certificate-authority-data` of the extension in this context.
    KubeconfigData(String),
    /// `certificate-authority` of the extension in this context.
    KubeconfigFile(String, PathBuf),
    /// `STE_ROUTER_CA`.
    Env(PathBuf),
    /// The ConfigMap kube-system/ste-ca.
    ConfigMap,
}

impl std::fmt::Display for CaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaSource::KubeconfigData(context) => write!(
                f,
                "{ROUTER_CA_DATA} of the {ROUTER_EXTENSION} extension of kubeconfig context \
                 {context:?}"
            ),
            CaSource::KubeconfigFile(context, path) => write!(
                f,
                "{} ({ROUTER_CA_FILE} of the {ROUTER_EXTENSION} extension of kubeconfig context \
                 {context:?})",
                path.display()
            ),
            CaSource::Env(path) => write!(f, "{} ({CA_ENV})", path.display()),
            CaSource::ConfigMap => write!(
                f,
                "the ConfigMap {}/{} (key {})",
                crate::kube_api::STE_NAMESPACE,
                crate::kube_api::CA_CONFIGMAP,
                crate::kube_api::CA_CONFIGMAP_KEY
            ),
        }
    }
}

/// The STE CA certificate(s), PEM, with where they came from.
#[derive(Debug, Clone)]
pub struct SteCa {
    /// One or more PEM certificates.
    pub pem: Vec<u8>,
    /// Where they came from.
    pub source: CaSource,
}

/// The CA from the sources that need no Kubernetes API: the context's
/// extension (`context` names it, `extension` is its object), else the
/// file `env` (the value of `STE_ROUTER_CA`, unset when empty). `None`
/// leaves the ConfigMap.
pub fn local_ca(
    extension: Option<(&str, &serde_json::Value)>,
    env: Option<&OsStr>,
) -> CliResult<Option<SteCa>> {
    if let Some((context, extension)) = extension {
        let field = |name: &str| {
            extension
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let what = |name: &str| {
            format!("{name} of the {ROUTER_EXTENSION} extension of kubeconfig context {context:?}")
        };
        if let Some(data) = field(ROUTER_CA_DATA) {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| CliError::msg(format!("{}: not base64: {e}", what(ROUTER_CA_DATA))))?;
            return checked(
                &what(ROUTER_CA_DATA),
                pem,
                CaSource::KubeconfigData(context.into()),
            )
            .map(Some);
        }
        if let Some(file) = field(ROUTER_CA_FILE) {
            let path = PathBuf::from(file);
            let pem = read_file(&what(ROUTER_CA_FILE), &path)?;
            let source = CaSource::KubeconfigFile(context.into(), path);
            return checked(&what(ROUTER_CA_FILE), pem, source).map(Some);
        }
    }
    match env.filter(|v| !v.is_empty()) {
        Some(file) => {
            let path = Path::new(file).to_path_buf();
            let pem = read_file(CA_ENV, &path)?;
            checked(CA_ENV, pem, CaSource::Env(path)).map(Some)
        }
        None => Ok(None),
    }
}

/// The CA from the ConfigMap's `ca.crt` value (`None`: the ConfigMap or
/// the key is missing).
pub fn configmap_ca(value: Option<String>) -> CliResult<SteCa> {
    let what = CaSource::ConfigMap.to_string();
    match value {
        Some(pem) => checked(&what, pem.into_bytes(), CaSource::ConfigMap),
        None => Err(CliError::msg(format!(
            "no STE CA to verify the router's certificate with: {what} does not exist; \
             {HOW_TO_TRUST}"
        ))),
    }
}

/// The error when there is no CA and no Kubernetes API to read the
/// ConfigMap from (`why`).
pub fn no_ca(why: &str) -> CliError {
    CliError::msg(format!(
        "no STE CA to verify the router's certificate with, and {why}; {HOW_TO_TRUST}"
    ))
}

fn checked(what: &str, pem: Vec<u8>, source: CaSource) -> CliResult<SteCa> {
    if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        Ok(SteCa { pem, source })
    } else {
        Err(CliError::msg(format!(
            "{what}: no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kubectl-ste-trust-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_extension_then_the_environment_then_nothing() {
        let dir = dir();
        let file = dir.join("ca.crt");
        std::fs::write(&file, CA).unwrap();
        let env_file = dir.join("env-ca.crt");
        std::fs::write(&env_file, CA).unwrap();
        let env = Some(env_file.as_os_str());
        let data = base64::engine::general_purpose::STANDARD.encode(CA);

        let both = json!({"address": "a:1", "certificate-authority": file, "certificate-authority-data": data});
        let ca = local_ca(Some(("ctx", &both)), env).unwrap().unwrap();
        assert_eq!(
            ca.source,
            CaSource::KubeconfigData("ctx".into()),
            "data wins"
        );
        assert_eq!(ca.pem, CA.as_bytes());

        let file_only = json!({"address": "a:1", "certificate-authority": file});
        let ca = local_ca(Some(("ctx", &file_only)), env).unwrap().unwrap();
        assert_eq!(
            ca.source,
            CaSource::KubeconfigFile("ctx".into(), file.clone())
        );

        let address_only = json!({"address": "a:1"});
        let ca = local_ca(Some(("ctx", &address_only)), env)
            .unwrap()
            .unwrap();
        assert_eq!(ca.source, CaSource::Env(env_file.clone()));
        let ca = local_ca(None, env).unwrap().unwrap();
        assert_eq!(ca.source, CaSource::Env(env_file.clone()));

        // Nothing set (an empty STE_ROUTER_CA is unset): the ConfigMap's turn.
        assert!(
            local_ca(Some(("ctx", &address_only)), None)
                .unwrap()
                .is_none()
        );
        assert!(local_ca(None, Some(OsStr::new(""))).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_named_ca_that_cannot_be_used_is_an_error_not_skipped() {
        let dir = dir();
        let missing = dir.join("missing.crt");
        let env = dir.join("env-ca.crt");
        std::fs::write(&env, CA).unwrap();
        let broken = json!({"certificate-authority": missing});
        let err = local_ca(Some(("ctx", &broken)), Some(env.as_os_str()))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "error: certificate-authority of the ste.io/router extension of kubeconfig \
                 context \"ctx\": cannot read "
            ),
            "{err}"
        );
        let not_pem = dir.join("not-pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let err = local_ca(None, Some(not_pem.as_os_str()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "error: STE_ROUTER_CA: no PEM certificate (-----BEGIN CERTIFICATE-----)"
        );
        let bad = json!({"certificate-authority-data": "%%%"});
        let err = local_ca(Some(("ctx", &bad)), None).unwrap_err().to_string();
        assert!(
            err.contains("certificate-authority-data of the ste.io/router extension"),
            "{err}"
        );
        assert!(err.contains("not base64"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_configmap_last_and_the_error_names_all_three_ways() {
        let ca = configmap_ca(Some(CA.into())).unwrap();
        assert_eq!(ca.source, CaSource::ConfigMap);
        let err = configmap_ca(None).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "error: no STE CA to verify the router's certificate with: the ConfigMap \
                 kube-system/ste-ca (key ca.crt) does not exist; "
            ),
            "{err}"
        );
        for way in [
            "certificate-authority (a file)",
            "certificate-authority-data",
            "STE_ROUTER_CA",
            "ConfigMap kube-system/ste-ca (key ca.crt)",
        ] {
            assert!(err.contains(way), "{way}: {err}");
        }
        let err = no_ca("no kubeconfig to read the ConfigMap with").to_string();
        assert!(err.ends_with(HOW_TO_TRUST), "{err}");
    }
}
