//! What the machine allowed while a run was measured.
//!
//! The machines we measure on are shared: in a slow hour a random read over 256 MiB took
//! 400–530 ns and one over 4 MiB, which should hit the L3, still 147 ns; `fdatasync`
//! alternates between fast and slow phases. A replay, whose time is mostly cache misses, was
//! 2.5× slower in such an hour than in a quiet one, while a compute-bound load was only 30 %
//! slower. The same binary served 14–16k single-transfer HTTP requests/s in one hour and
//! 36k in another; in the slow one a system call cost ~280 ns and a wake-up round trip
//! between two threads ~15 µs, and such loads are made of system calls and wake-ups, which
//! the other figures do not see. So every report carries
//! small measurements of the moment it was taken — memory latency, compute speed, a system
//! call, a wake-up and the data directory's append-and-sync time — and two runs can be
//! compared with the conditions they ran in, instead of "a quiet hour".
//!
//! The probe is cheap (a few tenths of a second) and runs after the measured work, so it
//! neither competes with the load nor raises the reported peak memory. It never fails a run:
//! a directory it cannot write to gives no disk figure.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::Rng;

/// Bytes the memory probe reads at random: eight times the last-level cache this machine kind
/// has (32 MiB), so that nearly every read goes to memory, and most also miss the TLB, as
/// the ledger's own large tables do.
pub const PROBE_MEMORY_BYTES: usize = 256 << 20;
const _: () = assert!(PROBE_MEMORY_BYTES.is_power_of_two());
/// Dependent random reads the memory probe times.
pub const PROBE_MEMORY_READS: u32 = 300_000;
/// Rounds of the register-only integer mix the compute probe times.
pub const PROBE_CPU_ROUNDS: u32 = 4_000_000;
/// System calls the system-call probe times.
pub const PROBE_SYSCALLS: u32 = 100_000;
/// Round trips between two threads, each waking the other, that the wake-up probe times.
pub const PROBE_WAKE_ROUND_TRIPS: u32 = 2_000;
/// Appends of [`PROBE_SYNC_BYTES`], each followed by `fdatasync`, that the disk probe times.
pub const PROBE_SYNCS: usize = 32;
/// Bytes of one disk probe append (one page).
pub const PROBE_SYNC_BYTES: usize = 4_096;

/// The machine's state when a run was measured (`machine` in the JSON report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MachineProbe {
    /// Mean nanoseconds of one read at a random place in [`PROBE_MEMORY_BYTES`], each read's
    /// place depending on the previous one's value, so the reads cannot overlap: memory
    /// latency, the cost of a replay's or a decision's cache miss.
    pub memory_random_read_ns: u64,
    /// Nanoseconds per 1,000 rounds of an integer mix held in registers: the processor's
    /// speed as this process got it (steal time included).
    pub cpu_ns_per_1k_rounds: u64,
    /// Mean nanoseconds of one `read(2)` of no bytes from an open file: the price of entering
    /// and leaving the kernel, which every HTTP request, wake-up and log write pays at least
    /// once.
    /// `None` where no file could be opened to ask about.
    pub syscall_ns: Option<u64>,
    /// Mean nanoseconds for one thread to wake a second one blocked on a condition variable
    /// and be woken by it in turn: twice the cost of handing work to a sleeping thread, as the
    /// writer, the log thread and the clients do for every batch. `None` if no thread could
    /// be started.
    pub wake_round_trip_ns: Option<u64>,
    /// Median microseconds to append [`PROBE_SYNC_BYTES`] to a fresh file in the data
    /// directory and `fdatasync` it: the disk's cost of one durable commit, before any
    /// storage engine's own work. `None` in memory, over HTTP, and when the directory could
    /// not be written to.
    pub append_sync_us_p50: Option<u64>,
}

/// Measures the machine now; `data` is the directory whose disk the disk probe uses (a
/// uniquely named file `.subledger-probe*` is written there and removed).
pub fn probe(data: Option<&Path>) -> MachineProbe {
    MachineProbe {
        memory_random_read_ns: memory_random_read_ns(),
        cpu_ns_per_1k_rounds: cpu_ns_per_1k_rounds(),
        syscall_ns: syscall_ns().ok(),
        wake_round_trip_ns: wake_round_trip_ns(),
        append_sync_us_p50: data.and_then(|dir| append_sync_us_p50(dir).ok()),
    }
}

