//! Watch: one task per client stream serves all of that stream's watchers
//! from the router's event log, in global revision order.
//!
//! Invariants:
//! - a watcher's events come in strictly increasing revision order (events
//!   of one revision together), each exactly once: its position only moves
//!   forward, to the revision it has been sent everything up to;
//! - a progress answer (RequestProgress, or progress_notify) is sent only
//!   after every watcher of the stream has been sent everything up to the
//!   revision it names;
//! - a start revision older than the log yields the compacted error, so
//!   the client relists instead of silently missing events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ste_core::keyrange::KeyRange;
use ste_core::revision::GlobalRevision;
use ste_proto::etcd::etcdserverpb::{
    self as pb, watch_create_request, watch_request, watch_server,
};
use ste_proto::etcd::mvccpb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::header;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::store::event_feed::StoredEvent;

/// etcd's watch ID for answers that concern the whole stream.
const STREAM_WIDE: i64 = -1;
/// etcd's watch ID in the answer to a create request it refused.
const NO_WATCH: i64 = -1;
/// Split event batches so no response nears gRPC's default 4 MiB limit.
const MAX_BATCH_EVENTS: usize = 1_000;
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Responses a watch stream holds for a client that is not reading. With
/// responses of at most [`MAX_BATCH_BYTES`] of keys and values, a stalled
/// client costs the router at most about `OUTBOX * MAX_BATCH_BYTES` (4 MiB)
/// here, plus what HTTP/2 flow control lets through (the client's stream
/// window). Past that the stream's task waits, reading nothing more from the
/// shared event log: if the log drops events it has not sent, the watcher is
/// canceled as compacted, as etcd cancels a watcher that fell too far behind.
const OUTBOX: usize = 4;

/// Tunables of the Watch service.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    /// How often watchers that asked for progress_notify hear of progress
    /// when nothing happens (etcd: 10 minutes).
    pub progress_interval: Duration,
}

/// The Watch service: one [`WatchStream`] task per client stream, each
/// ended with UNAVAILABLE when the router stops.
pub struct Watch {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    settings: WatchSettings,
    shutdown: Shutdown,
}

impl Watch {
    /// The service over `store`, counting open watches in `metrics`;
    /// streams end when `shutdown` is set.
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        settings: WatchSettings,
        shutdown: Shutdown,
    ) -> Self {
        Watch {
            store,
            metrics,
            settings,
            shutdown,
        }
    }
}

struct Watcher {
    range: KeyRange,
    /// The next revision this watcher needs.
    next: GlobalRevision,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    /// Sent anything since the last periodic progress tick.
    active: bool,
}

type Outbox = mpsc::Sender<Result<pb::WatchResponse, Status>>;

/// The error that ends a stream when the router stops.
pub(crate) fn shutting_down() -> Status {
    Status::unavailable("ste-router is shutting down")
}

