//! Does a sled `flush` on one thread slow down `apply_batch` on another? It does, which is
//! why the engine syncs on the writer's thread instead of a separate sync thread
//! (`docs/benchmarks.md`, fifth session).
//!
//! `cargo run --release -p subledger-store --example sled_flush_contention`
//!
//! Appends 3,000 values of 6 KiB (about one group commit of ~170 events) one after another:
//! first flushing after each append on the same thread, then with another thread flushing
//! in a loop meanwhile. Prints the mean and worst append time of each.

use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Appends per run.
const ROUNDS: u32 = 3_000;
/// Bytes per appended value.
const VALUE_BYTES: usize = 6 * 1024;

fn run(background_flush: bool) -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(None)
        .open()?;
    let tree = db.open_tree("log")?;
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = background_flush.then(|| {
        let (db, stop) = (db.clone(), Arc::clone(&stop));
        std::thread::spawn(move || -> sled::Result<u64> {
            let mut flushes = 0;
            while !stop.load(Ordering::Relaxed) {
                db.flush()?;
                flushes += 1;
            }
            Ok(flushes)
        })
    });
    let value = vec![7_u8; VALUE_BYTES];
    let (mut appending, mut worst, mut flushing) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let started = Instant::now();
    for round in 0..ROUNDS {
        let append = Instant::now();
        let mut batch = sled::Batch::default();
        batch.insert(&round.to_be_bytes(), value.clone());
        tree.apply_batch(batch)?;
        let took = append.elapsed();
        appending += took;
        worst = worst.max(took);
        if !background_flush {
            let flush = Instant::now();
            db.flush()?;
            flushing += flush.elapsed();
        }
    }
    let total = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let flushes = match flusher {
        Some(thread) => thread
            .join()
            .map_err(|_| "the flushing thread panicked")??,
        None => u64::from(ROUNDS),
    };
    println!(
        "{}: {ROUNDS} appends in {total:?}; append mean {:?}, worst {worst:?}; {flushes} flushes{}",
        if background_flush {
            "flushing on another thread"
        } else {
            "flushing after each append"
        },
        appending / ROUNDS,
        if background_flush {
            String::new()
        } else {
            format!(", mean {:?}", flushing / ROUNDS)
        },
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    for _ in 0..2 {
        run(false)?;
        run(true)?;
    }
    Ok(())
}
