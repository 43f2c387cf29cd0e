//! Talking to a server by hand: raw TCP with hand-built frames, or `tungstenite`.
//!
//! The frame reader and writer here are deliberately independent of the library's
//! own decoder and encoder, so that a bug there cannot hide itself in the tests.

use crate::Listening;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Opcodes (RFC 6455 §5.2).
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// A `tungstenite` client connected to `server`, with no message or frame size limit.
pub fn connect(server: &impl Listening) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect(server.addr()).expect("connect");
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
pub fn raw_connect(server: &impl Listening) -> TcpStream {
    let stream = TcpStream::connect(server.addr()).expect("connect");
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
pub fn raw_upgrade(server: &impl Listening) -> TcpStream {
    let mut stream = raw_connect(server);
    let head = http_exchange(&mut stream, UPGRADE_REQUEST.as_bytes());
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// [`raw_upgrade`] with its read timeout set to `read_timeout`.
pub fn raw_upgrade_with_read_timeout(server: &impl Listening, read_timeout: Duration) -> TcpStream {
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

/// `GET /metrics` from `server`: every sample of the Prometheus text, keyed by its
/// name with labels as written (`wsreactor_messages_total{direction="in"}`).
pub fn metrics(server: &impl Listening) -> std::collections::BTreeMap<String, u64> {
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
    server: &impl Listening,
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

/// A well-behaved client: upgrade, echo one small text message, and return the
/// round-trip time (for tests that check others are still served under an attack).
pub fn echo_round_trip(server: &impl Listening) -> Duration {
    let start = Instant::now();
    let mut stream = raw_upgrade(server);
    stream
        .write_all(&masked_frame(true, 0x1, b"still here?"))
        .expect("write the message");
    let frame = read_frame(&mut stream).expect("echo");
    assert_eq!(frame.payload, b"still here?");
    start.elapsed()
}
