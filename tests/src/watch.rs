//! Reading a watch stream with a deadline: a watch that never answers must
//! fail the test, not hang it.

use std::time::Duration;

use etcd_client::{Client, WatchOptions, WatchResponse, WatchStream};

/// A watch on every key under `prefix` from `revision` (kube-apiserver's
/// watch-cache shape, without prev_kv).
pub async fn prefix_from(
    client: &mut Client,
    prefix: &str,
    revision: i64,
) -> anyhow::Result<WatchStream> {
    Ok(client
        .watch(
            prefix,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision),
            ),
        )
        .await?)
}

/// The first answer on `stream` that carries events or cancels the watch,
/// skipping the bare `created` response (etcd sends a compaction refusal
/// after `created`). Fails if the stream ends or nothing comes in `timeout`.
pub async fn first_answer(
    stream: &mut WatchStream,
    timeout: Duration,
) -> anyhow::Result<WatchResponse> {
    first_matching(stream, timeout, "an answer", |r| {
        r.canceled() || !r.events().is_empty()
    })
    .await
}

/// The response that cancels the watch on `stream`, skipping every event
/// before it. Fails if the stream ends or no cancel comes in `timeout`.
pub async fn until_canceled(
    stream: &mut WatchStream,
    timeout: Duration,
) -> anyhow::Result<WatchResponse> {
    first_matching(stream, timeout, "a cancel", WatchResponse::canceled).await
}

/// The first response on `stream` for which `wanted` holds; `what` names
/// it in the error if the stream ends or `timeout` passes first.
async fn first_matching(
    stream: &mut WatchStream,
    timeout: Duration,
    what: &str,
    wanted: impl Fn(&WatchResponse) -> bool,
) -> anyhow::Result<WatchResponse> {
    tokio::time::timeout(timeout, async {
        while let Some(response) = stream.message().await? {
            if wanted(&response) {
                return anyhow::Ok(response);
            }
        }
        anyhow::bail!("watch stream ended without {what}")
    })
    .await
    .map_err(|_| anyhow::anyhow!("no {what} on the watch within {timeout:?}"))?
}
