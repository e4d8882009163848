//! The router's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// An initial ring member from `--member NAME=URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFlag {
    pub name: String,
    pub endpoint: String,
}

impl std::str::FromStr for MemberFlag {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (name, endpoint) = text.split_once('=').ok_or_else(|| {
            format!("{text:?}: write NAME=URL, e.g. node-a=http://127.0.0.2:2279")
        })?;
        if name.is_empty() {
            return Err(format!("{text:?}: the member name is empty"));
        }
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!(
                "{text:?}: the URL must start with http:// or https://"
            ));
        }
        Ok(MemberFlag {
            name: name.to_owned(),
            endpoint: endpoint.to_owned(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub advertise_client_url: String,
    pub members: Vec<MemberFlag>,
    pub vnodes: u32,
    pub state_file: PathBuf,
    pub event_log_bytes: usize,
    pub max_request_bytes: usize,
    pub revision_block: i64,
    pub shard_connect_timeout: Duration,
    pub shard_timeout: Duration,
    pub health_interval: Duration,
    pub progress_notify_interval: Duration,
    pub etcd_version: String,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e}: write e.g. 500ms, 2s or 1m"))
}
