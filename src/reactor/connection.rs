//! One client connection: its socket, where it is in its life, and its buffers.

use super::write_queue::WriteQueue;
use crate::app::ConnId;
use crate::protocol::encoder::{control_header, Fragmenter};
use crate::protocol::{CloseCode, CloseFrame, Decoder, MessageKind, OpCode};
use mio::net::TcpStream;
use std::net::SocketAddr;
use std::time::Instant;

/// Where a connection is in its life (RFC 6455 §4 and §7).
///
/// ```text
///  Handshaking ──101──> Open ──our close──> CloseSent ──their close──┐
///      │                 │                                           v
///      └─HTTP answer─────┴──their close / protocol error──────> Draining ──EOF──> gone
/// ```
#[derive(Debug)]
pub enum Phase {
    /// Reading the HTTP request head. `head` holds a head cut across reads (it stays
    /// empty, and unallocated, when a head arrives in one read).
    Handshaking {
        /// The partial request head.
        head: Vec<u8>,
    },
    /// Upgraded: frames flow both ways.
    Open {
        /// A keepalive ping is out and nothing has arrived since.
        ping_outstanding: bool,
    },
    /// We sent a close frame and wait for the peer's (§7.1.2); its data is ignored.
    CloseSent,
    /// Nothing more will be read or queued. Once the queue is flushed the write side is
    /// shut (FIN: the server closes the TCP connection first, §7.1.1), then the
    /// connection waits for the peer's FIN before it is dropped. Closing only after the
    /// peer's FIN keeps unread input from turning our close into a TCP reset that
    /// could destroy the close frame in flight.
    Draining {
        /// The write side has been shut down.
        write_shut: bool,
        /// The peer's FIN arrived while output was still queued: the connection is
        /// dropped as soon as the queue is flushed, and nothing more is read.
        peer_closed: bool,
    },
}

/// The state of one connection, owned by the reactor's slab.
#[derive(Debug)]
pub struct Connection {
    /// Slot and serial of this connection.
    pub id: ConnId,
    /// The socket, registered edge-triggered for reads and writes.
    pub socket: TcpStream,
    /// The peer's address, for logs.
    pub peer: SocketAddr,
    /// Where the connection is in its life.
    pub phase: Phase,
    /// Incoming frames (used once the connection is open).
    pub decoder: Decoder,
    /// Outgoing message framing.
    pub fragmenter: Fragmenter,
    /// Bytes waiting for the socket.
    pub queue: WriteQueue,
    /// Reading is paused because `queue` went over the high watermark.
    pub paused: bool,
    /// The handler has seen `on_open` and not yet `on_close`.
    pub app_open: bool,
    /// When the peer last showed life, for keepalive: bytes arrived from it, or, while
    /// reading was paused by back-pressure, it took some of our output.
    pub last_read: Instant,
    /// The one timer that matters now for this connection, if any (see `timers`).
    pub deadline: Option<Instant>,
}

impl Connection {
    /// Whether reading should go on: not while paused by back-pressure, and not after
    /// the peer's FIN (there is nothing more to read).
    pub fn wants_read(&self) -> bool {
        !self.paused
            && !matches!(
                self.phase,
                Phase::Draining {
                    peer_closed: true,
                    ..
                }
            )
    }

    /// Whether the connection is upgraded and may still send data frames.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open { .. })
    }

    /// Queues a data message part as frames (see [`Fragmenter::frames`]).
    pub fn queue_data(&mut self, kind: MessageKind, data: &[u8], end_of_message: bool) {
        let queue = &mut self.queue;
        self.fragmenter
            .frames(kind, data, end_of_message, |header, payload| {
                queue.push_frame(&header, payload)
            });
    }

    /// Queues a control frame (ping, pong or close).
    pub fn queue_control(&mut self, opcode: OpCode, payload: &[u8]) {
        self.queue
            .push_frame(&control_header(opcode, payload.len()), payload);
    }

    /// Queues a close frame with `code` and `reason` (§5.5.1). A code that may not
    /// appear on the wire (§7.4: 1005, 1006, 1015, reserved and unassigned ones) is
    /// sent as an empty close body instead.
    pub fn queue_close(&mut self, code: CloseCode, reason: &str) {
        if !code.is_allowed_on_wire() {
            self.queue_control(OpCode::Close, &[]);
        } else {
            let frame = CloseFrame::new(code, reason);
            self.queue_control(OpCode::Close, frame.payload());
        }
    }
}
