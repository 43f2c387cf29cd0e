//! Shared helpers for the integration tests: start the real `wsreactor` binary on an
//! ephemeral port, talk to it with `tungstenite` or with hand-built frames over raw
//! TCP, and read its memory use from `/proc`.
//!
//! The raw-frame reader here is deliberately independent of the crate's own decoder,
//! so that a bug in the decoder cannot hide itself in the tests.
//!
//! Submodules: [`payload`], the deterministic payload generators, and [`launch`], how
//! the binary is started (both self-contained, as `examples/huge_echo.rs` includes
//! them too).
#![allow(dead_code)] // each test file uses a different part of this module

pub mod launch;
pub mod payload;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Opcodes (RFC 6455 §5.2).
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// Server arguments for small write watermarks (1 MiB high, 256 KiB low), for the tests
/// that bound the server's memory or make back-pressure set in early.
pub const SMALL_WRITE_WATERMARKS: [&str; 4] = [
    "--write-high-watermark",
    "1048576",
    "--write-low-watermark",
    "262144",
];

/// Reads the server's first stdout line, `listening on ws://ADDR/`, and returns ADDR.
fn read_listening_addr(child: &mut Child) -> SocketAddr {
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read listening line");
    launch::listening_addr(&line).unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
}

/// The server binary running as a child process; killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `wsreactor --addr 127.0.0.1:0 ARGS…` and waits for its "listening on" line.
    /// Its log goes to stderr at `RUST_LOG` (default `warn`).
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_prefix(&[], args)
    }

    /// Like [`ServerProcess::start`], run through a wrapper command (e.g.
    /// `["prlimit", "--nofile=64:64", "--"]`), which must `exec` the server so that
    /// the child's pid is the server's.
    pub fn start_with_prefix(prefix: &[&str], args: &[&str]) -> Self {
        let binary = env!("CARGO_BIN_EXE_wsreactor");
        let mut command = match prefix {
            [] => Command::new(binary),
            [wrapper, rest @ ..] => {
                let mut command = Command::new(wrapper);
                command.args(rest).arg(binary);
                command
            }
        };
        let mut child = launch::configure_server(&mut command, args)
            .spawn()
            .expect("start wsreactor");
        let addr = read_listening_addr(&mut child);
        ServerProcess { child, addr }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://addr/`.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// A field of `/proc/PID/status` in KiB (e.g. "VmRSS", "VmHWM").
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Sends SIGTERM and waits (up to `within`) for the process to exit.
    pub fn terminate(self, within: Duration) -> ExitStatus {
        self.stop_with(libc::SIGTERM, within)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tungstenite` client connected to `server`, with no message or frame size limit.
pub fn connect(server: &ServerProcess) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let config = tungstenite::protocol::WebSocketConfig {
        max_message_size: None,
        max_frame_size: None,
        ..Default::default()
    };
    let (socket, _response) =
        tungstenite::client::client_with_config(server.url(), stream, Some(config))
            .expect("websocket handshake");
    socket
}

/// A valid upgrade request (RFC 6455 §1.2's sample key).
pub const UPGRADE_REQUEST: &str = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A raw TCP connection to `server` with a read timeout.
pub fn raw_connect(server: &ServerProcess) -> TcpStream {
    let stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Sends `request` and reads the response head (up to CRLFCRLF); returns the head as
/// text. Bytes after the head stay in the socket.
pub fn http_exchange(stream: &mut TcpStream, request: &[u8]) -> String {
    stream.write_all(request).expect("write request");
    read_http_head(stream)
}

/// Reads an HTTP response head byte by byte (so no frame bytes are consumed).
pub fn read_http_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "connection ended inside the response head: {other:?} after {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8(head).expect("ASCII head")
}

/// A raw TCP connection that completed the opening handshake.
pub fn raw_upgrade(server: &ServerProcess) -> TcpStream {
    let mut stream = raw_connect(server);
    let head = http_exchange(&mut stream, UPGRADE_REQUEST.as_bytes());
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// [`raw_upgrade`] with its read timeout set to `read_timeout`.
pub fn raw_upgrade_with_read_timeout(server: &ServerProcess, read_timeout: Duration) -> TcpStream {
    let stream = raw_upgrade(server);
    stream
        .set_read_timeout(Some(read_timeout))
        .expect("read timeout");
    stream
}

/// A masked client frame header (RFC 6455 §5.2) for `len` payload bytes: the 7-bit,
/// 16-bit or 64-bit length as the RFC requires, then the masking `key`.
pub fn client_frame_header(fin: bool, opcode: u8, len: u64, key: [u8; 4]) -> Vec<u8> {
    let mut head = vec![(u8::from(fin) << 7) | opcode];
    if len < 126 {
        head.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        head.push(0x80 | 126);
        head.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        head.push(0x80 | 127);
        head.extend_from_slice(&len.to_be_bytes());
    }
    head.extend_from_slice(&key);
    head
}

/// A client frame (masked with a fixed key, RFC 6455 §5.3), built by hand.
pub fn masked_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut frame = client_frame_header(fin, opcode, payload.len() as u64, key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// A frame as the server sent it.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Reads one server frame (which must be unmasked and have no RSV bits). `None` on EOF
/// before the first header byte.
pub fn read_frame(stream: &mut TcpStream) -> Option<ServerFrame> {
    let mut head = [0u8; 2];
    match stream.read(&mut head[..1]) {
        Ok(0) => return None,
        Ok(_) => {}
        Err(e) => panic!("read frame: {e}"),
    }
    stream.read_exact(&mut head[1..]).expect("header byte 2");
    assert_eq!(head[0] & 0x70, 0, "server frames carry no RSV bits");
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).expect("16-bit length");
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).expect("64-bit length");
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).expect("frame fits in memory")];
    stream.read_exact(&mut payload).expect("payload");
    Some(ServerFrame {
        fin: head[0] & 0x80 != 0,
        opcode: head[0] & 0x0F,
        payload,
    })
}

/// Reads frames until a whole data message has arrived (answering nothing); returns
/// its opcode and payload. Control frames in between are returned in `controls`.
pub fn read_message(stream: &mut TcpStream, controls: &mut Vec<ServerFrame>) -> (u8, Vec<u8>) {
    let mut opcode = None;
    let mut data = Vec::new();
    loop {
        let frame = read_frame(stream).expect("message frame");
        if frame.opcode >= 0x8 {
            controls.push(frame);
            continue;
        }
        match (opcode, frame.opcode) {
            (None, 0x1 | 0x2) => opcode = Some(frame.opcode),
            (Some(_), 0x0) => {}
            other => panic!("bad frame sequence: {other:?}"),
        }
        data.extend_from_slice(&frame.payload);
        if frame.fin {
            return (opcode.unwrap_or_default(), data);
        }
    }
}

/// Reads frames until a close frame; returns its code (None for an empty body) and
/// reason. Data frames before it are skipped.
pub fn read_close(stream: &mut TcpStream) -> (Option<u16>, String) {
    loop {
        let frame = read_frame(stream).expect("close frame before EOF");
        if frame.opcode == 0x8 {
            let code = (frame.payload.len() >= 2)
                .then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
            let reason = String::from_utf8(frame.payload.get(2..).unwrap_or_default().to_vec())
                .expect("UTF-8 reason");
            return (code, reason);
        }
    }
}

/// Asserts that the server closes the TCP connection (EOF) within the read timeout,
/// discarding anything before it.
pub fn expect_eof(stream: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("expected the server to close the connection: {e}"),
        }
    }
}

/// The server's log lines (stderr), read by a thread as they come.
pub struct LogLines(std::sync::mpsc::Receiver<String>);

impl LogLines {
    /// Waits up to `within` for a log line containing `needle`, skipping the others;
    /// returns it, or `None` if none came in time (or the server's stderr closed).
    pub fn wait_for(&self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.0.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

impl ServerProcess {
    /// Like [`ServerProcess::start`], with the log at `level` (`RUST_LOG`) captured
    /// instead of inherited: its lines arrive through the returned [`LogLines`].
    pub fn start_with_log(level: &str, args: &[&str]) -> (Self, LogLines) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wsreactor"));
        launch::configure_server(&mut command, args)
            .env("RUST_LOG", level)
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("start wsreactor");
        let stderr = child.stderr.take().expect("stderr");
        let (lines, receiver) = std::sync::mpsc::channel();
        // Draining stderr all along also keeps the server from blocking on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let _ = lines.send(line);
            }
        });
        let addr = read_listening_addr(&mut child);
        (ServerProcess { child, addr }, LogLines(receiver))
    }

    /// Like [`ServerProcess::terminate`], with `signal` (e.g. `libc::SIGINT`).
    pub fn stop_with(mut self, signal: i32, within: Duration) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `GET /metrics` from `server`: every sample of the Prometheus text, keyed by its
/// name with labels as written (`wsreactor_messages_total{direction="in"}`).
pub fn metrics(server: &ServerProcess) -> std::collections::BTreeMap<String, u64> {
    let mut stream = raw_connect(server);
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("name value");
            (name.to_string(), value.parse().expect("an integer value"))
        })
        .collect()
}

/// Polls [`metrics`] until `done` holds for them (the server counts some events, such
/// as a client's FIN, a moment after the client saw its side of them); returns them.
/// Panics with the last sample after `within`.
pub fn metrics_when(
    server: &ServerProcess,
    within: Duration,
    done: impl Fn(&std::collections::BTreeMap<String, u64>) -> bool,
) -> std::collections::BTreeMap<String, u64> {
    let deadline = Instant::now() + within;
    loop {
        let sample = metrics(server);
        if done(&sample) {
            return sample;
        }
        assert!(
            Instant::now() < deadline,
            "the metrics never reached the expected state: {sample:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
