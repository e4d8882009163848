//! One system's run of the script: each request kube-apiserver makes, sent
//! and recorded as a normalised [`Step`].

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use tonic::Code;

use crate::outcome::{Event, Kv, OpOut, Outcome, Range, TxnOut, WatchOut};

pub(crate) const COMPACT_KEY: &str = "compact_rev_key";
/// Per watch: how long to wait for the expected events (a loaded 2-core
/// machine can be slow; an idle one needs milliseconds).
const WATCH_DEADLINE: Duration = Duration::from_secs(30);

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    end
}

pub(crate) struct Step {
    pub(crate) label: String,
    pub(crate) outcome: Outcome,
}

pub(crate) struct Run {
    /// "etcd" or "router", for messages.
    pub(crate) side: &'static str,
    pub(crate) client: Client,
    pub(crate) steps: Vec<Step>,
    /// Every applied write: (revision, key).
    pub(crate) writes: Vec<(i64, String)>,
    /// Mod revisions a key had, newest last (what a client cache would have
    /// seen); empty or missing once deleted.
    pub(crate) mods: HashMap<String, Vec<i64>>,
}

impl Run {
    pub(crate) fn record(&mut self, label: impl Into<String>, outcome: Outcome) -> Outcome {
        self.steps.push(Step {
            label: label.into(),
            outcome: outcome.clone(),
        });
        outcome
    }

    pub(crate) fn mod_of(&self, key: &str) -> i64 {
        self.mods
            .get(key)
            .and_then(|m| m.last().copied())
            .unwrap_or(0)
    }

    /// A mod revision the key had before its current one.
    pub(crate) fn stale_mod_of(&self, key: &str) -> i64 {
        let mods = &self.mods[key];
        assert!(mods.len() >= 2, "{key} was never updated: {mods:?}");
        mods[mods.len() - 2]
    }

    pub(crate) async fn txn(&mut self, label: String, key: &str, txn: Txn) -> Outcome {
        let outcome = match self.client.txn(txn).await {
            Ok(r) => Outcome::Txn(TxnOut::of(&r)),
            Err(e) => Outcome::error(e),
        };
        if let Outcome::Txn(t) = &outcome
            && t.succeeded
        {
            for op in &t.responses {
                match op {
                    OpOut::Put { header, .. } => {
                        self.writes.push((*header, key.to_owned()));
                        self.mods.entry(key.to_owned()).or_default().push(*header);
                    }
                    OpOut::Delete {
                        header, deleted, ..
                    } if *deleted > 0 => {
                        self.writes.push((*header, key.to_owned()));
                        self.mods.remove(key);
                    }
                    _ => {}
                }
            }
        }
        self.record(label, outcome)
    }

    /// kube-apiserver's create: `If(mod(K) == 0) Then(Put(K, v))`, no else.
    pub(crate) async fn create(&mut self, key: &str, value: &str) -> Outcome {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        self.txn(format!("create {key}"), key, txn).await
    }

