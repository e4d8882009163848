//! Finding the kubeconfig as kubectl does, the namespace of the current
//! context, the router address a context may carry, and a Kubernetes
//! client for it.
//!
//! The router address lives where kubeconfig keeps tool-specific data: an
//! extension of the context, named `ste.io/router`, whose object has
//! `address: HOST:PORT` (`scripts/local-cluster.sh up` writes one):
//!
//! ```yaml
//! contexts:
//! - name: ste-local
//!   context:
//!     cluster: ste-local
//!     user: ste-local
//!     extensions:
//!     - name: ste.io/router
//!       extension:
//!         address: 127.0.0.1:2492
//!         certificate-authority: ste-ca.crt
//! ```
//!
//! The extension may also name the STE CA that signed the router's and
//! agents' certificates (`certificate-authority`, a file relative to the
//! kubeconfig's directory, or `certificate-authority-data`, base64 PEM);
//! the context's user supplies the credentials (see `credentials`).
//!
//! Loading rules (client-go's): `--kubeconfig` (must exist), else every
//! file in `KUBECONFIG` (colon-separated; missing files skipped; the first
//! file to set a value wins), else `~/.kube/config`. With none of them the
//! plugin still works where it needs no Kubernetes API (`--router` given,
//! namespace `default`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};

use crate::error::{CliError, CliResult};

/// Where the kubeconfig comes from: the `--kubeconfig` / `--context` flags.
#[derive(Debug, Clone, Default)]
pub struct KubeSettings {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
}

/// A kubeconfig that was found, with where it was read from (for messages).
#[derive(Debug, Clone)]
pub struct LoadedKubeconfig {
    /// The merged configuration.
    pub config: Kubeconfig,
    /// The files it was merged from.
    pub paths: Vec<PathBuf>,
}

/// Reads one file. Like kube (and kubectl) with the paths it knows, a
/// relative `certificate-authority` of the `ste.io/router` extension is
/// made absolute against the file's directory, so it means the same after
/// merging with files elsewhere.
fn read(path: &Path) -> CliResult<Kubeconfig> {
    let mut config = Kubeconfig::read_from(path).map_err(|e| {
        CliError::msg(format!(
            "error loading config file \"{}\": {}",
            path.display(),
            crate::error::root_cause(&e)
        ))
    })?;
    if let Some(dir) = path.parent() {
        let extensions = config
            .contexts
            .iter_mut()
            .filter_map(|named| named.context.as_mut())
            .filter_map(|ctx| ctx.extensions.as_mut())
            .flatten()
            .filter(|e| e.name == ROUTER_EXTENSION);
        for extension in extensions {
            if let Some(serde_json::Value::String(file)) =
                extension.extension.get_mut(ROUTER_CA_FILE)
                && Path::new(file.as_str()).is_relative()
            {
                *file = dir.join(file.as_str()).display().to_string();
            }
        }
    }
    Ok(config)
}

/// The kubeconfig files kubectl would read, in precedence order, given the
/// `--kubeconfig` flag, the value of `KUBECONFIG` and the home directory.
pub fn kubeconfig_paths(
    flag: Option<&Path>,
    env: Option<&std::ffi::OsStr>,
    home: Option<&Path>,
) -> Vec<PathBuf> {
    if let Some(path) = flag {
        return vec![path.to_path_buf()];
    }
    if let Some(value) = env {
        let paths: Vec<PathBuf> = std::env::split_paths(value)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            return paths.into_iter().filter(|p| p.exists()).collect();
        }
    }
    home.map(|h| h.join(".kube").join("config"))
        .filter(|p| p.exists())
        .into_iter()
        .collect()
}

