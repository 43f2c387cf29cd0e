//! The client side: one `mio::Poll` for every connection, each a small state machine.
//!
//! ```text
//!  Idle -> Connecting -> Handshaking -> Open -> CloseSent -> CloseReceived -> Closed
//!              \______________\___________\________\______________\-----> Failed
//! ```
//!
//! Sockets are non-blocking and registered edge-triggered for both directions, as in
//! the server's reactor: on readable a connection reads until `WouldBlock`, on writable
//! it writes until `WouldBlock`, and after reading (which may free room in its window
//! of messages in flight) it writes at once, without waiting for an event. A
//! connection that used its budget of reads or writes for one turn goes on a ready
//! list and continues next turn, so that one busy connection cannot hold the loop.
//!
//! **Writing.** Each connection has one output buffer. A producer fills it on the fly,
//! at most [`OUT_AHEAD`] bytes ahead of the socket: frame headers (masked, a fresh
//! key per frame), payload generated from (connection, message, position) and masked
//! in place, and control frames (pongs, the close) slotted in between frames. A message
//! of any size therefore costs the same memory.
//!
//! **Reading.** Bytes are read into one buffer shared by all connections and fed to
//! the connection's client-side [`Decoder`]. Echoed payload is compared with the same
//! generator, for the oldest message in flight (the echo is FIFO per connection);
//! nothing sent is kept. A message's latency runs from the start of the write that
//! hands its first byte to the socket to the return of the read that brings the last
//! byte of its echo.

use crate::cli::Target;
use crate::gen::{Payloads, XorShift, PERIOD};
use crate::payload::Checksum;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use wsreactor::protocol::encoder::push_masked_frame;
use wsreactor::protocol::handshake::accept_key;
use wsreactor::protocol::header::MAX_HEADER_LEN;
use wsreactor::protocol::mask::apply_mask;
use wsreactor::protocol::{
    CloseCode, CloseFrame, Decoder, Event, FrameHeader, Limits, MessageKind, OpCode, Role,
};

/// The read buffer shared by all connections.
const READ_BUF: usize = 256 * 1024;
/// Reads per connection per turn.
const MAX_READS_PER_TURN: usize = 16;
/// Writes per connection per turn.
const MAX_WRITES_PER_TURN: usize = 16;
/// How far the producer runs ahead of the socket, per connection.
const OUT_AHEAD: usize = 256 * 1024;
/// Payload generated in one piece.
const GEN_CHUNK: usize = 64 * 1024;
/// The longest HTTP response head accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// New connections started per loop turn at most: connect() costs the client's
/// kernel time (much more once half of a source address's ephemeral ports are in
/// use), and the connections already started should not wait for all of it.
const CONNECTS_PER_TURN: usize = 64;
/// The loop wakes up at least this often (progress, deadlines).
const TICK: Duration = Duration::from_millis(100);
/// Error messages kept for the report.
const ERROR_SAMPLES: usize = 10;

/// What each connection sends.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Text or binary messages.
    pub kind: MessageKind,
    /// Payload bytes per message.
    pub size: u64,
    /// Payload bytes per frame (at least 1; `size` or more means one frame).
    pub frame_size: u64,
    /// Messages in flight per connection at most.
    pub in_flight: usize,
    /// Messages per connection, or `None` until the traffic phase is stopped.
    pub per_conn: Option<u64>,
    /// Seed of the payloads and keys.
    pub seed: u64,
    /// Keep a running checksum of each message on both sides and compare them.
    pub checksum: bool,
    /// The server is a raw TCP echo (`--raw-echo`): what comes back is our own masked
    /// frames, decoded as a server would decode them.
    pub raw_echo: bool,
}

impl Workload {
    /// No messages at all (`idle`).
    pub fn none(seed: u64, raw_echo: bool) -> Self {
        Workload {
            kind: MessageKind::Binary,
            size: 0,
            frame_size: 1,
            in_flight: 0,
            per_conn: Some(0),
            seed,
            checksum: false,
            raw_echo,
        }
    }
}

/// Why a phase did not finish.
#[derive(Debug)]
pub enum RunError {
    /// The `--timeout` deadline passed.
    TimedOut,
    /// `poll` failed.
    Io(io::Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::TimedOut => f.write_str("timed out (--timeout)"),
            RunError::Io(e) => write!(f, "poll failed: {e}"),
        }
    }
}

impl From<io::Error> for RunError {
    fn from(e: io::Error) -> Self {
        RunError::Io(e)
    }
}

