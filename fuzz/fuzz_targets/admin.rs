//! cargo-fuzz target: see `ste_fuzz::admin` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ste_fuzz::admin::check(data));
