//! Whether a caller may do what they ask: the node rule for agents, and
//! for everyone else Kubernetes RBAC through SubjectAccessReview on the
//! virtual resource `rings.ste.io` — the way metrics-server and
//! kube-rbac-proxy delegate authentication (TokenReview) and authorisation
//! (SubjectAccessReview) to kube-apiserver.

use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use tonic::{Request, Status};

use crate::caller::{Caller, Proof};

/// The API group of the virtual resource that RBAC rules name.
pub const GROUP: &str = "ste.io";

/// The virtual resource that RBAC rules name (`rings.ste.io`): the ring and
/// everything `kubectl ste` shows or changes.
pub const RESOURCE: &str = "rings";

/// Members of this group may do everything without a SubjectAccessReview,
/// as kube-scheduler and kube-controller-manager let it in
/// (k8s.io/apiserver's delegating authorizer, `AlwaysAllowGroups`): the
/// cluster's superusers can still look at and repair STE while
/// kube-apiserver is down — which may be STE's doing.
pub const ALWAYS_ALLOWED_GROUP: &str = "system:masters";

/// How long a TokenReview that authenticated a token is trusted (as
/// k8s.io/apiserver's delegating authenticator: 10 s).
pub const TOKEN_TTL: Duration = Duration::from_secs(10);

/// How long a token TokenReview refused stays refused without asking again.
pub const REFUSED_TOKEN_TTL: Duration = Duration::from_secs(2);

/// How long an allowing SubjectAccessReview is trusted (as
/// k8s.io/apiserver's delegating authorizer: 10 s).
pub const ALLOWED_TTL: Duration = Duration::from_secs(10);

/// How long a denial is remembered: short, so a user who was just granted
/// a role is let in within seconds.
pub const DENIED_TTL: Duration = Duration::from_secs(2);

/// Entries per cache; a full cache is emptied (a burst of distinct callers
/// costs a few more reviews, never unbounded memory).
const CACHE_ENTRIES: usize = 4096;

/// How long one review may take before the call fails UNAVAILABLE.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// What kind of port a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// A port for machines (the router's `--admin-listen`, the agent's
    /// `--grpc-listen`): TLS refuses clients without a certificate; bearer
    /// tokens are ignored.
    Certificates,
    /// A port for users (`--user-listen`): a client certificate or a bearer
    /// token.
    Users,
}

/// The RBAC verb asked of `rings.ste.io`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// Look: status, ring, where a key is, an agent's status.
    Get,
    /// Change: join or leave a member.
    Update,
}

impl Verb {
    /// The verb as RBAC spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Update => "update",
        }
    }
}

/// What a request does, for the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Reads (`get`).
    Read,
    /// Joins a member to the ring (`update`; never a node).
    Join,
    /// Takes member NAME out of the ring (`update`; a node only itself,
    /// its drain).
    Leave(&'a str),
    /// Registers or heartbeats as node NAME: only that node.
    ActAsNode(&'a str),
}

/// Who may call, as chosen by the flags.
pub struct Access {
    mode: Mode,
}

enum Mode {
    /// `--insecure`: nobody is asked anything.
    Open,
    /// No Kubernetes API: a verified client certificate is enough (etcd's
    /// `--client-cert-auth` model); bearer tokens are refused.
    Certificates,
    /// TokenReview and SubjectAccessReview.
    Kubernetes(Box<Kubernetes>),
}

struct Kubernetes {
    authentication: kube::Client,
    authorization: kube::Client,
    tokens: Cache<String, Option<Caller>>,
    decisions: Cache<DecisionKey, Decision>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    user: String,
    groups: Vec<String>,
    uid: String,
    extra: Vec<(String, Vec<String>)>,
    verb: Verb,
}

#[derive(Debug, Clone)]
struct Decision {
    allowed: bool,
    reason: String,
}

/// A small map whose entries expire.
struct Cache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    fn new() -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(value, _)| value.clone())
    }

    fn put(&self, key: K, value: V, ttl: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (value, Instant::now() + ttl));
    }
}

/// UNAUTHENTICATED with kube-apiserver's word for it; the reason goes to
/// the log only (as kube-apiserver does not tell a client why).
fn unauthorized(reason: &str) -> Status {
    tracing::info!(reason, "request refused: not authenticated");
    Status::unauthenticated("Unauthorized")
}

