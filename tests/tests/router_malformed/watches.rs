//! Watches etcd refuses, or that make no sense.

use std::time::Duration;

use etcd_client::{Client, WatchOptions, WatchStream};

use crate::pair::Pair;

/// Empty watch ranges, a duplicate watch ID, a negative start revision.
pub(crate) async fn odd_watches(
    pair: &mut Pair,
    etcd: &mut Client,
    router: &mut Client,
) -> anyhow::Result<()> {
    for (case, key, options) in [
        (
            "watch with range_end before key",
            "/registry/pods/odd/p3",
            WatchOptions::new().with_range("/registry/pods/odd/p1"),
        ),
        (
            "watch with range_end equal to key",
            "/registry/pods/odd/p3",
            WatchOptions::new().with_range("/registry/pods/odd/p3"),
        ),
    ] {
        let e = first_watch_answer(etcd, key, options.clone()).await?;
        let r = first_watch_answer(router, key, options).await?;
        if e != r {
            pair.fail(case, format!("etcd answers {e:?}, router {r:?}"));
        }
    }
    // A second watch with the ID of an open one is refused (ID -1), and the
    // open one goes on.
    for (side, client) in [("etcd", &mut *etcd), ("router", &mut *router)] {
        let mut stream = client
            .watch(
                "/registry/pods/dup/",
                Some(WatchOptions::new().with_prefix().with_watch_id(5)),
            )
            .await?;
        let created = next_answer(&mut stream).await?;
        stream
            .watch(
                "/registry/pods/other",
                Some(WatchOptions::new().with_watch_id(5)),
            )
            .await?;
        let refused = next_answer(&mut stream).await?;
        let want = WatchAnswer {
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: "mvcc: duplicate watch ID provided on the WatchStream".into(),
            events: vec![],
        };
        if created.watch_id != 5 || refused != want {
            pair.fail(
                "duplicate watch ID",
                format!("{side} answers {created:?} then {refused:?}"),
            );
        }
        client.put("/registry/pods/dup/a", side, None).await?;
        let event = next_answer(&mut stream).await?;
        if event.watch_id != 5 || event.events != ["/registry/pods/dup/a"] {
            pair.fail(
                "duplicate watch ID",
                format!("{side}: the first watch stopped: {event:?}"),
            );
        }
    }
    // A negative start revision: etcd 3.4 creates the watch and then never
    // sends an event on it (its history scan starts at a nonsensical
    // position), so there is nothing sensible to match. The router treats
    // it as a Range treats a negative revision: "now".
    let mut stream = router
        .watch(
            "/registry/pods/neg/",
            Some(WatchOptions::new().with_prefix().with_start_revision(-1)),
        )
        .await?;
    let created = next_answer(&mut stream).await?;
    router.put("/registry/pods/neg/a", "v", None).await?;
    let event = next_answer(&mut stream).await?;
    if !created.created || created.canceled || event.events != ["/registry/pods/neg/a"] {
        pair.fail(
            "watch from revision -1",
            format!("router answers {created:?} then {event:?}"),
        );
    }
    Ok(())
}

/// A watch answer without revisions and member IDs.
#[derive(Debug, PartialEq, Eq)]
struct WatchAnswer {
    watch_id: i64,
    created: bool,
    canceled: bool,
    cancel_reason: String,
    events: Vec<String>,
}

async fn next_answer(stream: &mut WatchStream) -> anyhow::Result<WatchAnswer> {
    let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .map_err(|_| anyhow::anyhow!("no watch answer within 30s"))??
        .ok_or_else(|| anyhow::anyhow!("watch stream ended"))?;
    Ok(WatchAnswer {
        watch_id: message.watch_id(),
        created: message.created(),
        canceled: message.canceled(),
        cancel_reason: message.cancel_reason().to_owned(),
        events: message
            .events()
            .iter()
            .filter_map(|e| e.kv())
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect(),
    })
}

async fn first_watch_answer(
    client: &mut etcd_client::Client,
    key: &str,
    options: WatchOptions,
) -> anyhow::Result<WatchAnswer> {
    let mut stream = client.watch(key, Some(options)).await?;
    next_answer(&mut stream).await
}
