//! What must survive a router restart: the ring (members and generation),
//! the revision high-water mark and the granted leases, in a small text
//! file replaced atomically (write temp, fsync, rename, fsync dir).
//!
//! Revisions are reserved in blocks: the file records a mark above every
//! revision handed out so far, and only the step past the mark costs an
//! fsync. After a restart revisions continue above the mark, so none is
//! ever reused even if the router died mid-block.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ste_core::revision::GlobalRevision;

/// A ring member as the state records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// The member (node) name.
    pub name: String,
    /// Its shard's etcd client URL.
    pub endpoint: String,
    /// Its ring weight.
    pub weight: u32,
}

/// A granted lease as the state records it (its keys are found by the
/// start-up scan: each envelope carries its lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The lease ID.
    pub id: i64,
    /// The TTL it was granted with, in seconds.
    pub ttl: i64,
}

/// What the router persists: everything the shards' envelopes cannot tell
/// a restarted router.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterState {
    /// No revision above it was handed out; a restarted router starts
    /// above it.
    pub reserved_revision: GlobalRevision,
    /// The committed ring's generation.
    pub generation: u64,
    /// The committed ring's members.
    pub members: Vec<MemberRecord>,
    /// The granted leases.
    pub leases: Vec<LeaseRecord>,
    /// Nodes an operator took out of the ring (`Ring/Leave` without
    /// `drain`), sorted: auto-join leaves them out until a Join names them,
    /// whatever restarts in between.
    pub held_out: Vec<String>,
    /// The members of a ring change in progress: written before any key
    /// moves, cleared when the new ring is committed. A router that finds it
    /// at start-up resumes the change.
    pub target: Option<Vec<MemberRecord>>,
}

