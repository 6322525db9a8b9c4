//! Where the processor's time went during a load: the process's CPU time and, for the
//! threads still running when the load ends, each thread's, grouped by name.
//!
//! A rate alone cannot say whether a run was bound by the cores (every stage busy) or by
//! waiting (a closed loop whose stages run one after another, or a disk). The busy share of
//! the cores answers that, and the threads' shares say which stage to look at: the writer,
//! the views thread, the log thread, sled's I/O threads, the clients.
//!
//! Read from Linux's `/proc` without any system-specific call: the process's user and system
//! time from `/proc/self/stat` (clock ticks, which count the threads that have ended too),
//! each thread's run time from `/proc/self/task/<tid>/schedstat` (nanoseconds) and its name
//! from `comm`. Elsewhere, or if `/proc` cannot be read, there is no figure.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// Clock ticks per second in `/proc/<pid>/stat`: the kernel's `USER_HZ`, 100 on every
/// architecture Linux exposes to user space this way (x86, arm64, …) whatever its internal
/// tick rate.
pub const PROC_TICKS_PER_SEC: u64 = 100;
/// Threads read at most, so that a process with runaway threads cannot make the sample slow.
pub const SAMPLE_THREADS_MAX: usize = 4_096;

/// The CPU time of the process and of each of its threads at one moment.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    /// User plus system time of the whole process, ended threads included, in nanoseconds.
    process_ns: u64,
    /// Run time and name of each thread alive at the sample, by thread id.
    threads: HashMap<u32, (String, u64)>,
}

/// The CPU time a load used (`cpu` in the JSON report).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CpuUse {
    /// CPU seconds the process used during the load, in and out of the kernel, threads that
    /// ended during it included (10 ms resolution).
    pub seconds: f64,
    /// `seconds` as a share of what the cores could have given in the load's time
    /// (`std::thread::available_parallelism` cores): near 100, the run was bound by the
    /// cores; well under it, by waiting.
    pub busy_percent: f64,
    /// CPU seconds of the threads still running when the load ended, by name, with a
    /// trailing number dropped (`sled-io-3` counts as `sled-io`).
    pub by_thread: BTreeMap<String, f64>,
    /// What the process used beyond those threads: the threads that ended before the
    /// sample, the embedded harness's client threads and tokio workers among them.
    pub ended_threads_seconds: f64,
}

impl CpuSample {
    /// Samples this process now; `None` without a readable `/proc/self`.
    pub fn now() -> Option<CpuSample> {
        let process_ns = process_ns()?;
        let mut threads = HashMap::new();
        let tasks = std::fs::read_dir("/proc/self/task").ok()?;
        for task in tasks.filter_map(Result::ok).take(SAMPLE_THREADS_MAX) {
            let Some(tid) = task.file_name().to_str().and_then(|tid| tid.parse().ok()) else {
                continue;
            };
            // A thread that ends between the listing and these reads is simply left out.
            let path = task.path();
            let Some(run_ns) = std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|stat| stat.split_whitespace().next()?.parse().ok())
            else {
                continue;
            };
            let name = std::fs::read_to_string(path.join("comm"))
                .map(|name| name.trim_end().to_owned())
                .unwrap_or_default();
            threads.insert(tid, (name, run_ns));
        }
        Some(CpuSample {
            process_ns,
            threads,
        })
    }

    /// What was used from `self` to `later`, a load of `seconds` on `cores` cores.
    pub fn used_until(&self, later: &CpuSample, seconds: f64, cores: usize) -> CpuUse {
        let process_ns = later.process_ns.saturating_sub(self.process_ns);
        let mut by_thread: BTreeMap<String, u64> = BTreeMap::new();
        for (tid, (name, run_ns)) in &later.threads {
            // A thread born during the load used all it shows.
            let before = self
                .threads
                .get(tid)
                .filter(|(earlier, _)| earlier == name)
                .map_or(0, |(_, run_ns)| *run_ns);
            *by_thread.entry(group(name)).or_default() += run_ns.saturating_sub(before);
        }
        let named_ns: u64 = by_thread.values().sum();
        let capacity = seconds * cores.max(1) as f64;
        let process_seconds = nanos_to_seconds(process_ns);
        CpuUse {
            seconds: process_seconds,
            busy_percent: if capacity > 0.0 {
                process_seconds / capacity * 100.0
            } else {
                0.0
            },
            by_thread: by_thread
                .into_iter()
                .filter(|(_, run_ns)| *run_ns > 0)
                .map(|(name, run_ns)| (name, nanos_to_seconds(run_ns)))
                .collect(),
            // The process total is counted in ticks, the threads in nanoseconds: a remainder
            // below one tick per thread is rounding, not an ended thread.
            ended_threads_seconds: nanos_to_seconds(process_ns.saturating_sub(named_ns)),
        }
    }
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// User plus system time of the process (fields 14 and 15 of `/proc/self/stat`, after the
/// command name, which may itself hold spaces and parentheses).
fn process_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    // Fields after the name start at field 3 (state): utime is field 14, stime field 15.
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    user.checked_add(system)?
        .checked_mul(1_000_000_000 / PROC_TICKS_PER_SEC)
}

