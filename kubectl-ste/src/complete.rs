//! Shell completion for kubectl's plugin completion protocol (kubectl ≥
//! 1.26): for `kubectl ste <words> <TAB>` kubectl runs
//! `kubectl_complete-ste <words> <current>` (the word being completed last,
//! possibly empty) and reads candidates, one per line (`value<TAB>help`
//! allowed), then `:<directive>`; `:4` means "no file completion".
//!
//! Completed: subcommands, `ring` subcommands, flags, `-o`/`--color`/
//! `--placement` values, and node names for `ring join` (registered agents
//! not in the ring) and `ring leave` (members), asked of the router when
//! it answers within 2 seconds.

use std::time::Duration;

use crate::connect::{RouterConn, RouterSettings};
use crate::kubeconfig::KubeSettings;
use crate::output::FORMATS;
use crate::session::resolve_router;

/// Cobra's ShellCompDirectiveNoFileComp.
pub const NO_FILE_COMP: u32 = 4;
/// Cobra's ShellCompDirectiveDefault (the shell may complete files).
pub const DEFAULT: u32 = 0;

/// How long completion waits for the router.
const ROUTER_TIMEOUT: Duration = Duration::from_secs(2);

const COMMANDS: &[(&str, &str)] = &[
    ("status", "One row per ring member"),
    ("where", "Where pods are stored"),
    ("ring", "Show or change the placement ring"),
    ("version", "Plugin, router and agent versions"),
];

const RING_COMMANDS: &[(&str, &str)] = &[
    (
        "show",
        "Generation, members, shares, agents not in the ring",
    ),
    ("join", "Add a node's shard to the ring"),
    ("leave", "Remove a member from the ring"),
];

/// Flags that take a value (the next word, unless given as `--flag=value`).
const VALUE_FLAGS: &[&str] = &[
    "--kubeconfig",
    "--context",
    "-n",
    "--namespace",
    "-o",
    "--output",
    "--request-timeout",
    "--router",
    "--color",
    "--placement",
    "--etcd-prefix",
    "--weight",
    "--endpoint",
    "--timeout",
];

const GLOBAL_FLAGS: &[&str] = &[
    "--kubeconfig",
    "--context",
    "--namespace",
    "--all-namespaces",
    "--output",
    "--no-headers",
    "--request-timeout",
    "--router",
    "--color",
    "--help",
];

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Candidates, `value` or `value\thelp`.
    pub candidates: Vec<String>,
    /// The directive for the last line.
    pub directive: u32,
}

impl Completion {
    fn of(values: impl IntoIterator<Item = String>, prefix: &str) -> Completion {
        Completion {
            candidates: values
                .into_iter()
                .filter(|v| v.starts_with(prefix))
                .collect(),
            directive: NO_FILE_COMP,
        }
    }

    /// The protocol's output.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.candidates {
            out.push_str(c);
            out.push('\n');
        }
        out.push_str(&format!(":{}\n", self.directive));
        out
    }
}

/// What the words typed so far ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// These values (already filtered by the current word).
    Values(Completion),
    /// Members of the ring whose name starts with the prefix (`leave`).
    Members(String),
    /// Registered agents outside the ring (`join`).
    Agents(String),
}

/// The words before the current one, split into positionals and the
/// values of the flags that matter here.
#[derive(Debug, Default)]
struct Parsed {
    positionals: Vec<String>,
    router: Option<String>,
    kubeconfig: Option<String>,
    context: Option<String>,
    /// The last word is a value flag waiting for its value.
    pending: Option<String>,
}

fn parse(words: &[String]) -> Parsed {
    let mut parsed = Parsed::default();
    let mut iter = words.iter().peekable();
    while let Some(word) = iter.next() {
        if word == "--" {
            parsed.positionals.extend(iter.by_ref().cloned());
            break;
        }
        if word.starts_with('-') && word.len() > 1 {
            let (flag, inline) = match word.split_once('=') {
                Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
                None => (word.clone(), None),
            };
            if !VALUE_FLAGS.contains(&flag.as_str()) {
                continue;
            }
            let value = match inline {
                Some(v) => Some(v),
                None => match iter.next() {
                    Some(v) => Some(v.clone()),
                    None => {
                        parsed.pending = Some(flag.clone());
                        None
                    }
                },
            };
            match flag.as_str() {
                "--router" => parsed.router = value,
                "--kubeconfig" => parsed.kubeconfig = value,
                "--context" => parsed.context = value,
                _ => {}
            }
        } else {
            parsed.positionals.push(word.clone());
        }
    }
    parsed
}

fn flag_values(flag: &str) -> Option<Vec<String>> {
    let values: &[&str] = match flag {
        "-o" | "--output" => &FORMATS,
        "--color" => &["auto", "always", "never"],
        "--placement" => &["router", "fork-ring", "fork-suffix"],
        _ => return None,
    };
    Some(values.iter().map(|v| v.to_string()).collect())
}

fn command_flags(positionals: &[String]) -> Vec<&'static str> {
    let mut flags = GLOBAL_FLAGS.to_vec();
    match positionals
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["where", ..] => flags.extend(["--placement", "--etcd-prefix"]),
        ["ring", "join", ..] => {
            flags.extend(["--weight", "--endpoint", "--dry-run", "--wait", "--timeout"])
        }
        ["ring", "leave", ..] => flags.extend(["--yes", "--dry-run", "--wait", "--timeout"]),
        ["version", ..] => flags.push("--client"),
        _ => {}
    }
    flags
}