/// Reading or writing the router state failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state could not be read.
    #[error("cannot read state file {path}: {source}")]
    Read {
        /// The file (or etcd endpoint and key).
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state could not be written (it is written before the change it
    /// records takes effect, so nothing changed).
    #[error("cannot write state file {path}: {source}")]
    Write {
        /// The file (or etcd endpoint and key).
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the state file makes no sense.
    #[error("state file {path} line {line}: {reason}; fix or remove the line")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

const HEADER: &str = "# ste-router state v1";

impl RouterState {
    /// The state in the file format (`# ste-router state v1`, one
    /// `key value` line per item).
    pub fn render(&self) -> String {
        let mut out = format!(
            "{HEADER}\nreserved_revision {}\ngeneration {}\n",
            self.reserved_revision.0, self.generation
        );
        for m in &self.members {
            out.push_str(&format!("member {} {} {}\n", m.name, m.endpoint, m.weight));
        }
        for l in &self.leases {
            out.push_str(&format!("lease {} {}\n", l.id, l.ttl));
        }
        for name in &self.held_out {
            out.push_str(&format!("held_out {name}\n"));
        }
        if let Some(target) = &self.target {
            out.push_str("migration\n");
            for m in target {
                out.push_str(&format!("target {} {} {}\n", m.name, m.endpoint, m.weight));
            }
        }
        out
    }

    /// Parses [`RouterState::render`]'s format; `path` names the source in
    /// errors.
    ///
    /// Errors: `Parse` naming the first bad line.
    pub fn parse(text: &str, path: &Path) -> Result<Self, StateError> {
        let mut state = RouterState::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |reason: &str| StateError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                reason: reason.to_owned(),
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let number = |s: &str| {
                s.parse::<i64>()
                    .map_err(|_| error(&format!("{s:?} is not a number")))
            };
            match fields.as_slice() {
                ["reserved_revision", n] => state.reserved_revision = GlobalRevision(number(n)?),
                ["generation", n] => state.generation = number(n)? as u64,
                ["member", name, endpoint, weight] => state.members.push(MemberRecord {
                    name: (*name).to_owned(),
                    endpoint: (*endpoint).to_owned(),
                    weight: number(weight)? as u32,
                }),
                ["lease", id, ttl] => state.leases.push(LeaseRecord {
                    id: number(id)?,
                    ttl: number(ttl)?,
                }),
                ["held_out", name] => state.held_out.push((*name).to_owned()),
                ["migration"] => state.target = Some(Vec::new()),
                ["target", name, endpoint, weight] => state
                    .target
                    .get_or_insert_with(Vec::new)
                    .push(MemberRecord {
                        name: (*name).to_owned(),
                        endpoint: (*endpoint).to_owned(),
                        weight: number(weight)? as u32,
                    }),
                _ => return Err(error(&format!("unknown line {line:?}"))),
            }
        }
        Ok(state)
    }
}

/// The file-backed state store.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file at `path` (not read yet).
    pub fn new(path: PathBuf) -> Self {
        StateFile { path }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored state, or the empty state if the file does not exist yet.
    pub fn load(&self) -> Result<RouterState, StateError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => RouterState::parse(&text, &self.path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RouterState::default()),
            Err(source) => Err(StateError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the file durably: a crash leaves either the old or the new
    /// content, never a mix.
    pub fn store(&self, state: &RouterState) -> Result<(), StateError> {
        let write_error = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(write_error)?;
        let tmp = self.path.with_extension("tmp");
        {
            let mut file = fs::File::create(&tmp).map_err(write_error)?;
            file.write_all(state.render().as_bytes())
                .map_err(write_error)?;
            file.sync_all().map_err(write_error)?;
        }
        fs::rename(&tmp, &self.path).map_err(write_error)?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_file() {
        let dir = std::env::temp_dir().join(format!("ste-state-test-{}", std::process::id()));
        let file = StateFile::new(dir.join("state"));
        assert_eq!(file.load().unwrap(), RouterState::default());
        let state = RouterState {
            reserved_revision: GlobalRevision(20_000),
            generation: 3,
            members: vec![MemberRecord {
                name: "node-a".into(),
                endpoint: "http://127.0.0.2:2279".into(),
                weight: 2,
            }],
            leases: vec![LeaseRecord { id: 7, ttl: 60 }],
            held_out: vec!["node-c".into(), "node-d".into()],
            target: Some(vec![MemberRecord {
                name: "node-b".into(),
                endpoint: "http://127.0.0.3:2279".into(),
                weight: 1,
            }]),
        };
        file.store(&state).unwrap();
        assert_eq!(file.load().unwrap(), state);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn rejects_garbage_with_the_line_number() {
        let err = RouterState::parse("generation 1\nbogus\n", Path::new("s")).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = RouterState::parse("generation x\n", Path::new("s")).unwrap_err();
        assert!(err.to_string().contains("not a number"), "{err}");
    }
}

/// The state file behind an async lock: every change is read-modify-write
/// of the whole state, persisted before the change is used.
#[derive(Debug)]
pub struct StateStore {
    backend: Backend,
    state: tokio::sync::Mutex<RouterState>,
}

/// Where the state lives: a local file, or a key in the control-plane etcd
/// (so the router can move between control-plane nodes).
#[derive(Debug)]
enum Backend {
    File(Arc<StateFile>),
    Etcd(Box<EtcdState>),
    /// Nothing persisted (unit tests).
    Memory,
}

/// The state as one value under one key of an etcd cluster. etcd's own
/// durability (Raft, fsync) replaces the file's fsync.
#[derive(Debug, Clone)]
pub struct EtcdState {
    client: ste_proto::etcd::etcdserverpb::kv_client::KvClient<tonic::transport::Channel>,
    key: Vec<u8>,
    endpoints: String,
}

impl EtcdState {
    /// Connects (lazily) to the first reachable of `endpoints`. `https://`
    /// endpoints use `tls` (the `--state-etcd-cafile/-certfile/-keyfile`
    /// settings, plus the system roots); `tls` with an `http://` endpoint is
    /// refused rather than silently unused.
    ///
    /// # Errors
    ///
    /// [`StateError::Parse`] naming the endpoint that is not a valid URL,
    /// is `http://` while `tls` is given, or whose TLS settings are refused.
    pub fn new(
        endpoints: &[String],
        key: &str,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Result<Self, StateError> {
        let error = |reason: String| StateError::Parse {
            path: PathBuf::from(endpoints.join(",")),
            line: 0,
            reason,
        };
        let channels = endpoints
            .iter()
            .map(|url| {
                let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                    .map_err(|e| error(format!("bad --state-etcd URL {url:?}: {e}")))?
                    .connect_timeout(std::time::Duration::from_secs(2))
                    .timeout(std::time::Duration::from_secs(10));
                if url.starts_with("https://") {
                    let tls = tls.clone().unwrap_or_default().with_enabled_roots();
                    endpoint
                        .tls_config(tls)
                        .map_err(|e| error(format!("TLS towards --state-etcd {url:?}: {e}")))
                } else if tls.is_some() {
                    Err(error(format!(
                        "--state-etcd {url:?} is plain http:// but --state-etcd-cafile, \
                         --state-etcd-certfile or --state-etcd-keyfile is given: write https://"
                    )))
                } else {
                    Ok(endpoint)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let channel = tonic::transport::Channel::balance_list(channels.into_iter());
        Ok(EtcdState {
            client: ste_proto::etcd::etcdserverpb::kv_client::KvClient::new(channel),
            key: key.as_bytes().to_vec(),
            endpoints: endpoints.join(","),
        })
    }

    async fn load(&self) -> Result<RouterState, StateError> {
        let response = self
            .client
            .clone()
            .range(ste_proto::etcd::etcdserverpb::RangeRequest {
                key: self.key.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| self.error(e))?
            .into_inner();
        match response.kvs.first() {
            Some(kv) => RouterState::parse(
                &String::from_utf8_lossy(&kv.value),
                Path::new(&self.endpoints),
            ),
            None => Ok(RouterState::default()),
        }
    }

    async fn store(&self, state: &RouterState) -> Result<(), StateError> {
        self.client
            .clone()
            .put(ste_proto::etcd::etcdserverpb::PutRequest {
                key: self.key.clone(),
                value: state.render().into_bytes(),
                ..Default::default()
            })
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    fn error(&self, status: tonic::Status) -> StateError {
        StateError::Write {
            path: PathBuf::from(format!(
                "etcd {} key {}",
                self.endpoints,
                String::from_utf8_lossy(&self.key)
            )),
            source: std::io::Error::other(status.message().to_owned()),
        }
    }
}

impl StateStore {
    /// Keeps the state in `file` (read now; a missing file is an empty
    /// state).
    ///
    /// Errors: `Read` or `Parse`.
    pub fn open(file: StateFile) -> Result<Self, StateError> {
        let state = file.load()?;
        Ok(StateStore {
            backend: Backend::File(Arc::new(file)),
            state: tokio::sync::Mutex::new(state),
        })
    }

    /// A state store that persists nothing: for unit tests, where a router
    /// never restarts.
    pub fn in_memory() -> Self {
        StateStore {
            backend: Backend::Memory,
            state: tokio::sync::Mutex::new(RouterState::default()),
        }
    }

    /// Keeps the state in an etcd cluster (e.g. the control plane's).
    pub async fn open_etcd(etcd: EtcdState) -> Result<Self, StateError> {
        let state = etcd.load().await?;
        Ok(StateStore {
            backend: Backend::Etcd(Box::new(etcd)),
            state: tokio::sync::Mutex::new(state),
        })
    }

    /// The state now.
    pub async fn snapshot(&self) -> RouterState {
        self.state.lock().await.clone()
    }

    /// Applies `change` and persists the result (fsync) before returning.
    pub async fn update(
        &self,
        change: impl FnOnce(&mut RouterState),
    ) -> Result<(), crate::error::StoreError> {
        let mut state = self.state.lock().await;
        let mut next = state.clone();
        change(&mut next);
        if next == *state {
            return Ok(());
        }
        let stored = match &self.backend {
            Backend::File(file) => {
                let file = file.clone();
                let to_store = next.clone();
                tokio::task::spawn_blocking(move || file.store(&to_store))
                    .await
                    .map_err(|e| {
                        crate::error::StoreError::Internal(format!("state writer failed: {e}"))
                    })?
            }
            Backend::Etcd(etcd) => etcd.store(&next).await,
            Backend::Memory => Ok(()),
        };
        stored.map_err(|e| crate::error::StoreError::Internal(e.to_string()))?;
        *state = next;
        Ok(())
    }

    /// Persists `through` as the reservation high-water mark (never
    /// lowers it).
    pub async fn reserve_revisions(
        &self,
        through: GlobalRevision,
    ) -> Result<(), crate::error::StoreError> {
        self.update(|s| s.reserved_revision = s.reserved_revision.max(through))
            .await
    }
}
