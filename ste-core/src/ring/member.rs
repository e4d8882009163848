//! Ring members and the ring's generation counter.

use std::fmt;

use super::RingError;

/// One placement target: a shard of the store.
///
/// Only `name` and `weight` influence placement. `endpoint` rides along so
/// that a lookup answers "where do I send this?" without a second table; it
/// can change (e.g. a shard restarts on a new port) without moving any key.
///
/// The fields are public for convenience; the [`Ring`](super::Ring) checks
/// the invariants (valid name, `weight >= 1`) when a member is added.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    /// Stable identity; hashed into the member's points. Non-empty, and
    /// free of `#`, whitespace and control characters.
    pub name: String,
    /// Where the member is reached, e.g. `https://10.0.0.1:2379`. Opaque here.
    pub endpoint: String,
    /// Relative capacity, at least 1: the member gets `vnodes * weight`
    /// points and so roughly `weight` shares of the keys.
    pub weight: u32,
}

impl Member {
    /// A member with weight 1.
    pub fn new(name: impl Into<String>, endpoint: impl Into<String>) -> Self {
        Member {
            name: name.into(),
            endpoint: endpoint.into(),
            weight: 1,
        }
    }

    /// The same member with a different weight.
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

/// Checks that `name` can label points unambiguously: the rule every
/// ring member name obeys, which the router's admin API also applies to
/// node names in Join and Register before acting on them.
///
/// Errors: [`RingError::InvalidName`] saying which rule `name` breaks.
///
/// `#` is the separator in `"{name}#{i}"`: allowing it would let
/// `("a#1", 0)` and `("a", 10)` collide on the label `a#10`. Whitespace and
/// control characters are refused because names travel through logs, CLI
/// flags and config files where they would be mangled or invisible.
pub fn validate_name(name: &str) -> Result<(), RingError> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.contains('#') {
        Some("must not contain '#'")
    } else if name.chars().any(char::is_whitespace) {
        Some("must not contain whitespace")
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(RingError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Version of a ring's membership. Every successful membership change
/// increments it by exactly one, so two rings with the same history have the
/// same generation and a reader can tell a stale ring from a fresh one by
/// comparing generations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u64);

impl Generation {
    /// The generation of a ring that has never changed.
    pub const ZERO: Generation = Generation(0);

    /// The next generation, or `None` at `u64::MAX`.
    pub fn next(self) -> Option<Generation> {
        self.0.checked_add(1).map(Generation)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Generation {
    fn from(value: u64) -> Self {
        Generation(value)
    }
}

impl From<Generation> for u64 {
    fn from(value: Generation) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        for ok in ["node-a", "shard_1.example", "ü", "10.0.0.1:2379"] {
            assert_eq!(validate_name(ok), Ok(()), "{ok:?}");
        }
        for bad in ["", "a#b", "a b", "a\tb", "a\u{7}b", "a\u{a0}b", "\n"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generation_next_and_display() {
        assert_eq!(Generation::ZERO.next(), Some(Generation(1)));
        assert_eq!(Generation(u64::MAX).next(), None);
        assert_eq!(Generation(42).to_string(), "42");
        assert!(Generation(1) < Generation(2));
    }

    #[test]
    fn member_builders() {
        let m = Member::new("n", "e").with_weight(3);
        assert_eq!(
            (m.name.as_str(), m.endpoint.as_str(), m.weight),
            ("n", "e", 3)
        );
    }
}
