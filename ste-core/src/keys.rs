//! etcd key layout for pods, and the Kubernetes name rules that keep keys
//! well-formed.
//!
//! kube-apiserver stores a pod at `<prefix>/pods/<namespace>/<name>` with
//! `<prefix>` = `--etcd-prefix`, `/registry` by default. The original
//! prototype (see [`crate::fork`]) used no prefix: `/pods/<namespace>/<name>`.
//!
//! Names are validated as Kubernetes validates them, so that a key built here
//! is one the apiserver could have written, and errors read like kubectl's.
//! Validation also guarantees that neither part contains `/`, which is what
//! makes [`KeyLayout::parse_pod_key`] the inverse of [`KeyLayout::pod_key`].

use thiserror::Error;

/// kube-apiserver's default `--etcd-prefix`.
pub const DEFAULT_PREFIX: &str = "/registry";

/// Longest valid namespace (a DNS-1123 label).
pub const NAMESPACE_MAX_LEN: usize = 63;

/// Longest valid pod name (a DNS-1123 subdomain).
pub const POD_NAME_MAX_LEN: usize = 253;

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
    characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  \
    or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
    alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
    (e.g. 'example.com', regex used for validation is \
    '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

const NAMESPACE_FIELD: &str = "metadata.namespace";
const NAME_FIELD: &str = "metadata.name";

/// A key could not be built: a name or the prefix is invalid. Messages follow
/// the apiserver's `field: Invalid value: "x": reason` form.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// The field is empty.
    #[error("{field}: Required value{}", required_detail(field))]
    Required {
        /// `metadata.namespace` or `metadata.name`.
        field: &'static str,
    },
    /// The value is longer than the field allows.
    #[error("{field}: Invalid value: {value:?}: must be no more than {max} characters")]
    TooLong {
        /// `metadata.namespace` or `metadata.name`.
        field: &'static str,
        /// The rejected value.
        value: String,
        /// The longest allowed length, in bytes.
        max: usize,
    },
    /// The namespace is not a DNS-1123 label.
    #[error("{field}: Invalid value: {value:?}: {LABEL_MSG}")]
    NotDns1123Label {
        /// Always `metadata.namespace`.
        field: &'static str,
        /// The rejected value.
        value: String,
    },
    /// The pod name is not a DNS-1123 subdomain.
    #[error("{field}: Invalid value: {value:?}: {SUBDOMAIN_MSG}")]
    NotDns1123Subdomain {
        /// Always `metadata.name`.
        field: &'static str,
        /// The rejected value.
        value: String,
    },
    /// The key prefix is malformed.
    #[error("invalid key prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The rejected prefix.
        prefix: String,
        /// Which rule it broke.
        reason: &'static str,
    },
}

fn required_detail(field: &str) -> &'static str {
    if field == NAME_FIELD {
        ": name or generateName is required"
    } else {
        ""
    }
}

/// Where pods live in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyLayout {
    /// `""` (fork layout only) or starts with `/` and does not end with `/`.
    prefix: String,
}

impl Default for KeyLayout {
    /// The stock apiserver layout, prefix `/registry`.
    fn default() -> Self {
        KeyLayout {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

impl KeyLayout {
    /// A layout under `prefix`, which must start with `/` and not end with
    /// `/` (the apiserver joins it with `/pods/...`).
    pub fn new(prefix: impl Into<String>) -> Result<KeyLayout, KeyError> {
        let prefix = prefix.into();
        let reason = if !prefix.starts_with('/') {
            Some("must start with '/'")
        } else if prefix.ends_with('/') {
            Some("must not end with '/'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(KeyError::InvalidPrefix { prefix, reason }),
            None => Ok(KeyLayout { prefix }),
        }
    }

    /// The original prototype's layout: `/pods/<namespace>/<name>`, i.e. no
    /// prefix. This is the only way to get an empty prefix.
    pub fn fork() -> KeyLayout {
        KeyLayout {
            prefix: String::new(),
        }
    }

    /// The prefix, `""` for the fork layout.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefix every pod key starts with, e.g. `/registry/pods/`; suitable
    /// for an etcd range over all pods.
    pub fn pods_prefix(&self) -> String {
        format!("{}/pods/", self.prefix)
    }

    /// The key of pod `name` in namespace `namespace`, e.g.
    /// `/registry/pods/default/web-0`.
    pub fn pod_key(&self, namespace: &str, name: &str) -> Result<String, KeyError> {
        validate_namespace(namespace)?;
        validate_pod_name(name)?;
        Ok(format!("{}/pods/{namespace}/{name}", self.prefix))
    }

    /// The `(namespace, name)` of a pod key under this layout, or `None` if
    /// `key` is not exactly a valid pod key here (other resource, other
    /// prefix, extra path segments, invalid names, not UTF-8).
    pub fn parse_pod_key<'k>(&self, key: &'k [u8]) -> Option<(&'k str, &'k str)> {
        let rest = key
            .strip_prefix(self.prefix.as_bytes())?
            .strip_prefix(b"/pods/")?;
        let (namespace, name) = std::str::from_utf8(rest).ok()?.split_once('/')?;
        validate_namespace(namespace).ok()?;
        validate_pod_name(name).ok()?;
        Some((namespace, name))
    }
}

/// Checks a namespace as the apiserver does: a DNS-1123 label of at most 63
/// characters.
pub fn validate_namespace(namespace: &str) -> Result<(), KeyError> {
    let field = NAMESPACE_FIELD;
    if namespace.is_empty() {
        return Err(KeyError::Required { field });
    }
    if namespace.len() > NAMESPACE_MAX_LEN {
        return Err(KeyError::TooLong {
            field,
            value: namespace.to_owned(),
            max: NAMESPACE_MAX_LEN,
        });
    }
    if !is_dns1123_label(namespace) {
        return Err(KeyError::NotDns1123Label {
            field,
            value: namespace.to_owned(),
        });
    }
    Ok(())
}

/// Checks a pod name as the apiserver does: a DNS-1123 subdomain of at most
/// 253 characters.
pub fn validate_pod_name(name: &str) -> Result<(), KeyError> {
    let field = NAME_FIELD;
    if name.is_empty() {
        return Err(KeyError::Required { field });
    }
    if name.len() > POD_NAME_MAX_LEN {
        return Err(KeyError::TooLong {
            field,
            value: name.to_owned(),
            max: POD_NAME_MAX_LEN,
        });
    }
    if !name.split('.').all(is_dns1123_label) {
        return Err(KeyError::NotDns1123Subdomain {
            field,
            value: name.to_owned(),
        });
    }
    Ok(())
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, without a length limit (the subdomain
/// regex applies it per dot-separated part).
fn is_dns1123_label(s: &str) -> bool {
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && b.iter().all(|c| alnum(c) || *c == b'-')
        }
        _ => false,
    }
}
