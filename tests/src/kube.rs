//! The etcd requests kube-apiserver sends for objects, so tests drive the
//! router exactly as an unmodified apiserver would.

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

/// What a write did, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied at this revision.
    Written(i64),
    /// The compare failed; the failure branch's read returned the key at
    /// this mod revision (0 if it does not exist).
    Conflict(i64),
}

fn conflict(response: &etcd_client::TxnResponse) -> Outcome {
    let current = response
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(get) => {
                Some(get.kvs().first().map(|kv| kv.mod_revision()).unwrap_or(0))
            }
            _ => None,
        })
        .unwrap_or(0);
    Outcome::Conflict(current)
}

/// kube-apiserver's one Txn shape: if `mod_revision(key) == revision`
/// then `op`, else read the key back (to report the conflict).
async fn guarded(
    client: &mut etcd_client::Client,
    key: &str,
    revision: i64,
    op: TxnOp,
) -> Result<Outcome, etcd_client::Error> {
    let txn = Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
        .and_then([op])
        .or_else([TxnOp::get(key, None)]);
    let response = client.txn(txn).await?;
    Ok(if response.succeeded() {
        Outcome::Written(response.header().map(|h| h.revision()).unwrap_or_default())
    } else {
        conflict(&response)
    })
}

/// `create`: put only if the key does not exist.
pub async fn create(
    client: &mut etcd_client::Client,
    key: &str,
    value: &[u8],
) -> Result<Outcome, etcd_client::Error> {
    guarded(client, key, 0, TxnOp::put(key, value, None)).await
}

/// `GuaranteedUpdate`: put only if the key is still at `revision`.
pub async fn update(
    client: &mut etcd_client::Client,
    key: &str,
    revision: i64,
    value: &[u8],
) -> Result<Outcome, etcd_client::Error> {
    guarded(client, key, revision, TxnOp::put(key, value, None)).await
}

/// `Delete` with a precondition on the revision.
pub async fn delete(
    client: &mut etcd_client::Client,
    key: &str,
    revision: i64,
) -> Result<Outcome, etcd_client::Error> {
    guarded(client, key, revision, TxnOp::delete(key, None)).await
}

/// One write kube-apiserver would make, and what the writer knows after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub outcome: Outcome,
    /// The value written; `None` for a delete.
    pub value: Option<Vec<u8>>,
}

impl Write {
    /// The key's mod revision as the writer now knows it: the write's
    /// revision, 0 once deleted, the current one after a conflict.
    pub fn known_revision(&self) -> i64 {
        match (&self.outcome, &self.value) {
            (Outcome::Written(at), Some(_)) => *at,
            (Outcome::Written(_), None) => 0,
            (Outcome::Conflict(current), _) => *current,
        }
    }
}

/// The next write of `key` by a writer that last saw it at `revision` (0:
/// absent): a create; otherwise a delete if `delete()` says so (asked only
/// then), else an update to `value`.
pub async fn next_write(
    client: &mut etcd_client::Client,
    key: &str,
    revision: i64,
    value: Vec<u8>,
    delete: impl FnOnce() -> bool,
) -> Result<Write, etcd_client::Error> {
    Ok(if revision == 0 {
        Write {
            outcome: create(client, key, &value).await?,
            value: Some(value),
        }
    } else if delete() {
        Write {
            outcome: self::delete(client, key, revision).await?,
            value: None,
        }
    } else {
        Write {
            outcome: update(client, key, revision, &value).await?,
            value: Some(value),
        }
    })
}
