//! The command line, end to end: the binary refuses bad flag values with status 2 and
//! a message naming the flag, takes sizes and durations with units and host names in
//! `--addr`, reports an address it cannot listen on with status 1, and maps
//! `--subprotocols` onto the 101's `Sec-WebSocket-Protocol`.
//!
//! Every wait is bounded: a child that does not exit in time is killed and the test
//! fails.

mod common;

use common::{
    connect, expect_eof, http_exchange, launch, raw_connect, Listening, ServerProcess,
    UPGRADE_REQUEST,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tungstenite::Message;

/// How long a server that should exit at once (bad flags, no address) may take.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// The binary with exactly `args` (no `--addr` added), its log at `warn`, stdout and
/// stderr piped. Killed when dropped.
struct Binary(Child);

impl Binary {
    fn spawn(args: &[&str]) -> Self {
        let child = Command::new(launch::server_binary())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wsreactor");
        Binary(child)
    }

    /// Waits (up to [`EXIT_WITHIN`]) for the process to exit; returns its status, its
    /// stdout and its stderr.
    fn exit(mut self) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + EXIT_WITHIN;
        let status = loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "wsreactor did not exit within {EXIT_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        let child = &mut self.0;
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut stdout)
            .expect("read stdout");
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        (status, stdout, stderr)
    }

    /// Reads the first stdout line (the server prints it once it listens).
    fn first_line(&mut self) -> String {
        let mut line = String::new();
        BufReader::new(self.0.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the first line");
        line
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Asserts that `args` make the binary exit with status 2, having listened nowhere,
/// with a line on stderr that names `flag`.
fn expect_refused(args: &[&str], flag: &str) {
    let mut full = vec!["--addr", "127.0.0.1:0"];
    full.extend_from_slice(args);
    let (status, stdout, stderr) = Binary::spawn(&full).exit();
    assert_eq!(status.code(), Some(2), "{args:?}: {status:?}\n{stderr}");
    assert!(stdout.is_empty(), "{args:?} listened: {stdout:?}");
    assert!(
        stderr.lines().any(|line| line.contains(flag)),
        "{args:?}: no stderr line names {flag}:\n{stderr}"
    );
}

/// Asserts that a client gets its text and binary messages echoed.
fn assert_echoes(server: &impl Listening) {
    let mut ws = connect(server);
    ws.send(Message::text("units ✓")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("units ✓"));
    ws.send(Message::binary(vec![0u8, 1, 254, 255])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 1, 254, 255]));
    ws.close(None).unwrap();
}

/// Upgrades with `Sec-WebSocket-Protocol: superchat, chat` and returns the 101's head.
fn upgrade_offering_superchat_and_chat(server: &ServerProcess) -> String {
    let request = UPGRADE_REQUEST.replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Protocol: superchat, chat\r\n\r\n",
    );
    let mut stream = raw_connect(server);
    let head = http_exchange(&mut stream, request.as_bytes());
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    head
}

/// The values of the response head's `Sec-WebSocket-Protocol` headers (any case).
fn protocols(head: &str) -> Vec<String> {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-protocol"))
        .map(|(_, value)| value.trim().to_string())
        .collect()
}

#[test]
fn a_low_watermark_above_the_high_one_exits_2_naming_the_flag() {
    expect_refused(
        &[
            "--write-low-watermark",
            "2MiB",
            "--write-high-watermark",
            "1MiB",
        ],
        "--write-low-watermark",
    );
}

#[test]
fn a_zero_max_frame_out_exits_2_naming_the_flag() {
    expect_refused(&["--max-frame-out", "0"], "--max-frame-out");
}

#[test]
fn a_zero_read_buffer_size_exits_2_naming_the_flag() {
    expect_refused(&["--read-buffer-size", "0"], "--read-buffer-size");
}

#[test]
fn a_duration_in_an_unknown_unit_exits_2_naming_the_flag() {
    expect_refused(&["--idle-timeout", "10parsecs"], "--idle-timeout");
}

#[test]
fn sizes_and_durations_with_units_are_accepted() {
    let server = ServerProcess::start(&[
        "--write-high-watermark",
        "16MiB",
        "--handshake-timeout",
        "500ms",
    ]);
    assert_echoes(&server);
    // 500 ms, not 500 s (nor the default 10 s): a handshake that never ends is
    // dropped well within 5 s.
    let mut stalled = raw_connect(&server);
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stalled.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    expect_eof(&mut stalled);
}

#[test]
fn a_host_name_in_addr_is_resolved_and_the_address_printed() {
    let mut server = Binary::spawn(&["--addr", "localhost:0"]);
    let line = server.first_line();
    assert!(
        line.starts_with("listening on ws://127.0.0.1:"),
        "first line {line:?}"
    );
    let addr = launch::listening_addr(&line).unwrap_or_else(|| panic!("{line:?}"));
    assert_ne!(addr.port(), 0, "the port chosen is printed, not 0");
    assert_echoes(&addr);
}

#[test]
fn an_address_in_use_exits_1_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr: SocketAddr = taken.local_addr().unwrap();
    let (status, stdout, stderr) = Binary::spawn(&["--addr", &addr.to_string()]).exit();
    assert_eq!(status.code(), Some(1), "{status:?}\n{stderr}");
    assert!(stdout.is_empty(), "listened anyway: {stdout:?}");
    assert!(
        stderr.contains(&addr.to_string()),
        "the error does not name {addr}:\n{stderr}"
    );
    drop(taken);
}

#[test]
fn subprotocols_are_chosen_by_the_servers_order_of_preference() {
    let server = ServerProcess::start(&["--subprotocols", "chat,superchat"]);
    let head = upgrade_offering_superchat_and_chat(&server);
    assert_eq!(protocols(&head), ["chat"], "{head}");
}

#[test]
fn subprotocols_star_picks_the_clients_first() {
    let server = ServerProcess::start(&["--subprotocols", "*"]);
    let head = upgrade_offering_superchat_and_chat(&server);
    assert_eq!(protocols(&head), ["superchat"], "{head}");
}

#[test]
fn without_subprotocols_none_is_announced() {
    let server = ServerProcess::start(&[]);
    let head = upgrade_offering_superchat_and_chat(&server);
    assert!(protocols(&head).is_empty(), "{head}");
}
