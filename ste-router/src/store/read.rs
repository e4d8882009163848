//! Reads: a range at a global revision, served by reading every shard that
//! may hold keys of the range at the shard revision that matches it, and
//! merging. Pagination stays exact because each shard is read at the same
//! global point in time and counts are summed.
//!
//! A page (a read with a limit) is planned from the key index
//! ([`Index::page_plan`](super::index::Index::page_plan)): the page's
//! keys, their shards, its last key, and the range's count. Each shard is
//! asked only for the range up to the page's last key and only for its
//! share of the page, so the shards read, and the router receives, one
//! page of values in total; and no shard walks the rest of the range to
//! count it, which etcd does for every page (`treeIndex.Revisions`), so a
//! list of N keys costs the shards O(N) rather than O(N²/limit). The
//! count comes from the index, taken back to the read's revision with the
//! event log's creates and deletes since ([`EventFeed::live_change`]).
//! The index describes the latest state, not necessarily the read's
//! revision, so the merge checks that the answers cover the page (see
//! [`merge_page`]); when keys created since make them miss it, or the
//! count cannot be had exactly (writes in flight, history no longer
//! logged), the page is read the plain way: every shard asked for
//! `limit + 1` keys of the whole range ([`merge`]).
//! A `count_only` read is answered from the index the same way, with no
//! shard asked.
//!
//! [`EventFeed::live_change`]: super::event_feed::EventFeed::live_change

use std::sync::Arc;

use futures_util::future::join_all;
use ste_core::keyrange::KeyRange;
use ste_core::revision::GlobalRevision;
use ste_proto::etcd::etcdserverpb as pb;
use ste_proto::etcd::mvccpb;

use super::convert::client_kv;
use super::event_feed::LiveChange;
use super::index::PagePlan;
use super::{Store, shard_ops};
use crate::error::{StoreError, StoreResult};
use crate::shard::Shard;

/// The most events a page's count is taken back over (see
/// [`EventFeed::live_change`]); beyond, the shards count. About a
/// millisecond's walk.
///
/// [`EventFeed::live_change`]: super::event_feed::EventFeed::live_change
const MAX_EVENTS_WALKED: usize = 20_000;

/// What a range read returns before it becomes a `RangeResponse`.
#[derive(Debug, Default, PartialEq)]
pub struct RangeResult {
    /// The keys, in ascending key order, at most `limit` of them.
    pub kvs: Vec<mvccpb::KeyValue>,
    /// How many keys the whole range holds (etcd's `count`, not limited).
    pub count: i64,
    /// True when the range holds more keys than returned.
    pub more: bool,
}

/// One shard's answer to a range read, in the client's terms.
#[derive(Debug, Default)]
pub struct ShardPart {
    /// The shard's keys, decoded from their envelopes, in key order.
    pub kvs: Vec<mvccpb::KeyValue>,
    /// The shard's `count` for the range.
    pub count: i64,
    /// When the shard's answer was cut by its limit: the last key it
    /// returned. Its keys after it were not read.
    pub cut: Option<Vec<u8>>,
}

/// Merges the shards' answers into one, as one etcd would answer: counts
/// summed, keys sorted, at most `limit` (0: no limit) returned and `more`
/// set when some were left out; values dropped for `keys_only`, keys
/// dropped for `count_only`.
///
/// The union is exact up to the smallest key at which a shard's answer was
/// cut (every shard's keys up to there were read); when at least `limit`
/// keys lie up to there, they are the page, and there are more (the cut
/// shard has keys after it). `None` when fewer do: the answers do not
/// cover the page, and the shards must be asked for more. Never `None`
/// when each shard was asked for `limit + 1` keys.
pub fn merge(
    parts: Vec<ShardPart>,
    limit: i64,
    keys_only: bool,
    count_only: bool,
) -> Option<RangeResult> {
    let count = parts.iter().map(|part| part.count).sum();
    if count_only {
        return Some(RangeResult {
            count,
            ..RangeResult::default()
        });
    }
    let (mut kvs, cut) = exact_union(parts, None, keys_only);
    let mut more = false;
    if cut.is_some() {
        if limit <= 0 || (kvs.len() as i64) < limit {
            return None;
        }
        kvs.truncate(limit as usize);
        more = true;
    } else if limit > 0 && kvs.len() as i64 > limit {
        kvs.truncate(limit as usize);
        more = true;
    }
    Some(RangeResult { kvs, count, more })
}

