//! Fuzz target `commands`: see `subledger_fuzz::commands` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subledger_fuzz::commands(data));