/// Reads the kubeconfig per the loading rules; `None` when there is none.
/// An explicit `--kubeconfig` that cannot be read is an error.
pub fn load(settings: &KubeSettings) -> CliResult<Option<LoadedKubeconfig>> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let env = std::env::var_os("KUBECONFIG");
    let paths = kubeconfig_paths(
        settings.kubeconfig.as_deref(),
        env.as_deref(),
        home.as_deref(),
    );
    if paths.is_empty() {
        return Ok(None);
    }
    let mut merged: Option<Kubeconfig> = None;
    for path in &paths {
        let next = read(path)?;
        merged = Some(match merged {
            None => next,
            Some(m) => m.merge(next).map_err(|e| {
                CliError::msg(format!(
                    "error loading config file \"{}\": {e}",
                    path.display()
                ))
            })?,
        });
    }
    Ok(merged.map(|config| LoadedKubeconfig { config, paths }))
}

/// The context in use: `--context`, else `current-context`. A `--context`
/// that does not exist is kubectl's error.
fn context_name(config: &Kubeconfig, flag: Option<&str>) -> CliResult<Option<String>> {
    match flag {
        Some(name) if config.contexts.iter().any(|c| c.name == name) => Ok(Some(name.into())),
        Some(name) => Err(CliError::msg(format!(
            "context was not found for specified context: {name}"
        ))),
        None => Ok(config.current_context.clone().filter(|c| !c.is_empty())),
    }
}

/// The namespace for `where`: the context's namespace, else `default`.
pub fn default_namespace(
    loaded: Option<&LoadedKubeconfig>,
    context: Option<&str>,
) -> CliResult<String> {
    let Some(loaded) = loaded else {
        if let Some(name) = context {
            return Err(CliError::msg(format!(
                "context was not found for specified context: {name}"
            )));
        }
        return Ok("default".into());
    };
    let name = context_name(&loaded.config, context)?;
    let namespace = name
        .and_then(|name| loaded.config.contexts.iter().find(|c| c.name == name))
        .and_then(|named| named.context.as_ref())
        .and_then(|ctx| ctx.namespace.clone())
        .filter(|ns| !ns.is_empty());
    Ok(namespace.unwrap_or_else(|| "default".into()))
}

/// The name of the context extension that holds the router's address.
pub const ROUTER_EXTENSION: &str = "ste.io/router";

/// The field of the `ste.io/router` extension naming the STE CA file.
pub const ROUTER_CA_FILE: &str = "certificate-authority";
/// The field of the `ste.io/router` extension holding the STE CA PEM,
/// base64-encoded.
pub const ROUTER_CA_DATA: &str = "certificate-authority-data";

/// The `ste.io/router` extension of the selected context (`--context`,
/// else the current one), with the context's name. `None` when the context
/// has no such extension (or there is no context).
pub fn router_extension_value<'a>(
    loaded: &'a LoadedKubeconfig,
    context: Option<&str>,
) -> CliResult<Option<(String, &'a serde_json::Value)>> {
    let Some(name) = context_name(&loaded.config, context)? else {
        return Ok(None);
    };
    let extension = loaded
        .config
        .contexts
        .iter()
        .find(|c| c.name == name)
        .and_then(|named| named.context.as_ref())
        .and_then(|ctx| ctx.extensions.as_ref())
        .and_then(|all| all.iter().find(|e| e.name == ROUTER_EXTENSION));
    Ok(extension.map(|e| (name, &e.extension)))
}

/// The kubeconfig user of the selected context, with its name: whose
/// credentials the plugin presents to the router and agents. `None` when
/// there is no context or the context names no user; a user the context
/// names but the kubeconfig lacks is kubectl's error.
pub fn context_user(
    loaded: &LoadedKubeconfig,
    context: Option<&str>,
) -> CliResult<Option<(String, AuthInfo)>> {
    let Some(name) = context_name(&loaded.config, context)? else {
        return Ok(None);
    };
    let user = loaded
        .config
        .contexts
        .iter()
        .find(|c| c.name == name)
        .and_then(|named| named.context.as_ref())
        .and_then(|ctx| ctx.user.clone())
        .filter(|user| !user.is_empty());
    let Some(user) = user else {
        return Ok(None);
    };
    match loaded.config.auth_infos.iter().find(|a| a.name == user) {
        Some(named) => Ok(Some((user, named.auth_info.clone().unwrap_or_default()))),
        None => Err(CliError::msg(format!(
            "user {user:?} of kubeconfig context {name:?} not found in {}",
            display_paths(&loaded.paths)
        ))),
    }
}

