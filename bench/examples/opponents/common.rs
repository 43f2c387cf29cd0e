//! What every opponent shares: the command line (`--addr`, like wsreactor's), the
//! `listening on ws://ADDR/` line that the benchmarks read, and the open-file limit.
//!
//! The opponents are echo servers built from crates.io crates, measured against
//! wsreactor by `benches/echo_roundtrip.rs` and `scripts/compare` (issue 7):
//!
//! | example | stack |
//! |---|---|
//! | `opponent_tungstenite_mt` | tokio (multi-thread runtime) + tokio-tungstenite |
//! | `opponent_tungstenite_st` | tokio (`current_thread` runtime) + tokio-tungstenite |
//! | `opponent_fastwebsockets` | tokio (`current_thread`) + hyper upgrade + fastwebsockets |
//! | `opponent_mio_raw` | a plain mio TCP echo, no WebSocket: the ceiling |
//!
//! Each one sets `TCP_NODELAY` on its connections as wsreactor does (otherwise Nagle's
//! algorithm would add delayed-ACK waits to the small-message round trips), and raises
//! its size caps so that it accepts the same messages as wsreactor, which has none.
#![allow(dead_code)] // each opponent uses a different part of this module

use clap::Parser;
use std::io::Write;
use std::net::SocketAddr;

/// An echo server for the benchmarks (see examples/opponents/common.rs).
#[derive(Parser, Debug)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub addr: SocketAddr,
}

/// Parses the command line and raises the open-file limit (1,000 idle connections are
/// part of `scripts/compare`; wsreactor raises its limit the same way).
pub fn init() -> Args {
    raise_open_file_limit();
    Args::parse()
}

/// Prints the line the benchmarks wait for, exactly as wsreactor does.
pub fn announce(addr: SocketAddr) {
    println!("listening on ws://{addr}/");
    let _ = std::io::stdout().flush();
}

/// Raises the soft limit on open files to the hard limit.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
