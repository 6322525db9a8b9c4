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
/// The process total's error in clock ticks: the kernel sums its threads in nanoseconds and
/// cuts user and system time to whole ticks once each, at each of the two samples.
const PROCESS_TICKS_ERROR: u64 = 2;

/// The CPU time of the process and of each of its threads at one moment.
#[derive(Debug, Clone)]
pub struct CpuSample {
    /// When the sample was taken.
    at: std::time::Instant,
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
    /// `seconds` as a share of what the cores could have given between the two samples
    /// (`std::thread::available_parallelism` cores): near 100, the run was bound by the
    /// cores; well under it, by waiting.
    pub busy_percent: f64,
    /// CPU seconds of the threads still running when the load ended, by name as the kernel
    /// keeps it (15 bytes: the writer shows as `subledger-write`), with a trailing number
    /// dropped (`sled-io-3` counts as `sled-io`). The harness's clients are `bench-client`.
    pub by_thread: BTreeMap<String, f64>,
    /// What the process used beyond those threads: the threads that ended before the second
    /// sample (the embedded harness's client threads, which end with their last answer).
    /// Under two clock ticks (20 ms) it is rounding and shown as 0.
    pub ended_threads_seconds: f64,
    /// With `--http`: the server's CPU seconds over the load, from its `/metrics`
    /// (`process_cpu_seconds_total`, 10 ms resolution; `None` embedded, or if the server does
    /// not report it). Read just before and after the load, so it also counts the two reads.
    pub server_seconds: Option<f64>,
}

impl CpuSample {
    /// Samples this process now; `None` without a readable `/proc/self`. The threads are
    /// read before the process total, so that no thread's time is counted in its sample and
    /// missing from the total.
    pub fn now() -> Option<CpuSample> {
        let at = std::time::Instant::now();
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
            at,
            process_ns: process_ns()?,
            threads,
        })
    }

    /// What was used from `self` to `later`, on `cores` cores.
    pub fn used_until(&self, later: &CpuSample, cores: usize) -> CpuUse {
        let seconds = later.at.saturating_duration_since(self.at).as_secs_f64();
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
            ended_threads_seconds: nanos_to_seconds(ended_ns(process_ns, named_ns)),
            server_seconds: None,
        }
    }
}

/// The process total less the live threads' times: the ended threads', unless it is within
/// the total's rounding (the threads are counted in nanoseconds, the total in ticks).
fn ended_ns(process_ns: u64, named_ns: u64) -> u64 {
    let remainder = process_ns.saturating_sub(named_ns);
    if remainder < PROCESS_TICKS_ERROR * (1_000_000_000 / PROC_TICKS_PER_SEC) {
        0
    } else {
        remainder
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

    fn sample(at: std::time::Instant, process_ms: u64, threads: &[(u32, &str, u64)]) -> CpuSample {
        CpuSample {
            at,
            process_ns: process_ms * 1_000_000,
            threads: threads
                .iter()
                .map(|&(tid, name, ms)| (tid, (name.to_owned(), ms * 1_000_000)))
                .collect(),
        }
    }

    #[test]
    fn pool_numbers_are_dropped_from_names() {
        assert_eq!(group("sled-io-3"), "sled-io");
        assert_eq!(group("tokio-runtime-worker"), "tokio-runtime-worker");
        assert_eq!(group("subledger-write"), "subledger-write");
        assert_eq!(group("worker12"), "worker");
    }

    #[test]
    fn threads_are_charged_what_they_used_between_the_samples_and_ended_ones_the_rest() {
        let start = std::time::Instant::now();
        let before = sample(
            start,
            1_000,
            &[(1, "main", 400), (2, "sled-io-0", 100), (3, "client", 500)],
        );
        let after = sample(
            start + std::time::Duration::from_secs(2),
            3_000,
            &[
                (1, "main", 600),
                (2, "sled-io-0", 400),
                // Born during the load: all of it counts.
                (4, "sled-io-1", 300),
                // A new thread under an old one's number is not the old one.
                (3, "writer", 700),
            ],
        );
        let used = before.used_until(&after, 2);
        assert!((used.seconds - 2.0).abs() < 1e-9, "{used:?}");
        assert!((used.busy_percent - 50.0).abs() < 1e-6, "{used:?}");
        let seconds = |name: &str| used.by_thread.get(name).copied().unwrap_or(-1.0);
        assert!((seconds("main") - 0.2).abs() < 1e-9, "{used:?}");
        assert!((seconds("sled-io") - 0.6).abs() < 1e-9, "{used:?}");
        assert!((seconds("writer") - 0.7).abs() < 1e-9, "{used:?}");
        // 2.0 s in all, 1.5 s in live threads: the client that ended used the rest.
        assert!((used.ended_threads_seconds - 0.5).abs() < 1e-9, "{used:?}");
        // Within two ticks of the live threads' sum, the remainder is rounding.
        let rounded = sample(
            start + std::time::Duration::from_secs(1),
            2_515,
            &[
                (1, "main", 600),
                (2, "sled-io-0", 400),
                (4, "sled-io-1", 300),
                (3, "writer", 700),
            ],
        );
        assert_eq!(before.used_until(&rounded, 2).ended_threads_seconds, 0.0);
    }

    #[test]
    fn a_busy_thread_is_found_under_its_name() {
        let Some(before) = CpuSample::now() else {
            // No /proc here (not Linux): nothing to measure, and `now` said so.
            assert!(!std::path::Path::new("/proc/self/stat").exists());
            return;
        };
        // The thread spins until the kernel has charged it 100 ms, however loaded the
        // machine is, then waits to be sampled.
        let own_ns = || {
            std::fs::read_to_string("/proc/thread-self/schedstat")
                .ok()
                .and_then(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        };
        let (spun, spinning) = std::sync::mpsc::channel::<()>();
        let (sampled, wait) = std::sync::mpsc::channel::<()>();
        let busy = std::thread::Builder::new()
            .name("probe-busy-7".into())
            .spawn(move || {
                let start = own_ns();
                let mut sum = 0_u64;
                while own_ns().saturating_sub(start) < 100_000_000 {
                    sum = std::hint::black_box(sum.wrapping_add(1));
                }
                let _ = spun.send(());
                let _ = wait.recv();
                sum
            })
            .unwrap_or_else(|error| panic!("spawn: {error}"));
        spinning
            .recv()
            .unwrap_or_else(|error| panic!("the busy thread stopped: {error}"));
        let after = CpuSample::now().unwrap_or_else(|| panic!("/proc vanished"));
        drop(sampled);
        busy.join()
            .unwrap_or_else(|_| panic!("the busy thread panicked"));
        let used = before.used_until(&after, 2);
        let busy_seconds = used.by_thread.get("probe-busy").copied().unwrap_or(0.0);
        assert!(busy_seconds >= 0.1, "{used:?}");
        // The total covers it, to the total's rounding.
        assert!(used.seconds + 0.02 >= busy_seconds, "{used:?}");
    }
}
