//! The requests the fuzzer sends, in the reference etcd's terms: every
//! revision and lease ID a request names is etcd's, and [`Ids`] translates
//! it for the router just before sending.

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, LeaseGrantOptions,
    LeaseTimeToLiveOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};

use crate::answer::{Answer, TxnOut};

/// The keys a request names: etcd's `key` and `range_end` forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Keys {
    /// One key (no range_end).
    One(String),
    /// Every key starting with the prefix (range_end = prefix + 1).
    Prefix(String),
    /// `[from, to)`.
    Range(String, String),
    /// Every key >= the key (range_end = "\0").
    FromKey(String),
    /// Every key (key = range_end = "\0").
    All,
}

impl Keys {
    /// Whether `key` is in the range, as etcd reads `key`/`range_end`.
    pub(crate) fn contains(&self, key: &str) -> bool {
        match self {
            Keys::One(k) => key == k,
            Keys::Prefix(p) => key.starts_with(p.as_str()),
            Keys::Range(from, to) => from.as_str() <= key && key < to.as_str(),
            Keys::FromKey(from) => key >= from.as_str(),
            Keys::All => true,
        }
    }

    /// The request's `key` field.
    pub(crate) fn key(&self) -> &str {
        match self {
            Keys::One(k) | Keys::Prefix(k) | Keys::Range(k, _) | Keys::FromKey(k) => k,
            Keys::All => "\0",
        }
    }

    fn get(&self, options: GetOptions) -> GetOptions {
        match self {
            Keys::One(_) => options,
            Keys::Prefix(_) => options.with_prefix(),
            Keys::Range(_, to) => options.with_range(to.as_str()),
            Keys::FromKey(_) => options.with_from_key(),
            Keys::All => options.with_all_keys(),
        }
    }

    fn delete(&self, options: DeleteOptions) -> DeleteOptions {
        match self {
            Keys::One(_) => options,
            Keys::Prefix(_) => options.with_prefix(),
            Keys::Range(_, to) => options.with_range(to.as_str()),
            Keys::FromKey(_) => options.with_from_key(),
            Keys::All => options.with_all_keys(),
        }
    }

    pub(crate) fn watch(&self, options: etcd_client::WatchOptions) -> etcd_client::WatchOptions {
        match self {
            Keys::One(_) => options,
            Keys::Prefix(_) => options.with_prefix(),
            Keys::Range(_, to) => options.with_range(to.as_str()),
            Keys::FromKey(_) => options.with_from_key(),
            Keys::All => options.with_all_keys(),
        }
    }
}

/// A Range's options.
#[derive(Debug, Clone, Default)]
pub(crate) struct RangeOpts {
    pub(crate) limit: i64,
    /// etcd's revision; 0 = current.
    pub(crate) revision: i64,
    pub(crate) count_only: bool,
    pub(crate) keys_only: bool,
    /// Sorted ascending by key, given explicitly (the one sort the router
    /// serves, docs/router.md "Range").
    pub(crate) sort_by_key: bool,
}

/// A Txn compare on one key; revisions and leases are etcd's.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(String),
    Lease(i64),
}

#[derive(Debug, Clone)]
pub(crate) struct Cmp {
    pub(crate) key: String,
    pub(crate) op: CompareOp,
    pub(crate) target: Target,
}

/// One operation of a Txn branch.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Get(Keys, RangeOpts),
    Put {
        key: String,
        value: String,
        prev_kv: bool,
    },
    Delete {
        key: String,
        prev_kv: bool,
    },
}

