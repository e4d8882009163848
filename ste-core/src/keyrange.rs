//! etcd's key-range semantics: which keys a `(key, range_end)` pair names.
//!
//! etcd requests (`Range`, `DeleteRange`, `Watch`) name keys with two byte
//! strings, decoded by [`KeyRange::from_request`]:
//!
//! | `key`  | `range_end`     | keys                                  |
//! |--------|-----------------|---------------------------------------|
//! | `k`    | empty           | just `k`                              |
//! | `\0`   | `\0`            | all keys                              |
//! | `k`    | `\0`            | every key `>= k`                      |
//! | `k`    | `e`, `e > k`    | the half-open interval `[k, e)`       |
//! | `k`    | `e`, `e <= k`   | none                                  |
//!
//! Keys compare as byte strings (lexicographically, shorter prefix first),
//! the order of `[u8]`'s `Ord` and of etcd's index.
//!
//! # Representation
//!
//! A [`KeyRange`] is a start key and an optional *exclusive* end (`None` is
//! unbounded), normalised so that every shape above is one interval:
//!
//! * A single key `k` is `[k, k ++ "\0")`: `k ++ "\0"` is the least key
//!   greater than `k`, so the interval holds `k` alone. Conversely any
//!   interval of that form *is* a single key, whichever request built it.
//! * "All keys" is `[b"", unbounded)`. etcd never stores the empty key, so
//!   this holds the same keys as `["\0", unbounded)`, but starting at the
//!   least byte string makes "all" obvious and [`KeyRange::start`] total.
//! * An empty range keeps its start and gets `end == start`, so
//!   `end >= start` always holds and [`KeyRange::bounds`] can be passed to
//!   `BTreeMap::range`, which panics on inverted bounds.
//!
//! Validation (etcd refuses an empty `key`) is the caller's job: this module
//! gives every input a meaning and never fails.

use std::ops::Bound;

/// A set of etcd keys named by a request: an interval `[start, end)`.
///
/// Invariant: `end` is `None` (unbounded) or `Some(e)` with `e >= start`,
/// and `e == start` exactly when the range is empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyRange {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl KeyRange {
    /// The range named by an etcd request's `key` and `range_end` fields
    /// (see the module doc for the table).
    pub fn from_request(key: &[u8], range_end: &[u8]) -> KeyRange {
        match range_end {
            [] => KeyRange::single(key),
            [0] if key == [0] => KeyRange::all(),
            [0] => KeyRange::from_key(key),
            end if end > key => KeyRange {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
            _ => KeyRange::empty_at(key),
        }
    }

    /// Just `key`.
    pub fn single(key: &[u8]) -> KeyRange {
        let mut end = Vec::with_capacity(key.len() + 1);
        end.extend_from_slice(key);
        end.push(0);
        KeyRange {
            start: key.to_vec(),
            end: Some(end),
        }
    }

    /// Every key.
    pub fn all() -> KeyRange {
        KeyRange {
            start: Vec::new(),
            end: None,
        }
    }

    /// Every key `>= start`.
    pub fn from_key(start: &[u8]) -> KeyRange {
        KeyRange {
            start: start.to_vec(),
            end: None,
        }
    }

    /// Every key starting with `prefix`, as `etcdctl get --prefix` asks:
    /// `[prefix, prefix_end(prefix))`, or all keys for an empty prefix.
    pub fn prefix(prefix: &[u8]) -> KeyRange {
        if prefix.is_empty() {
            return KeyRange::all();
        }
        KeyRange::from_request(prefix, &prefix_end(prefix))
    }

    /// No keys; `start` is kept so the range still has a position.
    /// The half-open interval `[start, end)`, taken as written (unlike
    /// [`KeyRange::from_request`], `end == "\0"` is not "unbounded"); empty
    /// when `end <= start`.
    pub fn between(start: &[u8], end: &[u8]) -> KeyRange {
        if end <= start {
            return KeyRange::empty_at(start);
        }
        KeyRange {
            start: start.to_vec(),
            end: Some(end.to_vec()),
        }
    }

    /// The part of this range up to and including `last`:
    /// `[start, min(end, last ++ "\0"))`. An empty start becomes `"\0"`,
    /// which holds the same keys (etcd stores no empty key) and can be
    /// sent to a shard, which refuses an empty `key` with a bounded end.
    pub fn up_to(&self, last: &[u8]) -> KeyRange {
        let mut end = last.to_vec();
        end.push(0);
        if let Some(own) = &self.end
            && own < &end
        {
            end.clone_from(own);
        }
        let start: &[u8] = if self.start.is_empty() {
            &[0]
        } else {
            &self.start
        };
        KeyRange::between(start, &end)
    }

    fn empty_at(start: &[u8]) -> KeyRange {
        KeyRange {
            start: start.to_vec(),
            end: Some(start.to_vec()),
        }
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }

    /// Whether the range holds exactly one key (see the module doc).
    pub fn is_single_key(&self) -> bool {
        self.end.as_deref().is_some_and(|end| {
            end.len() == self.start.len() + 1
                && end.starts_with(&self.start)
                && end.last() == Some(&0)
        })
    }

    /// Whether the range holds no key at all.
    pub fn is_empty(&self) -> bool {
        self.end
            .as_deref()
            .is_some_and(|end| end <= self.start.as_slice())
    }

    /// Whether the range holds every key.
    pub fn is_all(&self) -> bool {
        self.start.is_empty() && self.end.is_none()
    }

    /// The least key the range can hold (inclusive).
    pub fn start(&self) -> &[u8] {
        &self.start
    }

    /// The exclusive end, or `None` when the range is unbounded above.
    ///
    /// For a single key `k` this is `k ++ "\0"`; for an empty range it
    /// equals [`KeyRange::start`], not the request's `range_end`.
    pub fn end(&self) -> Option<&[u8]> {
        self.end.as_deref()
    }

    /// The range as bounds for `BTreeMap<Vec<u8>, _>::range::<[u8], _>`.
    ///
    /// Never inverted, so `range` does not panic, even for an empty range.
    pub fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        let end = match &self.end {
            Some(end) => Bound::Excluded(end.as_slice()),
            None => Bound::Unbounded,
        };
        (Bound::Included(self.start.as_slice()), end)
    }

    /// The `(key, range_end)` fields naming this range in an etcd request,
    /// e.g. to forward it to a shard. `from_request` of the result gives
    /// back an equal range.
    pub fn to_request(&self) -> (Vec<u8>, Vec<u8>) {
        if self.is_single_key() {
            (self.start.clone(), Vec::new())
        } else if self.is_all() {
            (vec![0], vec![0])
        } else {
            match &self.end {
                Some(end) => (self.start.clone(), end.clone()),
                None => (self.start.clone(), vec![0]),
            }
        }
    }
}

/// The `range_end` that makes a request cover every key starting with
/// `prefix`: etcd's `GetPrefixRangeEnd`.
///
/// Trailing `0xff` bytes are dropped and the last remaining byte is
/// incremented: every key with the prefix is below the result and every
/// key from the result on lacks the prefix. A prefix that is empty or all
/// `0xff` has no such bound and gets `[0]`, which in a request means
/// "unbounded".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

#[cfg(test)]
mod tests;
