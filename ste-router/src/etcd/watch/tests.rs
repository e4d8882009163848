//! Watch chunking and filters.

use super::*;

fn event(revision: i64, key: &str, bytes: usize) -> mvccpb::Event {
    mvccpb::Event {
        kv: Some(mvccpb::KeyValue {
            key: key.into(),
            value: vec![b'x'; bytes].into(),
            mod_revision: revision,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn shape(batches: &[Vec<mvccpb::Event>]) -> Vec<Vec<i64>> {
    batches
        .iter()
        .map(|b| {
            b.iter()
                .map(|e| e.kv.as_ref().unwrap().mod_revision)
                .collect()
        })
        .collect()
}

#[test]
fn small_batches_go_out_whole() {
    let batch = vec![event(2, "a", 10), event(3, "b", 10)];
    assert_eq!(shape(&chunks(batch)), vec![vec![2, 3]]);
    assert!(chunks(Vec::new()).is_empty());
}

#[test]
fn a_batch_is_cut_by_count_only_between_revisions() {
    let batch: Vec<_> = (0..MAX_BATCH_EVENTS as i64 + 5)
        .map(|i| event(10 + i, "k", 1))
        .collect();
    let out = chunks(batch);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].len(), MAX_BATCH_EVENTS);
    assert_eq!(out[1].len(), 5);
}

#[test]
fn the_events_of_one_revision_stay_together_whatever_their_size() {
    // A multi-key delete: one revision, more than a response's worth.
    let big = MAX_BATCH_BYTES / 2 + 1;
    let batch = vec![
        event(5, "a", big),
        event(5, "b", big),
        event(5, "c", big),
        event(6, "d", big),
    ];
    assert_eq!(shape(&chunks(batch)), vec![vec![5, 5, 5], vec![6]]);
}

#[test]
fn watchers_filter_by_range_and_type() {
    let watcher = Watcher {
        range: KeyRange::prefix(b"/registry/pods/"),
        next: GlobalRevision(1),
        prev_kv: false,
        no_put: false,
        no_delete: true,
        progress_notify: false,
        active: false,
    };
    let stored = |key: &str, kind: mvccpb::event::EventType| StoredEvent {
        revision: GlobalRevision(2),
        event: mvccpb::Event {
            r#type: kind as i32,
            ..event(2, key, 0)
        },
    };
    use mvccpb::event::EventType::{Delete, Put};
    assert!(watcher.wants(&stored("/registry/pods/a", Put)));
    assert!(!watcher.wants(&stored("/registry/pods/a", Delete)));
    assert!(!watcher.wants(&stored("/registry/nodes/a", Put)));
}