/// A thread's name without a trailing pool number: `sled-io-3` → `sled-io`.
fn group(name: &str) -> String {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if trimmed.len() < name.len() {
        trimmed.trim_end_matches(['-', '_', '.', '#']).to_owned()
    } else {
        name.to_owned()
    }
}

fn nanos_to_seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_numbers_are_dropped_from_names() {
        assert_eq!(group("sled-io-3"), "sled-io");
        assert_eq!(group("tokio-runtime-worker"), "tokio-runtime-worker");
        assert_eq!(group("subledger-write"), "subledger-write");
        assert_eq!(group("worker12"), "worker");
    }

    #[test]
    fn a_busy_thread_shows_under_its_name_and_in_the_process_total() {
        let Some(before) = CpuSample::now() else {
            // No /proc here (not Linux): nothing to measure, and `now` said so.
            assert!(!std::path::Path::new("/proc/self/stat").exists());
            return;
        };
        let spin = |millis: u64| {
            let started = std::time::Instant::now();
            let mut sum = 0_u64;
            while started.elapsed() < std::time::Duration::from_millis(millis) {
                sum = std::hint::black_box(sum.wrapping_add(1));
            }
            sum
        };
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let busy = std::thread::Builder::new()
            .name("probe-busy-7".into())
            .spawn(move || {
                spin(300);
                // Stay alive until sampled.
                let _ = wait.recv();
            })
            .unwrap_or_else(|error| panic!("spawn: {error}"));
        // An ended thread's time is in the total only.
        std::thread::spawn(move || spin(200))
            .join()
            .unwrap_or_else(|_| panic!("the spinning thread panicked"));
        std::thread::sleep(std::time::Duration::from_millis(350));
        let after = CpuSample::now().unwrap_or_else(|| panic!("/proc vanished"));
        drop(done);
        busy.join()
            .unwrap_or_else(|_| panic!("the busy thread panicked"));
        let used = before.used_until(&after, 1.0, 2);
        let busy_seconds = used.by_thread.get("probe-busy").copied().unwrap_or(0.0);
        // It spun 0.3 s of wall time; on a loaded machine it may have had less of a core.
        assert!(busy_seconds > 0.05 && busy_seconds < 1.0, "{used:?}");
        assert!(used.seconds >= busy_seconds, "{used:?}");
        // The ended thread's 0.2 s (at least part of it) is beyond the live threads'.
        assert!(used.ended_threads_seconds > 0.02, "{used:?}");
        assert!((used.busy_percent - used.seconds / 2.0 * 100.0).abs() < 1e-9);
    }
}