/// The shards' keys known to be exact, sorted: those up to the smallest of
/// `bound` and the keys at which a shard's answer was cut (every shard's
/// keys up to there were read); values dropped for `keys_only`. Also
/// returns that smallest key, `None` when nothing bounded the union.
fn exact_union(
    parts: Vec<ShardPart>,
    bound: Option<Vec<u8>>,
    keys_only: bool,
) -> (Vec<mvccpb::KeyValue>, Option<Vec<u8>>) {
    let mut through = bound;
    let mut kvs = Vec::new();
    for part in parts {
        if let Some(cut) = part.cut
            && through.as_ref().is_none_or(|t| cut < *t)
        {
            through = Some(cut);
        }
        kvs.extend(part.kvs);
    }
    if let Some(through) = &through {
        kvs.retain(|kv| &kv.key <= through);
    }
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
    if keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    (kvs, through)
}

/// Merges the answers to a page read from the index's plan (see
/// [`Store::read_planned_page`]): each shard was read over the range up to
/// `last`, the plan's last key of the page (`None`: the whole range), and
/// its answer may be cut short by its limit (`cut`). The union is exact up
/// to the smallest of `last` and the cuts. The page is its first `limit`
/// keys when it holds that many, or all of it when that is every key of
/// the range: `count` is the range's count at the read's revision (the
/// shards' counts, of the narrowed range, are not used). `None` otherwise:
/// keys created since the read's revision put some of the page's keys
/// after `last`.
pub fn merge_page(
    parts: Vec<ShardPart>,
    limit: i64,
    keys_only: bool,
    count: i64,
    last: Option<&[u8]>,
) -> Option<RangeResult> {
    let (mut kvs, _) = exact_union(parts, last.map(<[u8]>::to_vec), keys_only);
    let read = kvs.len() as i64;
    let more = if read >= limit && count >= limit {
        kvs.truncate(limit as usize);
        count > limit
    } else if read == count {
        false
    } else {
        return None;
    };
    Some(RangeResult { kvs, count, more })
}

/// Takes a group commit's later writes back out of a shard's answer: each
/// event's key shows its previous version (`prev_kv`, or nothing) instead
/// of the one the event wrote. Exact because each key appears at most once
/// in a batch, so its previous version is the one before the batch, which
/// is the version as of any revision inside it before the event.
pub fn take_back(part: &mut ShardPart, events: &[mvccpb::Event]) {
    if events.is_empty() {
        return;
    }
    for event in events {
        let Some(written) = &event.kv else { continue };
        let is_put = event.r#type == mvccpb::event::EventType::Put as i32;
        if is_put {
            part.count -= 1;
        }
        if event.prev_kv.is_some() {
            part.count += 1;
        }
        part.kvs.retain(|kv| kv.key != written.key);
        if let Some(prev) = &event.prev_kv {
            part.kvs.push(prev.clone());
        }
    }
    part.kvs.sort_by(|a, b| a.key.cmp(&b.key));
}

