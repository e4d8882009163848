//! The credentials `kubectl ste` presents to the router and the agents:
//! those of the kubeconfig user of the context in use, as kubectl presents
//! them to the API server.
//!
//! * `client-certificate`/`client-certificate-data` with
//!   `client-key`/`client-key-data`: the TLS client identity (the router
//!   takes the user from the Subject CN and the groups from its O values).
//! * `token`, else `tokenFile`: `authorization: Bearer TOKEN` on every call
//!   (the router asks the API server's TokenReview who that is).
//!
//! Both may be set; both are sent. `exec` and `auth-provider` plugins are
//! not run (yet): a user with nothing else is an error saying so, rather
//! than an anonymous call the router would refuse. Without a kubeconfig
//! there are no credentials, and the router answers Unauthorized.

use std::path::Path;

use base64::Engine;
use kube::config::AuthInfo;
use secrecy::ExposeSecret;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::Identity;

use crate::error::{CliError, CliResult};

/// What the plugin presents: a TLS client identity and a bearer token,
/// each when the kubeconfig user has one.
#[derive(Clone, Default)]
pub struct Credentials {
    /// The client certificate and key (PEM).
    pub identity: Option<Identity>,
    /// The bearer token, ready for the `authorization` metadata.
    pub bearer: BearerToken,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity.is_some())
            .field("token", &self.bearer.0.is_some())
            .finish()
    }
}

/// Adds `authorization: Bearer TOKEN` to every call, when there is a
/// token; a tonic interceptor.
#[derive(Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl Credentials {
    /// The credentials of kubeconfig user `user` (named in messages).
    /// Relative paths must already be absolute, as
    /// [`kube::config::Kubeconfig::read_from`] leaves them.
    pub fn from_auth_info(user: &str, auth: &AuthInfo) -> CliResult<Credentials> {
        let what = |field: &str| format!("kubeconfig user {user:?}: {field}");
        let certificate = pem_field(
            &what("client-certificate"),
            auth.client_certificate_data.as_deref(),
            auth.client_certificate.as_deref(),
        )?;
        let key = pem_field(
            &what("client-key"),
            auth.client_key_data.as_ref().map(|k| k.expose_secret()),
            auth.client_key.as_deref(),
        )?;
        let identity = match (certificate, key) {
            (Some(certificate), Some(key)) => Some(Identity::from_pem(certificate, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(CliError::msg(format!(
                    "{}: a client certificate without client-key or client-key-data",
                    what("client-certificate")
                )));
            }
            (None, Some(_)) => {
                return Err(CliError::msg(format!(
                    "{}: a client key without client-certificate or client-certificate-data",
                    what("client-key")
                )));
            }
        };
        let token = match (&auth.token, &auth.token_file) {
            (Some(token), _) => Some(token.expose_secret().trim().to_owned()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| {
                        CliError::msg(format!("{}: cannot read {file}: {e}", what("tokenFile")))
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let bearer = match token.filter(|t| !t.is_empty()) {
            Some(token) => {
                BearerToken(Some(format!("Bearer {token}").parse().map_err(|_| {
                    CliError::msg(format!("{}: not a valid token", what("token")))
                })?))
            }
            None => BearerToken(None),
        };
        if identity.is_none()
            && bearer.0.is_none()
            && let Some(plugin) = unsupported(auth)
        {
            return Err(CliError::msg(format!(
                "kubeconfig user {user:?} authenticates with {plugin}, which kubectl ste does \
                 not support yet; give the user a client certificate (client-certificate, \
                 client-key) or a token (token, tokenFile) for the STE router"
            )));
        }
        Ok(Credentials { identity, bearer })
    }

    /// True when there is a bearer token to send.
    pub fn has_token(&self) -> bool {
        self.bearer.0.is_some()
    }
}

/// How the user authenticates if not by certificate or token.
fn unsupported(auth: &AuthInfo) -> Option<String> {
    if let Some(exec) = &auth.exec {
        let command = exec.command.as_deref().unwrap_or("?");
        return Some(format!("an exec plugin ({command})"));
    }
    if let Some(provider) = &auth.auth_provider {
        return Some(format!("the auth-provider {:?}", provider.name));
    }
    if auth.username.is_some() {
        return Some("a username and password".to_owned());
    }
    None
}

/// A PEM value from its base64 `*-data` field (which wins, as in kubectl)
/// or its file.
fn pem_field(what: &str, data: Option<&str>, file: Option<&str>) -> CliResult<Option<Vec<u8>>> {
    let bytes = match (data, file) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| CliError::msg(format!("{what}-data: not base64: {e}")))?,
        (None, Some(file)) => read_file(what, Path::new(file))?,
        (None, None) => return Ok(None),
    };
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(CliError::msg(format!("{what}: no PEM data")));
    }
    Ok(Some(bytes))
}

