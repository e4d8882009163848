//! One seeded sequence: generate a request, send it to both systems, renumber
//! the router's answer, normalise the documented differences, compare; at
//! the end, every watch's remaining events.

use std::collections::BTreeMap;

use etcd_client::Client;
use tokio::time::Instant;

use crate::answer::{Answer, WatchItem};
use crate::differences::{self, normalise};
use crate::generate::Generator;
use crate::model::Model;
use crate::renumber::Numbers;
use crate::request::{Ids, Keys, RangeOpts, Req, Same};
use crate::watches::{self, History, Stream, WATCH_DEADLINE, Watch};

/// A divergence: everything needed to see it and replay it.
pub(crate) struct Divergence(pub(crate) String);

/// Requests sent, by kind, and normalisations applied.
#[derive(Default, Debug)]
pub(crate) struct Counts {
    pub(crate) requests: usize,
    pub(crate) by_kind: BTreeMap<&'static str, usize>,
    pub(crate) normalised: BTreeMap<&'static str, usize>,
    /// What etcd answered, coarsely: errors by message, Txns by branch,
    /// watch events: to see that the generator reaches the cases.
    pub(crate) outcomes: BTreeMap<String, usize>,
}

fn outcome(answer: &Answer) -> Option<String> {
    match answer {
        Answer::Error { message, .. } => Some(format!("error: {message}")),
        Answer::Txn(t) if t.succeeded => Some("Txn succeeded".into()),
        Answer::Txn(_) => Some("Txn failed".into()),
        Answer::Delete { deleted, .. } if *deleted > 1 => Some("DeleteRange of >1 keys".into()),
        Answer::Range(r) if r.more => Some("Range with more".into()),
        _ => None,
    }
}

fn kind(req: &Req) -> &'static str {
    match req {
        Req::Put { .. } => "Put",
        Req::Range(..) => "Range",
        Req::Delete { .. } => "DeleteRange",
        Req::Txn { .. } => "Txn",
        Req::Compact { .. } => "Compact",
        Req::WatchCreate { .. } => "Watch create",
        Req::WatchCancel { .. } => "Watch cancel",
        Req::WatchProgress { .. } => "Watch progress",
        Req::LeaseGrant { .. } => "LeaseGrant",
        Req::LeaseRevoke { .. } => "LeaseRevoke",
        Req::LeaseKeepAlive { .. } => "LeaseKeepAlive",
        Req::LeaseTimeToLive { .. } => "LeaseTimeToLive",
        Req::LeaseLeases => "LeaseLeases",
    }
}

struct Sequence {
    seed: u64,
    etcd: Client,
    router: Client,
    model: Model,
    numbers: Numbers,
    history: History,
    watches: Vec<Watch>,
    counts: Counts,
}

/// Runs `requests` requests generated from `seed` against `etcd` (the
/// reference) and `router`, both fresh.
pub(crate) async fn run(
    seed: u64,
    requests: usize,
    mut etcd: Client,
    mut router: Client,
) -> Result<Counts, Divergence> {
    let probe = Req::Range(Keys::One("/".into()), RangeOpts::default());
    let (e, r) = tokio::join!(probe.send(&mut etcd, &Same), probe.send(&mut router, &Same));
    let (Some(e0), Some(r0)) = (e.header(), r.header()) else {
        return Err(Divergence(format!("first read failed: {e:?} / {r:?}")));
    };
    let history = History::open(&mut etcd, e0 + 1)
        .await
        .map_err(|e| Divergence(format!("opening etcd's history watch: {e}")))?;
    let mut s = Sequence {
        seed,
        etcd,
        router,
        model: Model::starting_at(e0),
        numbers: Numbers::default(),
        history,
        watches: Vec::new(),
        counts: Counts::default(),
    };
    s.numbers.start(e0, r0);
    let mut generator = Generator::new(seed);
    let trace = std::env::var_os("STE_DIFF_TRACE").is_some();
    for step in 0..requests {
        let open: Vec<usize> = (0..s.watches.len())
            .filter(|&i| s.watches[i].open())
            .collect();
        let progressable: Vec<usize> = (0..s.watches.len())
            .filter(|&i| s.watches[i].progressable())
            .collect();
        let req = generator.next(&s.model, &open, &progressable, s.watches.len());
        if trace {
            println!("step {step}: {req:?}");
        }
        s.step(step, &req).await?;
    }
    for w in 0..s.watches.len() {
        let req = Req::WatchProgress { watch: w };
        let (e, r, at) = s
            .sync(w)
            .await
            .map_err(|e| s.divergence(requests, &req, &e, None))?;
        s.compare(requests, &req, e, r, at)?;
    }
    Ok(s.counts)
}

