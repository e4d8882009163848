//! The watch feed: events of completed writes, held until their revision
//! is current, then appended to the event log watchers read from; and the
//! history cuts that end every watch.
//!
//! Writes complete out of order across shards. An event of revision G is
//! held back until every revision ≤ G has completed ([`EventFeed::hold`],
//! then [`EventFeed::publish_through`] once the sequencer says G is
//! current), so the log, and every watcher reading it, sees events in
//! strictly increasing revision order with no holes that could later be
//! filled. (etcd's `watchable_store` gets the same order from applying one
//! Raft entry at a time.)

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use ste_core::events::{Compacted, EventLog, LogEvent};
use ste_core::keyrange::KeyRange;
use ste_core::revision::GlobalRevision;
use ste_proto::etcd::mvccpb;
use tokio::sync::watch;

/// One watch event as logged: the event itself and its revision.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The global revision of the write that produced the event.
    pub revision: GlobalRevision,
    /// The event as etcd sends it (PUT with the new key-value, or DELETE
    /// with a tombstone), `prev_kv` filled in.
    pub event: mvccpb::Event,
}

impl StoredEvent {
    /// The key the event is about.
    pub fn key(&self) -> &[u8] {
        self.event
            .kv
            .as_ref()
            .map(|kv| kv.key.as_slice())
            .unwrap_or_default()
    }
}

impl LogEvent for StoredEvent {
    fn revision(&self) -> GlobalRevision {
        self.revision
    }

    fn size_bytes(&self) -> usize {
        let kv_size = |kv: &Option<mvccpb::KeyValue>| {
            kv.as_ref()
                .map(|kv| kv.key.len() + kv.value.len() + 48)
                .unwrap_or(0)
        };
        64 + kv_size(&self.event.kv) + kv_size(&self.event.prev_kv)
    }
}

struct Inner {
    /// Events of completed revisions that are not current yet.
    pending: BTreeMap<GlobalRevision, Vec<StoredEvent>>,
    log: EventLog<StoredEvent>,
    /// The revision of the last Compact request (not raised by a cut): the
    /// one revision whose events are still in the log but whose prior
    /// values etcd could no longer read.
    compact_requested: GlobalRevision,
}

/// How the live keys of a range changed between two revisions (see
/// [`EventFeed::live_change`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LiveChange {
    /// Keys live at the later revision and not at the earlier one.
    pub created: usize,
    /// Keys live at the earlier revision and not at the later one.
    pub deleted: usize,
}

/// Size figures of the event log, for status and metrics.
#[derive(Debug, Clone, Copy)]
pub struct FeedStats {
    /// Events in the log.
    pub events: usize,
    /// Approximate bytes the log holds.
    pub bytes: usize,
    /// The oldest revision a watch can start from.
    pub oldest: GlobalRevision,
}

/// Pending events, the event log and the cut signal.
pub struct EventFeed {
    inner: Mutex<Inner>,
    /// Bumped whenever history is cut: every open watch must end with the
    /// compacted error so its client relists.
    cuts: watch::Sender<u64>,
}