impl Store {
    /// Serves a Range request (validated by the API layer: see
    /// `etcd/validate.rs`).
    pub async fn range(
        &self,
        request: &pb::RangeRequest,
    ) -> StoreResult<(GlobalRevision, RangeResult)> {
        self.check_ready()?;
        let revision = self.revisions.resolve_read(request.revision)?;
        let range = KeyRange::from_request(&request.key, &request.range_end);
        let result = match self
            .read_range(
                &range,
                revision,
                request.limit.max(0),
                request.keys_only,
                request.count_only,
            )
            .await
        {
            Err(err @ StoreError::ShardUnavailable { .. })
                if request.revision <= 0 && range.is_single_key() =>
            {
                return match self.absent_while_owner_down(range.start()).await {
                    Some(current) => Ok((current, RangeResult::default())),
                    None => Err(err),
                };
            }
            other => other?,
        };
        // The header names the revision the read was served at when the
        // client asked for "now": kube-apiserver pins the next pages of a
        // list to it. For a read at an older revision etcd reports its
        // current revision, and so do we.
        let header = if request.revision <= 0 {
            revision
        } else {
            self.revisions.current()
        };
        Ok((header, result))
    }

    /// Reads `range` as of global `revision`.
    pub async fn read_range(
        &self,
        range: &KeyRange,
        revision: GlobalRevision,
        limit: i64,
        keys_only: bool,
        count_only: bool,
    ) -> StoreResult<RangeResult> {
        if range.is_empty() {
            return Ok(RangeResult::default());
        }
        let shards = self.placement.shards_for(range, revision)?;
        for shard in &shards {
            shard.check_available()?;
        }
        if count_only && let Some(count) = self.count_from_index(range, revision, &shards) {
            return Ok(RangeResult {
                count,
                ..RangeResult::default()
            });
        }
        if limit > 0
            && !count_only
            && shards.len() > 1
            && let Some(result) = self
                .read_planned_page(range, revision, &shards, limit, keys_only)
                .await?
        {
            return Ok(result);
        }
        // One more than asked tells whether there are more keys.
        let shard_limit = if limit > 0 { limit + 1 } else { 0 };
        let parts = self
            .read_parts(
                range,
                revision,
                &shards,
                &vec![shard_limit; shards.len()],
                count_only,
            )
            .await?;
        merge(parts, limit, keys_only, count_only).ok_or_else(|| {
            StoreError::Internal("a range read with limit + 1 per shard did not merge".into())
        })
    }

    /// A page of `limit` keys of `range` at `revision`, read as the index
    /// plans it (see the module docs). `None` when the plan cannot be made
    /// exact or the shards' answers miss the page: the caller reads the
    /// plain way.
    async fn read_planned_page(
        &self,
        range: &KeyRange,
        revision: GlobalRevision,
        shards: &[Arc<Shard>],
        limit: i64,
        keys_only: bool,
    ) -> StoreResult<Option<RangeResult>> {
        let Some((plan, deleted)) = self.plan_page(range, revision, shards, limit) else {
            return Ok(None);
        };
        let narrowed = match &plan.last {
            Some(last) => range.up_to(last),
            None => range.clone(),
        };
        // With no key of the range deleted since `revision`, the shards
        // hold at most the planned keys up to the plan's last: a shard
        // without a share holds none, and no answer needs cutting. Keys
        // deleted since may lie anywhere in it: every shard is asked for
        // all it holds there (bounded: see `plan_page`).
        let (asked, limits): (Vec<_>, Vec<_>) = shards
            .iter()
            .filter_map(|shard| {
                let share = plan.shares.get(&shard.id).copied().unwrap_or(0) as i64;
                match deleted {
                    0 => (share > 0).then(|| (shard.clone(), share)),
                    _ => Some((shard.clone(), 0)),
                }
            })
            .unzip();
        let parts = self
            .read_parts(&narrowed, revision, &asked, &limits, false)
            .await?;
        Ok(merge_page(
            parts,
            limit,
            keys_only,
            plan.count as i64,
            plan.last.as_deref(),
        ))
    }

