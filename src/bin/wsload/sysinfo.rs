//! What the kernel says: a process's memory (`/proc/PID/status`), TCP socket memory
//! (`/proc/net/sockstat`), the ephemeral port range.

use std::fs;

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resets the peak resident set (`VmHWM`) of `pid` to its current RSS
/// (`echo 5 > /proc/PID/clear_refs`); false if not allowed.
pub fn reset_peak(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// The `TCP:` line of `/proc/net/sockstat`: sockets in use (both ends of a loopback
/// connection count) and the pages of memory the kernel has charged to TCP buffers.
#[derive(Clone, Copy, Debug)]
pub struct SockStat {
    /// TCP sockets in use (`inuse`).
    pub inuse: u64,
    /// Sockets in TIME_WAIT (`tw`).
    pub time_wait: u64,
    /// Pages charged to TCP socket buffers (`mem`).
    pub mem_pages: u64,
}

/// Reads `/proc/net/sockstat` (this network namespace).
pub fn sockstat() -> Option<SockStat> {
    let text = fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| -> Option<u64> {
        let at = words.iter().position(|w| *w == name)?;
        words.get(at + 1)?.parse().ok()
    };
    Some(SockStat {
        inuse: field("inuse")?,
        time_wait: field("tw")?,
        mem_pages: field("mem")?,
    })
}

/// The page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// How many ephemeral ports one source address has (`net.ipv4.ip_local_port_range`).
pub fn ephemeral_ports() -> Option<u64> {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}
