//! Errors from ring construction and membership changes.

use thiserror::Error;

use super::Generation;

/// Why a ring could not be built or a membership change was refused.
///
/// A refused change leaves the ring exactly as it was, generation included.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RingError {
    /// `vnodes` must be at least 1, or no member would own any point.
    #[error("vnodes must be at least 1 and at most {max}, got {got}")]
    InvalidVnodes {
        /// The rejected value.
        got: u32,
        /// The largest accepted value.
        max: u32,
    },

    /// The member name is not usable in a point label (`"{name}#{i}"`).
    #[error("invalid member name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// Weight 0 would be a member that owns nothing; remove it instead.
    #[error("member {name:?} has weight 0; weights must be at least 1")]
    ZeroWeight {
        /// The member's name.
        name: String,
    },

    /// `vnodes * weight` exceeds the per-member point budget.
    #[error("member {name:?} would get {vnodes} x {weight} points, more than the limit of {max}")]
    TooManyPoints {
        /// The member's name.
        name: String,
        /// The ring's vnodes per unit of weight.
        vnodes: u32,
        /// The requested weight.
        weight: u32,
        /// The per-member point limit.
        max: u32,
    },

    /// A member with this name is already on the ring.
    #[error("member {0:?} is already on the ring")]
    DuplicateMember(String),

    /// No member with this name is on the ring.
    #[error("member {0:?} is not on the ring")]
    UnknownMember(String),

    /// More members than a point's 32-bit slot can index. Unreachable in
    /// practice; refused rather than truncated.
    #[error("too many members for one ring")]
    TooManyMembers,

    /// The generation counter is at its maximum and cannot be incremented.
    #[error("ring generation {0} cannot be incremented")]
    GenerationExhausted(Generation),
}
