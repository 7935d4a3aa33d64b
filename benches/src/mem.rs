//! Memory figures of this process, from `/proc/self/status` (Linux only; zero elsewhere).

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
        }
    }
}
