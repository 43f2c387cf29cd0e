//! The close timeout during a shutdown started by a signal, end to end: SIGTERM makes
//! the binary send close 1001 to every client, and a client that never answers it is
//! dropped after `--close-timeout`, so the process exits then, long before
//! `--shutdown-timeout`. (The other timers are tested in process, in the root
//! `tests/timeouts.rs`.)
//!
//! Upper bounds are generous, to tolerate a loaded machine.

mod common;

use common::{expect_eof, raw_upgrade_with_read_timeout, read_close, ServerProcess};
use std::time::{Duration, Instant};

/// Generous upper bound for "about one timer period" on a busy 2-core machine.
const SLACK: Duration = Duration::from_secs(3);

/// Reads until EOF (or reset) and returns how long that took.
fn time_to_eof(stream: &mut std::net::TcpStream) -> Duration {
    let start = Instant::now();
    expect_eof(stream);
    start.elapsed()
}

#[test]
fn a_client_that_never_answers_the_servers_close_is_dropped_after_the_close_timeout() {
    let server = ServerProcess::start(&["--close-timeout", "1", "--shutdown-timeout", "20"]);
    let mut stream = raw_upgrade_with_read_timeout(&server, Duration::from_secs(10));
    // SIGTERM makes the server start the closing handshake (close 1001); this client
    // never answers it.
    let terminator = std::thread::spawn(move || {
        let start = Instant::now();
        let status = server.terminate(Duration::from_secs(15));
        (status, start.elapsed())
    });
    let (code, _) = read_close(&mut stream);
    let start = Instant::now();
    assert_eq!(code, Some(1001));
    let dropped_after = time_to_eof(&mut stream);
    assert!(
        dropped_after < Duration::from_secs(1) + SLACK,
        "{dropped_after:?}"
    );
    let (status, exited_after) = terminator.join().unwrap();
    assert!(status.success(), "{status:?}");
    // The shutdown timeout (20 s) was not needed: the last connection went at the
    // close timeout.
    assert!(
        exited_after < Duration::from_secs(1) + SLACK,
        "{exited_after:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(1) + SLACK);
}