impl Sequence {
    fn divergence(
        &self,
        step: usize,
        req: &Req,
        what: &str,
        answers: Option<String>,
    ) -> Divergence {
        Divergence(format!(
            "seed {seed}, step {step}: {what}\n  request: {req:?}\n{answers}  replay: STE_DIFF_SEED={seed} STE_DIFF_REQUESTS={n}",
            seed = self.seed,
            answers = answers.unwrap_or_default(),
            n = step + 1,
        ))
    }

    async fn step(&mut self, step: usize, req: &Req) -> Result<(), Divergence> {
        *self.counts.by_kind.entry(kind(req)).or_default() += 1;
        self.counts.requests += 1;
        let (etcd, router, at_compaction) = match req {
            Req::WatchCreate { .. } | Req::WatchCancel { .. } | Req::WatchProgress { .. } => self
                .watch_step(req)
                .await
                .map_err(|e| self.divergence(step, req, &e, None))?,
            _ => {
                let (etcd, router) = tokio::join!(
                    req.send(&mut self.etcd, &Same),
                    req.send(&mut self.router, &self.numbers)
                );
                (etcd, router, None)
            }
        };
        self.compare(step, req, etcd, router, at_compaction)?;
        Ok(())
    }

    fn compare(
        &mut self,
        step: usize,
        req: &Req,
        etcd: Answer,
        router: Answer,
        at_compaction: Option<i64>,
    ) -> Result<(), Divergence> {
        let raw = router.clone();
        if let Some(outcome) = outcome(&etcd) {
            *self.counts.outcomes.entry(outcome).or_default() += 1;
        }
        if let Answer::Watch(items) = &etcd {
            let events = items
                .iter()
                .filter(|i| i.event_revision().is_some())
                .count();
            *self
                .counts
                .outcomes
                .entry("watch events".into())
                .or_default() += events;
        }
        let learned = self.numbers.learn(&etcd, &router);
        let mut mapped = self.numbers.to_etcd(&router);
        self.model.apply(req, &etcd);
        let mut etcd = etcd;
        for applied in normalise(&mut etcd, &mut mapped, at_compaction) {
            *self.counts.normalised.entry(applied).or_default() += 1;
        }
        let answers = || {
            Some(format!(
                "  etcd:   {etcd:?}\n  router: {mapped:?} (renumbered)\n  router: {raw:?} (raw)\n"
            ))
        };
        if let Err(e) = learned {
            return Err(self.divergence(step, req, &e, answers()));
        }
        if etcd != mapped {
            return Err(self.divergence(step, req, "the answers differ", answers()));
        }
        Ok(())
    }

