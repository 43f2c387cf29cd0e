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

/// CPU time (user + system) this process has used so far, in seconds, to the
/// microsecond (`getrusage`).
pub fn own_cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a whole `rusage` into the pointer on success, and
    // only then is it read.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(secs(usage.ru_utime) + secs(usage.ru_stime))
}

/// CPU time (user + system) process `pid` has used so far, in seconds, from
/// `utime` and `stime` in `/proc/PID/stat` (clock ticks: 10 ms at the usual 100 Hz).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count the
    // fields after its closing parenthesis, where field 3 (state) comes first.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100);
    Some((utime + stime) as f64 / ticks as f64)
}
