//! Channels to the router and agents: TLS verified against the STE CA and
//! the kubeconfig user's credentials ([`Security`]), dialled directly or
//! over a port-forward, every step bounded by the request timeout.

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};

use super::RouterSettings;
use crate::credentials::Credentials;
use crate::error::{CliError, CliResult, root_cause};
use crate::kube_api;
use crate::kubeconfig;
use crate::trust::{self, SteCa};

/// The name the router's certificate is verified for through a
/// port-forward, where there is no host name to verify.
pub const ROUTER_SERVER_NAME: &str = "ste-router";

/// What every connection trusts and presents.
#[derive(Clone)]
pub(super) struct Security {
    /// The STE CA; `None` only for an `http://` router (`--insecure`).
    pub(super) ca: Option<SteCa>,
    /// What every call presents.
    pub(super) credentials: Credentials,
}

impl Security {
    /// The CA and credentials for a router at `tls` (false: `http://`).
    /// `client` is the Kubernetes client when there is one already, for
    /// the ConfigMap that is the CA's last source.
    pub(super) async fn resolve(
        settings: &RouterSettings,
        tls: bool,
        client: Option<&kube::Client>,
    ) -> CliResult<Security> {
        let loaded = kubeconfig::load(&settings.kube)?;
        let context = settings.kube.context.as_deref();
        let user = match &loaded {
            Some(loaded) => kubeconfig::context_user(loaded, context)?,
            None => None,
        };
        let credentials = match user {
            Some((name, auth)) => Credentials::from_auth_info(&name, &auth).await?,
            None => Credentials::default(),
        };
        if !tls {
            return Ok(Security {
                ca: None,
                credentials,
            });
        }
        let extension = match &loaded {
            Some(loaded) => kubeconfig::router_extension_value(loaded, context)?,
            None => None,
        };
        let env = std::env::var_os(trust::CA_ENV);
        let local = trust::local_ca(
            extension
                .as_ref()
                .map(|(name, value)| (name.as_str(), *value)),
            env.as_deref(),
        )?;
        let ca = match local {
            Some(ca) => ca,
            None => {
                let client = match client {
                    Some(client) => client.clone(),
                    None => kubeconfig::client(&settings.kube, settings.timeout)
                        .await
                        .map_err(|e| {
                            trust::no_ca(&format!(
                                "no cluster to read the ConfigMap from ({})",
                                e.to_string().trim_start_matches("error: ")
                            ))
                        })?,
                };
                let pem = kube_api::ste_ca(&client, settings.timeout)
                    .await
                    .map_err(|e| {
                        CliError::msg(format!(
                            "{}; {}",
                            e.to_string().trim_start_matches("error: "),
                            trust::HOW_TO_TRUST
                        ))
                    })?;
                trust::configmap_ca(pem)?
            }
        };
        Ok(Security {
            ca: Some(ca),
            credentials,
        })
    }

    /// The TLS settings for a server verified as `server_name` (`None`:
    /// the host of the URI dialled); `None` for plain `http://`.
    pub(super) fn tls(&self, server_name: Option<&str>) -> Option<ClientTlsConfig> {
        let ca = self.ca.as_ref()?;
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca.pem))
            // The router and agents are gRPC servers: HTTP/2 even when a
            // proxy in between drops ALPN.
            .assume_http2(true);
        if let Some(identity) = &self.credentials.identity {
            config = config.identity(identity.clone());
        }
        if let Some(name) = server_name {
            config = config.domain_name(name);
        }
        Some(config)
    }

    /// `https` or `http`, for agents dialled directly.
    pub(super) fn scheme(&self) -> &'static str {
        if self.ca.is_some() { "https" } else { "http" }
    }

    /// A connect failure's reason, with what to check when it is about
    /// TLS: the CA used, or a server that does not speak TLS at all.
    pub(super) fn explain(&self, reason: String) -> String {
        let Some(ca) = &self.ca else {
            return reason;
        };
        if reason.contains("InvalidContentType") || reason.contains("corrupt message") {
            format!(
                "{reason} (the server does not speak TLS; a router run with --insecure is \
                 reached with http://HOST:PORT)"
            )
        } else if reason.contains("certificate") || reason.contains("CertificateRequired") {
            format!("{reason} (verified with the STE CA from {})", ca.source)
        } else {
            reason
        }
    }
}

