//! cargo-fuzz target: see `ste_fuzz::key_range` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ste_fuzz::key_range::check(data));