fn pairs(list: &[(&str, &str)]) -> Vec<String> {
    list.iter()
        .map(|(v, help)| format!("{v}\t{help}"))
        .collect()
}

/// What to complete for `args` (the words after `kubectl ste`, the last
/// being the one under the cursor), without contacting anything.
pub fn want(args: &[String]) -> Want {
    let (current, words) = match args.split_last() {
        Some((current, words)) => (current.as_str(), words),
        None => ("", args),
    };
    let parsed = parse(words);
    if let Some(flag) = &parsed.pending {
        return match flag_values(flag) {
            Some(values) => Want::Values(Completion::of(values, current)),
            None if flag == "--kubeconfig" => Want::Values(Completion {
                candidates: Vec::new(),
                directive: DEFAULT,
            }),
            None => Want::Values(Completion::of(Vec::new(), current)),
        };
    }
    if let Some((flag, value)) = current.split_once('=')
        && let Some(values) = flag_values(flag)
    {
        let values = values.into_iter().map(|v| format!("{flag}={v}"));
        return Want::Values(Completion::of(values, &format!("{flag}={value}")));
    }
    if current.starts_with('-') {
        let flags = command_flags(&parsed.positionals)
            .into_iter()
            .map(str::to_owned);
        return Want::Values(Completion::of(flags, current));
    }
    let positionals: Vec<&str> = parsed.positionals.iter().map(String::as_str).collect();
    match positionals.as_slice() {
        [] => {
            let list = pairs(COMMANDS);
            Want::Values(Completion {
                candidates: list
                    .into_iter()
                    .filter(|c| c.starts_with(current))
                    .collect(),
                directive: NO_FILE_COMP,
            })
        }
        ["ring"] => Want::Values(Completion {
            candidates: pairs(RING_COMMANDS)
                .into_iter()
                .filter(|c| c.starts_with(current))
                .collect(),
            directive: NO_FILE_COMP,
        }),
        ["ring", "join"] => Want::Agents(current.to_owned()),
        ["ring", "leave"] => Want::Members(current.to_owned()),
        _ => Want::Values(Completion::of(Vec::new(), current)),
    }
}

/// Completes `args`, asking the router for node names when needed.
pub async fn complete(args: &[String]) -> Completion {
    let want = want(args);
    let (prefix, members) = match want {
        Want::Values(c) => return c,
        Want::Members(p) => (p, true),
        Want::Agents(p) => (p, false),
    };
    let words = args.split_last().map_or(args, |(_, w)| w);
    let parsed = parse(words);
    let kube = KubeSettings {
        kubeconfig: parsed.kubeconfig.map(Into::into),
        context: parsed.context,
    };
    let settings = RouterSettings {
        address: resolve_router(parsed.router.as_deref(), &kube).unwrap_or(None),
        kube,
        timeout: Some(ROUTER_TIMEOUT),
    };
    let names = async {
        let router = RouterConn::connect(&settings).await.ok()?;
        let status = router.status().await.ok()?;
        let names: Vec<String> = if members {
            status.members.into_iter().map(|m| m.name).collect()
        } else {
            status
                .agents
                .into_iter()
                .filter(|a| !a.member)
                .map(|a| a.name)
                .collect()
        };
        Some(names)
    };
    let mut names = tokio::time::timeout(ROUTER_TIMEOUT * 2, names)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    names.sort();
    Completion::of(names, &prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want_of(args: &[&str]) -> Want {
        want(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn values(args: &[&str]) -> Vec<String> {
        match want_of(args) {
            Want::Values(c) => c
                .candidates
                .into_iter()
                .map(|c| c.split('\t').next().unwrap_or_default().to_owned())
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn subcommands() {
        assert_eq!(values(&[""]), ["status", "where", "ring", "version"]);
        assert_eq!(values(&["r"]), ["ring"]);
        assert_eq!(values(&["ring", ""]), ["show", "join", "leave"]);
        assert_eq!(values(&["--router", "x:1", "ring", "l"]), ["leave"]);
        assert_eq!(values(&["status", ""]), Vec::<String>::new());
    }

    #[test]
    fn flag_values_and_flags() {
        assert_eq!(
            values(&["status", "-o", ""]),
            ["table", "wide", "json", "yaml"]
        );
        assert_eq!(values(&["status", "--output", "j"]), ["json"]);
        assert_eq!(values(&["status", "--output=y"]), ["--output=yaml"]);
        assert_eq!(
            values(&["where", "--placement", "fork"]),
            ["fork-ring", "fork-suffix"]
        );
        assert!(values(&["ring", "join", "--"]).contains(&"--weight".to_string()));
        assert!(!values(&["status", "--"]).contains(&"--weight".to_string()));
        match want_of(&["--kubeconfig", ""]) {
            Want::Values(c) => assert_eq!(c.directive, DEFAULT),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn node_names_come_from_the_router() {
        assert_eq!(
            want_of(&["ring", "leave", "no"]),
            Want::Members("no".into())
        );
        assert_eq!(
            want_of(&["ring", "join", "--weight", "2", ""]),
            Want::Agents("".into())
        );
        assert_eq!(
            values(&["ring", "join", "node-d", ""]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn protocol_output() {
        let c = Completion {
            candidates: vec!["a".into(), "b\thelp".into()],
            directive: NO_FILE_COMP,
        };
        assert_eq!(c.render(), "a\nb\thelp\n:4\n");
    }
}