impl EventFeed {
    /// An empty feed whose log keeps about `log_bytes` of events.
    pub fn new(log_bytes: usize) -> Self {
        EventFeed {
            inner: Mutex::new(Inner {
                pending: BTreeMap::new(),
                log: EventLog::new(log_bytes, GlobalRevision::ZERO.next()),
                compact_requested: GlobalRevision::ZERO,
            }),
            cuts: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts over with an empty log whose first revision is `first`.
    pub fn restart(&self, first: GlobalRevision) {
        let mut inner = self.lock();
        let max_bytes = inner.log.max_bytes();
        inner.pending.clear();
        inner.log = EventLog::new(max_bytes, first);
    }

    /// Holds the events of the completed write `revision` until it is
    /// current. Must be called before the sequencer learns the write
    /// completed, so that a revision reported current has its events here.
    pub fn hold(&self, revision: GlobalRevision, events: Vec<StoredEvent>) {
        if !events.is_empty() {
            self.lock().pending.insert(revision, events);
        }
    }

    /// Appends every held event of a revision ≤ `current` to the log, in
    /// revision order. Events below the log's floor belong to history a
    /// cut ended and are dropped.
    pub fn publish_through(&self, current: GlobalRevision) {
        let mut inner = self.lock();
        let later = inner.pending.split_off(&current.next());
        let ready = std::mem::replace(&mut inner.pending, later);
        for event in ready.into_values().flatten() {
            if event.revision < inner.log.floor() {
                continue;
            }
            if let Err(err) = inner.log.push(event) {
                tracing::error!(error = %err, "event log out of order");
            }
        }
    }

    /// Events with revision in `[from, through]`, or the compacted error
    /// when `from` is below the oldest revision the log can serve.
    pub fn events(
        &self,
        from: GlobalRevision,
        through: GlobalRevision,
    ) -> Result<Vec<StoredEvent>, Compacted> {
        let inner = self.lock();
        Ok(inner
            .log
            .since(from)?
            .take_while(|e| e.revision <= through)
            .cloned()
            .collect())
    }

    /// How the live keys of `range` changed from `after` to `through`,
    /// from the events with revision in `(after, through]`: a key's first
    /// event there says whether it was live at `after` (it carries a
    /// `prev_kv`), its last whether it is live at `through` (a PUT).
    ///
    /// `None` when the log no longer holds every event after `after`
    /// (compacted or cut), or when more than `max_events` events lie in
    /// between (walking them would cost more than asking the shards).
    pub fn live_change(
        &self,
        range: &KeyRange,
        after: GlobalRevision,
        through: GlobalRevision,
        max_events: usize,
    ) -> Option<LiveChange> {
        let inner = self.lock();
        // key → (live at `after`, live at `through`)
        let mut keys: HashMap<&[u8], (bool, bool)> = HashMap::new();
        let events = inner
            .log
            .since(after.next())
            .ok()?
            .take_while(|e| e.revision <= through);
        for (seen, stored) in events.enumerate() {
            if seen >= max_events {
                return None;
            }
            let key = stored.key();
            if !range.contains(key) {
                continue;
            }
            let live_after = stored.event.r#type == mvccpb::event::EventType::Put as i32;
            keys.entry(key)
                .and_modify(|(_, live)| *live = live_after)
                .or_insert((stored.event.prev_kv.is_some(), live_after));
        }
        let mut change = LiveChange::default();
        for (before, after) in keys.into_values() {
            change.created += usize::from(after && !before);
            change.deleted += usize::from(before && !after);
        }
        Some(change)
    }

    /// The first events with revision in `[from, through]`, about
    /// `max_bytes` of them ([`LogEvent::size_bytes`]) and never part of a
    /// revision, and the last revision they cover: `through` when every
    /// event up to it fits, else the revision of the last event returned.
    /// A watcher catching up reads its backlog this way, a page at a time,
    /// so it never holds a copy of the whole log. Errors as
    /// [`EventFeed::events`].
    pub fn events_page(
        &self,
        from: GlobalRevision,
        through: GlobalRevision,
        max_bytes: usize,
    ) -> Result<(Vec<StoredEvent>, GlobalRevision), Compacted> {
        let inner = self.lock();
        let mut page: Vec<StoredEvent> = Vec::new();
        let mut bytes = 0;
        for event in inner.log.since(from)? {
            if event.revision > through {
                break;
            }
            let last = page.last().map(|e| e.revision);
            if bytes >= max_bytes && last != Some(event.revision) {
                return Ok((page, last.unwrap_or(through)));
            }
            bytes += event.size_bytes();
            page.push(event.clone());
        }
        Ok((page, through))
    }

    /// Drops events below `revision` for a Compact request.
    pub fn compact(&self, revision: GlobalRevision) {
        let mut inner = self.lock();
        inner.compact_requested = revision;
        inner.log.compact(revision);
    }

    /// The revision of the last Compact request.
    pub fn compact_requested(&self) -> GlobalRevision {
        self.lock().compact_requested
    }

    /// Ends history at `revision`: the log serves nothing older, and held
    /// events below it will be dropped. [`EventFeed::announce_cut`] then
    /// tells the watches.
    pub fn truncate(&self, revision: GlobalRevision) {
        self.lock().log.compact(revision);
    }

    /// Tells every open watch that history was cut.
    pub fn announce_cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Changes whenever history is cut.
    pub fn subscribe_cuts(&self) -> watch::Receiver<u64> {
        self.cuts.subscribe()
    }

    /// The oldest revision the log can serve a watch from.
    pub fn floor(&self) -> GlobalRevision {
        self.lock().log.floor()
    }

    /// Size figures of the log.
    pub fn stats(&self) -> FeedStats {
        let inner = self.lock();
        FeedStats {
            events: inner.log.len(),
            bytes: inner.log.bytes(),
            oldest: inner.log.oldest_available(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: i64, key: &str) -> StoredEvent {
        StoredEvent {
            revision: GlobalRevision(revision),
            event: mvccpb::Event {
                kv: Some(mvccpb::KeyValue {
                    key: key.into(),
                    mod_revision: revision,
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }

    fn revisions(events: &[StoredEvent]) -> Vec<i64> {
        events.iter().map(|e| e.revision.0).collect()
    }

    /// An event of `key` at `revision`: a PUT or a DELETE, and whether the
    /// key was live before it.
    fn change(revision: i64, key: &str, put: bool, was_live: bool) -> StoredEvent {
        let mut event = self::put(revision, key);
        if !put {
            event.event.r#type = mvccpb::event::EventType::Delete as i32;
        }
        if was_live {
            event.event.prev_kv = Some(mvccpb::KeyValue {
                key: key.into(),
                ..Default::default()
            });
        }
        event
    }

    #[test]
    fn live_change_counts_keys_created_and_deleted_since_a_revision() {
        let feed = EventFeed::new(1 << 20);
        let events = [
            change(1, "/p/a", true, false), // created
            change(2, "/p/b", true, true),  // updated
            change(3, "/p/b", false, true), // deleted
            change(4, "/p/c", true, false), // created, then deleted
            change(5, "/p/c", false, true), //
            change(6, "/q/x", true, false), // outside the range
            change(7, "/p/d", false, true), // deleted, then created again
            change(8, "/p/d", true, false), //
        ];
        for event in events {
            let revision = event.revision;
            feed.hold(revision, vec![event]);
        }
        feed.publish_through(GlobalRevision(8));
        let range = KeyRange::prefix(b"/p/");
        let change = |after: i64, through: i64| {
            feed.live_change(&range, GlobalRevision(after), GlobalRevision(through), 100)
                .map(|c| (c.created, c.deleted))
        };
        assert_eq!(
            change(0, 8),
            Some((1, 1)),
            "a created, b deleted, c and d neither"
        );
        assert_eq!(change(0, 1), Some((1, 0)));
        assert_eq!(change(1, 3), Some((0, 1)));
        assert_eq!(change(3, 4), Some((1, 0)));
        assert_eq!(change(6, 7), Some((0, 1)));
        assert_eq!(change(8, 8), Some((0, 0)));
        assert_eq!(
            feed.live_change(&range, GlobalRevision(0), GlobalRevision(8), 7),
            None,
            "too many events to walk"
        );
        feed.compact(GlobalRevision(3));
        assert_eq!(change(1, 8), None, "events after 1 are no longer all held");
        assert_eq!(
            change(2, 8),
            Some((0, 1)),
            "b deleted at 3; c and d as before"
        );
    }

    #[test]
    fn events_wait_until_their_revision_is_current() {
        let feed = EventFeed::new(1 << 20);
        feed.restart(GlobalRevision(2));
        feed.hold(GlobalRevision(3), vec![put(3, "b")]);
        feed.hold(GlobalRevision(2), vec![put(2, "a")]);
        feed.publish_through(GlobalRevision(2));
        assert_eq!(
            revisions(&feed.events(GlobalRevision(2), GlobalRevision(9)).unwrap()),
            vec![2]
        );
        feed.publish_through(GlobalRevision(3));
        assert_eq!(
            revisions(&feed.events(GlobalRevision(2), GlobalRevision(9)).unwrap()),
            vec![2, 3]
        );
        // A later, smaller publish (a racing completion) changes nothing.
        feed.publish_through(GlobalRevision(2));
        assert_eq!(feed.stats().events, 2);
    }

    #[test]
    fn a_cut_drops_held_history_and_refuses_older_watches() {
        let feed = EventFeed::new(1 << 20);
        feed.restart(GlobalRevision(2));
        let cuts = feed.subscribe_cuts();
        feed.hold(GlobalRevision(4), vec![put(4, "in-flight")]);
        feed.truncate(GlobalRevision(6));
        feed.publish_through(GlobalRevision(6));
        feed.announce_cut();
        assert!(cuts.has_changed().unwrap());
        assert_eq!(feed.stats().events, 0);
        let refused = feed
            .events(GlobalRevision(5), GlobalRevision(9))
            .unwrap_err();
        assert_eq!(refused.compact_revision, GlobalRevision(6));
        assert!(feed.events(GlobalRevision(6), GlobalRevision(9)).is_ok());
    }

    #[test]
    fn compact_remembers_the_requested_revision() {
        let feed = EventFeed::new(1 << 20);
        feed.restart(GlobalRevision(2));
        feed.hold(GlobalRevision(2), vec![put(2, "a")]);
        feed.hold(GlobalRevision(3), vec![put(3, "a")]);
        feed.publish_through(GlobalRevision(3));
        feed.compact(GlobalRevision(3));
        assert_eq!(feed.compact_requested(), GlobalRevision(3));
        assert_eq!(
            revisions(&feed.events(GlobalRevision(3), GlobalRevision(3)).unwrap()),
            vec![3]
        );
        assert!(feed.events(GlobalRevision(2), GlobalRevision(3)).is_err());
    }

    #[test]
    fn pages_are_bounded_and_never_split_a_revision() {
        let feed = EventFeed::new(1 << 20);
        feed.restart(GlobalRevision(2));
        // Revision 3 deletes two keys (one multi-key delete), the others one.
        feed.hold(GlobalRevision(2), vec![put(2, "a")]);
        feed.hold(GlobalRevision(3), vec![put(3, "b"), put(3, "c")]);
        feed.hold(GlobalRevision(4), vec![put(4, "d")]);
        feed.hold(GlobalRevision(5), vec![put(5, "e")]);
        feed.publish_through(GlobalRevision(5));
        let one = put(2, "a").size_bytes();
        let page = |from: i64, max_bytes: usize| {
            let (events, covered) = feed
                .events_page(GlobalRevision(from), GlobalRevision(4), max_bytes)
                .unwrap();
            (revisions(&events), covered.0)
        };
        // Full once the budget is reached, but a revision goes out whole.
        assert_eq!(page(2, one), (vec![2], 2));
        assert_eq!(page(2, one + 1), (vec![2, 3, 3], 3));
        assert_eq!(page(3, 1), (vec![3, 3], 3));
        // The last page covers `through`, not just its last event.
        assert_eq!(page(4, one * 10), (vec![4], 4));
        assert_eq!(page(5, one), (vec![], 4));
        assert!(
            feed.events_page(GlobalRevision(1), GlobalRevision(4), one)
                .is_err()
        );
    }
}