    /// The index's plan of a page of `range` at `revision`, with the
    /// range's count taken back to `revision`, and how many of its keys
    /// were deleted since `revision`.
    ///
    /// Keys created since are not in the page at `revision`, so the plan
    /// runs that many keys further than `limit`: the keys up to its last
    /// hold the page at `revision` (or the whole range, when it has fewer).
    /// The shards then read at most `limit` + created + deleted keys.
    ///
    /// `None` when that is not exact (see [`Store::with_exact_index`]) or
    /// not worth it: more keys created and deleted since than two pages,
    /// where the plain way reads less.
    fn plan_page(
        &self,
        range: &KeyRange,
        revision: GlobalRevision,
        shards: &[Arc<Shard>],
        limit: i64,
    ) -> Option<(PagePlan, usize)> {
        self.with_exact_index(range, revision, shards, |change| {
            if (change.created + change.deleted) as i64 > 2 * limit {
                return None;
            }
            let mut plan = self.index.page_plan(range, limit as usize + change.created);
            plan.count = (plan.count + change.deleted).checked_sub(change.created)?;
            Some((plan, change.deleted))
        })
    }

    /// Runs `read` on the index, given how `range`'s live keys changed
    /// since `revision` ([`EventFeed::live_change`]), when the index and
    /// that change together describe `range` at `revision` exactly: no
    /// write is in flight (a write's index change is made before its
    /// revision completes, and none can start unseen: it would allocate a
    /// revision first), the event log still holds every event since
    /// `revision` (at most [`MAX_EVENTS_WALKED`] of them), and no shard of
    /// the range is being resynchronised. `None` otherwise, or when `read`
    /// gives `None`.
    ///
    /// [`EventFeed::live_change`]: super::event_feed::EventFeed::live_change
    fn with_exact_index<T>(
        &self,
        range: &KeyRange,
        revision: GlobalRevision,
        shards: &[Arc<Shard>],
        read: impl FnOnce(LiveChange) -> Option<T>,
    ) -> Option<T> {
        let allocated = self.revisions.allocated();
        let current = self.revisions.current();
        if allocated != current || revision > current {
            return None;
        }
        let change = match revision < current {
            true => {
                self.revisions
                    .feed()
                    .live_change(range, revision, current, MAX_EVENTS_WALKED)?
            }
            false => LiveChange::default(),
        };
        let result = read(change)?;
        let unchanged = self.revisions.allocated() == allocated
            && shards.iter().all(|s| s.check_available().is_ok());
        unchanged.then_some(result)
    }

    /// Reads `range` as of global `revision` from each of `shards`, at most
    /// `limits[i]` keys from shard `i` (0: all), with a group commit's later
    /// writes taken back out where `revision` falls inside one.
    async fn read_parts(
        &self,
        range: &KeyRange,
        revision: GlobalRevision,
        shards: &[Arc<Shard>],
        limits: &[i64],
        count_only: bool,
    ) -> StoreResult<Vec<ShardPart>> {
        let (key, range_end) = range.to_request();
        let mut plans = Vec::with_capacity(shards.len());
        for (shard, &limit) in shards.iter().zip(limits) {
            let location = shard.locate(revision);
            let taken_back = match location.later_in_batch {
                Some((from, through)) => self.taken_back(range, from, through)?,
                None => Vec::new(),
            };
            // Each write taken back may hide one key of the shard's answer.
            let limit = if limit > 0 {
                limit + taken_back.len() as i64
            } else {
                0
            };
            let request = shard_ops::range(
                key.clone(),
                range_end.clone(),
                limit,
                location.shard,
                count_only,
            );
            plans.push((shard, request, taken_back));
        }
        let reads = plans
            .into_iter()
            .map(|(shard, request, taken_back)| async move {
                (shard, shard.range(request).await, taken_back)
            });
        let mut parts = Vec::with_capacity(shards.len());
        for (shard, response, taken_back) in join_all(reads).await {
            let response = response.map_err(|e| shard.client_error(e))?;
            let cut = if response.more && !count_only {
                response.kvs.last().map(|kv| kv.key.clone())
            } else {
                None
            };
            let kvs = response
                .kvs
                .into_iter()
                .map(|stored| client_kv(stored, &shard.name))
                .collect::<StoreResult<Vec<_>>>()?;
            let mut part = ShardPart {
                kvs,
                count: response.count,
                cut,
            };
            take_back(&mut part, &taken_back);
            parts.push(part);
        }
        Ok(parts)
    }

