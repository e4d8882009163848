//! The properties STE's fuzz targets check, one module per target (the
//! files in `fuzz_targets/` only hand libFuzzer's bytes to `check`). Kept in
//! a library so the seed generator (`examples/seeds.rs`) can run every seed
//! through the same checks. See `docs/fuzzing.md`.
//!
//! Every `check` must not panic for any input; a panic (an `assert!` here or
//! a panic in STE's code) is the crash libFuzzer reports.

pub mod admin;
pub mod envelope;
pub mod key_range;
pub mod txn;