    /// kube-apiserver's update (GuaranteedUpdate):
    /// `If(mod(K) == R) Then(Put(K, v)) Else(Get(K))`.
    pub(crate) async fn update(&mut self, key: &str, rev: i64, value: &str, what: &str) -> Outcome {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)]);
        self.txn(format!("update {key} ({what})"), key, txn).await
    }

    /// kube-apiserver's delete:
    /// `If(mod(K) == R) Then(Delete(K)) Else(Get(K))`.
    pub(crate) async fn delete(&mut self, key: &str, rev: i64, what: &str) -> Outcome {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
            .and_then([TxnOp::delete(key, None)])
            .or_else([TxnOp::get(key, None)]);
        self.txn(format!("delete {key} ({what})"), key, txn).await
    }

    /// kube-apiserver's compaction step: bump compact_rev_key's version if
    /// it is still `version`, then compact at `rev` (0: no compaction, as
    /// at bootstrap).
    pub(crate) async fn kube_compact(&mut self, version: i64, rev: i64, what: &str) -> Outcome {
        let txn = Txn::new()
            .when([Compare::version(COMPACT_KEY, CompareOp::Equal, version)])
            .and_then([TxnOp::put(COMPACT_KEY, "", None)])
            .or_else([TxnOp::get(COMPACT_KEY, None)]);
        let outcome = self
            .txn(
                format!("compaction txn v{version} ({what})"),
                COMPACT_KEY,
                txn,
            )
            .await;
        if rev != 0 && outcome.txn().succeeded {
            self.compact(rev, what).await;
        }
        outcome
    }

    pub(crate) async fn compact(&mut self, rev: i64, what: &str) -> Outcome {
        let outcome = match self.client.compact(rev, None).await {
            Ok(r) => Outcome::Compact {
                header: r.header().map(|h| h.revision()).unwrap_or(-1),
            },
            Err(e) => Outcome::error(e),
        };
        self.record(format!("compact ({what})"), outcome)
    }

    pub(crate) async fn get(
        &mut self,
        key: &str,
        options: Option<GetOptions>,
        label: String,
    ) -> Outcome {
        let outcome = match self.client.get(key, options).await {
            Ok(r) => Outcome::Range(Range::of(&r)),
            Err(e) => Outcome::error(e),
        };
        self.record(label, outcome)
    }

    /// A kube-apiserver LIST: the first page at the current revision, every
    /// further page pinned at the first page's revision and starting just
    /// after the last key. `between_pages` runs after the first page (a
    /// write there must not show up in later pages).
    pub(crate) async fn list(
        &mut self,
        prefix: &str,
        limit: i64,
        at: i64,
        what: &str,
        write_between_pages: Option<&str>,
    ) -> Vec<Outcome> {
        let mut pages = Vec::new();
        let options = GetOptions::new()
            .with_prefix()
            .with_limit(limit)
            .with_revision(at);
        let first = self
            .get(
                prefix,
                Some(options),
                format!(
                    "list {prefix} limit {limit} at {at_label} ({what}) page 0",
                    at_label = if at == 0 { "current" } else { "pinned" }
                ),
            )
            .await;
        pages.push(first.clone());
        let Outcome::Range(mut page) = first else {
            return pages;
        };
        let pinned = if at == 0 { page.header } else { at };
        if let Some(key) = write_between_pages {
            let rev = self.mod_of(key);
            let generation = 20 + self.writes.len() as u32;
            self.update(key, rev, &value(key, generation), "between pages")
                .await;
        }
        let mut n = 1;
        while page.more {
            let last = page
                .kvs
                .last()
                .expect("a page with more has keys")
                .key
                .clone();
            let mut start = last.into_bytes();
            start.push(0);
            let options = GetOptions::new()
                .with_range(prefix_end(prefix))
                .with_limit(limit)
                .with_revision(pinned);
            let outcome = match self.client.get(start, Some(options)).await {
                Ok(r) => Outcome::Range(Range::of(&r)),
                Err(e) => Outcome::error(e),
            };
            let outcome = self.record(
                format!("list {prefix} limit {limit} ({what}) page {n}"),
                outcome,
            );
            pages.push(outcome.clone());
            match outcome {
                Outcome::Range(next) => page = next,
                _ => break,
            }
            n += 1;
            assert!(n < 1000, "pagination does not end");
        }
        pages
    }

    /// Opens a watch and waits for its "created" answer.
    pub(crate) async fn open_watch(
        &mut self,
        key: &str,
        options: WatchOptions,
    ) -> Result<(WatchStream, WatchOut), Outcome> {
        let mut stream = self
            .client
            .watch(key, Some(options))
            .await
            .map_err(Outcome::error)?;
        let first = next_message(&mut stream).await;
        assert!(
            first.created(),
            "the first watch answer is `created`: {first:?}"
        );
        let out = WatchOut {
            created_header: first.header().map(|h| h.revision()).unwrap_or(-1),
            ..Default::default()
        };
        if first.canceled() {
            return Err(Outcome::Error {
                code: Code::Cancelled,
                message: format!("watch create refused: {}", first.cancel_reason()),
            });
        }
        Ok((stream, out))
    }

    /// Collects `expected` events (or a cancellation), then asks for progress
    /// and takes any events that arrive before the progress answer.
    pub(crate) async fn collect(
        side: &str,
        stream: &mut WatchStream,
        out: &mut WatchOut,
        expected: usize,
    ) {
        let deadline = tokio::time::Instant::now() + WATCH_DEADLINE;
        while out.events.len() < expected && !out.canceled {
            let message = tokio::time::timeout_at(deadline, next_message(stream))
                .await
                .unwrap_or_else(|_| {
                    panic!("{side}: timed out waiting for {expected} watch events; got {out:?}")
                });
            take(out, &message);
        }
        if out.canceled {
            return;
        }
        stream.request_progress().await.expect("request progress");
        loop {
            let message = tokio::time::timeout_at(deadline, next_message(stream))
                .await
                .unwrap_or_else(|_| {
                    panic!("{side}: timed out waiting for the progress answer; got {out:?}")
                });
            let is_progress =
                message.events().is_empty() && !message.created() && !message.canceled();
            take(out, &message);
            if is_progress {
                out.progress = Some((
                    message.header().map(|h| h.revision()).unwrap_or(-1),
                    message.watch_id(),
                ));
                break;
            }
            if out.canceled {
                break;
            }
        }
    }

    /// A watch from a past (or compacted) revision: collect what it sends.
    pub(crate) async fn watch(
        &mut self,
        key: &str,
        options: WatchOptions,
        expected: usize,
        label: String,
    ) -> Outcome {
        let outcome = match self.open_watch(key, options).await {
            Ok((mut stream, mut out)) => {
                Run::collect(self.side, &mut stream, &mut out, expected).await;
                Outcome::Watch(out)
            }
            Err(outcome) => outcome,
        };
        self.record(label, outcome)
    }

    /// Writes with revision >= `from` to keys starting with `prefix`.
    pub(crate) fn writes_since(&self, from: i64, prefix: &str) -> usize {
        self.writes
            .iter()
            .filter(|(rev, key)| *rev >= from && key.starts_with(prefix))
            .count()
    }
}

async fn next_message(stream: &mut WatchStream) -> etcd_client::WatchResponse {
    stream
        .message()
        .await
        .expect("watch stream error")
        .expect("watch stream ended")
}

fn take(out: &mut WatchOut, message: &etcd_client::WatchResponse) {
    for event in message.events() {
        out.events.push(Event {
            put: event.event_type() == EventType::Put,
            kv: Kv::of(event.kv().expect("an event has a kv")),
            prev: event.prev_kv().map(Kv::of),
        });
    }
    if message.canceled() {
        out.canceled = true;
        out.cancel_header = message.header().map(|h| h.revision()).unwrap_or(-1);
        out.cancel_reason = message.cancel_reason().to_owned();
        out.compact_revision = message.compact_revision();
    }
}

pub(crate) fn value(key: &str, generation: u32) -> String {
    format!("{{\"kind\":\"Pod\",\"key\":\"{key}\",\"generation\":{generation}}}")
}
