//! `kubectl ste version`: the plugin's, the router's and every registered
//! agent's version, and the skew between them.
//!
//! Skew policy: the plugin speaks `ste.v1` to any router, but plugin,
//! router and agents are released together, so a different major.minor
//! between the plugin and the router, or between the router and an agent,
//! is reported (WARNING lines on stderr, `skew` in json/yaml). It is not an
//! error: the command exits 0 when the router answered.

use futures_util::future::join_all;
use serde::Serialize;

use crate::cli::VersionArgs;
use crate::error::CliResult;
use crate::session::Session;

/// This plugin's version.
pub const PLUGIN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What `-o json|yaml` prints.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionReport {
    /// kubectl-ste.
    pub plugin_version: String,
    /// ste-router (absent with --client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_version: Option<String>,
    /// Registered agents (absent with --client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<AgentVersion>>,
    /// Version skew found.
    pub skew: Vec<String>,
}

/// One agent's version.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentVersion {
    /// Node name.
    pub node: String,
    /// The agent's version, when it answered.
    pub version: Option<String>,
    /// Why it is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `(major, minor)` of a version such as `0.1.0` or `v1.2.3-rc.1`.
pub fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim_start_matches('v').split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The skew between plugin, router and agents, as sentences.
pub fn skew(plugin: &str, router: &str, agents: &[AgentVersion]) -> Vec<String> {
    let mut out = Vec::new();
    let router_mm = major_minor(router);
    if major_minor(plugin) != router_mm {
        out.push(format!(
            "version difference between plugin ({plugin}) and router ({router}): use a plugin \
             of the router's release"
        ));
    }
    for agent in agents {
        if let Some(v) = &agent.version
            && major_minor(v) != router_mm
        {
            out.push(format!(
                "version difference between router ({router}) and the agent on {} ({v})",
                agent.node
            ));
        }
    }
    out
}

/// Runs `version`.
pub async fn run(session: &mut Session, args: &VersionArgs) -> CliResult<()> {
    let document = session.format.is_document();
    if args.client {
        let report = VersionReport {
            plugin_version: PLUGIN_VERSION.into(),
            router_version: None,
            agents: None,
            skew: Vec::new(),
        };
        if document {
            return session.print_document(&report);
        }
        session
            .term
            .out_line(&format!("Plugin Version: {PLUGIN_VERSION}"));
        return Ok(());
    }
    if !document {
        // Like kubectl: the client's version even when the server is away.
        session
            .term
            .out_line(&format!("Plugin Version: {PLUGIN_VERSION}"));
    }
    let router = session.router().await?;
    let status = router.status().await?;
    let mut registered = status.agents.clone();
    registered.sort_by(|a, b| a.name.cmp(&b.name));
    let queries = registered.iter().map(|a| {
        let router = &router;
        async move {
            let result = if a.agent_address.is_empty() {
                Err("registered without an address".to_owned())
            } else {
                router.agent_status(a).await
            };
            match result {
                Ok(s) => AgentVersion {
                    node: a.name.clone(),
                    version: Some(s.version),
                    error: None,
                },
                Err(e) => AgentVersion {
                    node: a.name.clone(),
                    version: None,
                    error: Some(e),
                },
            }
        }
    });
    let agents = join_all(queries).await;
    let skew = skew(PLUGIN_VERSION, &status.version, &agents);
    if document {
        session.print_document(&VersionReport {
            plugin_version: PLUGIN_VERSION.into(),
            router_version: Some(status.version.clone()),
            agents: Some(agents),
            skew,
        })?;
        return Ok(());
    }
    session
        .term
        .out_line(&format!("Router Version: {}", status.version));
    if agents.is_empty() {
        session.term.out_line("Agent Versions: <none registered>");
    } else {
        session.term.out_line("Agent Versions:");
        for a in &agents {
            let version = a.version.as_deref().unwrap_or("<unknown>");
            session.term.out_line(&format!("  {}: {version}", a.node));
        }
    }
    for a in &agents {
        if let Some(e) = &a.error {
            session
                .term
                .warn(&format!("{}: agent version <unknown>: {e}", a.node));
        }
    }
    for line in &skew {
        session.term.err(&format!("WARNING: {line}\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_skew() {
        assert_eq!(major_minor("0.1.0"), Some((0, 1)));
        assert_eq!(major_minor("v1.30.2-rc.1"), Some((1, 30)));
        assert_eq!(major_minor("dev"), None);
        let agents = vec![
            AgentVersion {
                node: "a".into(),
                version: Some("0.1.5".into()),
                error: None,
            },
            AgentVersion {
                node: "b".into(),
                version: Some("0.2.0".into()),
                error: None,
            },
            AgentVersion {
                node: "c".into(),
                version: None,
                error: Some("down".into()),
            },
        ];
        let found = skew("0.1.0", "0.1.3", &agents);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("agent on b (0.2.0)"));
        assert_eq!(skew("0.2.0", "0.1.0", &[]).len(), 1);
    }
}
