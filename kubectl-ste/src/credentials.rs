//! The credentials `kubectl ste` presents to the router and the agents:
//! those of the kubeconfig user of the context in use, as kubectl presents
//! them to the API server.
//!
//! * `client-certificate`/`client-certificate-data` with
//!   `client-key`/`client-key-data`: the TLS client identity (the router
//!   takes the user from the Subject CN and the groups from its O values).
//! * `token`, else `tokenFile`: `authorization: Bearer TOKEN` on every call
//!   (the router asks the API server's TokenReview who that is);
//! * an `exec` plugin or `auth-provider`: the token it gives, as a bearer
//!   token, through kube's own auth layer (the same code that authenticates
//!   the plugin to the API server). An exec plugin that gives a client
//!   certificate instead is not supported yet.
//!
//! Both a certificate and a token may be set; both are sent. A username
//! and password is refused: the router takes no basic auth. Without a
//! kubeconfig there are no credentials, and the router answers
//! Unauthorized.

use std::path::Path;

use base64::Engine;
use kube::client::{Body, ConfigExt};
use kube::config::AuthInfo;
use secrecy::ExposeSecret;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::Identity;
use tower::{Layer, ServiceExt};

use crate::error::{CliError, CliResult, root_cause};

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

impl BearerToken {
    /// Whether there is a token to send.
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }
}

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
    /// [`kube::config::Kubeconfig::read_from`] leaves them. Runs the
    /// user's exec plugin, if it has one.
    pub async fn from_auth_info(user: &str, auth: &AuthInfo) -> CliResult<Credentials> {
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
        let bearer = match bearer_header(user, auth).await? {
            // An empty token is no token (kubectl sends none either).
            Some(value) if value.trim_end() == "Bearer" => BearerToken(None),
            Some(value) if value.starts_with("Bearer ") => {
                BearerToken(Some(value.parse().map_err(|_| {
                    CliError::msg(format!("{}: not a valid token", what("token")))
                })?))
            }
            Some(_) => {
                return Err(CliError::msg(format!(
                    "kubeconfig user {user:?} authenticates with a username and password, which \
                     the STE router does not accept; give the user a client certificate or a \
                     token"
                )));
            }
            None => BearerToken(None),
        };
        if identity.is_none() && bearer.0.is_none() && auth.exec.is_some() {
            return Err(CliError::msg(format!(
                "kubeconfig user {user:?}: the exec plugin gave no token (an exec plugin that \
                 gives a client certificate is not supported yet)"
            )));
        }
        Ok(Credentials { identity, bearer })
    }
}

