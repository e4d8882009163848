//! A writer: kube-apiserver's guarded create / update / delete Txns on the
//! Pod keys it owns (one writer per key, so a key's writes are sequential
//! and its revisions must increase), each with a deadline, every outcome
//! recorded. After an error it reads the key again before the next write,
//! as kube-apiserver's GuaranteedUpdate does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ste_tests::kube;

use crate::history::{History, Outcome, Write};
use crate::{DEADLINE, KEYS_PER_WRITER, MARGIN, Rng, connect, pod_key};

pub async fn writer(
    endpoint: String,
    id: usize,
    seed: u64,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut rng = Rng::new(seed);
    let mut client: Option<etcd_client::Client> = None;
    // The mod revision each key had at this writer's last answer (0:
    // absent); missing after an error.
    let mut known: BTreeMap<String, i64> = BTreeMap::new();
    let mut seq = 0u64;
    let mut last_acked = 0i64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(3 + rng.below(10))).await;
        let Some(c) = client.as_mut() else {
            client = connect(&endpoint).await.ok();
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        let key = pod_key(id, rng.below(KEYS_PER_WRITER as u64) as usize);
        let revision = match known.get(&key) {
            Some(r) => *r,
            None => {
                let started = Instant::now();
                let read = tokio::time::timeout(DEADLINE + MARGIN, c.get(key.as_str(), None)).await;
                history.request(&format!("writer {id}: get {key}"), started.elapsed());
                match read {
                    Ok(Ok(got)) => got.kvs().first().map(|kv| kv.mod_revision()).unwrap_or(0),
                    _ => {
                        client = None;
                        continue;
                    }
                }
            }
        };
        seq += 1;
        let value = format!("w{id}-{seq}").into_bytes();
        let delete = revision != 0 && rng.below(5) == 0;
        let started = Instant::now();
        let request = async {
            if revision == 0 {
                kube::create(c, &key, &value).await
            } else if delete {
                kube::delete(c, &key, revision).await
            } else {
                kube::update(c, &key, revision, &value).await
            }
        };
        let answer = tokio::time::timeout(DEADLINE + MARGIN, request).await;
        let took = started.elapsed();
        history.request(&format!("writer {id}: write {key}"), took);
        let outcome = match answer {
            Ok(Ok(kube::Outcome::Written(at))) => {
                if at <= last_acked {
                    history.violation(format!(
                        "writer {id}: write {seq} of {key} acknowledged at revision {at}, \
                         not above its previous acknowledged write at {last_acked}"
                    ));
                }
                last_acked = last_acked.max(at);
                known.insert(key.clone(), if delete { 0 } else { at });
                Outcome::Acked(at)
            }
            Ok(Ok(kube::Outcome::Conflict(current))) => {
                known.insert(key.clone(), current);
                Outcome::Conflict(current)
            }
            Ok(Err(error)) => {
                known.remove(&key);
                client = None;
                if took + Duration::from_millis(200) >= DEADLINE {
                    Outcome::TimedOut
                } else {
                    Outcome::Failed(error.to_string())
                }
            }
            Err(_) => {
                known.remove(&key);
                client = None;
                Outcome::TimedOut
            }
        };
        history.write(Write {
            writer: id,
            seq,
            key,
            value: (!delete).then_some(value),
            guard: revision,
            answered: Instant::now(),
            outcome,
        });
    }
    Ok(())
}