/// What the run measured and counted, across all connections.
pub struct Stats {
    /// Connections that completed the opening handshake.
    pub opened: usize,
    /// Connections that ended in an error.
    pub failed: usize,
    /// Connections that got close 1000 back after sending it, then the server's EOF.
    pub closed_ok: usize,
    /// Messages echoed and verified.
    pub messages: u64,
    /// Payload bytes of the messages echoed and verified.
    pub bytes: u64,
    /// Payload bytes verified so far, messages not yet complete included.
    pub bytes_echoed: u64,
    /// Data frames sent.
    pub frames_sent: u64,
    /// Data frames received.
    pub frames_received: u64,
    /// The largest data frame received (payload bytes).
    pub max_frame_received: u64,
    /// Message latency in µs: first byte written to last byte of the echo read.
    pub latency: Histogram<u64>,
    /// Opening latency in µs: connect() to the 101 response read.
    pub upgrade_latency: Histogram<u64>,
    /// Errors of all kinds.
    pub errors: u64,
    /// The first few error messages.
    pub error_samples: Vec<String>,
    /// When the last echo completed.
    pub last_echo_at: Option<Instant>,
    /// The checksum of the last message echoed (with `Workload::checksum`).
    pub checksum: Option<u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 hour at 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Stats {
    fn new() -> Self {
        Stats {
            opened: 0,
            failed: 0,
            closed_ok: 0,
            messages: 0,
            bytes: 0,
            bytes_echoed: 0,
            frames_sent: 0,
            frames_received: 0,
            max_frame_received: 0,
            latency: histogram(),
            upgrade_latency: histogram(),
            errors: 0,
            error_samples: Vec::new(),
            last_echo_at: None,
            checksum: None,
        }
    }

    /// Counts an error and keeps its message if it is among the first few.
    pub fn record_error(&mut self, message: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(message);
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not started.
    Idle,
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent, reading the response head.
    Handshaking,
    /// WebSocket open.
    Open,
    /// Our close frame is queued or sent; waiting for the server's.
    CloseSent,
    /// The server's close came back; waiting for its EOF (it closes TCP first,
    /// RFC 6455 §7.1.1, so the TIME_WAIT state stays on its side, not on our ports).
    CloseReceived,
    /// Done: socket closed after the closing handshake.
    Closed,
    /// Ended by an error (counted in `Stats::errors`).
    Failed,
}

/// A message sent (or being sent) whose echo is not complete.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    /// Message index on its connection.
    index: u64,
    /// Offset of its first byte in the connection's output stream.
    at: u64,
    /// When the write that handed its first byte to the socket started.
    sent_at: Option<Instant>,
    /// Checksum of its payload, once fully generated (with `Workload::checksum`).
    sent_sum: Option<u64>,
}

/// What a connection needs from the engine besides itself.
struct Ctx<'a> {
    w: &'a Workload,
    stats: &'a mut Stats,
    payloads: &'a Payloads,
    registry: &'a Registry,
    request: &'a str,
    now: Instant,
    /// No new messages: the duration is over.
    stop: bool,
}

/// More to do than the budget of one turn allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Budget {
    Done,
    More,
}

struct Conn {
    index: usize,
    socket: Option<TcpStream>,
    phase: Phase,
    connect_started: Option<Instant>,
    /// The upgrade request's nonce.
    key: String,
    /// The response head, until complete.
    head: Vec<u8>,
    decoder: Decoder,
    rng: XorShift,

    // Output.
    out: Vec<u8>,
    out_pos: usize,
    /// The last write hit `WouldBlock`: wait for a writable event.
    write_blocked: bool,
    /// Bytes ever put into `out` / taken by the socket.
    enqueued: u64,
    written: u64,
    /// Control frames waiting for a frame boundary.
    controls: Vec<u8>,

    // The producer.
    producing: bool,
    /// Messages started.
    started: u64,
    /// A message is being generated (the last one started).
    in_msg: bool,
    msg_pos: u64,
    frame_left: u64,
    frame_off: u64,
    frame_key: [u8; 4],
    sent_sum: Checksum,

    // The checker.
    inflight: VecDeque<InFlight>,
    /// `inflight[..unstamped]` have their `sent_at`.
    unstamped: usize,
    recv_pos: u64,
    recv_sum: Checksum,
    /// The close frame that came back: `Some(None)` for an empty one.
    close_back: Option<Option<CloseCode>>,

    /// Counted as done in the current phase.
    settled: bool,
}

