//! Opponent: the ceiling. A plain TCP echo on a single-threaded mio event loop, with no
//! WebSocket in it: what one mio thread reaches on this machine when it only moves
//! bytes, so the distance between it and wsreactor is the cost of RFC 6455 (frame
//! parsing, unmasking, UTF-8 checks, framing the echo) plus wsreactor's bookkeeping.
//!
//! `cargo run --release --example opponent_mio_raw -- --addr 127.0.0.1:0`
//!
//! It reads the HTTP upgrade request up to its blank line and answers with a canned
//! `101 Switching Protocols` (the only thing computed is `Sec-WebSocket-Accept`, so that
//! a real WebSocket client completes its handshake), then echoes every byte it reads,
//! unchanged. The client's frames are masked, so what comes back are the client's
//! masked frames, which no conforming WebSocket client accepts (a server must not mask,
//! RFC 6455 §5.1). It is therefore measured with a raw-bytes client: the bench
//! `echo_roundtrip` writes the exact bytes of the masked frames a WebSocket client
//! would send for the workload (same frames, same sizes) and reads back the same number
//! of bytes, without decoding them. `scripts/compare` leaves it out: `wsload` speaks
//! WebSocket only.
//!
//! Back-pressure like wsreactor's: while more than 16 MiB (wsreactor's default
//! `--write-high-watermark`) of echo waits for a slow reader, the connection is not
//! read; reading resumes once the queue is written out.

mod common;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, ErrorKind, Read, Write};
use wsreactor::protocol::handshake::accept_key;

const LISTENER: Token = Token(usize::MAX);
/// Bytes read per `read` call, one buffer for the whole server: wsreactor's default
/// `--read-buffer-size`.
const READ_BUFFER: usize = 256 * 1024;
/// Stop reading a connection while this much echo is queued for it.
const HIGH_WATERMARK: usize = 16 * 1024 * 1024;
/// The longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;

struct Connection {
    stream: TcpStream,
    /// The request head while it is arriving; `None` once the 101 was queued.
    head: Option<Vec<u8>>,
    /// Echo not yet written: `queue[written..]`.
    queue: Vec<u8>,
    written: usize,
}

/// What to do with a connection after handling its event.
enum Next {
    Keep,
    Close,
}

impl Connection {
    fn queued(&self) -> usize {
        self.queue.len() - self.written
    }

    /// Writes as much of the queue as the socket takes.
    fn flush(&mut self) -> io::Result<()> {
        while self.written < self.queue.len() {
            match self.stream.write(&self.queue[self.written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.queue.len() {
            self.queue.clear();
            self.written = 0;
        }
        Ok(())
    }

    /// Sends `bytes` back: straight to the socket when nothing is queued, the rest
    /// into the queue.
    fn echo(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while self.queued() == 0 && !bytes.is_empty() {
            match self.stream.write(bytes) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.queue.extend_from_slice(bytes);
        Ok(())
    }

    /// Appends request bytes to the head; once it is complete, queues the 101 and
    /// echoes whatever followed the head.
    fn handshake(&mut self, bytes: &[u8]) -> io::Result<Next> {
        let Some(head) = &mut self.head else {
            return Ok(Next::Keep);
        };
        head.extend_from_slice(bytes);
        let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(if head.len() > MAX_HEAD {
                Next::Close
            } else {
                Next::Keep
            });
        };
        let head = self.head.take().unwrap_or_default();
        let key = String::from_utf8_lossy(&head[..end])
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-key"))
            .map(|(_, value)| value.trim().to_owned())
            .unwrap_or_default();
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(&key)
        );
        self.echo(response.as_bytes())?;
        self.echo(&head[end + 4..])?;
        Ok(Next::Keep)
    }

    /// Handles a readiness event (edge-triggered: read and write until the kernel says
    /// WouldBlock, or until the queue is above the high watermark).
    fn ready(&mut self, buf: &mut [u8]) -> io::Result<Next> {
        loop {
            self.flush()?;
            if self.queued() >= HIGH_WATERMARK {
                // Wait for a writable event; it comes back here and reads again.
                return Ok(Next::Keep);
            }
            let n = match self.stream.read(buf) {
                Ok(0) => return Ok(Next::Close),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Next::Keep),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if self.head.is_some() {
                if let Next::Close = self.handshake(&buf[..n])? {
                    return Ok(Next::Close);
                }
            } else {
                self.echo(&buf[..n])?;
            }
        }
    }
}

fn main() -> io::Result<()> {
    let args = common::init();
    let mut listener = TcpListener::bind(args.addr)?;
    common::announce(listener.local_addr()?);

    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut connections: Slab<Connection> = Slab::new();
    let mut buf = vec![0u8; READ_BUFFER];

    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let entry = connections.vacant_entry();
                            poll.registry().register(
                                &mut stream,
                                Token(entry.key()),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            entry.insert(Connection {
                                stream,
                                head: Some(Vec::new()),
                                queue: Vec::new(),
                                written: 0,
                            });
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => {
                            // e.g. EMFILE: leave the rest in the backlog for later.
                            eprintln!("accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let id = event.token().0;
            let Some(connection) = connections.get_mut(id) else {
                continue;
            };
            if !matches!(connection.ready(&mut buf), Ok(Next::Keep)) {
                let mut connection = connections.remove(id);
                let _ = poll.registry().deregister(&mut connection.stream);
            }
        }
    }
}