    /// Sends a watch request to both sides and waits for what it owes;
    /// returns both sides' new items and the watch's compaction revision
    /// if it started there.
    async fn watch_step(&mut self, req: &Req) -> Result<(Answer, Answer, Option<i64>), String> {
        match *req {
            Req::WatchCreate {
                watch,
                ref keys,
                start,
                prev_kv,
                no_put,
                no_delete,
            } => {
                assert_eq!(watch, self.watches.len(), "watches are numbered in order");
                let router_start = self.numbers.revision(start);
                let (etcd, router) = tokio::join!(
                    Stream::open(
                        &mut self.etcd,
                        keys,
                        watches::options(start, prev_kv, no_put, no_delete)
                    ),
                    Stream::open(
                        &mut self.router,
                        keys,
                        watches::options(router_start, prev_kv, no_put, no_delete)
                    )
                );
                let (etcd, router) = match (etcd, router) {
                    (Ok(e), Ok(r)) => (e, r),
                    (e, r) => {
                        return Err(format!("opening the watch: {:?} / {:?}", e.err(), r.err()));
                    }
                };
                let deadline = Instant::now() + WATCH_DEADLINE;
                etcd.wait("etcd's created answer", deadline, watches::created)
                    .await?;
                let from = if start != 0 {
                    start
                } else {
                    etcd.items()
                        .iter()
                        .find_map(|i| match i {
                            WatchItem::Created { header, .. } => Some(header + 1),
                            _ => None,
                        })
                        .expect("created")
                };
                let compacted = self.model.compacted;
                self.watches.push(Watch {
                    keys: keys.clone(),
                    no_put,
                    no_delete,
                    from,
                    at_compaction: (start != 0 && compacted > 0 && start == compacted)
                        .then_some(start),
                    compacted: start != 0 && start < compacted,
                    etcd,
                    router,
                    canceled: false,
                    closed: false,
                    from_past: start != 0 && start <= self.model.current,
                    etcd_events: 0,
                });
                self.sync(watch).await
            }
            Req::WatchCancel { watch } => {
                self.sync_and_compare(watch).await?;
                let w = &mut self.watches[watch];
                if w.canceled {
                    return Ok((Answer::Watch(Vec::new()), Answer::Watch(Vec::new()), None));
                }
                let (e, r) = (w.etcd.watch_id(), w.router.watch_id());
                let (Some(e), Some(r)) = (e, r) else {
                    return Err("no watch ID to cancel".into());
                };
                let (a, b) = tokio::join!(w.etcd.cancel(e), w.router.cancel(r));
                a.and(b).map_err(|e| format!("sending the cancel: {e}"))?;
                let deadline = Instant::now() + WATCH_DEADLINE;
                let (a, b) = tokio::join!(
                    w.etcd.wait("etcd's cancel", deadline, watches::canceled),
                    w.router
                        .wait("the router's cancel", deadline, watches::canceled)
                );
                a.and(b)?;
                w.canceled = true;
                w.closed = true;
                Ok((
                    Answer::Watch(w.etcd.take_new()),
                    Answer::Watch(w.router.take_new()),
                    w.at_compaction,
                ))
            }
            Req::WatchProgress { watch } => {
                self.sync_and_compare(watch).await?;
                let w = &mut self.watches[watch];
                if w.canceled {
                    return Ok((Answer::Watch(Vec::new()), Answer::Watch(Vec::new()), None));
                }
                let progress = |items: &[WatchItem]| {
                    items
                        .iter()
                        .filter(|i| matches!(i, WatchItem::Progress { .. }))
                        .count()
                };
                let (e0, r0) = (progress(&w.etcd.items()), progress(&w.router.items()));
                let (a, b) = tokio::join!(w.etcd.request_progress(), w.router.request_progress());
                a.and(b)
                    .map_err(|e| format!("sending the progress request: {e}"))?;
                let deadline = Instant::now() + WATCH_DEADLINE;
                let etcd_deadline = Instant::now() + differences::ETCD_PROGRESS_PATIENCE;
                let (a, b) = tokio::join!(
                    w.etcd
                        .wait("etcd's progress answer", etcd_deadline, |i| progress(i)
                            > e0),
                    w.router
                        .wait("the router's progress answer", deadline, |i| progress(i)
                            > r0)
                );
                b?;
                if a.is_err() {
                    // differences::ETCD_PROGRESS_DEFERRED: the router
                    // answered, etcd may answer with its next event.
                    *self
                        .counts
                        .normalised
                        .entry(differences::ETCD_PROGRESS_DEFERRED)
                        .or_default() += 1;
                    w.canceled = true;
                    w.closed = true;
                    w.etcd.ended();
                    w.router.ended();
                    return Ok((Answer::Watch(Vec::new()), Answer::Watch(Vec::new()), None));
                }
                Ok((
                    Answer::Watch(w.etcd.take_new()),
                    Answer::Watch(w.router.take_new()),
                    w.at_compaction,
                ))
            }
            _ => unreachable!("not a watch request"),
        }
    }