/// PERMISSION_DENIED in kube-apiserver's words for a cluster-scoped
/// resource (`rings.ste.io is forbidden: User "u" cannot VERB resource
/// "rings" in API group "ste.io" at the cluster scope[: REASON]`), so
/// `kubectl ste` prints what kubectl would.
pub fn forbidden(user: &str, verb: Verb, reason: &str) -> Status {
    let mut message = format!(
        "{RESOURCE}.{GROUP} is forbidden: User {user:?} cannot {} resource {RESOURCE:?} in API \
         group {GROUP:?} at the cluster scope",
        verb.as_str()
    );
    if !reason.is_empty() {
        message.push_str(": ");
        message.push_str(reason);
    }
    Status::permission_denied(message)
}

/// The token of an `authorization: Bearer TOKEN` header, if any.
fn bearer<T>(request: &Request<T>) -> Result<Option<String>, Status> {
    let Some(value) = request.metadata().get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| unauthorized("authorization header is not text"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| unauthorized("authorization header is not 'Bearer TOKEN'"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(unauthorized("authorization header is not 'Bearer TOKEN'"));
    }
    Ok(Some(token.to_owned()))
}

/// A client of the Kubernetes API from a kubeconfig file, or the pod's
/// service account when `path` is `None`; each review is bounded by
/// [`REVIEW_TIMEOUT`].
async fn kube_client(flag: &str, path: Option<&Path>) -> anyhow::Result<kube::Client> {
    let mut config = match path {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?
        }
        None => kube::Config::incluster().map_err(|e| {
            anyhow::anyhow!("no {flag} and the in-cluster service account is not usable: {e}")
        })?,
    };
    config.connect_timeout = Some(REVIEW_TIMEOUT);
    config.read_timeout = Some(REVIEW_TIMEOUT);
    config.write_timeout = Some(REVIEW_TIMEOUT);
    kube::Client::try_from(config).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

impl Access {
    /// `--insecure`: every request is let through.
    pub fn open() -> Access {
        Access { mode: Mode::Open }
    }

    /// Without a Kubernetes API: a client certificate of `--client-ca-file`
    /// is enough for anything (except acting as another node); bearer
    /// tokens are refused.
    pub fn certificates_only() -> Access {
        Access {
            mode: Mode::Certificates,
        }
    }

    /// TokenReview through the API of `--authentication-kubeconfig` and
    /// SubjectAccessReview through that of `--authorization-kubeconfig`;
    /// either missing means the pod's service account.
    ///
    /// Errors: a kubeconfig that cannot be read, or no service account.
    pub async fn kubernetes(
        authentication_kubeconfig: Option<&Path>,
        authorization_kubeconfig: Option<&Path>,
    ) -> anyhow::Result<Access> {
        let authentication =
            kube_client("--authentication-kubeconfig", authentication_kubeconfig).await?;
        let authorization =
            kube_client("--authorization-kubeconfig", authorization_kubeconfig).await?;
        Ok(Access {
            mode: Mode::Kubernetes(Box::new(Kubernetes {
                authentication,
                authorization,
                tokens: Cache::new(),
                decisions: Cache::new(),
            })),
        })
    }

    /// The access the flags ask for: `--insecure` opens everything; either
    /// kubeconfig, or running in a pod (`KUBERNETES_SERVICE_HOST` set),
    /// asks Kubernetes; otherwise certificates only. Logs which.
    pub async fn from_flags(
        insecure: bool,
        authentication_kubeconfig: Option<&Path>,
        authorization_kubeconfig: Option<&Path>,
    ) -> anyhow::Result<Access> {
        let access = if insecure {
            Access::open()
        } else if authentication_kubeconfig.is_some()
            || authorization_kubeconfig.is_some()
            || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        {
            Access::kubernetes(authentication_kubeconfig, authorization_kubeconfig).await?
        } else {
            Access::certificates_only()
        };
        tracing::info!(access = access.describe(), "API access");
        Ok(access)
    }

    /// One line on who may call, for logs.
    pub fn describe(&self) -> &'static str {
        match self.mode {
            Mode::Open => "insecure: plain HTTP, no authentication",
            Mode::Certificates => {
                "certificates only: any client certificate of --client-ca-file; no bearer tokens"
            }
            Mode::Kubernetes(_) => {
                "Kubernetes: TokenReview and SubjectAccessReview on rings.ste.io"
            }
        }
    }

    /// Who calls: `None` when access is open, else the caller of a verified
    /// client certificate or (on a [`Door::Users`] port) of a bearer token.
    ///
    /// Errors: UNAUTHENTICATED `Unauthorized` without credentials or with
    /// refused ones; UNAVAILABLE when the Kubernetes API cannot be asked.
    pub async fn caller<T>(
        &self,
        door: Door,
        request: &Request<T>,
    ) -> Result<Option<Caller>, Status> {
        if let Mode::Open = self.mode {
            return Ok(None);
        }
        if let Some(leaf) = request.peer_certs().as_deref().and_then(|c| c.first()) {
            return Caller::from_certificate(leaf)
                .map(Some)
                .map_err(|e| unauthorized(&e.to_string()));
        }
        if door == Door::Certificates {
            return Err(unauthorized("no client certificate"));
        }
        let Some(token) = bearer(request)? else {
            return Err(unauthorized(
                "neither a client certificate nor a bearer token",
            ));
        };
        match &self.mode {
            Mode::Open => Ok(None),
            Mode::Certificates => Err(unauthorized(
                "a bearer token, but no Kubernetes API to review it (--authentication-kubeconfig)",
            )),
            Mode::Kubernetes(kube) => kube.review_token(token).await.map(Some),
        }
    }

    /// Whether `caller` may `verb` rings.ste.io: always with certificates
    /// only or in [`ALWAYS_ALLOWED_GROUP`]; else as SubjectAccessReview
    /// answers.
    ///
    /// Errors: PERMISSION_DENIED in kube-apiserver's words ([`forbidden`]);
    /// UNAVAILABLE when the Kubernetes API cannot be asked.
    pub async fn authorize(&self, caller: &Caller, verb: Verb) -> Result<(), Status> {
        match &self.mode {
            Mode::Open | Mode::Certificates => Ok(()),
            Mode::Kubernetes(_) if caller.groups.iter().any(|g| g == ALWAYS_ALLOWED_GROUP) => {
                Ok(())
            }
            Mode::Kubernetes(kube) => kube.review_access(caller, verb).await,
        }
    }

    /// Authenticates the request and decides `action`:
    /// - a node (`system:node:NAME` in `system:nodes`) may read, and
    ///   register, heartbeat or leave only as NAME — never join a member or
    ///   act as another node (as Kubernetes' NodeRestriction keeps a kubelet
    ///   to its own Node);
    /// - registering and heartbeating are for nodes only;
    /// - anyone else needs RBAC's `get` on rings.ste.io to read and
    ///   `update` to join or leave.
    ///
    /// Errors: as [`Access::caller`] and [`Access::authorize`].
    pub async fn check<T>(
        &self,
        door: Door,
        request: &Request<T>,
        action: Action<'_>,
    ) -> Result<(), Status> {
        let Some(caller) = self.caller(door, request).await? else {
            return Ok(());
        };
        if let Some(node) = caller.node() {
            return match action {
                Action::Read => Ok(()),
                Action::ActAsNode(name) | Action::Leave(name) if name == node => Ok(()),
                Action::ActAsNode(name) | Action::Leave(name) => Err(Status::permission_denied(
                    format!("node {:?} may not act as node {name:?}", caller.user),
                )),
                Action::Join => Err(Status::permission_denied(format!(
                    "node {:?} may not join members: the router joins registered agents itself",
                    caller.user
                ))),
            };
        }
        match action {
            Action::ActAsNode(name) => Err(Status::permission_denied(format!(
                "User {:?} may not register or heartbeat as node {name:?}: only the node itself \
                 (a client certificate with CN system:node:{name} and O system:nodes)",
                caller.user
            ))),
            Action::Read => self.authorize(&caller, Verb::Get).await,
            Action::Join | Action::Leave(_) => self.authorize(&caller, Verb::Update).await,
        }
    }
}

