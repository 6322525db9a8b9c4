//! Fuzz target `http`: see `subledger_fuzz::http` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subledger_fuzz::http(data));