impl Conn {
    fn new(index: usize, w: &Workload) -> Self {
        let mut rng = XorShift::new(w.seed, index);
        // A WebSocket server's frames are unmasked (RFC 6455 §5.1); a raw echo sends
        // back the client's masked ones.
        let role = if w.raw_echo {
            Role::Server
        } else {
            Role::Client
        };
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        nonce[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        Conn {
            index,
            socket: None,
            phase: Phase::Idle,
            connect_started: None,
            key: BASE64.encode(nonce),
            head: Vec::new(),
            decoder: Decoder::new(role, Limits::default()),
            rng,
            out: Vec::new(),
            out_pos: 0,
            write_blocked: false,
            enqueued: 0,
            written: 0,
            controls: Vec::new(),
            producing: false,
            started: 0,
            in_msg: false,
            msg_pos: 0,
            frame_left: 0,
            frame_off: 0,
            frame_key: [0; 4],
            sent_sum: Checksum::default(),
            inflight: VecDeque::new(),
            unstamped: 0,
            recv_pos: 0,
            recv_sum: Checksum::default(),
            close_back: None,
            settled: false,
        }
    }

    fn is_live(&self) -> bool {
        !matches!(self.phase, Phase::Idle | Phase::Closed | Phase::Failed)
    }

    /// Ends the connection with an error.
    fn fail(&mut self, ctx: &mut Ctx, why: impl fmt::Display) {
        if matches!(self.phase, Phase::Closed | Phase::Failed) {
            return;
        }
        self.phase = Phase::Failed;
        self.drop_socket(ctx.registry);
        ctx.stats.failed += 1;
        ctx.stats
            .record_error(format!("connection {}: {why}", self.index));
    }

    fn drop_socket(&mut self, registry: &Registry) {
        if let Some(mut socket) = self.socket.take() {
            let _ = registry.deregister(&mut socket);
        }
        self.out = Vec::new();
        self.out_pos = 0;
        self.controls = Vec::new();
        self.inflight = VecDeque::new();
        self.head = Vec::new();
    }

    /// The connect completed (or failed): send the upgrade request.
    fn finish_connect(&mut self, ctx: &mut Ctx) {
        let Some(socket) = &self.socket else { return };
        match socket.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return self.fail(ctx, format_args!("connect: {e}")),
        }
        match socket.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => return self.fail(ctx, format_args!("connect: {e}")),
        }
        let request = format!("{}Sec-WebSocket-Key: {}\r\n\r\n", ctx.request, self.key);
        self.out.extend_from_slice(request.as_bytes());
        self.enqueued += request.len() as u64;
        self.phase = Phase::Handshaking;
    }

    /// Reads until `WouldBlock`, EOF or the budget; returns whether to come back.
    fn read_some(&mut self, buf: &mut [u8], ctx: &mut Ctx) -> Budget {
        for _ in 0..MAX_READS_PER_TURN {
            if !self.is_live() {
                return Budget::Done;
            }
            let Some(socket) = &mut self.socket else {
                return Budget::Done;
            };
            match socket.read(buf) {
                Ok(0) => {
                    self.on_eof(ctx);
                    return Budget::Done;
                }
                Ok(n) => {
                    ctx.now = Instant::now();
                    self.on_input(&mut buf[..n], ctx);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Budget::Done,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(ctx, format_args!("read: {e}"));
                    return Budget::Done;
                }
            }
        }
        Budget::More
    }

    fn on_eof(&mut self, ctx: &mut Ctx) {
        match self.phase {
            Phase::CloseReceived => self.finish_close(ctx),
            Phase::Handshaking => self.fail(
                ctx,
                "the server closed the connection during the opening handshake",
            ),
            _ => self.fail(
                ctx,
                "the server closed the connection (EOF) without a close frame",
            ),
        }
    }

    fn on_input(&mut self, input: &mut [u8], ctx: &mut Ctx) {
        match self.phase {
            Phase::Handshaking => self.on_response_head(input, ctx),
            Phase::Open | Phase::CloseSent => self.on_frames(input, ctx),
            _ => {}
        }
    }

    fn on_response_head(&mut self, input: &mut [u8], ctx: &mut Ctx) {
        self.head.extend_from_slice(input);
        let Some(end) = self
            .head
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| at + 4)
        else {
            if self.head.len() > MAX_RESPONSE_HEAD {
                self.fail(ctx, "response head too long");
            }
            return;
        };
        if let Err(why) = check_response(&self.head[..end], &self.key) {
            return self.fail(ctx, why);
        }
        let mut rest = self.head.split_off(end);
        self.head = Vec::new();
        self.phase = Phase::Open;
        ctx.stats.opened += 1;
        if let Some(started) = self.connect_started {
            ctx.stats
                .upgrade_latency
                .saturating_record(micros(ctx.now - started));
        }
        if !rest.is_empty() {
            self.on_frames(&mut rest, ctx);
        }
    }

    fn on_frames(&mut self, input: &mut [u8], ctx: &mut Ctx) {
        let mut at = 0;
        while matches!(self.phase, Phase::Open | Phase::CloseSent) {
            let (used, event) = match self.decoder.decode(&mut input[at..]) {
                Ok(progress) => progress,
                Err(e) => {
                    return self.fail(
                        ctx,
                        format_args!("the server's frames broke the protocol: {e}"),
                    )
                }
            };
            at += used;
            let Some(event) = event else { return };
            match event {
                Event::FrameStart(header) if !header.opcode.is_control() => {
                    if self.inflight.is_empty() {
                        return self.fail(
                            ctx,
                            format_args!("a data frame with no message in flight: {header:?}"),
                        );
                    }
                    ctx.stats.frames_received += 1;
                    ctx.stats.max_frame_received =
                        ctx.stats.max_frame_received.max(header.payload_len);
                }
                Event::Data {
                    kind,
                    bytes,
                    end_of_message,
                } => self.on_data(kind, bytes, end_of_message, ctx),
                Event::Ping(payload) if self.phase == Phase::Open => {
                    self.queue_control(OpCode::Pong, payload.as_slice());
                }
                Event::Close(frame) => return self.on_close(frame, ctx),
                // Control frame headers, pongs, pings while closing, and any event a
                // later decoder adds: nothing to check or answer.
                _ => {}
            }
        }
    }

    fn on_data(&mut self, kind: MessageKind, bytes: &[u8], end: bool, ctx: &mut Ctx) {
        let Some(&front) = self.inflight.front() else {
            return self.fail(ctx, "data with no message in flight");
        };
        if kind != ctx.w.kind {
            return self.fail(
                ctx,
                format_args!(
                    "message {} came back as {kind:?}, sent {:?}",
                    front.index, ctx.w.kind
                ),
            );
        }
        if self.recv_pos + bytes.len() as u64 > ctx.w.size {
            return self.fail(
                ctx,
                format_args!(
                    "the echo of message {} is longer than its {} bytes",
                    front.index, ctx.w.size
                ),
            );
        }
        let text = ctx.w.kind == MessageKind::Text;
        for piece in bytes.chunks(PERIOD) {
            let expected =
                ctx.payloads
                    .slice(text, self.index, front.index, self.recv_pos, piece.len());
            if piece != expected {
                let i = piece
                    .iter()
                    .zip(expected.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                let (got, want) = (piece[i], expected[i]);
                return self.fail(
                    ctx,
                    format_args!(
                        "verification failed: message {} byte {} is {got:#04x}, sent {want:#04x}",
                        front.index,
                        self.recv_pos + i as u64
                    ),
                );
            }
            if ctx.w.checksum {
                self.recv_sum.update(piece);
            }
            self.recv_pos += piece.len() as u64;
        }
        ctx.stats.bytes_echoed += bytes.len() as u64;
        if !end {
            return;
        }
        if self.recv_pos != ctx.w.size {
            let got = self.recv_pos;
            return self.fail(
                ctx,
                format_args!(
                    "the echo of message {} ended after {got} of {} bytes",
                    front.index, ctx.w.size
                ),
            );
        }
        if ctx.w.checksum {
            let sum = self.recv_sum.finish();
            if front.sent_sum != Some(sum) {
                return self.fail(
                    ctx,
                    format_args!(
                        "checksum of the echo of message {} is {sum:016x}, sent {:?}",
                        front.index, front.sent_sum
                    ),
                );
            }
            ctx.stats.checksum = Some(sum);
        }
        self.inflight.pop_front();
        self.unstamped = self.unstamped.saturating_sub(1);
        self.recv_pos = 0;
        let sent_at = front.sent_at.unwrap_or(ctx.now);
        ctx.stats
            .latency
            .saturating_record(micros(ctx.now.saturating_duration_since(sent_at)));
        ctx.stats.messages += 1;
        ctx.stats.bytes += ctx.w.size;
        ctx.stats.last_echo_at = Some(ctx.now);
    }

    /// The closing handshake is over: closes the socket and counts the outcome.
    fn finish_close(&mut self, ctx: &mut Ctx) {
        self.phase = Phase::Closed;
        self.drop_socket(ctx.registry);
        match self.close_back {
            Some(Some(CloseCode::NORMAL)) => ctx.stats.closed_ok += 1,
            other => {
                let code = other.flatten().map_or("none".into(), |c| c.to_string());
                ctx.stats.record_error(format!(
                    "connection {}: sent close 1000, got close {code} back",
                    self.index
                ));
            }
        }
    }

    fn on_close(&mut self, frame: Option<CloseFrame>, ctx: &mut Ctx) {
        match self.phase {
            Phase::CloseSent => {
                self.close_back = Some(frame.map(|f| f.code()));
                self.phase = Phase::CloseReceived;
                if ctx.w.raw_echo {
                    // Our own close came back; a raw echo never closes TCP itself.
                    self.finish_close(ctx);
                }
            }
            _ => {
                let (code, reason) = frame.map_or((CloseCode::NO_STATUS, String::new()), |f| {
                    (f.code(), f.reason().to_string())
                });
                self.fail(
                    ctx,
                    format_args!(
                        "the server closed the connection: code {code}, reason {reason:?}"
                    ),
                );
            }
        }
    }

    /// Queues a masked control frame, sent at the next frame boundary.
    fn queue_control(&mut self, opcode: OpCode, payload: &[u8]) {
        let key = self.rng.key();
        push_masked_frame(&mut self.controls, opcode, true, payload, key);
    }

    /// Starts the closing handshake with 1000.
    fn begin_close(&mut self) {
        if self.phase == Phase::Open {
            self.queue_control(OpCode::Close, &CloseCode::NORMAL.0.to_be_bytes());
            self.phase = Phase::CloseSent;
        }
    }

    fn can_start_message(&self, ctx: &Ctx) -> bool {
        self.phase == Phase::Open
            && self.producing
            && !ctx.stop
            && !self.in_msg
            && self.inflight.len() < ctx.w.in_flight
            && ctx.w.per_conn.is_none_or(|n| self.started < n)
    }

    /// Everything this connection had to send was sent and echoed.
    fn traffic_done(&self, w: &Workload, stop: bool) -> bool {
        self.producing
            && !self.in_msg
            && self.inflight.is_empty()
            && (stop || w.per_conn.is_some_and(|n| self.started >= n))
    }

    /// Fills the output buffer up to `OUT_AHEAD` bytes ahead of the socket.
    fn produce(&mut self, ctx: &mut Ctx) {
        loop {
            let pending = self.out.len() - self.out_pos;
            if pending >= OUT_AHEAD {
                return;
            }
            if self.frame_left > 0 {
                let n = self
                    .frame_left
                    .min((OUT_AHEAD - pending).min(GEN_CHUNK) as u64)
                    as usize;
                if self.out_pos > 0 && self.out_pos >= self.out.len() / 2 {
                    self.out.drain(..self.out_pos);
                    self.out_pos = 0;
                }
                let start = self.out.len();
                let text = ctx.w.kind == MessageKind::Text;
                let msg = self.started - 1;
                ctx.payloads
                    .append(text, self.index, msg, self.msg_pos, n, &mut self.out);
                let piece = &mut self.out[start..];
                if ctx.w.checksum {
                    self.sent_sum.update(piece);
                }
                apply_mask(piece, self.frame_key, (self.frame_off % 4) as usize);
                self.msg_pos += n as u64;
                self.frame_off += n as u64;
                self.frame_left -= n as u64;
                self.enqueued += n as u64;
                if self.frame_left == 0 && self.msg_pos == ctx.w.size {
                    self.message_generated(ctx);
                }
                continue;
            }
            // A frame boundary: control frames may go out here.
            if !self.controls.is_empty() {
                self.enqueued += self.controls.len() as u64;
                self.out.extend_from_slice(&self.controls);
                self.controls.clear();
                continue;
            }
            if self.in_msg {
                self.start_frame(false, ctx);
                continue;
            }
            if self.can_start_message(ctx) {
                let index = self.started;
                self.started += 1;
                self.in_msg = true;
                self.msg_pos = 0;
                self.inflight.push_back(InFlight {
                    index,
                    at: self.enqueued,
                    sent_at: None,
                    sent_sum: None,
                });
                self.start_frame(true, ctx);
                continue;
            }
            return;
        }
    }

    fn start_frame(&mut self, first: bool, ctx: &mut Ctx) {
        let len = (ctx.w.size - self.msg_pos).min(ctx.w.frame_size);
        let fin = self.msg_pos + len == ctx.w.size;
        let key = self.rng.key();
        let header = FrameHeader {
            fin,
            rsv: 0,
            opcode: if first {
                ctx.w.kind.opcode()
            } else {
                OpCode::Continuation
            },
            mask: Some(key),
            payload_len: len,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        self.out.extend_from_slice(&head[..head_len]);
        self.enqueued += head_len as u64;
        self.frame_left = len;
        self.frame_off = 0;
        self.frame_key = key;
        ctx.stats.frames_sent += 1;
        if len == 0 && fin {
            self.message_generated(ctx);
        }
    }

    fn message_generated(&mut self, ctx: &mut Ctx) {
        self.in_msg = false;
        if ctx.w.checksum {
            let sum = self.sent_sum.finish();
            if let Some(last) = self.inflight.back_mut() {
                last.sent_sum = Some(sum);
            }
        }
    }

    /// Produces and writes until `WouldBlock`, nothing is left or the budget is used.
    fn pump(&mut self, ctx: &mut Ctx) -> Budget {
        for _ in 0..MAX_WRITES_PER_TURN {
            if !self.is_live() || self.phase == Phase::Connecting {
                return Budget::Done;
            }
            self.produce(ctx);
            if self.out_pos == self.out.len() {
                return Budget::Done;
            }
            let Some(socket) = &mut self.socket else {
                return Budget::Done;
            };
            // A message's clock starts when the write that hands its first byte to
            // the kernel starts (on loopback the echo may be queued before it returns).
            let write_started = (self.unstamped < self.inflight.len()).then(Instant::now);
            match socket.write(&self.out[self.out_pos..]) {
                Ok(0) => {
                    self.fail(ctx, "write returned 0");
                    return Budget::Done;
                }
                Ok(n) => {
                    self.out_pos += n;
                    self.written += n as u64;
                    if self.out_pos == self.out.len() {
                        self.out.clear();
                        self.out_pos = 0;
                    }
                    if let Some(started) = write_started {
                        while let Some(m) = self.inflight.get_mut(self.unstamped) {
                            if m.at >= self.written {
                                break;
                            }
                            m.sent_at = Some(started);
                            self.unstamped += 1;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                    return Budget::Done;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(ctx, format_args!("write: {e}"));
                    return Budget::Done;
                }
            }
        }
        Budget::More
    }
}

/// Checks the server's answer to the upgrade request (RFC 6455 §4.1, client side).
fn check_response(head: &[u8], key: &str) -> Result<(), String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            return Err(format!(
                "malformed response head: {:?}",
                String::from_utf8_lossy(head)
            ))
        }
    }
    let code = response.code.unwrap_or(0);
    if code != 101 {
        let hint = if code == 503 {
            " (the server's --max-connections reached?)"
        } else {
            ""
        };
        return Err(format!(
            "upgrade refused: HTTP {code} {}{hint}",
            response.reason.unwrap_or("")
        ));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err("101 without Upgrade: websocket".into());
    }
    let expected = accept_key(key);
    match header("sec-websocket-accept") {
        Some(accept) if accept == expected => Ok(()),
        other => Err(format!(
            "Sec-WebSocket-Accept is {other:?}, expected {expected:?}"
        )),
    }
}

