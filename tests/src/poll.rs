//! Waiting for a condition with a deadline instead of sleeping: tests must
//! hold on a loaded 2-core machine.

use std::future::Future;
use std::time::{Duration, Instant};

/// Calls `check` every `interval` until it returns `Some`, or fails after
/// `timeout` with `what` and the last value seen.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let interval = Duration::from_millis(50);
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Generous deadline for things that take a second when the machine is idle.
pub const SLOW: Duration = Duration::from_secs(60);