fn unavailable(review: &str, error: impl std::fmt::Display) -> Status {
    tracing::warn!(%error, review, "the Kubernetes API did not answer a review");
    Status::unavailable(format!(
        "cannot check the credentials: the Kubernetes API did not answer the {review}: {error}"
    ))
}

impl Kubernetes {
    async fn review_token(&self, token: String) -> Result<Caller, Status> {
        if let Some(known) = self.tokens.get(&token) {
            return known.ok_or_else(|| unauthorized("token refused by TokenReview (cached)"));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.authentication.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| unavailable("TokenReview", e))?;
        let status = answer.status.unwrap_or_default();
        let caller = match (status.authenticated, status.user) {
            (Some(true), Some(user)) if user.username.as_deref().is_some_and(|u| !u.is_empty()) => {
                Some(Caller {
                    user: user.username.unwrap_or_default(),
                    groups: user.groups.unwrap_or_default(),
                    uid: user.uid.unwrap_or_default(),
                    extra: user.extra.unwrap_or_default().into_iter().collect(),
                    proof: Proof::Token,
                })
            }
            _ => None,
        };
        let ttl = if caller.is_some() {
            TOKEN_TTL
        } else {
            REFUSED_TOKEN_TTL
        };
        self.tokens.put(token, caller.clone(), ttl);
        caller.ok_or_else(|| {
            unauthorized(&format!(
                "token refused by TokenReview: {}",
                status.error.unwrap_or_default()
            ))
        })
    }

