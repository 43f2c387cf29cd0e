//! One client connection: its socket, where it is in its life, and its buffers.

use super::timers::Tick;
use super::write_queue::{FrameBatch, WriteQueue, DIRECT_WRITE_MIN};
use crate::handler::ConnId;
use crate::protocol::encoder::Fragmenter;
use crate::protocol::session::Output;
use crate::protocol::{FrameHeader, MessageKind, SendError, Session};
use mio::net::TcpStream;
use std::fmt;
use std::io::{self, Write};

/// Where a connection is in its life, as far as the socket is concerned; once
/// upgraded, the [`Session`] tells the rest (RFC 6455 §7: open, close sent).
///
/// ```text
///  Handshaking ──101──> WebSocket ──session closed──> Draining ──their FIN──> gone
///      └──────────HTTP answer──────────────────────────┘
/// ```
#[derive(Debug)]
pub(crate) enum Phase {
    /// Reading the HTTP request head. `head` holds a head cut across reads (it stays
    /// `None`, and unallocated, when a head arrives in one read). Boxed, so that the
    /// phase takes 16 bytes rather than the 24 of a `Vec` in every connection.
    Handshaking {
        /// The partial request head.
        #[allow(clippy::box_collection)]
        head: Option<Box<Vec<u8>>>,
    },
    /// Upgraded: frames flow, as the session allows.
    WebSocket,
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
///
/// Every connection pays for this struct however idle it is, so it is kept small
/// (ARCHITECTURE.md, "What a connection costs"): no peer address (the log asks the
/// socket for it, see [`Connection::peer`]), times as 32-bit [`Tick`]s, and a
/// decoder without an inline control payload.
#[derive(Debug)]
pub(crate) struct Connection {
    /// The serial number of this connection (its [`ConnId`] is its worker, its slab
    /// slot and this; the slot is where it is kept, see [`Connection::id`]).
    pub serial: u64,
    /// The socket, registered edge-triggered for reads and writes.
    pub socket: TcpStream,
    /// Where the connection is in its life.
    pub phase: Phase,
    /// The WebSocket protocol state: frames in, frames and events out (used once the
    /// connection is upgraded).
    pub session: Session,
    /// Bytes waiting for the socket.
    pub queue: WriteQueue,
    /// Reading is paused because `queue` went over the high watermark.
    pub paused: bool,
    /// The handler has seen `on_open` and not yet `on_close`.
    pub app_open: bool,
    /// Output was queued since the last flush, and the connection is listed in
    /// `Shared::touched` (once, however many frames a batch queues).
    pub touched: bool,
    /// The connection is on the ready list (`Shared::ready`, once at most): it is read
    /// there, on the next turn, and not on a readiness event before that.
    pub listed: bool,
    /// The one timer that matters now for this connection, if any (see `timers`).
    pub deadline: Option<Tick>,
}

impl Output for WriteQueue {
    fn push_frame(&mut self, header: &FrameHeader, payload: &[u8]) {
        WriteQueue::push_frame(self, header, payload);
    }
}

/// A connection as the log names it: `#SERIAL` (see [`Connection::name`] and
/// [`Connection::peer`]).
pub(crate) struct LogName<'a> {
    serial: u64,
    socket: Option<&'a TcpStream>,
}

impl fmt::Display for LogName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.serial)?;
        // Only looked up when the line is written: log arguments are not evaluated
        // below the enabled level.
        match self.socket.map(TcpStream::peer_addr) {
            Some(Ok(addr)) => write!(f, " {addr}"),
            Some(Err(_)) | None => Ok(()),
        }
    }
}

impl Connection {
    /// The id of this connection, kept in slab slot `slot` of worker `worker` (slots
    /// fit in 32 bits: the reactor refuses a connection for any other).
    pub fn id(&self, worker: u32, slot: usize) -> ConnId {
        ConnId {
            worker,
            slot: slot as u32,
            serial: self.serial,
        }
    }

    /// Whether this connection, found in slot `id.slot`, is `id` (and not a later
    /// connection that took over the slot).
    pub fn is(&self, id: ConnId) -> bool {
        self.serial == id.serial
    }

