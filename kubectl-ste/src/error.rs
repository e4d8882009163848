//! What the plugin prints when it fails. Every error is one line on stderr
//! and exit code 1, worded like kubectl's where kubectl has a wording.

use thiserror::Error;

/// A failure the user sees. `Display` is the complete line, prefix
/// included, so `main` prints it verbatim.
#[derive(Debug, Error)]
pub enum CliError {
    /// A plain `error: …` line (kubectl's prefix for client-side errors).
    #[error("error: {0}")]
    Message(String),

    /// The object does not exist, in kubectl's words for a 404.
    #[error("Error from server (NotFound): {resource} \"{name}\" not found")]
    NotFound {
        /// Plural resource, e.g. `pods`.
        resource: &'static str,
        /// The object's name.
        name: String,
    },

    /// The router or an agent refused the call (gRPC PERMISSION_DENIED),
    /// in kubectl's words for a 403; the message is kube-apiserver's, e.g.
    /// `rings.ste.io is forbidden: User "alice" cannot update resource …`.
    #[error("Error from server (Forbidden): {0}")]
    Forbidden(String),

    /// The router or an agent did not accept the credentials (gRPC
    /// UNAUTHENTICATED), in kubectl's words for a 401.
    #[error("error: You must be logged in to the server (Unauthorized)")]
    Unauthorized,

    /// Several failures (e.g. some of the pods given to `where`), each
    /// already a complete line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Many(Vec<CliError>),
}

impl CliError {
    /// `error: <msg>`.
    pub fn msg(msg: impl Into<String>) -> CliError {
        CliError::Message(msg.into())
    }
}

/// The refusal a gRPC status carries, if it is one: PERMISSION_DENIED is
/// [`CliError::Forbidden`], UNAUTHENTICATED [`CliError::Unauthorized`].
pub fn refusal(status: &tonic::Status) -> Option<CliError> {
    match status.code() {
        tonic::Code::PermissionDenied => Some(CliError::Forbidden(status_message(status))),
        tonic::Code::Unauthenticated => Some(CliError::Unauthorized),
        _ => None,
    }
}

/// `main` prints the error as it is: its `Display` is already the
/// complete, kubectl-worded line (or lines, for [`CliError::Many`]).
impl ste_main::Report for CliError {
    fn report(&self) -> String {
        self.to_string()
    }
}

/// Result of a plugin operation.
pub type CliResult<T> = Result<T, CliError>;

/// The innermost cause of `error`: for transport errors this is the part
/// that says what happened ("Connection refused (os error 111)") rather
/// than "transport error".
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// A gRPC status from the router or an agent as one line. The services put
/// the words the CLI should print in the message; the code is only added
/// when the message is empty.
pub fn status_message(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_match_kubectl() {
        assert_eq!(
            CliError::NotFound {
                resource: "pods",
                name: "web-0".into()
            }
            .to_string(),
            "Error from server (NotFound): pods \"web-0\" not found"
        );
        assert_eq!(CliError::msg("boom").to_string(), "error: boom");
        let forbidden = tonic::Status::permission_denied(
            "rings.ste.io is forbidden: User \"alice\" cannot update resource \"rings\" in API \
             group \"ste.io\" at the cluster scope",
        );
        assert_eq!(
            refusal(&forbidden).unwrap().to_string(),
            "Error from server (Forbidden): rings.ste.io is forbidden: User \"alice\" cannot \
             update resource \"rings\" in API group \"ste.io\" at the cluster scope"
        );
        assert_eq!(
            refusal(&tonic::Status::unauthenticated("Unauthorized"))
                .unwrap()
                .to_string(),
            "error: You must be logged in to the server (Unauthorized)"
        );
        assert!(refusal(&tonic::Status::unavailable("down")).is_none());
        let many = CliError::Many(vec![CliError::msg("a"), CliError::msg("b")]);
        assert_eq!(many.to_string(), "error: a\nerror: b");
    }
}
