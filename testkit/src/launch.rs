//! How the `wsreactor` binary is started for a test or a measurement: on an ephemeral
//! loopback port, its address read back from the first line it prints.
//!
//! The server's end-to-end tests, the `huge_echo` measurement and the criterion
//! bench `echo_roundtrip` start it this way.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// Adds `--addr 127.0.0.1:0` and then `args` to `command` (which runs the server
/// binary, directly or through a wrapper), with the log at `RUST_LOG` (default `warn`)
/// on the inherited stderr, no stdin, and stdout piped for the line that
/// [`listening_addr`] parses.
pub fn configure_server<I, S>(command: &mut Command, args: I) -> &mut Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    command
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
}

/// The address in the server's first line, `listening on ws://ADDR/`; `None` for any
/// other line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix("listening on ws://")
        .and_then(|rest| rest.strip_suffix('/'))
        .and_then(|addr| addr.parse().ok())
}

/// The `wsreactor` binary of the running test's profile: `target/PROFILE/wsreactor`,
/// next to the `deps/` folder that holds test executables (cargo builds a package's
/// binaries before its integration tests; other callers build it first).
pub fn server_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .ancestors()
        .find(|dir| dir.join("wsreactor").is_file())
        .unwrap_or_else(|| {
            panic!(
                "no wsreactor binary above {}: build it (cargo build -p wsreactor-server)",
                exe.display()
            )
        });
    profile_dir.join("wsreactor")
}