    /// Syncs watch `w` and fails if what arrived so far differs (before
    /// a cancel or a progress request adds to it).
    async fn sync_and_compare(&mut self, w: usize) -> Result<(), String> {
        let (e, r, at) = self.sync(w).await?;
        let mut mapped = self.numbers.to_etcd(&r);
        let mut e = e;
        normalise(&mut e, &mut mapped, at);
        if e != mapped {
            return Err(format!(
                "watch {w}'s events differ before the request\n  etcd:   {e:?}\n  router: {mapped:?} (renumbered)\n  router: {r:?} (raw)"
            ));
        }
        Ok(())
    }

    /// Waits until both sides of watch `w` have received every event the
    /// history says it owes (or were canceled), and returns what they
    /// received since the last comparison.
    async fn sync(&mut self, w: usize) -> Result<(Answer, Answer, Option<i64>), String> {
        let watch = &mut self.watches[w];
        if watch.canceled {
            // Nothing may come after the cancellation.
            return Ok((
                Answer::Watch(watch.etcd.take_new()),
                Answer::Watch(watch.router.take_new()),
                watch.at_compaction,
            ));
        }
        let deadline = Instant::now() + WATCH_DEADLINE;
        self.history.reach(self.model.current, deadline).await?;
        let watch = &mut self.watches[w];
        let last = self.history.last_for(watch, watch.from, None);
        // etcd may have dropped the DELETE events at the compaction
        // revision (differences::WATCH_AT_COMPACTION).
        let last_etcd = self
            .history
            .last_for(watch, watch.from, watch.at_compaction);
        let last_router = last.map(|l| self.numbers.revision(l));
        // A watch from below the compaction revision owes only the
        // compacted error.
        let compacted = watch.compacted;
        let owed = |i: &[WatchItem], last: Option<i64>| {
            watches::created(i)
                && (watches::canceled(i)
                    || !compacted && last.is_none_or(|l| watches::reached(i, l)))
        };
        let (a, b) = tokio::join!(
            watch
                .etcd
                .wait("etcd's events", deadline, |i| owed(i, last_etcd)),
            watch
                .router
                .wait("the router's events", deadline, |i| owed(i, last_router))
        );
        a.and(b)?;
        let (etcd, router) = (watch.etcd.take_new(), watch.router.take_new());
        watch.etcd_events += etcd.iter().filter(|i| i.event_revision().is_some()).count();
        let router_mapped = match self.numbers.to_etcd(&Answer::Watch(router.clone())) {
            Answer::Watch(items) => items,
            _ => unreachable!("a watch answer maps to one"),
        };
        // Only a watch created above the compaction revision: one created
        // below it must be canceled by both.
        if !watch.compacted
            && differences::etcd_unsynced_watch_compacted(&etcd, &router_mapped, watch.from)
        {
            *self
                .counts
                .normalised
                .entry(differences::ETCD_UNSYNCED_WATCH_COMPACTED)
                .or_default() += 1;
            watch.canceled = true;
            if let Some(id) = watch.router.watch_id() {
                let _ = watch.router.cancel(id).await;
            }
            watch.router.ended();
            return Ok((Answer::Watch(Vec::new()), Answer::Watch(Vec::new()), None));
        }
        if watches::canceled(&etcd) {
            watch.canceled = true;
        }
        Ok((
            Answer::Watch(etcd),
            Answer::Watch(router),
            watch.at_compaction,
        ))
    }
}