    /// The number of keys in `range` at `revision` from the index, taken
    /// back to `revision` by the creates and deletes since, when that is
    /// exact (see [`Store::with_exact_index`]); `None` otherwise.
    fn count_from_index(
        &self,
        range: &KeyRange,
        revision: GlobalRevision,
        shards: &[Arc<Shard>],
    ) -> Option<i64> {
        self.with_exact_index(range, revision, shards, |change| {
            let now = self.index.count(range) + change.deleted;
            now.checked_sub(change.created).map(|count| count as i64)
        })
    }

    /// The events of a group commit's writes `from..=through` whose keys
    /// are in `range`: a read at `from - 1` on that shard takes them back
    /// out (see [`take_back`]).
    ///
    /// Errors: [`StoreError::Compacted`] when the event log no longer
    /// holds them (it is bounded by `--event-log-bytes`): the read cannot
    /// be exact, and the client retries at a newer revision, as after a
    /// compaction. A read at the current revision never needs them (a
    /// batch's revisions become current together).
    fn taken_back(
        &self,
        range: &KeyRange,
        from: GlobalRevision,
        through: GlobalRevision,
    ) -> StoreResult<Vec<mvccpb::Event>> {
        let events = self
            .revisions
            .feed()
            .events(from, through)
            .map_err(|_| StoreError::Compacted)?;
        if events.len() as i64 != through.0 - from.0 + 1 {
            return Err(StoreError::Compacted);
        }
        Ok(events
            .into_iter()
            .filter(|e| range.contains(e.key()))
            .map(|e| e.event)
            .collect())
    }

    /// Answers "absent" for `key` at the current revision without its
    /// shard, when that shard is down and the router knows the key does
    /// not exist; `None` when it cannot say so exactly.
    ///
    /// Why: kube-apiserver's /livez and /readyz (`etcd-override-0`) Get
    /// `/registry/health`, a key nobody writes, through the router; the
    /// ring places it on one shard, and while that shard was down every
    /// kube-apiserver reported 500 until the member was fenced (found by
    /// the end-to-end tests).
    ///
    /// Exact because: the ring is stable, so every write of `key` goes to
    /// its owner, which is down and acknowledges none (and no write to it
    /// ended with an unknown outcome: that shard needs a resync); every write handed
    /// a revision before this read has finished (waited for, at most one
    /// shard timeout) and so is in the index, which is read after. So the
    /// key is absent at the current revision returned.
    async fn absent_while_owner_down(&self, key: &[u8]) -> Option<GlobalRevision> {
        if self.placement.change_pending() {
            return None;
        }
        let owner = self.placement.owner(key).ok()?;
        // Down, and not after a write of unknown outcome (that write may
        // have created the key on the shard; a resync will tell).
        let down = |shard: &Shard| {
            let health = shard.health();
            !health.healthy && !health.needs_resync
        };
        if !down(&owner) {
            return None;
        }
        let allocated = self.revisions.allocated();
        tokio::time::timeout(
            self.config.shard_timeouts.request,
            self.revisions.wait_visible(allocated),
        )
        .await
        .ok()?;
        if self.index.get(key).is_some() || !down(&owner) {
            return None;
        }
        Some(self.revisions.current())
    }

    /// The latest version of one key, read from its shard at the current
    /// revision (used for Txn failure branches and value compares).
    pub async fn get_current(&self, key: &[u8]) -> StoreResult<Option<mvccpb::KeyValue>> {
        let current = self.revisions.current();
        let result = self
            .read_range(&KeyRange::single(key), current, 0, false, false)
            .await?;
        Ok(result.kvs.into_iter().next())
    }
}

#[cfg(test)]
mod tests;
