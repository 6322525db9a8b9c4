//! Fuzz target `archive`: see `subledger_fuzz::archive` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subledger_fuzz::archive(data));
