//! Who may call STE's gRPC APIs (the router's `ste.v1.Ring`, the agents'
//! `ste.v1.Agent`), the way Kubernetes' own add-on servers decide it
//! (metrics-server, kube-rbac-proxy: "delegated" authentication and
//! authorisation):
//!
//! - [`tls`]: the ports' TLS. A *certificate door* (the router's
//!   `--admin-listen`, the agent's `--grpc-listen`) refuses the handshake
//!   without a client certificate of `--client-ca-file`; a *user door*
//!   (`--user-listen`) makes it optional and takes a bearer token instead.
//! - [`caller`]: who is calling: a verified client certificate's subject
//!   (user = CN, groups = O, as kube-apiserver reads it), or a bearer token
//!   that Kubernetes' TokenReview vouches for. A node is
//!   `system:node:NAME` in group `system:nodes` (Kubernetes' node
//!   identity).
//! - [`access`]: may they: SubjectAccessReview on the virtual resource
//!   `rings.ste.io` (verb `get` to look, `update` to change the ring), so
//!   operators grant it with ordinary RBAC; nodes act only as themselves.

#![warn(missing_docs)]

pub mod access;
pub mod caller;
pub mod tls;

pub use access::{Access, Action, Door, Verb};
pub use caller::Caller;
