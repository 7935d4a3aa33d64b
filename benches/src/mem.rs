//! Memory and CPU figures of this process (and the brokers), from `/proc` (Linux only; zero
//! elsewhere).

/// Resident set size now and its peak, in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss: u64,
    /// `VmHWM`: the peak resident size since the process started.
    pub peak: u64,
}

/// Reads the current and peak RSS; zeros when `/proc` is not there.
pub fn read() -> Memory {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Memory::default();
    };
    let mut mem = Memory::default();
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            mem.rss = parse_kib(rest);
        } else if let Some(rest) = line.strip_prefix("VmHWM:") {
            mem.peak = parse_kib(rest);
        }
    }
    mem
}

/// Parses `"   1234 kB"` into bytes.
fn parse_kib(field: &str) -> u64 {
    field
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_status_fields() {
        assert_eq!(super::parse_kib("  2048 kB"), 2 << 20);
        assert_eq!(super::parse_kib("garbage"), 0);
        if cfg!(target_os = "linux") {
            let mem = super::read();
            assert!(mem.rss > 0 && mem.peak >= mem.rss);
            assert!(super::cpu_micros(None).is_some());
        }
    }
}

/// CPU time (user + system, all threads) used so far by process `pid` (this process when
/// `None`), in microseconds; `None` when `/proc` cannot tell.
///
/// The kernel counts in clock ticks; 100 per second is assumed (the Linux default), which is
/// fine over windows of many ticks.
pub fn cpu_micros(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces: fields are counted after its closing parenthesis,
    // where field 3 (state) comes first, so utime (14) and stime (15) are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 10_000)
}

/// The broker processes of the run, whose CPU time is reported beside ours.
static BROKER_PIDS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();

/// Records the broker processes (once).
pub fn set_broker_pids(pids: Vec<u32>) {
    let _ = BROKER_PIDS.set(pids);
}

/// CPU time of this process and of the brokers it started, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// This process.
    pub ours: u64,
    /// The brokers started by this run (zero when they were given by URL).
    pub brokers: u64,
}

/// Reads [`Cpu`] now.
pub fn cpu() -> Cpu {
    let brokers = BROKER_PIDS.get().map_or(0, |pids| {
        pids.iter().filter_map(|&p| cpu_micros(Some(p))).sum()
    });
    Cpu {
        ours: cpu_micros(None).unwrap_or(0),
        brokers,
    }
}