/// One request of a sequence.
#[derive(Debug, Clone)]
pub(crate) enum Req {
    Put {
        key: String,
        value: String,
        prev_kv: bool,
        /// etcd's lease ID, 0 for none.
        lease: i64,
        ignore_value: bool,
        ignore_lease: bool,
    },
    Range(Keys, RangeOpts),
    Delete {
        keys: Keys,
        prev_kv: bool,
    },
    Txn {
        compares: Vec<Cmp>,
        success: Vec<Op>,
        failure: Vec<Op>,
    },
    Compact {
        revision: i64,
        physical: bool,
    },
    /// Opens watch number `watch` (the fuzzer's index, one stream each).
    WatchCreate {
        watch: usize,
        keys: Keys,
        /// etcd's revision; 0 = from now.
        start: i64,
        prev_kv: bool,
        no_put: bool,
        no_delete: bool,
    },
    WatchCancel {
        watch: usize,
    },
    WatchProgress {
        watch: usize,
    },
    /// `id` 0: the server picks one.
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        lease: i64,
    },
    LeaseKeepAlive {
        lease: i64,
    },
    LeaseTimeToLive {
        lease: i64,
        keys: bool,
    },
    LeaseLeases,
}

/// Translation of the revisions and lease IDs a request names, from the
/// reference etcd's numbers to the side's own (identity for etcd).
pub(crate) trait Ids {
    fn revision(&self, etcd: i64) -> i64;
    fn lease(&self, etcd: i64) -> i64;
}

/// The reference side: numbers are its own.
pub(crate) struct Same;

impl Ids for Same {
    fn revision(&self, etcd: i64) -> i64 {
        etcd
    }
    fn lease(&self, etcd: i64) -> i64 {
        etcd
    }
}

fn header(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map(|h| h.revision()).unwrap_or(-1)
}

fn get_options(o: &RangeOpts, keys: &Keys, ids: &dyn Ids) -> GetOptions {
    let mut options = keys.get(GetOptions::new());
    if o.limit > 0 {
        options = options.with_limit(o.limit);
    }
    if o.revision != 0 {
        options = options.with_revision(ids.revision(o.revision));
    }
    if o.count_only {
        options = options.with_count_only();
    }
    if o.keys_only {
        options = options.with_keys_only();
    }
    if o.sort_by_key {
        options = options.with_sort(SortTarget::Key, SortOrder::Ascend);
    }
    options
}

fn txn_op(op: &Op, ids: &dyn Ids) -> TxnOp {
    match op {
        Op::Get(keys, o) => TxnOp::get(keys.key(), Some(get_options(o, keys, ids))),
        Op::Put {
            key,
            value,
            prev_kv,
        } => TxnOp::put(
            key.as_str(),
            value.as_str(),
            prev_kv.then(|| PutOptions::new().with_prev_key()),
        ),
        Op::Delete { key, prev_kv } => TxnOp::delete(
            key.as_str(),
            prev_kv.then(|| DeleteOptions::new().with_prev_key()),
        ),
    }
}