/// The `authorization` header for this user: `Bearer` with its `token`,
/// else the contents of its `tokenFile` (trimmed, as kubectl does), else
/// what kube's own auth layer would send to the API server (so exec
/// plugins and auth-providers run as they do for kubectl). `None` when the
/// user has none of them.
async fn bearer_header(user: &str, auth: &AuthInfo) -> CliResult<Option<String>> {
    if let Some(token) = &auth.token {
        return Ok(Some(format!("Bearer {}", token.expose_secret().trim())));
    }
    if let Some(file) = &auth.token_file {
        let token = std::fs::read_to_string(file).map_err(|e| {
            CliError::msg(format!(
                "kubeconfig user {user:?}: tokenFile: cannot read {file}: {e}"
            ))
        })?;
        return Ok(Some(format!("Bearer {}", token.trim())));
    }
    let failed = |e: &(dyn std::error::Error + 'static)| {
        CliError::msg(format!(
            "kubeconfig user {user:?}: cannot get its token: {}",
            root_cause(e)
        ))
    };
    // Only the auth layer is used; the URL is never dialled.
    let mut config = kube::Config::new(http::Uri::from_static("https://ste-router.invalid"));
    config.auth_info = auth.clone();
    let Some(layer) = config.auth_layer().map_err(|e| failed(&e))? else {
        return Ok(None);
    };
    // The request kube would send, answered with its authorization header
    // (AddAuthorization wants an HTTP response).
    let capture = tower::service_fn(|request: http::Request<Body>| async move {
        let mut response = http::Response::new(Body::empty());
        if let Some(value) = request.headers().get(http::header::AUTHORIZATION) {
            response
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value.clone());
        }
        Ok::<_, tower::BoxError>(response)
    });
    let response = layer
        .layer(capture)
        .oneshot(http::Request::new(Body::empty()))
        .await
        .map_err(|e| failed(&*e))?;
    response
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(|value| {
            value
                .to_str()
                .map(str::to_owned)
                .map_err(|_| CliError::msg(format!("kubeconfig user {user:?}: not a valid token")))
        })
        .transpose()
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

    #[tokio::test]
    async fn a_token_is_sent_as_bearer_on_every_call() {
        let credentials = Credentials::from_auth_info("u", &auth("    token: abc.def\n"))
            .await
            .unwrap();
        assert!(credentials.identity.is_none());
        assert_eq!(sent(&credentials).as_deref(), Some("Bearer abc.def"));
        assert_eq!(sent(&credentials).as_deref(), Some("Bearer abc.def"));
        let blank = Credentials::from_auth_info("u", &auth("    token: \"  \"\n"))
            .await
            .unwrap();
        assert_eq!(sent(&blank), None, "an empty token is none");
    }

    #[tokio::test]
    async fn a_token_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("kubectl-ste-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let credentials = Credentials::from_auth_info(
            "u",
            &auth(&format!("    tokenFile: {}\n", file.display())),
        )
        .await
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
        .await
        .unwrap();
        assert_eq!(sent(&both).as_deref(), Some("Bearer inline"));
        let missing = Credentials::from_auth_info(
            "u",
            &auth(&format!("    tokenFile: {}\n", dir.join("nope").display())),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            missing.starts_with("error: kubeconfig user \"u\": tokenFile: cannot read "),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_client_certificate_is_the_tls_identity() {
        let credentials = Credentials::from_auth_info(
            "u",
            &auth(&format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(CERT),
                b64(KEY)
            )),
        )
        .await
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
        .await
        .unwrap();
        assert!(files.identity.is_some());
        assert_eq!(sent(&files).as_deref(), Some("Bearer t"), "both are sent");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn half_an_identity_or_no_pem_is_an_error() {
        let err = Credentials::from_auth_info(
            "u",
            &auth(&format!("    client-certificate-data: {}\n", b64(CERT))),
        )
        .await
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
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "error: kubeconfig user \"u\": client-certificate: no PEM data"
        );
    }

    #[tokio::test]
    async fn an_exec_plugin_runs_as_kubectl_runs_it_and_its_token_is_sent() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("kubectl-ste-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plugin = dir.join("get-token");
        std::fs::write(
            &plugin,
            "#!/bin/sh\n\
             # kubectl's contract: KUBERNETES_EXEC_INFO in, an ExecCredential out.\n\
             case \"$KUBERNETES_EXEC_INFO\" in *ExecCredential*) ;; *) exit 3 ;; esac\n\
             echo '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\
             \"status\":{\"token\":\"from-exec-'\"$1\"'\"}}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let credentials = Credentials::from_auth_info(
            "eks",
            &auth(&format!(
                "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: \
                 {}\n      args: [alice]\n      interactiveMode: Never\n",
                plugin.display()
            )),
        )
        .await
        .unwrap();
        assert_eq!(
            sent(&credentials).as_deref(),
            Some("Bearer from-exec-alice")
        );

        let err = Credentials::from_auth_info(
            "eks",
            &auth(&format!(
                "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: \
                 {}\n      interactiveMode: Never\n",
                dir.join("missing").display()
            )),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("error: kubeconfig user \"eks\": cannot get its token: "),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn basic_auth_is_refused_and_nothing_is_nothing() {
        let err = Credentials::from_auth_info("u", &auth("    username: u\n    password: p\n"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "error: kubeconfig user \"u\" authenticates with a username and password, which \
                 the STE router does not accept"
            ),
            "{err}"
        );
        let none = Credentials::from_auth_info("u", &AuthInfo::default())
            .await
            .unwrap();
        assert!(none.identity.is_none() && sent(&none).is_none());
    }
}
