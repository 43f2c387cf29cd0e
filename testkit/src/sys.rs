//! Process-level settings shared by the binaries (the `wsreactor` server and the
//! `wsload` load generator).

use std::io;

/// The `RLIMIT_NOFILE` limits in force: how many file descriptors the process may
/// hold open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The soft limit: the one `open`, `socket` and `accept` fail against (`EMFILE`).
    pub soft: u64,
    /// The hard limit: the ceiling an unprivileged process may raise its soft limit to.
    pub hard: u64,
}

/// Raises the soft limit on open files to the hard limit, and returns the limits in
/// force afterwards.
///
/// Every connection is a file descriptor, and the usual default soft limit (1024) is
/// far below what a server or a load generator holding thousands of connections
/// needs, while the hard limit is typically much higher. If raising fails, the limits
/// are left as they were (and returned). An error means they could not even be read.
pub fn raise_open_file_limit() -> io::Result<OpenFileLimit> {
    raise_open_file_limit_to(0)
}

/// Like [`raise_open_file_limit`], and if the hard limit is below `at_least`, first
/// tries to raise the hard limit (and the soft one) to `at_least`. That only succeeds
/// for a privileged process (`CAP_SYS_RESOURCE`, e.g. root) and up to
/// `/proc/sys/fs/nr_open`; otherwise the soft limit is raised to the hard limit as
/// usual. Compare the returned `soft` with what you need.
// `rlim_t` is u64 on 64-bit Linux but not on every target: keep the casts.
#[allow(clippy::unnecessary_cast)]
pub fn raise_open_file_limit_to(at_least: u64) -> io::Result<OpenFileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        let wanted = at_least as libc::rlim_t;
        if limit.rlim_max != libc::RLIM_INFINITY && limit.rlim_max < wanted {
            let higher = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: wanted,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &higher) == 0 {
                limit = higher;
            }
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Ok(OpenFileLimit {
        soft: limit.rlim_cur as u64,
        hard: limit.rlim_max as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let limit = raise_open_file_limit().expect("getrlimit");
        assert_eq!(limit.soft, limit.hard);
        // Idempotent.
        assert_eq!(raise_open_file_limit().expect("getrlimit"), limit);
    }
}