#[tonic::async_trait]
impl watch_server::Watch for Watch {
    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.store.check_ready()?;
        let (tx, rx) = mpsc::channel(OUTBOX);
        let stream = WatchStream {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            watchers: BTreeMap::new(),
            next_id: 0,
            out: tx,
        };
        tokio::spawn(stream.run(request.into_inner(), self.settings, self.shutdown.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct WatchStream {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    out: Outbox,
}

impl WatchStream {
    async fn run(
        mut self,
        mut requests: Streaming<pb::WatchRequest>,
        settings: WatchSettings,
        mut shutdown: Shutdown,
    ) {
        let mut current = self.store.revisions().subscribe();
        let mut cuts = self.store.revisions().feed().subscribe_cuts();
        let mut progress = tokio::time::interval(settings.progress_interval);
        progress.tick().await;
        loop {
            let keep_going = tokio::select! {
                message = requests.message() => match message {
                    Ok(Some(request)) => self.handle(request).await,
                    Ok(None) | Err(_) => false,
                },
                changed = current.changed() => changed.is_ok() && self.deliver_all().await,
                changed = cuts.changed() => changed.is_ok() && self.cancel_all_compacted().await,
                _ = progress.tick() => self.periodic_progress().await,
                _ = self.out.closed() => false,
                // As etcd's clients see a member stop: the stream fails
                // with UNAVAILABLE and they reconnect and resume.
                _ = shutdown.wait() => {
                    let _ = self.out.send(Err(shutting_down())).await;
                    false
                }
            };
            if !keep_going {
                break;
            }
        }
        self.metrics.watchers_changed(-(self.watchers.len() as i64));
    }

    async fn send(&self, response: pb::WatchResponse) -> bool {
        self.out.send(Ok(response)).await.is_ok()
    }

    fn response(&self, watch_id: i64, revision: GlobalRevision) -> pb::WatchResponse {
        pb::WatchResponse {
            header: header(&self.store, revision),
            watch_id,
            ..Default::default()
        }
    }

    /// The answer that ends a watch whose start is compacted, exactly as
    /// etcd sends it: canceled with compact_revision set, header revision 0
    /// and no cancel_reason (clients recognise compaction by
    /// compact_revision alone).
    fn compacted(&self, watch_id: i64, compact_revision: GlobalRevision) -> pb::WatchResponse {
        pb::WatchResponse {
            canceled: true,
            compact_revision: compact_revision.0,
            ..self.response(watch_id, GlobalRevision::ZERO)
        }
    }

    async fn handle(&mut self, request: pb::WatchRequest) -> bool {
        match request.request_union {
            Some(watch_request::RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(watch_request::RequestUnion::CancelRequest(cancel)) => {
                let current = self.store.revisions().current();
                if self.watchers.remove(&cancel.watch_id).is_some() {
                    self.metrics.watchers_changed(-1);
                }
                let mut response = self.response(cancel.watch_id, current);
                response.canceled = true;
                self.send(response).await
            }
            Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                // Catch every watcher up first: the answer then cannot claim
                // a revision a watcher has not been sent everything up to.
                let revision = self.store.revisions().current();
                self.deliver_through(revision).await
                    && self.send(self.response(STREAM_WIDE, revision)).await
            }
            None => true,
        }
    }

    async fn create(&mut self, create: pb::WatchCreateRequest) -> bool {
        let current = self.store.revisions().current();
        let id = if create.watch_id != 0 {
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        let range = KeyRange::from_request(&create.key, &create.range_end);
        let refusal = if range.is_empty() {
            Some("mvcc: watcher range is empty")
        } else if self.watchers.contains_key(&id) {
            Some("mvcc: duplicate watch ID provided on the WatchStream")
        } else {
            None
        };
        if let Some(reason) = refusal {
            // As etcd answers: "created" for no watch (ID -1), canceled at
            // once with the reason; an existing watch with that ID goes on.
            let mut response = self.response(NO_WATCH, current);
            response.created = true;
            response.canceled = true;
            response.cancel_reason = reason.into();
            return self.send(response).await;
        }
        self.next_id = self.next_id.max(id + 1);
        let next = if create.start_revision > 0 {
            GlobalRevision(create.start_revision)
        } else {
            current.next()
        };
        let filters = &create.filters;
        let watcher = Watcher {
            range,
            next,
            prev_kv: create.prev_kv,
            no_put: filters.contains(&(watch_create_request::FilterType::Noput as i32)),
            no_delete: filters.contains(&(watch_create_request::FilterType::Nodelete as i32)),
            progress_notify: create.progress_notify,
            active: false,
        };
        let mut created = self.response(id, current);
        created.created = true;
        if !self.send(created).await {
            return false;
        }
        self.watchers.insert(id, watcher);
        self.metrics.watchers_changed(1);
        self.deliver(id, current).await
    }

    async fn deliver_all(&mut self) -> bool {
        let revision = self.store.revisions().current();
        self.deliver_through(revision).await
    }

    async fn deliver_through(&mut self, revision: GlobalRevision) -> bool {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            if !self.deliver(id, revision).await {
                return false;
            }
        }
        true
    }

    /// Sends watcher `id` every event in (its position, `through`], reading
    /// the log a page of about [`MAX_BATCH_BYTES`] at a time: with the
    /// outbox, a watcher that is far behind or whose client does not read
    /// holds a bounded copy of the log, not all of it.
    async fn deliver(&mut self, id: i64, through: GlobalRevision) -> bool {
        loop {
            let Some(watcher) = self.watchers.get(&id) else {
                return true;
            };
            if watcher.next > through {
                return true;
            }
            let feed = self.store.revisions().feed();
            let (events, covered) = match feed.events_page(watcher.next, through, MAX_BATCH_BYTES) {
                Ok(page) => page,
                Err(compacted) => {
                    self.watchers.remove(&id);
                    self.metrics.watchers_changed(-1);
                    return self
                        .send(self.compacted(id, compacted.compact_revision))
                        .await;
                }
            };
            // etcd reads an event's prev_kv at the revision before the
            // event; for an event at the compaction revision that read is
            // compacted and etcd sends the event without prev_kv
            // (kube-apiserver then ends the watch with an error and its
            // client relists). The log still has the prior value: answer as
            // etcd does all the same.
            let compaction = feed.compact_requested();
            let batch: Vec<mvccpb::Event> = events
                .into_iter()
                .filter(|e| watcher.wants(e))
                .map(|e| {
                    let revision = e.revision;
                    let mut event = e.event;
                    if !watcher.prev_kv || revision <= compaction {
                        event.prev_kv = None;
                    }
                    event
                })
                .collect();
            if let Some(watcher) = self.watchers.get_mut(&id) {
                watcher.next = covered.next();
                watcher.active |= !batch.is_empty();
            }
            for chunk in chunks(batch) {
                let mut response = self.response(id, through);
                response.events = chunk;
                if !self.send(response).await {
                    return false;
                }
            }
        }
    }

    async fn periodic_progress(&mut self) -> bool {
        let revision = self.store.revisions().current();
        if !self.deliver_through(revision).await {
            return false;
        }
        let quiet: Vec<i64> = self
            .watchers
            .iter_mut()
            .filter(|(_, w)| w.progress_notify)
            .filter_map(|(id, w)| (!std::mem::take(&mut w.active)).then_some(*id))
            .collect();
        for id in quiet {
            if !self.send(self.response(id, revision)).await {
                return false;
            }
        }
        true
    }

    /// History was cut (a shard was lost or resynchronised): end every
    /// watch with the compacted error so its client relists.
    async fn cancel_all_compacted(&mut self) -> bool {
        let current = self.store.revisions().current();
        let ids: Vec<i64> = std::mem::take(&mut self.watchers).into_keys().collect();
        self.metrics.watchers_changed(-(ids.len() as i64));
        for id in ids {
            if !self.send(self.compacted(id, current.next())).await {
                return false;
            }
        }
        true
    }
}

impl Watcher {
    fn wants(&self, event: &StoredEvent) -> bool {
        let is_put = event.event.r#type == mvccpb::event::EventType::Put as i32;
        let filtered = if is_put { self.no_put } else { self.no_delete };
        self.range.contains(event.key()) && !filtered
    }
}

/// Splits a batch at revision boundaries into responses of bounded size.
fn chunks(events: Vec<mvccpb::Event>) -> Vec<Vec<mvccpb::Event>> {
    let mut out: Vec<Vec<mvccpb::Event>> = Vec::new();
    let mut current: Vec<mvccpb::Event> = Vec::new();
    let mut bytes = 0;
    let revision = |e: &mvccpb::Event| e.kv.as_ref().map(|kv| kv.mod_revision).unwrap_or(0);
    for event in events {
        let size = event
            .kv
            .as_ref()
            .map(|kv| kv.key.len() + kv.value.len())
            .unwrap_or(0)
            + event
                .prev_kv
                .as_ref()
                .map(|kv| kv.key.len() + kv.value.len())
                .unwrap_or(0);
        let full = current.len() >= MAX_BATCH_EVENTS || bytes + size > MAX_BATCH_BYTES;
        let new_revision = current
            .last()
            .is_some_and(|last| revision(last) != revision(&event));
        if full && new_revision {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(event);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests;
