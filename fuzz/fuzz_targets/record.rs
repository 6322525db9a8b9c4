//! Fuzz target `record`: see `subledger_fuzz::record` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subledger_fuzz::record(data));
