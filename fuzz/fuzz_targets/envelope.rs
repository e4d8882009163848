//! cargo-fuzz target: see `ste_fuzz::envelope` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ste_fuzz::envelope::check(data));
