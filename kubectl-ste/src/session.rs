//! The global flags, checked and resolved once: output format, timeouts,
//! how to reach the router, the terminal.

use std::time::Duration;

use crate::cli::GlobalArgs;
use crate::connect::{RouterConn, RouterSettings, RouterSource};
use crate::error::{CliError, CliResult};
use crate::kubeconfig::KubeSettings;
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
        Err(_) => humantime::parse_duration(value).map_err(|_| {
            CliError::msg(
                "Invalid timeout value. Timeout must be a single integer in seconds, or an \
                 integer followed by a corresponding time unit (e.g. 1s | 2m | 3h)",
            )
        })?,
    };
    Ok((!duration.is_zero()).then_some(duration))
}

/// `--router`, else a non-empty `STE_ROUTER`.
pub fn router_address(flag: Option<&str>, env: Option<&str>) -> Option<(String, RouterSource)> {
    match (flag, env) {
        (Some(flag), _) if !flag.is_empty() => Some((flag.to_owned(), RouterSource::Flag)),
        (_, Some(env)) if !env.trim().is_empty() => {
            Some((env.trim().to_owned(), RouterSource::Env))
        }
        _ => None,
    }
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
        let env = std::env::var("STE_ROUTER").ok();
        let router = RouterSettings {
            address: router_address(args.router.as_deref(), env.as_deref()),
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

    /// Connects to the router's admin API.
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

    #[test]
    fn router_flag_beats_env() {
        assert_eq!(
            router_address(Some("a:1"), Some("b:2")),
            Some(("a:1".into(), RouterSource::Flag))
        );
        assert_eq!(
            router_address(None, Some("b:2")),
            Some(("b:2".into(), RouterSource::Env))
        );
        assert_eq!(router_address(None, Some(" ")), None);
        assert_eq!(router_address(None, None), None);
    }
}