fn memory_random_read_ns() -> u64 {
    // A power of two of slots, so a value masks into one.
    let mask = PROBE_MEMORY_BYTES / std::mem::size_of::<u64>() - 1;
    let mut rng = Rng::new(0x5EED);
    // Written, not just allocated: untouched pages would all read the one zero page.
    let table: Vec<u64> = (0..=mask).map(|_| rng.next()).collect();
    let table = std::hint::black_box(table);
    let mut at = 0_usize;
    let started = Instant::now();
    for round in 0..PROBE_MEMORY_READS {
        // The next place depends on the value just read; mixing in the round keeps the walk
        // from settling into a short cycle.
        let value = table.get(at).copied().unwrap_or(0);
        at = usize::try_from(value ^ u64::from(round).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .unwrap_or(0)
            & mask;
    }
    std::hint::black_box(at);
    let elapsed = started.elapsed();
    per(elapsed.as_nanos(), u128::from(PROBE_MEMORY_READS))
}

fn cpu_ns_per_1k_rounds() -> u64 {
    let mut rng = Rng::new(std::hint::black_box(7));
    let mut sum = 0_u64;
    let started = Instant::now();
    for _ in 0..PROBE_CPU_ROUNDS {
        sum = sum.wrapping_add(rng.next());
    }
    let elapsed = started.elapsed();
    std::hint::black_box(sum);
    per(elapsed.as_nanos() * 1_000, u128::from(PROBE_CPU_ROUNDS))
}

fn syscall_ns() -> std::io::Result<u64> {
    use std::io::Read;
    // The running program is a file every platform has; nothing of it is read.
    let mut file = std::fs::File::open(std::env::current_exe()?)?;
    let mut nothing = [0_u8; 0];
    let started = Instant::now();
    for _ in 0..PROBE_SYSCALLS {
        std::hint::black_box(file.read(std::hint::black_box(&mut nothing))?);
    }
    let elapsed = started.elapsed();
    Ok(per(elapsed.as_nanos(), u128::from(PROBE_SYSCALLS)))
}

fn wake_round_trip_ns() -> Option<u64> {
    use std::sync::{Arc, Condvar, Mutex, PoisonError};
    // The turn: even for the probe's thread, odd for its peer. A condition variable, not a
    // channel, so that neither side spins before it sleeps: every turn is a real wake-up.
    let turn = Arc::new((Mutex::new(0_u32), Condvar::new()));
    let rounds = PROBE_WAKE_ROUND_TRIPS;
    let wait_for = |turn: &(Mutex<u32>, Condvar), wanted: u32| {
        let (lock, changed) = turn;
        let mut now = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while *now != wanted {
            now = changed.wait(now).unwrap_or_else(PoisonError::into_inner);
        }
        *now += 1;
        changed.notify_one();
    };
    let peer_turn = Arc::clone(&turn);
    let peer = std::thread::Builder::new()
        .name("subledger-probe".into())
        .spawn(move || {
            for round in 0..rounds {
                wait_for(&peer_turn, round * 2 + 1);
            }
        })
        .ok()?;
    let started = Instant::now();
    for round in 0..rounds {
        wait_for(&turn, round * 2);
    }
    // The last turn: the peer's answer to the last round.
    {
        let (lock, changed) = &*turn;
        let mut now = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while *now != rounds * 2 {
            now = changed.wait(now).unwrap_or_else(PoisonError::into_inner);
        }
    }
    let elapsed = started.elapsed();
    // The peer has finished its last turn; its end cannot fail the probe.
    drop(peer.join());
    Some(per(elapsed.as_nanos(), u128::from(rounds)))
}

fn append_sync_us_p50(dir: &Path) -> std::io::Result<u64> {
    // Removed when dropped, whatever happens in between.
    let mut file = tempfile::Builder::new()
        .prefix(".subledger-probe")
        .tempfile_in(dir)?;
    let page = vec![0x5A_u8; PROBE_SYNC_BYTES];
    let mut micros = Vec::with_capacity(PROBE_SYNCS);
    for _ in 0..PROBE_SYNCS {
        // Appending grows the file, so each sync also commits its new length, as a log's
        // does.
        let started = Instant::now();
        file.write_all(&page)?;
        file.as_file().sync_data()?;
        micros.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    micros.sort_unstable();
    Ok(micros.get(micros.len() / 2).copied().unwrap_or(0))
}

fn per(total: u128, count: u128) -> u64 {
    u64::try_from(total / count.max(1)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_measures_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
        let probe = probe(Some(dir.path()));
        // Any real read from memory takes at least a nanosecond, as do 1,000 rounds of work.
        assert!(probe.memory_random_read_ns >= 1, "{probe:?}");
        assert!(probe.cpu_ns_per_1k_rounds >= 1, "{probe:?}");
        // A system call and a wake-up cannot take less than a nanosecond either.
        assert!(probe.syscall_ns.is_some_and(|ns| ns >= 1), "{probe:?}");
        assert!(
            probe.wake_round_trip_ns.is_some_and(|ns| ns >= 1),
            "{probe:?}"
        );
        assert!(probe.append_sync_us_p50.is_some(), "{probe:?}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|error| panic!("read_dir: {error}"))
            .collect();
        assert!(left.is_empty(), "the probe's file is removed: {left:?}");
    }

    #[test]
    fn in_memory_there_is_no_disk_probe() {
        let probe = probe(None);
        assert_eq!(probe.append_sync_us_p50, None);
    }

    #[test]
    fn a_directory_that_cannot_be_written_gives_no_disk_figure_and_no_failure() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
        let missing = dir.path().join("absent");
        let probe = probe(Some(&missing));
        assert_eq!(probe.append_sync_us_p50, None);
        assert!(probe.memory_random_read_ns >= 1, "{probe:?}");
    }
}