#[derive(Clone, Copy, Debug)]
struct Readiness {
    readable: bool,
    writable: bool,
}

/// Which phase of the run the engine is in: what "done" means for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Open,
    Traffic,
    Hold,
    Close,
}

/// Every connection of a run, and the loop that drives them.
pub struct Engine {
    poll: Poll,
    events: Events,
    fired: Vec<(usize, Readiness)>,
    conns: Vec<Conn>,
    target: SocketAddr,
    /// The upgrade request up to the key line.
    request: String,
    sources: Vec<IpAddr>,
    workload: Workload,
    read_buf: Vec<u8>,
    payloads: Payloads,
    ready: Vec<usize>,
    /// Totals.
    pub stats: Stats,
    stop: bool,
    deadline: Instant,
    stage: Stage,
    /// Connections done in the current stage, and when the last one got there.
    settled: usize,
    last_settled_at: Option<Instant>,
    /// Connections started (connect called).
    started: usize,
    /// When the traffic stage started.
    traffic_started: Option<Instant>,
}

impl Engine {
    /// `connections` connections to `target` (not yet connected), bound round-robin
    /// to `sources` if any, sending `workload`; every phase ends by `deadline`.
    pub fn new(
        target: &Target,
        sources: Vec<IpAddr>,
        connections: usize,
        workload: Workload,
        deadline: Instant,
    ) -> io::Result<Self> {
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nUser-Agent: wsload\r\n",
            target.path, target.authority
        );
        Ok(Engine {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            fired: Vec::with_capacity(1024),
            conns: (0..connections).map(|i| Conn::new(i, &workload)).collect(),
            target: target.addr,
            request,
            sources,
            workload,
            read_buf: vec![0; READ_BUF],
            payloads: Payloads::new(workload.seed),
            ready: Vec::new(),
            stats: Stats::new(),
            stop: false,
            deadline,
            stage: Stage::Open,
            settled: 0,
            last_settled_at: None,
            started: 0,
            traffic_started: None,
        })
    }

    /// Connections in the run.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Connections done with the current stage.
    pub fn settled(&self) -> usize {
        self.settled
    }

    /// Connections open right now.
    pub fn open_now(&self) -> usize {
        self.conns.iter().filter(|c| c.phase == Phase::Open).count()
    }

    /// When the traffic stage started.
    pub fn traffic_started(&self) -> Option<Instant> {
        self.traffic_started
    }

    fn start_connect(&mut self, i: usize) {
        let source = match self.sources.len() {
            0 => None,
            n => Some(self.sources[i % n]),
        };
        // The opening clock starts here, not at `now`: connect() itself can take a
        // while when the source address's ports are nearly all in use.
        let connect_started = Instant::now();
        let result = connect(self.target, source).and_then(|mut socket| {
            self.poll.registry().register(
                &mut socket,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(socket)
        });
        let conn = &mut self.conns[i];
        conn.connect_started = Some(connect_started);
        match result {
            Ok(socket) => {
                conn.socket = Some(socket);
                conn.phase = Phase::Connecting;
            }
            Err(e) => {
                conn.phase = Phase::Failed;
                self.stats.failed += 1;
                let from = source.map_or(String::new(), |ip| format!(" from {ip}"));
                self.stats
                    .record_error(format!("connection {i}: connect{from}: {e}"));
            }
        }
    }

    /// Handles what happened on connection `i`.
    fn service(&mut self, i: usize, r: Readiness) {
        let Engine {
            poll,
            conns,
            workload,
            stats,
            read_buf,
            payloads,
            ready,
            request,
            stop,
            ..
        } = self;
        let Some(conn) = conns.get_mut(i) else { return };
        let mut ctx = Ctx {
            w: workload,
            stats,
            payloads,
            registry: poll.registry(),
            request,
            now: Instant::now(),
            stop: *stop,
        };
        if conn.phase == Phase::Connecting {
            if !r.writable && !r.readable {
                return;
            }
            conn.finish_connect(&mut ctx);
        }
        if conn.is_live() && conn.phase != Phase::Connecting {
            if r.writable {
                conn.write_blocked = false;
            }
            let mut more = false;
            if r.readable {
                more |= conn.read_some(read_buf, &mut ctx) == Budget::More;
            }
            if conn.is_live() && !conn.write_blocked {
                more |= conn.pump(&mut ctx) == Budget::More;
            }
            if more && conn.is_live() {
                ready.push(i);
            }
        }
        self.settle(i);
    }

    /// Counts connection `i` as done with the current stage if it is.
    fn settle(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        if conn.settled {
            return;
        }
        let done = match self.stage {
            Stage::Open => !matches!(
                conn.phase,
                Phase::Idle | Phase::Connecting | Phase::Handshaking
            ),
            Stage::Traffic => {
                conn.phase != Phase::Open || conn.traffic_done(&self.workload, self.stop)
            }
            Stage::Hold => false,
            Stage::Close => matches!(conn.phase, Phase::Closed | Phase::Failed | Phase::Idle),
        };
        if done {
            conn.settled = true;
            self.settled += 1;
            self.last_settled_at = Some(Instant::now());
        }
    }

    fn begin_stage(&mut self, stage: Stage) {
        self.stage = stage;
        self.settled = 0;
        self.last_settled_at = None;
        for conn in &mut self.conns {
            conn.settled = false;
        }
        if stage != Stage::Open {
            for i in 0..self.conns.len() {
                self.settle(i);
            }
        }
    }

    /// One `poll` and the work it brings; returns by `wake` at the latest.
    fn turn(&mut self, wake: Option<Instant>) -> io::Result<()> {
        let now = Instant::now();
        let mut timeout = TICK.min(self.deadline.saturating_duration_since(now));
        if let Some(wake) = wake {
            timeout = timeout.min(wake.saturating_duration_since(now));
        }
        if !self.ready.is_empty() {
            timeout = Duration::ZERO;
        }
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut fired = std::mem::take(&mut self.fired);
        fired.clear();
        fired.extend(self.events.iter().map(|e| {
            (
                e.token().0,
                Readiness {
                    readable: e.is_readable() || e.is_read_closed() || e.is_error(),
                    writable: e.is_writable() || e.is_write_closed() || e.is_error(),
                },
            )
        }));
        for &(i, r) in &fired {
            self.service(i, r);
        }
        self.fired = fired;
        for i in std::mem::take(&mut self.ready) {
            self.service(
                i,
                Readiness {
                    readable: true,
                    writable: false,
                },
            );
        }
        Ok(())
    }

    fn check_deadline(&self) -> Result<(), RunError> {
        if Instant::now() >= self.deadline {
            Err(RunError::TimedOut)
        } else {
            Ok(())
        }
    }

    /// Opens every connection: at most `max_connecting` in the TCP or WebSocket
    /// handshake at once, and at most `rate` started per second. Returns the time from
    /// the first connect to the last connection opened (or failed).
    pub fn open_all(
        &mut self,
        rate: Option<f64>,
        max_connecting: usize,
        tick: &mut dyn FnMut(&Engine),
    ) -> Result<Duration, RunError> {
        self.begin_stage(Stage::Open);
        let n = self.conns.len();
        let start = Instant::now();
        let max_connecting = max_connecting.max(1);
        loop {
            let now = Instant::now();
            let mut wake = None;
            let mut batch = 0;
            while self.started < n && self.started - self.settled < max_connecting {
                if batch == CONNECTS_PER_TURN {
                    // More to start: come back right after serving the sockets.
                    wake = Some(now);
                    break;
                }
                batch += 1;
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(self.started as f64 / rate);
                    if due > now {
                        wake = Some(due);
                        break;
                    }
                }
                let i = self.started;
                self.started += 1;
                self.start_connect(i);
                self.settle(i);
            }
            if self.settled == n {
                break;
            }
            self.check_deadline()?;
            self.turn(wake)?;
            tick(self);
        }
        Ok(self.last_settled_at.unwrap_or(start) - start)
    }

    /// Sends the workload on every open connection until each has had its messages
    /// echoed, or for `duration` (then waits for the echoes in flight). Returns the
    /// time from the start to the last echo.
    pub fn run_traffic(
        &mut self,
        duration: Option<Duration>,
        tick: &mut dyn FnMut(&Engine),
    ) -> Result<Duration, RunError> {
        let start = Instant::now();
        self.traffic_started = Some(start);
        self.stop = false;
        let stop_at = duration.map(|d| start + d);
        for conn in &mut self.conns {
            conn.producing = conn.phase == Phase::Open;
        }
        self.begin_stage(Stage::Traffic);
        self.kick(Phase::Open);
        loop {
            if self.settled == self.conns.len() {
                break;
            }
            if let Some(at) = stop_at {
                if !self.stop && Instant::now() >= at {
                    self.stop = true;
                    for i in 0..self.conns.len() {
                        self.settle(i);
                    }
                    continue;
                }
            }
            self.check_deadline()?;
            self.turn(if self.stop { None } else { stop_at })?;
            tick(self);
        }
        Ok(self
            .stats
            .last_echo_at
            .map_or_else(|| start.elapsed(), |at| at.saturating_duration_since(start)))
    }

    /// Services every connection in `phase` without waiting for readiness, so that
    /// each starts writing what the new stage asks of it.
    fn kick(&mut self, phase: Phase) {
        let nothing = Readiness {
            readable: false,
            writable: false,
        };
        for i in 0..self.conns.len() {
            if self.conns[i].phase == phase {
                self.service(i, nothing);
            }
        }
    }

    /// Keeps the connections open for `hold`, answering pings.
    pub fn hold(&mut self, hold: Duration, tick: &mut dyn FnMut(&Engine)) -> Result<(), RunError> {
        self.begin_stage(Stage::Hold);
        let until = Instant::now() + hold;
        while Instant::now() < until {
            self.check_deadline()?;
            self.turn(Some(until))?;
            tick(self);
        }
        Ok(())
    }

    /// Sends close 1000 on every open connection and waits (up to `wait`) for each
    /// close to come back and the server to close TCP. Connections still waiting
    /// then count as errors. Returns how long it took.
    pub fn close_all(
        &mut self,
        wait: Duration,
        tick: &mut dyn FnMut(&Engine),
    ) -> Result<Duration, RunError> {
        let start = Instant::now();
        let limit = start + wait;
        for conn in &mut self.conns {
            conn.producing = false;
            conn.begin_close();
        }
        self.begin_stage(Stage::Close);
        self.kick(Phase::CloseSent);
        while self.settled < self.conns.len() {
            self.check_deadline()?;
            if Instant::now() >= limit {
                let Engine {
                    poll,
                    conns,
                    workload,
                    stats,
                    payloads,
                    request,
                    ..
                } = self;
                let mut ctx = Ctx {
                    w: workload,
                    stats,
                    payloads,
                    registry: poll.registry(),
                    request,
                    now: Instant::now(),
                    stop: true,
                };
                for conn in conns.iter_mut().filter(|c| !c.settled) {
                    let why = match conn.phase {
                        Phase::CloseReceived => {
                            "the server did not close TCP after the closing handshake"
                        }
                        _ => "no close frame back",
                    };
                    conn.fail(
                        &mut ctx,
                        format_args!("{why} within {} s", wait.as_secs_f64()),
                    );
                }
                for i in 0..self.conns.len() {
                    self.settle(i);
                }
                break;
            }
            self.turn(Some(limit))?;
            tick(self);
        }
        Ok(self
            .last_settled_at
            .unwrap_or(start)
            .saturating_duration_since(start))
    }
}

/// A non-blocking socket connecting to `target`, bound first to `(source, 0)` if
/// given. `IP_BIND_ADDRESS_NO_PORT` defers the choice of the port to `connect`, so
/// that ports are only used up per (source, destination) pair, not per source alone.
fn connect(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let Some(ip) = source {
        if ip.is_ipv4() {
            set_bind_address_no_port(&socket);
        }
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

fn set_bind_address_no_port(socket: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int; failure
    // (an old kernel) only means ports are picked at bind time.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
