//! The process's own figures for `/metrics`, under the names every Prometheus client library
//! uses (`process_cpu_seconds_total`, …), so dashboards and alerts written for them work
//! unchanged. Read from Linux's `/proc/self` with no system-specific call; elsewhere, or if a
//! file cannot be read, that figure is left out rather than reported as zero.

/// Clock ticks per second in `/proc/self/stat`: the kernel's `USER_HZ`, 100 on every
/// architecture Linux exposes to user space this way, whatever its internal tick rate.
const PROC_TICKS_PER_SEC: u64 = 100;
/// Open file descriptors counted at most: a scrape must stay cheap (the server itself limits
/// connections far below this).
const OPEN_FDS_COUNTED_MAX: usize = 1 << 20;

/// One reading of the process.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ProcessFigures {
    /// User plus system CPU time, all threads (ended ones included), in hundredths of a
    /// second (integers: this crate does no floating-point arithmetic).
    pub cpu_centiseconds: Option<u64>,
    pub resident_memory_bytes: Option<u64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
}

pub(crate) fn read() -> ProcessFigures {
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let field = |name: &str| {
        status.as_deref().and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|value| value.split_whitespace().next()?.parse::<u64>().ok())
        })
    };
    ProcessFigures {
        cpu_centiseconds: cpu_centiseconds(),
        // `VmRSS` is in KiB whatever the page size.
        resident_memory_bytes: field("VmRSS").and_then(|kib| kib.checked_mul(1024)),
        threads: field("Threads"),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|fds| fds.take(OPEN_FDS_COUNTED_MAX).count() as u64),
    }
}

/// Fields 14 and 15 of `/proc/self/stat` (user and system ticks), counted after the command
/// name, which may itself hold spaces and parentheses.
fn cpu_centiseconds() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    // The fields after the name start at field 3 (the state).
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    user.saturating_add(system)
        .checked_mul(100)
        .map(|scaled| scaled / PROC_TICKS_PER_SEC)
}

#[cfg(test)]
mod tests {
    #[test]
    fn on_linux_every_figure_is_read_and_cpu_time_grows_with_work() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            assert_eq!(super::read(), super::ProcessFigures::default());
            return;
        }
        let before = super::read();
        // Ticks are 10 ms: spin until the kernel has charged a few.
        let started = std::time::Instant::now();
        let mut sum = 0_u64;
        while super::read().cpu_centiseconds <= before.cpu_centiseconds.map(|cs| cs + 2)
            && started.elapsed() < std::time::Duration::from_secs(10)
        {
            for round in 0..100_000_u64 {
                sum = std::hint::black_box(sum.wrapping_add(round));
            }
        }
        let after = super::read();
        assert!(
            after.cpu_centiseconds > before.cpu_centiseconds.map(|cs| cs + 2),
            "{after:?}"
        );
        assert!(
            after.resident_memory_bytes.is_some_and(|bytes| bytes > 0),
            "{after:?}"
        );
        assert!(
            after.threads.is_some_and(|threads| threads >= 1),
            "{after:?}"
        );
        // Standard input, output and error at least, or the test harness's pipes.
        assert!(after.open_fds.is_some_and(|fds| fds >= 1), "{after:?}");
    }
}