impl Req {
    /// Sends a KV or lease request (not a watch request) and returns its
    /// answer, revisions and leases still in the side's own numbers.
    pub(crate) async fn send(&self, client: &mut Client, ids: &dyn Ids) -> Answer {
        let result = match self {
            Req::Put {
                key,
                value,
                prev_kv,
                lease,
                ignore_value,
                ignore_lease,
            } => {
                let mut options = PutOptions::new();
                if *prev_kv {
                    options = options.with_prev_key();
                }
                if *lease != 0 {
                    options = options.with_lease(ids.lease(*lease));
                }
                if *ignore_value {
                    options = options.with_ignore_value();
                }
                if *ignore_lease {
                    options = options.with_ignore_lease();
                }
                let value = if *ignore_value { "" } else { value.as_str() };
                client
                    .put(key.as_str(), value, Some(options))
                    .await
                    .map(|r| Answer::Put {
                        header: header(r.header()),
                        prev: r.prev_key().map(crate::answer::Kv::of),
                    })
            }
            Req::Range(keys, o) => client
                .get(keys.key(), Some(get_options(o, keys, ids)))
                .await
                .map(|r| Answer::Range(crate::answer::RangeOut::of(&r))),
            Req::Delete { keys, prev_kv } => {
                let mut options = keys.delete(DeleteOptions::new());
                if *prev_kv {
                    options = options.with_prev_key();
                }
                client
                    .delete(keys.key(), Some(options))
                    .await
                    .map(|r| Answer::Delete {
                        header: header(r.header()),
                        deleted: r.deleted(),
                        prev: r.prev_kvs().iter().map(crate::answer::Kv::of).collect(),
                    })
            }
            Req::Txn {
                compares,
                success,
                failure,
            } => {
                let compares: Vec<Compare> = compares
                    .iter()
                    .map(|c| match &c.target {
                        Target::Version(v) => Compare::version(c.key.as_str(), c.op, *v),
                        Target::Create(r) => {
                            Compare::create_revision(c.key.as_str(), c.op, ids.revision(*r))
                        }
                        Target::Mod(r) => {
                            Compare::mod_revision(c.key.as_str(), c.op, ids.revision(*r))
                        }
                        Target::Value(v) => Compare::value(c.key.as_str(), c.op, v.as_str()),
                        Target::Lease(l) => Compare::lease(c.key.as_str(), c.op, ids.lease(*l)),
                    })
                    .collect();
                let branch = |ops: &[Op]| ops.iter().map(|op| txn_op(op, ids)).collect::<Vec<_>>();
                let txn = Txn::new()
                    .when(compares)
                    .and_then(branch(success))
                    .or_else(branch(failure));
                client.txn(txn).await.map(|r| Answer::Txn(TxnOut::of(&r)))
            }
            Req::Compact { revision, physical } => client
                .compact(
                    ids.revision(*revision),
                    physical.then(|| CompactionOptions::new().with_physical()),
                )
                .await
                .map(|r| Answer::Compact {
                    header: header(r.header()),
                }),
            Req::LeaseGrant { id, ttl } => client
                .lease_grant(
                    *ttl,
                    (*id != 0).then(|| LeaseGrantOptions::new().with_id(ids.lease(*id))),
                )
                .await
                .map(|r| Answer::LeaseGrant {
                    header: header(r.header()),
                    id: r.id(),
                    ttl: r.ttl(),
                }),
            Req::LeaseRevoke { lease } => {
                client
                    .lease_revoke(ids.lease(*lease))
                    .await
                    .map(|r| Answer::LeaseRevoke {
                        header: header(r.header()),
                    })
            }
            Req::LeaseKeepAlive { lease } => keep_alive(client, ids.lease(*lease)).await,
            Req::LeaseTimeToLive { lease, keys } => client
                .lease_time_to_live(
                    ids.lease(*lease),
                    keys.then(|| LeaseTimeToLiveOptions::new().with_keys()),
                )
                .await
                .map(|r| {
                    let mut keys: Vec<String> = r
                        .keys()
                        .iter()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .collect();
                    keys.sort();
                    Answer::LeaseTimeToLive {
                        header: header(r.header()),
                        id: r.id(),
                        remaining: r.ttl(),
                        granted: r.granted_ttl(),
                        keys,
                    }
                }),
            Req::LeaseLeases => client.leases().await.map(|r| Answer::LeaseLeases {
                header: header(r.header()),
                ids: r.leases().iter().map(|l| l.id()).collect(),
            }),
            Req::WatchCreate { .. } | Req::WatchCancel { .. } | Req::WatchProgress { .. } => {
                unreachable!("watch requests go through the watch streams")
            }
        };
        result.unwrap_or_else(Answer::error)
    }
}

/// One LeaseKeepAlive round trip on a fresh stream.
async fn keep_alive(client: &mut Client, lease: i64) -> Result<Answer, etcd_client::Error> {
    let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
    keeper.keep_alive().await?;
    let r = stream.message().await?.ok_or_else(|| {
        etcd_client::Error::InvalidArgs("the keep-alive stream ended without an answer".into())
    })?;
    Ok(Answer::LeaseKeepAlive {
        header: header(r.header()),
        id: r.id(),
        ttl: r.ttl(),
    })
}