    /// The connection's name in the log: `#SERIAL`, its serial number (unique within
    /// the run, as [`ConnId::serial`]).
    pub fn name(&self) -> LogName<'_> {
        LogName {
            serial: self.serial,
            socket: None,
        }
    }

    /// The name and the peer's address, `#SERIAL ADDR`, for the lines that open and
    /// close a connection. The address is asked of the socket (`getpeername`) only if
    /// the line is logged; a socket the peer has reset has none (`#SERIAL` alone).
    pub fn peer(&self) -> LogName<'_> {
        LogName {
            serial: self.serial,
            socket: Some(&self.socket),
        }
    }

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

    /// Notes that output was queued; true the first time since the last flush, when
    /// the caller must list the connection for flushing.
    pub fn mark_touched(&mut self) -> bool {
        !std::mem::replace(&mut self.touched, true)
    }

    /// Sends a data message part as frames (see [`Fragmenter::frames`]), if the
    /// session allows it (see [`Session::fragmenter_for`]): a part of at least
    /// [`DIRECT_WRITE_MIN`] bytes is written straight from `data` while nothing is
    /// queued, its frames together (see [`WriteQueue::write_frames`]); smaller parts
    /// are queued. Returns the bytes written now; after a write error nothing more is
    /// written, and the connection must be dropped.
    #[inline]
    pub fn send_data(
        &mut self,
        kind: MessageKind,
        data: &[u8],
        end_of_message: bool,
        whole: bool,
    ) -> Result<io::Result<usize>, SendError> {
        let fragmenter = self.session.fragmenter_for(kind, whole)?;
        if data.len() < DIRECT_WRITE_MIN || fragmenter.max_frame() < DIRECT_WRITE_MIN {
            // Small frames: queue them all, to go out in one `writev` with the rest of
            // this read's output, on the path small echoes take (kept free of the direct
            // write's code).
            let queue = &mut self.queue;
            fragmenter.frames(kind, data, end_of_message, |header, payload| {
                queue.push_frame(&header, payload)
            });
            return Ok(Ok(0));
        }
        Ok(write_frames_of(
            fragmenter,
            &mut self.queue,
            &mut self.socket,
            (kind, data, end_of_message),
        ))
    }
}

/// Cuts a data part into frames and sends them in batches of up to `GATHER` frames
/// with [`WriteQueue::write_frames`]; after a write error the rest is dropped. Kept
/// out of line, off the path of small frames.
#[inline(never)]
fn write_frames_of(
    fragmenter: &mut Fragmenter,
    queue: &mut WriteQueue,
    socket: &mut impl Write,
    (kind, data, end_of_message): (MessageKind, &[u8], bool),
) -> io::Result<usize> {
    let mut batch = FrameBatch::default();
    let mut result = Ok(0);
    // Empties the batch whatever happens, so that it never overflows.
    let mut write = |batch: &mut FrameBatch<'_>| match &mut result {
        Ok(written) => match queue.write_frames(socket, batch) {
            Ok(n) => *written += n,
            Err(e) => result = Err(e),
        },
        Err(_) => batch.clear(),
    };
    fragmenter.frames(kind, data, end_of_message, |header, payload| {
        if batch.push(&header, payload) {
            write(&mut batch);
        }
    });
    if !batch.is_empty() {
        write(&mut batch);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// A socket that takes `budget` bytes, then fails.
    struct Failing {
        budget: usize,
        calls: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.budget == 0 {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            let n = buf.len().min(self.budget);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_error_drops_the_rest_of_a_part_of_many_batches() {
        // 4 KiB frames: a 256 KiB read makes 64 of them, four full batches. The
        // socket fails in the first; the later batches are dropped, not written.
        let data = vec![7u8; 256 * 1024];
        for budget in [0, 1000, 70_000] {
            let mut socket = Failing { budget, calls: 0 };
            let mut queue = WriteQueue::default();
            let result = write_frames_of(
                &mut Fragmenter::new(4096),
                &mut queue,
                &mut socket,
                (MessageKind::Binary, &data, true),
            );
            assert_eq!(
                result.map_err(|e| e.kind()),
                Err(io::ErrorKind::ConnectionReset)
            );
            assert!(queue.is_empty());
            // The default `write_vectored` writes one iovec per call: the calls stop
            // within the second batch (the 70,000 bytes take the first one whole).
            assert!(socket.calls <= 2 * 2 * 16, "{} calls", socket.calls);
        }
    }

    /// Every connection pays for this struct, idle or not (ARCHITECTURE.md, "What a
    /// connection costs"). With debug assertions, as in the tests, mio's `TcpStream`
    /// carries an 8-byte selector id besides its descriptor, which pads it to 16.
    #[test]
    fn a_connection_stays_small() {
        let limit = if cfg!(debug_assertions) { 208 } else { 192 };
        assert!(
            size_of::<Connection>() <= limit,
            "{}",
            size_of::<Connection>()
        );
        assert_eq!(size_of::<Phase>(), 16);
        assert_eq!(size_of::<WriteQueue>(), 48);
    }
}