    async fn review_access(&self, caller: &Caller, verb: Verb) -> Result<(), Status> {
        let key = DecisionKey {
            user: caller.user.clone(),
            groups: caller.groups.clone(),
            uid: caller.uid.clone(),
            extra: caller
                .extra
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            verb,
        };
        let decision = match self.decisions.get(&key) {
            Some(decision) => decision,
            None => {
                let decision = self.ask(caller, verb).await?;
                let ttl = if decision.allowed {
                    ALLOWED_TTL
                } else {
                    DENIED_TTL
                };
                self.decisions.put(key, decision.clone(), ttl);
                decision
            }
        };
        if decision.allowed {
            Ok(())
        } else {
            tracing::info!(user = %caller.user, verb = verb.as_str(), reason = %decision.reason, "request forbidden");
            Err(forbidden(&caller.user, verb, &decision.reason))
        }
    }

    async fn ask(&self, caller: &Caller, verb: Verb) -> Result<Decision, Status> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.user.clone()),
                groups: Some(caller.groups.clone()),
                uid: (!caller.uid.is_empty()).then(|| caller.uid.clone()),
                extra: (!caller.extra.is_empty())
                    .then(|| caller.extra.clone().into_iter().collect()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(GROUP.into()),
                    resource: Some(RESOURCE.into()),
                    verb: Some(verb.as_str().into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.authorization.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| unavailable("SubjectAccessReview", e))?;
        let status = answer.status.unwrap_or_default();
        Ok(Decision {
            allowed: status.allowed && status.denied != Some(true),
            reason: status.reason.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authorization: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        request
    }

    #[test]
    fn forbidden_reads_as_kube_apiservers_message() {
        let status = forbidden("alice", Verb::Update, "");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            status.message(),
            "rings.ste.io is forbidden: User \"alice\" cannot update resource \"rings\" in API \
             group \"ste.io\" at the cluster scope"
        );
        assert!(
            forbidden("bob", Verb::Get, "no RBAC policy matched")
                .message()
                .ends_with("at the cluster scope: no RBAC policy matched")
        );
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(&request(None)).unwrap(), None);
        assert_eq!(
            bearer(&request(Some("Bearer abc.def"))).unwrap().as_deref(),
            Some("abc.def")
        );
        assert_eq!(
            bearer(&request(Some("bearer  t "))).unwrap().as_deref(),
            Some("t")
        );
        for bad in ["Basic dXNlcg==", "Bearer", "Bearer ", "token"] {
            let status = bearer(&request(Some(bad))).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad}");
            assert_eq!(status.message(), "Unauthorized");
        }
    }

    #[tokio::test]
    async fn open_access_asks_nothing() {
        let access = Access::open();
        assert!(
            access
                .check(Door::Users, &request(None), Action::Join)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn certificates_only_refuses_requests_without_a_certificate() {
        let access = Access::certificates_only();
        for door in [Door::Users, Door::Certificates] {
            for authorization in [None, Some("Bearer t")] {
                let status = access
                    .check(door, &request(authorization), Action::Read)
                    .await
                    .unwrap_err();
                assert_eq!(status.code(), tonic::Code::Unauthenticated);
                assert_eq!(status.message(), "Unauthorized");
            }
        }
    }

    /// Kubernetes access whose API does not answer (nothing listens on
    /// port 1 of loopback).
    fn kubernetes_without_an_api() -> Access {
        let client = || {
            let mut config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
            config.connect_timeout = Some(Duration::from_secs(2));
            kube::Client::try_from(config).unwrap()
        };
        Access {
            mode: Mode::Kubernetes(Box::new(Kubernetes {
                authentication: client(),
                authorization: client(),
                tokens: Cache::new(),
                decisions: Cache::new(),
            })),
        }
    }

    fn user(groups: &[&str]) -> Caller {
        Caller {
            user: "root".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            uid: String::new(),
            extra: Default::default(),
            proof: Proof::Certificate,
        }
    }

    #[tokio::test]
    async fn system_masters_needs_no_review_everyone_else_does() {
        let access = kubernetes_without_an_api();
        for verb in [Verb::Get, Verb::Update] {
            assert!(
                access
                    .authorize(&user(&["ops", ALWAYS_ALLOWED_GROUP]), verb)
                    .await
                    .is_ok()
            );
            let status = access.authorize(&user(&["ops"]), verb).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert!(
                status.message().contains("SubjectAccessReview"),
                "{status:?}"
            );
        }
    }

    #[test]
    fn cache_entries_expire() {
        let cache = Cache::new();
        cache.put("a", 1, Duration::from_secs(60));
        cache.put("b", 2, Duration::ZERO);
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"b"), None);
    }
}
