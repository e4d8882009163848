//! kubectl's TYPE/NAME argument forms, for pods, with kubectl's errors
//! (k8s.io/cli-runtime `Builder.ResourceTypeOrNameArgs`).
//!
//! Accepted: `pod/NAME…` (also `pods/`, `po/`, any case), `pod NAME…`,
//! and, unlike kubectl, a single bare `NAME` (`where` only deals with pods,
//! so one bare word can only be a pod). With two or more words and no
//! slash the first is the type, as in kubectl.

use crate::error::{CliError, CliResult};

const POD_TYPES: &[&str] = &["pod", "pods", "po"];

/// Resource types kubectl knows that STE does not shard: named here so the
/// error says "not stored in STE" instead of "the server doesn't have it".
const OTHER_TYPES: &[&str] = &[
    "configmap",
    "configmaps",
    "cm",
    "cronjob",
    "cronjobs",
    "cj",
    "daemonset",
    "daemonsets",
    "ds",
    "deployment",
    "deployments",
    "deploy",
    "endpoints",
    "ep",
    "event",
    "events",
    "ev",
    "ingress",
    "ingresses",
    "ing",
    "job",
    "jobs",
    "lease",
    "leases",
    "namespace",
    "namespaces",
    "ns",
    "node",
    "nodes",
    "no",
    "persistentvolume",
    "persistentvolumes",
    "pv",
    "persistentvolumeclaim",
    "persistentvolumeclaims",
    "pvc",
    "replicaset",
    "replicasets",
    "rs",
    "secret",
    "secrets",
    "service",
    "services",
    "svc",
    "serviceaccount",
    "serviceaccounts",
    "sa",
    "statefulset",
    "statefulsets",
    "sts",
];

fn is_pod_type(word: &str) -> bool {
    POD_TYPES.iter().any(|t| t.eq_ignore_ascii_case(word))
}

/// Checks that `resource` names pods; the error otherwise is kubectl's for
/// an unknown type, or says that STE keeps only pods.
fn check_type(resource: &str) -> CliResult<()> {
    if is_pod_type(resource) {
        Ok(())
    } else if OTHER_TYPES.iter().any(|t| t.eq_ignore_ascii_case(resource)) {
        Err(CliError::msg(format!(
            "STE shards pods only: {resource:?} objects stay in the control-plane etcd \
             (use pod/NAME)"
        )))
    } else {
        Err(CliError::msg(format!(
            "the server doesn't have a resource type {resource:?}"
        )))
    }
}

/// The pod names in `args`, in order, duplicates removed.
pub fn pod_names(args: &[String]) -> CliResult<Vec<String>> {
    let names = match args {
        [] => {
            return Err(CliError::msg(
                "you must specify the pod: kubectl ste where pod/NAME",
            ));
        }
        _ if args.iter().any(|a| a.contains('/')) => slash_form(args)?,
        [only] if is_pod_type(only) => {
            return Err(CliError::msg(
                "resource(s) were provided, but no name was specified",
            ));
        }
        [only] => vec![only.clone()],
        [resource, names @ ..] => {
            check_type(resource)?;
            names.to_vec()
        }
    };
    let mut unique = Vec::with_capacity(names.len());
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    Ok(unique)
}

/// Every argument is TYPE/NAME (kubectl refuses a mix).
fn slash_form(args: &[String]) -> CliResult<Vec<String>> {
    if !args.iter().all(|a| a.contains('/')) {
        return Err(CliError::msg(
            "there is no need to specify a resource type as a separate argument when passing \
             arguments in resource/name form (e.g. 'kubectl ste where resource/<resource_name>' \
             instead of 'kubectl ste where resource resource/<resource_name>')",
        ));
    }
    args.iter()
        .map(|arg| {
            let parts: Vec<&str> = arg.split('/').collect();
            let [resource, name] = parts[..] else {
                return Err(CliError::msg(
                    "arguments in resource/name form may not have more than one slash",
                ));
            };
            if resource.is_empty() || name.is_empty() || resource.contains(',') {
                return Err(CliError::msg(
                    "arguments in resource/name form must have a single resource and name",
                ));
            }
            check_type(resource)?;
            Ok(name.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(args: &[&str]) -> Result<Vec<String>, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        pod_names(&args).map_err(|e| e.to_string())
    }

    #[test]
    fn accepted_forms() {
        for form in [
            &["pod/web-0"][..],
            &["pods/web-0"],
            &["po/web-0"],
            &["Pod/web-0"],
            &["pod", "web-0"],
            &["PODS", "web-0"],
            &["web-0"],
        ] {
            assert_eq!(names(form), Ok(vec!["web-0".to_string()]), "{form:?}");
        }
        assert_eq!(
            names(&["pod/a", "po/b", "pod/a"]),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            names(&["pod", "a", "b"]),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
    }

    #[test]
    fn kubectl_errors() {
        assert_eq!(
            names(&["foo/bar"]),
            Err("error: the server doesn't have a resource type \"foo\"".into())
        );
        assert_eq!(
            names(&["foo", "bar"]),
            Err("error: the server doesn't have a resource type \"foo\"".into())
        );
        assert_eq!(
            names(&["a/b/c"]),
            Err("error: arguments in resource/name form may not have more than one slash".into())
        );
        assert_eq!(
            names(&["pod"]),
            Err("error: resource(s) were provided, but no name was specified".into())
        );
        for bad in [&["pod/"][..], &["/web"], &["pod,svc/web"]] {
            assert_eq!(
                names(bad),
                Err(
                    "error: arguments in resource/name form must have a single resource and name"
                        .into()
                ),
                "{bad:?}"
            );
        }
        assert!(
            names(&["pod", "pod/web"])
                .unwrap_err()
                .contains("no need to specify a resource type as a separate argument")
        );
        assert!(names(&["deploy/web"]).unwrap_err().contains("pods only"));
        assert!(names(&[]).unwrap_err().contains("pod/NAME"));
    }
}
