//! A worker's resident memory and CPU time, read from `/proc` when a status asks.

use std::time::Duration;

/// What `/proc` says about one process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcStats {
    /// Resident set size, bytes (`VmRSS`).
    pub(crate) rss_bytes: u64,
    /// User + system CPU time so far.
    pub(crate) cpu: Duration,
}

impl ProcStats {
    /// CPU time over `lifetime`, in percent of one core (as `ps` shows it).
    pub(crate) fn cpu_percent(&self, lifetime: Duration) -> f64 {
        let lived = lifetime.as_secs_f64();
        if lived <= 0.0 {
            return 0.0;
        }
        (self.cpu.as_secs_f64() / lived * 1000.0).round() / 10.0
    }
}

/// `None` when the process is gone (or `/proc` is not there).
pub(crate) fn read(pid: u32) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses): the 3rd field
    // of the line is index 0 here; utime and stime are the 14th and 15th.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = clock_ticks_per_second();
    Some(ProcStats {
        rss_bytes: rss_kib * 1024,
        cpu: Duration::from_secs_f64(ticks as f64 / per_second as f64),
    })
}

/// `sysconf(_SC_CLK_TCK)`, the unit of `/proc`'s CPU times (100 on Linux when unknown).
fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|ticks| u64::try_from(ticks).ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_memory_and_a_cpu_time() {
        let stats = super::read(std::process::id()).expect("our own /proc entry");
        assert!(stats.rss_bytes > 1024 * 1024, "{stats:?}");
        let percent = stats.cpu_percent(std::time::Duration::from_secs(3600));
        assert!((0.0..=100.0 * 64.0).contains(&percent), "{percent}");
        assert!(super::read(u32::MAX).is_none());
    }
}