/// The router's address from the `ste.io/router` extension of the
/// selected context (`--context`, else the current one), with the
/// context's name. `None` when the context has no such extension (or there
/// is no context); an extension without a usable `address` is an error,
/// not silently skipped.
pub fn router_extension(
    loaded: &LoadedKubeconfig,
    context: Option<&str>,
) -> CliResult<Option<(String, String)>> {
    let Some((name, extension)) = router_extension_value(loaded, context)? else {
        return Ok(None);
    };
    match extension.get("address").and_then(|a| a.as_str()) {
        Some(address) if !address.trim().is_empty() => Ok(Some((name, address.trim().to_owned()))),
        _ => Err(CliError::msg(format!(
            "kubeconfig context {name:?} ({}): extension {ROUTER_EXTENSION} has no address; \
             expected `extension: {{address: HOST:PORT}}`",
            display_paths(&loaded.paths)
        ))),
    }
}

/// A Kubernetes client for the selected context, or the in-cluster
/// service account when there is no kubeconfig and the plugin runs in a
/// pod. `timeout` bounds connecting; calls are bounded by the caller (a
/// read timeout here would cut long port-forwards).
pub async fn client(settings: &KubeSettings, timeout: Option<Duration>) -> CliResult<kube::Client> {
    let loaded = load(settings)?;
    let mut config = match loaded {
        Some(loaded) => {
            let context = context_name(&loaded.config, settings.context.as_deref())?;
            if context.is_none() {
                return Err(CliError::msg(format!(
                    "no current context in {}: pass --context",
                    display_paths(&loaded.paths)
                )));
            }
            let options = KubeConfigOptions {
                context,
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(loaded.config, &options)
                .await
                .map_err(|e| {
                    CliError::msg(format!(
                        "invalid configuration in {}: {}",
                        display_paths(&loaded.paths),
                        crate::error::root_cause(&e)
                    ))
                })?
        }
        None => kube::Config::incluster().map_err(|_| {
            CliError::msg(
                "no kubeconfig found (--kubeconfig, KUBECONFIG, ~/.kube/config) and not running \
                 in a cluster",
            )
        })?,
    };
    config.connect_timeout = timeout;
    config.read_timeout = None;
    kube::Client::try_from(config)
        .map_err(|e| CliError::msg(format!("cannot create a Kubernetes client: {e}")))
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: c
  cluster:
    server: http://127.0.0.1:1
contexts:
- name: dev
  context:
    cluster: c
    user: u
    namespace: team-a
- name: plain
  context:
    cluster: c
    user: u
users:
- name: u
  user:
    token: t
"#;

    fn loaded() -> LoadedKubeconfig {
        LoadedKubeconfig {
            config: Kubeconfig::from_yaml(CONFIG).expect("valid kubeconfig"),
            paths: vec![PathBuf::from("/test/config")],
        }
    }

    #[test]
    fn namespace_from_context() {
        let l = loaded();
        assert_eq!(default_namespace(Some(&l), None).unwrap(), "team-a");
        assert_eq!(
            default_namespace(Some(&l), Some("plain")).unwrap(),
            "default"
        );
        assert_eq!(default_namespace(None, None).unwrap(), "default");
        assert_eq!(
            default_namespace(Some(&l), Some("nope"))
                .unwrap_err()
                .to_string(),
            "error: context was not found for specified context: nope"
        );
    }

    #[test]
    fn kubeconfig_env_is_a_colon_list_and_skips_missing_files() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        let a = dir.join("a");
        let b = dir.join("b");
        std::fs::write(&b, CONFIG).unwrap();
        let env = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(kubeconfig_paths(None, Some(&env), None), vec![b.clone()]);
        // The flag wins, even when the file is missing (reading it fails).
        assert_eq!(
            kubeconfig_paths(Some(&a), Some(&env), None),
            vec![a.clone()]
        );
        // No KUBECONFIG: ~/.kube/config if it exists.
        assert!(kubeconfig_paths(None, None, Some(dir)).is_empty());
    }

    const WITH_ROUTER: &str = r#"
apiVersion: v1
kind: Config
current-context: ste-local
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443
contexts:
- name: ste-local
  context:
    cluster: c
    user: u
    extensions:
    - name: other.io/x
      extension:
        address: 10.9.9.9:1
    - name: ste.io/router
      extension:
        address: 127.0.0.1:2490
- name: other
  context:
    cluster: c
    user: u
    extensions:
    - name: ste.io/router
      extension:
        address: " 10.0.0.7:2490 "
- name: plain
  context:
    cluster: c
    user: u
- name: broken
  context:
    cluster: c
    user: u
    extensions:
    - name: ste.io/router
      extension:
        addr: 10.0.0.7:2490
users:
- name: u
  user: {}
"#;

    fn with_router() -> LoadedKubeconfig {
        LoadedKubeconfig {
            config: Kubeconfig::from_yaml(WITH_ROUTER).expect("valid kubeconfig"),
            paths: vec![PathBuf::from("/test/config")],
        }
    }

    #[test]
    fn router_address_from_the_context_extension() {
        let l = with_router();
        assert_eq!(
            router_extension(&l, None).unwrap(),
            Some(("ste-local".into(), "127.0.0.1:2490".into())),
            "the current context's, not another extension's address"
        );
        assert_eq!(
            router_extension(&l, Some("other")).unwrap(),
            Some(("other".into(), "10.0.0.7:2490".into())),
            "--context picks the context"
        );
        assert_eq!(router_extension(&l, Some("plain")).unwrap(), None);
        let err = router_extension(&l, Some("broken"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("extension ste.io/router has no address") && err.contains("/test/config"),
            "{err}"
        );
        assert_eq!(
            router_extension(&l, Some("nope")).unwrap_err().to_string(),
            "error: context was not found for specified context: nope"
        );
        // No current context and no --context: nothing to read.
        let mut none = with_router();
        none.config.current_context = None;
        assert_eq!(router_extension(&none, None).unwrap(), None);
        // The kubeconfig without any extension.
        assert_eq!(router_extension(&loaded(), None).unwrap(), None);
    }

    #[test]
    fn the_user_of_the_context_and_a_relative_ca_file() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("user");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config");
        std::fs::write(
            &path,
            r#"
apiVersion: v1
kind: Config
current-context: ste-local
contexts:
- name: ste-local
  context:
    cluster: c
    user: alice
    extensions:
    - name: ste.io/router
      extension:
        address: 127.0.0.1:2492
        certificate-authority: pki/ste-ca.crt
- name: absolute
  context:
    cluster: c
    user: bob
    extensions:
    - name: ste.io/router
      extension:
        certificate-authority: /etc/ste/ca.crt
- name: nobody
  context:
    cluster: c
users:
- name: alice
  user:
    token: t
"#,
        )
        .unwrap();
        let loaded = load(&KubeSettings {
            kubeconfig: Some(path.clone()),
            context: None,
        })
        .unwrap()
        .unwrap();
        let (context, extension) = router_extension_value(&loaded, None).unwrap().unwrap();
        assert_eq!(context, "ste-local");
        assert_eq!(
            extension[ROUTER_CA_FILE].as_str(),
            Some(dir.join("pki/ste-ca.crt").to_str().unwrap()),
            "relative to the kubeconfig's directory, as kubectl resolves paths"
        );
        let (_, absolute) = router_extension_value(&loaded, Some("absolute"))
            .unwrap()
            .unwrap();
        assert_eq!(absolute[ROUTER_CA_FILE].as_str(), Some("/etc/ste/ca.crt"));

        let (user, auth) = context_user(&loaded, None).unwrap().unwrap();
        assert_eq!(user, "alice");
        assert!(auth.token.is_some());
        assert!(context_user(&loaded, Some("nobody")).unwrap().is_none());
        let err = context_user(&loaded, Some("absolute"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("error: user \"bob\" of kubeconfig context \"absolute\" not found in "),
            "{err}"
        );
    }
}
