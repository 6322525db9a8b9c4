//! What fresh memory costs on this machine: the first write to each page of a new allocation
//! against a second pass over the same pages, and a new allocation after the first is freed.
//!
//! `cargo run --release -p subledger-bench --example first_touch -- [GiB]` (default 2). On the
//! project's machine kind (a virtual machine) the first touch took 0.55 s per GiB and a second
//! pass 0.05 s: recovery and snapshot loading pay the first figure for every byte of new
//! structures, so bytes kept per event are time as well as memory.

use std::time::Instant;

fn main() {
    let gib: usize = std::env::args()
        .nth(1)
        .and_then(|text| text.parse().ok())
        .unwrap_or(2);
    let bytes = gib << 30;
    let started = Instant::now();
    let mut memory = vec![1u8; bytes];
    let first = started.elapsed();
    let started = Instant::now();
    for byte in memory.iter_mut() {
        *byte = byte.wrapping_add(1);
    }
    let second = started.elapsed();
    // Read one byte so the pass cannot be optimised away.
    let probe = memory.get(bytes / 2).copied().unwrap_or_default();
    drop(memory);
    let started = Instant::now();
    let again = vec![1u8; bytes];
    let after_free = started.elapsed();
    println!(
        "{gib} GiB: first touch {first:.2?}, second pass {second:.2?} (byte {probe}), \
         a new allocation after freeing {after_free:.2?} ({} bytes)",
        again.len()
    );
}