/// A file's bytes; the error names what it was for.
pub fn read_file(what: &str, path: &Path) -> CliResult<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| CliError::msg(format!("{what}: cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(yaml: &str) -> AuthInfo {
        let config = kube::config::Kubeconfig::from_yaml(&format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n{yaml}"
        ))
        .expect("valid kubeconfig");
        config.auth_infos[0].auth_info.clone().unwrap_or_default()
    }

    fn sent(credentials: &Credentials) -> Option<String> {
        let request = credentials
            .bearer
            .clone()
            .call(tonic::Request::new(()))
            .unwrap();
        request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn a_token_is_sent_as_bearer_on_every_call() {
        let credentials = Credentials::from_auth_info("u", &auth("    token: abc.def\n")).unwrap();
        assert!(credentials.identity.is_none());
        assert_eq!(sent(&credentials).as_deref(), Some("Bearer abc.def"));
        assert_eq!(sent(&credentials).as_deref(), Some("Bearer abc.def"));
    }

    #[test]
    fn a_token_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("kubectl-ste-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let credentials = Credentials::from_auth_info(
            "u",
            &auth(&format!("    tokenFile: {}\n", file.display())),
        )
        .unwrap();
        assert_eq!(sent(&credentials).as_deref(), Some("Bearer from-file"));
        // An inline token wins over the file.
        let both = Credentials::from_auth_info(
            "u",
            &auth(&format!(
                "    token: inline\n    tokenFile: {}\n",
                file.display()
            )),
        )
        .unwrap();
        assert_eq!(sent(&both).as_deref(), Some("Bearer inline"));
        let missing = Credentials::from_auth_info(
            "u",
            &auth(&format!("    tokenFile: {}\n", dir.join("nope").display())),
        )
        .unwrap_err()
        .to_string();
        assert!(
            missing.starts_with("error: kubeconfig user \"u\": tokenFile: cannot read "),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_client_certificate_is_the_tls_identity() {
        let credentials = Credentials::from_auth_info(
            "u",
            &auth(&format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(CERT),
                b64(KEY)
            )),
        )
        .unwrap();
        assert!(credentials.identity.is_some());
        assert_eq!(sent(&credentials), None, "no token, no authorization");
        // From files, too.
        let dir = std::env::temp_dir().join(format!("kubectl-ste-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("c.crt"), CERT).unwrap();
        std::fs::write(dir.join("c.key"), KEY).unwrap();
        let files = Credentials::from_auth_info(
            "u",
            &auth(&format!(
                "    client-certificate: {}\n    client-key: {}\n    token: t\n",
                dir.join("c.crt").display(),
                dir.join("c.key").display()
            )),
        )
        .unwrap();
        assert!(files.identity.is_some());
        assert_eq!(sent(&files).as_deref(), Some("Bearer t"), "both are sent");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn half_an_identity_or_no_pem_is_an_error() {
        let err = Credentials::from_auth_info(
            "u",
            &auth(&format!("    client-certificate-data: {}\n", b64(CERT))),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "error: kubeconfig user \"u\": client-certificate: a client certificate without \
             client-key or client-key-data"
        );
        let err = Credentials::from_auth_info(
            "u",
            &auth(&format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64("not pem"),
                b64(KEY)
            )),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "error: kubeconfig user \"u\": client-certificate: no PEM data"
        );
    }

    #[test]
    fn exec_and_auth_provider_users_are_told_they_are_not_supported() {
        let err = Credentials::from_auth_info(
            "eks",
            &auth(
                "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: \
                 aws\n      args: [eks, get-token]\n",
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "error: kubeconfig user \"eks\" authenticates with an exec plugin (aws), which \
                 kubectl ste does not support yet"
            ),
            "{err}"
        );
        let err = Credentials::from_auth_info(
            "gke",
            &auth("    auth-provider:\n      name: gcp\n      config: {}\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("the auth-provider \"gcp\""), "{err}");
        // An exec plugin beside a token: the token is used.
        let credentials = Credentials::from_auth_info(
            "u",
            &auth("    token: t\n    exec:\n      command: aws\n"),
        )
        .unwrap();
        assert_eq!(sent(&credentials).as_deref(), Some("Bearer t"));
        // A user with nothing: no credentials, no error.
        let none = Credentials::from_auth_info("u", &AuthInfo::default()).unwrap();
        assert!(none.identity.is_none() && sent(&none).is_none());
    }
}