/// `fut`, unless `timeout` passes first.
pub(super) async fn within<T, F>(timeout: Option<Duration>, fut: F) -> Result<T, Elapsed>
where
    F: Future<Output = T>,
{
    match timeout {
        Some(limit) => tokio::time::timeout(limit, fut).await.map_err(|_| Elapsed),
        None => Ok(fut.await),
    }
}

/// The request timeout passed.
pub(super) struct Elapsed;

/// The timeout for messages, e.g. `10s`.
pub(super) fn limit_text(timeout: Option<Duration>) -> String {
    timeout
        .map(|t| humantime::format_duration(t).to_string())
        .unwrap_or_else(|| "the request timeout".into())
}

/// A channel over a fresh port-forward to `namespace/pod` for every
/// connection tonic makes; TLS verified for `server_name` over it.
pub(super) async fn port_forward_channel(
    client: kube::Client,
    namespace: &str,
    pod: &str,
    port: u16,
    security: &Security,
    server_name: &str,
    timeout: Option<Duration>,
) -> Result<Channel, String> {
    let (namespace, pod) = (namespace.to_owned(), pod.to_owned());
    let connector = tower::service_fn(move |_: Uri| {
        let (client, namespace, pod) = (client.clone(), namespace.clone(), pod.clone());
        async move {
            kube_api::port_forward(&client, &namespace, &pod, port, timeout)
                .await
                .map(TokioIo::new)
        }
    });
    // tonic puts TLS over whatever the connector returns when the URI is
    // https; the host is never dialled, the certificate is checked for
    // `server_name`.
    let scheme = security.scheme();
    let endpoint = endpoint(
        &format!("{scheme}://{server_name}"),
        security.tls(Some(server_name)),
        timeout,
    )?;
    match within(timeout, endpoint.connect_with_connector(connector)).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(security.explain(root_cause(&e))),
        Err(Elapsed) => Err(format!("no answer within {}", limit_text(timeout))),
    }
}

/// The endpoint for `uri` with `tls` (when https) and the connect timeout.
fn endpoint(
    uri: &str,
    tls: Option<ClientTlsConfig>,
    timeout: Option<Duration>,
) -> Result<Endpoint, String> {
    let mut endpoint = Endpoint::from_shared(uri.to_owned()).map_err(|e| e.to_string())?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS settings (CA, client certificate): {}", root_cause(&e)))?;
    }
    if let Some(t) = timeout {
        endpoint = endpoint.connect_timeout(t);
    }
    Ok(endpoint)
}

/// A channel to `uri`, TLS verified for the URI's host when https.
pub(super) async fn direct_channel(
    uri: &str,
    security: &Security,
    timeout: Option<Duration>,
) -> Result<Channel, String> {
    let endpoint = endpoint(uri, security.tls(None), timeout)?;
    match within(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(security.explain(root_cause(&e))),
        Err(Elapsed) => Err(format!("no answer within {}", limit_text(timeout))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn security(ca: Option<SteCa>) -> Security {
        Security {
            ca,
            credentials: Credentials::default(),
        }
    }

    #[test]
    fn tls_failures_say_what_to_check() {
        let ca = SteCa {
            pem: Vec::new(),
            source: trust::CaSource::Env("/etc/ste/ca.crt".into()),
        };
        let tls = security(Some(ca));
        assert_eq!(
            tls.explain("invalid peer certificate: UnknownIssuer".into()),
            "invalid peer certificate: UnknownIssuer (verified with the STE CA from \
             /etc/ste/ca.crt (STE_ROUTER_CA))"
        );
        assert!(
            tls.explain("received corrupt message of type InvalidContentType".into())
                .ends_with("a router run with --insecure is reached with http://HOST:PORT)")
        );
        assert_eq!(
            tls.explain("Connection refused (os error 111)".into()),
            "Connection refused (os error 111)"
        );
        let plain = security(None);
        assert_eq!(plain.scheme(), "http");
        assert!(plain.tls(None).is_none());
        assert_eq!(
            plain.explain("invalid peer certificate".into()),
            "invalid peer certificate"
        );
        assert_eq!(tls.scheme(), "https");
    }
}
