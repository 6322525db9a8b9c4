//! Fuzz target `snapshot`: see `subledger_fuzz::snapshot` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subledger_fuzz::snapshot(data));
