//! Who is calling, as Kubernetes names users: a user name, groups, and
//! for token users the uid and extra attributes TokenReview returned (a
//! SubjectAccessReview gets them all back).

use std::collections::BTreeMap;

use x509_parser::prelude::{FromDer, X509Certificate};

/// The group every node identity is in (Kubernetes' `system:nodes`).
pub const NODES_GROUP: &str = "system:nodes";

/// The user-name prefix of a node identity (Kubernetes' `system:node:`).
pub const NODE_USER_PREFIX: &str = "system:node:";

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// A client certificate that the TLS handshake verified against
    /// `--client-ca-file`.
    Certificate,
    /// A bearer token that TokenReview authenticated.
    Token,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user name: a certificate's subject CN, or TokenReview's
    /// `status.user.username`.
    pub user: String,
    /// The groups: a certificate's subject O values, or TokenReview's
    /// `status.user.groups`.
    pub groups: Vec<String>,
    /// TokenReview's `status.user.uid` (empty for certificates).
    pub uid: String,
    /// TokenReview's `status.user.extra` (empty for certificates).
    pub extra: BTreeMap<String, Vec<String>>,
    /// How the caller was authenticated.
    pub proof: Proof,
}

/// Why a certificate gives no caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    /// Not DER X.509.
    #[error("the client certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// No subject CN: Kubernetes refuses such certificates as well.
    #[error("the client certificate's subject has no common name (CN), which names the user")]
    NoCommonName,
}

impl Caller {
    /// The caller a verified client certificate (DER) names, as
    /// kube-apiserver's x509 authenticator reads it: user = the subject's
    /// CN, groups = its O values in order.
    ///
    /// Errors: [`CertificateError`].
    pub fn from_certificate(der: &[u8]) -> Result<Caller, CertificateError> {
        let (_, certificate) = X509Certificate::from_der(der)
            .map_err(|e| CertificateError::Unparsable(e.to_string()))?;
        let subject = certificate.subject();
        let user = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .filter(|cn| !cn.is_empty())
            .ok_or(CertificateError::NoCommonName)?
            .to_owned();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_owned)
            .collect();
        Ok(Caller {
            user,
            groups,
            uid: String::new(),
            extra: BTreeMap::new(),
            proof: Proof::Certificate,
        })
    }

    /// The node this caller is, if it is a node identity: user
    /// `system:node:NAME` in group `system:nodes`, as Kubernetes' Node
    /// authorizer and NodeRestriction admission recognise kubelets.
    pub fn node(&self) -> Option<&str> {
        let name = self.user.strip_prefix(NODE_USER_PREFIX)?;
        let in_group = self.groups.iter().any(|g| g == NODES_GROUP);
        (in_group && !name.is_empty()).then_some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn certificate(cn: Option<&str>, organizations: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        for o in organizations {
            dn.push(DnType::OrganizationName, *o);
        }
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_certificate_names_user_and_groups() {
        // (rcgen keeps one value per attribute type, so one O here; the
        // parser takes every O, as kube-apiserver does.)
        let caller =
            Caller::from_certificate(&certificate(Some("alice"), &["ste-operators"])).unwrap();
        assert_eq!(caller.user, "alice");
        assert_eq!(caller.groups, ["ste-operators"]);
        assert_eq!(caller.proof, Proof::Certificate);
        assert_eq!(caller.node(), None);
    }

    #[test]
    fn a_node_is_system_node_name_in_system_nodes() {
        let node =
            Caller::from_certificate(&certificate(Some("system:node:node-a"), &["system:nodes"]))
                .unwrap();
        assert_eq!(node.node(), Some("node-a"));
        // The name alone is not enough, nor the group alone.
        let no_group =
            Caller::from_certificate(&certificate(Some("system:node:node-a"), &[])).unwrap();
        assert_eq!(no_group.node(), None);
        let no_name =
            Caller::from_certificate(&certificate(Some("system:node:"), &["system:nodes"]))
                .unwrap();
        assert_eq!(no_name.node(), None);
        let other =
            Caller::from_certificate(&certificate(Some("node-a"), &["system:nodes"])).unwrap();
        assert_eq!(other.node(), None);
    }

    #[test]
    fn a_certificate_without_cn_or_der_is_refused() {
        assert_eq!(
            Caller::from_certificate(&certificate(None, &["x"])),
            Err(CertificateError::NoCommonName)
        );
        assert!(matches!(
            Caller::from_certificate(b"not a certificate"),
            Err(CertificateError::Unparsable(_))
        ));
    }
}
