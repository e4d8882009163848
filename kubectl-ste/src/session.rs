//! The global flags, checked and resolved once: output format, timeouts,
//! how to reach the router, the terminal.

use std::time::Duration;

use crate::cli::GlobalArgs;
use crate::connect::{RouterConn, RouterSettings, RouterSource};
use crate::error::{CliError, CliResult};
use crate::kubeconfig::{self, KubeSettings, LoadedKubeconfig};
use crate::output::{Format, Term};

/// Everything a command needs besides its own arguments.
pub struct Session {
    /// `-o`.
    pub format: Format,
    /// Not `--no-headers`.
    pub headers: bool,
    /// `--request-timeout`; `None` waits forever.
    pub timeout: Option<Duration>,
    /// `-n`.
    pub namespace: Option<String>,
    /// `-A`.
    pub all_namespaces: bool,
    /// `--kubeconfig`, `--context`.
    pub kube: KubeSettings,
    /// `--router` / `STE_ROUTER` and the port-forward fallback.
    pub router: RouterSettings,
    /// stdout, stderr, colour.
    pub term: Term,
}

/// Parses a duration as kubectl's `--request-timeout` does: `0` is no
/// limit, a bare integer is seconds, else a number with a unit (`5s`,
/// `2m`, `1h30m`).
pub fn parse_timeout(value: &str) -> CliResult<Option<Duration>> {
    let value = value.trim();
    let duration = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => ste_core::units::parse_duration(value).map_err(|_| {
            CliError::msg(
                "Invalid timeout value. Timeout must be a single integer in seconds, or an \
                 integer followed by a corresponding time unit (e.g. 1s | 2m | 3h)",
            )
        })?,
    };
    Ok((!duration.is_zero()).then_some(duration))
}

/// Where the router is, in order: `--router`, a non-empty `STE_ROUTER`,
/// the `ste.io/router` extension of the kubeconfig context (`--context`,
/// else the current one). `None` leaves the port-forward to the router pod.
/// `kubeconfig` is only called when neither flag nor variable is set.
pub fn router_address(
    flag: Option<&str>,
    env: Option<&str>,
    kubeconfig: impl FnOnce() -> Option<LoadedKubeconfig>,
    context: Option<&str>,
) -> CliResult<Option<(String, RouterSource)>> {
    match (flag, env) {
        (Some(flag), _) if !flag.is_empty() => {
            return Ok(Some((flag.to_owned(), RouterSource::Flag)));
        }
        (_, Some(env)) if !env.trim().is_empty() => {
            return Ok(Some((env.trim().to_owned(), RouterSource::Env)));
        }
        _ => {}
    }
    let Some(loaded) = kubeconfig() else {
        return Ok(None);
    };
    Ok(kubeconfig::router_extension(&loaded, context)?
        .map(|(context, address)| (address, RouterSource::Kubeconfig(context))))
}

/// [`router_address`] from the real flag, `STE_ROUTER` and kubeconfig. A
/// kubeconfig that cannot be read is left to the port-forward step, which
/// reports it.
pub fn resolve_router(
    flag: Option<&str>,
    kube: &KubeSettings,
) -> CliResult<Option<(String, RouterSource)>> {
    let env = std::env::var("STE_ROUTER").ok();
    router_address(
        flag,
        env.as_deref(),
        || kubeconfig::load(kube).ok().flatten(),
        kube.context.as_deref(),
    )
}

impl Session {
    /// Checks and resolves the global flags.
    pub fn new(args: &GlobalArgs, term: Term) -> CliResult<Session> {
        let format = Format::parse(args.output.as_deref())?;
        let timeout = parse_timeout(&args.request_timeout)?;
        let kube = KubeSettings {
            kubeconfig: args.kubeconfig.clone(),
            context: args.context.clone(),
        };
        let router = RouterSettings {
            address: resolve_router(args.router.as_deref(), &kube)?,
            kube: kube.clone(),
            timeout,
        };
        Ok(Session {
            format,
            headers: !args.no_headers,
            timeout,
            namespace: args.namespace.clone(),
            all_namespaces: args.all_namespaces,
            kube,
            router,
            term,
        })
    }

    /// Connects to the router's user API.
    pub async fn router(&self) -> CliResult<RouterConn> {
        RouterConn::connect(&self.router).await
    }

    /// Prints a serializable document in the session's json/yaml format.
    pub fn print_document<T: serde::Serialize>(&mut self, value: &T) -> CliResult<()> {
        let text = crate::output::document(self.format, value)?;
        self.term.out(&text);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("5s").unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("7").unwrap(), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_timeout("1m30s").unwrap(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse_timeout("0").unwrap(), None);
        assert_eq!(parse_timeout("0s").unwrap(), None);
        assert!(parse_timeout("soon").is_err());
    }

    const CONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: ste-local
contexts:
- name: ste-local
  context:
    cluster: c
    extensions:
    - name: ste.io/router
      extension:
        address: 127.0.0.1:2490
- name: bare
  context:
    cluster: c
"#;

    fn kubeconfig() -> Option<LoadedKubeconfig> {
        Some(LoadedKubeconfig {
            config: kube::config::Kubeconfig::from_yaml(CONFIG).unwrap(),
            paths: vec!["/test/config".into()],
        })
    }

    fn unused() -> Option<LoadedKubeconfig> {
        panic!("the kubeconfig is not read when --router or STE_ROUTER is set")
    }

    #[test]
    fn router_flag_then_env_then_kubeconfig_then_port_forward() {
        assert_eq!(
            router_address(Some("a:1"), Some("b:2"), unused, None).unwrap(),
            Some(("a:1".into(), RouterSource::Flag))
        );
        assert_eq!(
            router_address(None, Some("b:2"), unused, None).unwrap(),
            Some(("b:2".into(), RouterSource::Env))
        );
        assert_eq!(
            router_address(None, Some(" "), kubeconfig, None).unwrap(),
            Some((
                "127.0.0.1:2490".into(),
                RouterSource::Kubeconfig("ste-local".into())
            )),
            "an empty STE_ROUTER is unset"
        );
        assert_eq!(
            router_address(None, None, kubeconfig, None).unwrap(),
            Some((
                "127.0.0.1:2490".into(),
                RouterSource::Kubeconfig("ste-local".into())
            ))
        );
        // A context without the extension, or no kubeconfig: port-forward.
        assert_eq!(
            router_address(None, None, kubeconfig, Some("bare")).unwrap(),
            None
        );
        assert_eq!(router_address(None, None, || None, None).unwrap(), None);
        assert!(router_address(None, None, kubeconfig, Some("nope")).is_err());
    }
}
