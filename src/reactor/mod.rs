//! The I/O half: one `mio::Poll` loop that owns every socket.
//!
//! The loop reads like mio's `tcp_server` example grown up. Sockets are registered
//! edge-triggered, so each readiness event is reported once: on readable the loop reads
//! until `WouldBlock`, on writable it writes until `WouldBlock`, on the listener it
//! accepts until `WouldBlock`. Bytes are read into one buffer shared by all connections
//! and handed to the connection's sans-IO [`Decoder`]; events go to the [`Handler`];
//! whatever it sends is queued on the connection's [`write_queue::WriteQueue`] and
//! flushed. See `docs/ARCHITECTURE.md` for the life of a connection.
//!
//! A [`Server`] is one such loop. [`Workers`] runs `--workers` of them on as many
//! threads, sharing nothing but their [`metrics`].

pub mod config;
pub mod connection;
mod http;
pub mod metrics;
pub mod timers;
mod workers;
pub mod write_queue;

pub use config::{Config, ConfigBuilder, ConfigError};
pub use metrics::Metrics;
pub use workers::Workers;

use crate::app::{ConnId, Handler};
use crate::protocol::encoder::Fragmenter;
use crate::protocol::handshake::{self, http_response, parse_request, Parsed, Request};
use crate::protocol::header::MAX_PAYLOAD_LEN;
use crate::protocol::{
    CloseCode, CloseFrame, Decoder, Event, Limits, MessageKind, OpCode, ProtocolError, Role,
};
use connection::{Connection, Phase};
use log::{debug, info, trace, warn};
use metrics::WorkerMetrics;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timers::{after_ticks, is_before, Clock, Tick, Timers};

/// The listening socket's token; connection tokens are their slab slots.
const LISTENER: Token = Token(usize::MAX - 1);
/// SIGINT/SIGTERM arrive as readiness of this token.
const SIGNALS: Token = Token(usize::MAX - 2);
/// Reads per connection per loop turn: a client that never stops sending is served
/// in turns with everyone else instead of holding the loop.
const MAX_READS_PER_TURN: usize = 16;

/// How [`Server::read_until_blocked`] knows it has read everything the socket holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drained {
    /// After a read that did not fill the buffer, on a readable event. A short read
    /// emptied the socket's receive queue (`recv` copies all that is queued, up to the
    /// buffer), and with edge-triggered readiness every later arrival raises a new
    /// event; so the read that would only return `WouldBlock` (one syscall in three
    /// for small echoes) is skipped.
    ByShortRead,
    /// Only at `WouldBlock` or EOF: when the event says the peer closed or the socket
    /// failed (a FIN that came with the data shows only as the next read's 0), and
    /// when there was no event at all (the ready list, a new connection).
    AtEof,
}

/// How long to stop accepting when the process is out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The state every handler call may touch, apart from the handler itself.
struct Shared {
    config: Config,
    conns: Slab<Connection>,
    timers: Timers,
    /// Turns `Instant`s into the ticks that connections and timers keep.
    clock: Clock,
    /// Connections with newly queued output, flushed after each batch of events.
    touched: Vec<ConnId>,
    /// Connections to read again without waiting for an event: edge-triggered
    /// readiness is not repeated for bytes already waiting (after back-pressure
    /// paused reading, or after `MAX_READS_PER_TURN`).
    ready: Vec<ConnId>,
    /// The counters of every worker (for `/metrics` and `--max-connections`).
    metrics: Arc<Metrics>,
    /// This worker's own counters, in `metrics`.
    counters: Arc<WorkerMetrics>,
    /// Closes started by the handler through [`Ctx::close`], whose `on_close` is due
    /// once the handler call that started them has returned.
    app_closes: Vec<(ConnId, CloseFrame)>,
    /// Connections whose socket failed while writing, to drop (telling the handler)
    /// once the current batch is done.
    broken: Vec<ConnId>,
}

/// What a [`Handler`] acts through: sending to and closing connections.
pub struct Ctx<'a> {
    shared: &'a mut Shared,
    now: Instant,
}

impl Ctx<'_> {
    /// Queues `data` as the next part of a `kind` message to `conn` (cut into frames of
    /// at most `--max-frame-out` bytes); `end_of_message` finishes the message. Returns
    /// false if `conn` is gone or closing. A message must be finished before another
    /// is started on the same connection (RFC 6455 §5.4).
    #[inline]
    pub fn send(
        &mut self,
        conn: ConnId,
        kind: MessageKind,
        data: &[u8],
        end_of_message: bool,
    ) -> bool {
        match self.shared.conns.get_mut(conn.slot) {
            Some(c) if c.is(conn) && c.is_open() => {
                match c.send_data(kind, data, end_of_message) {
                    Ok(0) => {}
                    Ok(written) => self.shared.counters.bytes_out(written),
                    Err(e) => self.shared.write_failed(conn, e),
                }
                if end_of_message {
                    self.shared.counters.message_out();
                }
                self.shared.touch(conn.slot);
                true
            }
            _ => false,
        }
    }

    /// Bytes queued for `conn` that the socket has not taken yet, if it exists. A
    /// handler that produces data on its own (not in answer to input) should hold
    /// back while this is above the write high watermark.
    pub fn queued_bytes(&self, conn: ConnId) -> Option<usize> {
        self.shared
            .conns
            .get(conn.slot)
            .filter(|c| c.is(conn))
            .map(|c| c.queue.len())
    }

    /// Starts the closing handshake on `conn` with `code` and `reason` (§7.1.2); a
    /// code that may not appear on the wire (§7.4) is sent as an empty close body. The
    /// handler's `on_close` for `conn` follows once the current handler call returns.
    pub fn close(&mut self, conn: ConnId, code: CloseCode, reason: &str) -> bool {
        match self.shared.conns.get_mut(conn.slot) {
            Some(c) if c.is(conn) && c.is_open() => {
                c.queue_close(code, reason);
                c.phase = Phase::CloseSent;
                if c.app_open {
                    c.app_open = false;
                    self.shared.counters.closed(code);
                    let frame = CloseFrame::new(code, reason);
                    self.shared.app_closes.push((conn, frame));
                }
                let at = self
                    .shared
                    .clock
                    .deadline(self.now, self.shared.config.close_timeout);
                self.shared.set_deadline(conn.slot, at);
                self.shared.touch(conn.slot);
                true
            }
            _ => false,
        }
    }
}

impl Shared {
    fn set_deadline(&mut self, slot: usize, at: Tick) {
        // Slots fit in 32 bits: `add_connection` refuses any other.
        if let (Some(conn), Ok(slot)) = (self.conns.get_mut(slot), u32::try_from(slot)) {
            conn.deadline = Some(at);
            self.timers.schedule(at, slot);
        }
    }

    /// Writes what `slot` has queued, unless its socket is known to be full and this is
    /// not a writable event (the write would only fail again); shuts its write side, or
    /// drops it, once a draining connection has sent everything; applies the write
    /// watermarks.
    fn flush(&mut self, slot: usize, writable: bool) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let was_blocked = conn.queue.is_blocked();
        if writable {
            conn.queue.unblock();
        }
        if !conn.queue.is_blocked() {
            match conn.queue.flush_until_blocked(&mut conn.socket) {
                Ok(written) => {
                    self.counters.bytes_out(written);
                    // A full socket took bytes: the peer acknowledged data, so it is
                    // reading. That is a sign of life for keepalive, like input.
                    // Without it a slow reader (which may send nothing, and is not read
                    // at all while paused by back-pressure) would be pinged behind its
                    // queue and dropped as dead while draining our output. A peer that
                    // reads nothing still gets no credit and is dropped after the
                    // unanswered ping (§5.5.2). Writes into free buffer space (our own
                    // ping included) prove nothing.
                    if written > 0 && was_blocked {
                        if let Phase::Open { ping_outstanding } = &mut conn.phase {
                            conn.last_read = self.clock.tick_ceil(Instant::now());
                            *ping_outstanding = false;
                        }
                    }
                }
                Err(e) => {
                    debug!("{} write failed: {e}", conn.peer());
                    self.broken.push(conn.id(slot));
                    return;
                }
            }
        }
        if let Phase::Draining {
            write_shut,
            peer_closed,
        } = &mut conn.phase
        {
            if conn.queue.is_empty() {
                if *peer_closed {
                    // Everything is sent and the peer has closed its side: done.
                    self.remove(slot);
                    return;
                }
                if !*write_shut {
                    // §7.1.1: the server closes the TCP connection first. Shutting the
                    // write side sends FIN but keeps reading, to see the client's FIN.
                    let _ = conn.socket.shutdown(Shutdown::Write);
                    *write_shut = true;
                }
            }
        }
        let queued = conn.queue.len();
        if !conn.paused && queued > self.config.write_high_watermark {
            trace!("{} paused: {queued} bytes queued", conn.name());
            conn.paused = true;
        } else if conn.paused && queued <= self.config.write_low_watermark {
            trace!("{} resumed: {queued} bytes queued", conn.name());
            conn.paused = false;
            self.ready.push(conn.id(slot));
        }
    }

    /// A direct write of [`Ctx::send`] failed: as in [`Shared::flush`], the connection
    /// is dropped once the batch is done.
    #[cold]
    fn write_failed(&mut self, id: ConnId, e: io::Error) {
        if let Some(conn) = self.conns.get(id.slot) {
            debug!("{} write failed: {e}", conn.peer());
        }
        self.broken.push(id);
    }

    fn flush_touched(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        for id in touched.drain(..) {
            if let Some(conn) = self.conns.get_mut(id.slot).filter(|c| c.is(id)) {
                conn.touched = false;
                self.flush(id.slot, false);
            }
        }
        self.touched = touched;
    }

    /// Stops reading frames and lets the connection flush, then close (see
    /// [`Phase::Draining`]); the close timeout bounds how long that may take.
    fn begin_draining(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        conn.phase = Phase::Draining {
            write_shut: false,
            peer_closed: false,
        };
        let at = self.clock.deadline(now, self.config.close_timeout);
        self.set_deadline(slot, at);
        self.touch(slot);
    }

    /// Lists `slot` for the next `flush_touched`, once however often output is queued.
    fn touch(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot) {
            if conn.mark_touched() {
                self.touched.push(conn.id(slot));
            }
        }
    }

    /// Drops the connection at once: its socket is closed (which also removes it from
    /// the poll set). The caller has told the handler.
    fn remove(&mut self, slot: usize) {
        if self.conns.contains(slot) {
            let conn = self.conns.remove(slot);
            self.counters.socket_closed();
            if conn.app_open {
                // Not reached: callers tell the handler (and count the close) first.
                self.counters.closed(CloseCode::ABNORMAL);
            }
            trace!("{} removed", conn.name());
        }
    }
}

/// A WebSocket server: a listener, a poll loop and a handler, on the thread that calls
/// [`Server::run`]. This is one reactor whatever `config.workers` says; [`Workers`]
/// runs several.
pub struct Server<H> {
    /// Which worker this is (0 for a lone server): for logs; worker 0 logs the stats.
    worker: usize,
    poll: Poll,
    /// The listening socket; `None` once shutdown began (dropping it closes it).
    listener: Option<TcpListener>,
    signals: Signals,
    read_buf: Vec<u8>,
    handler: H,
    shared: Shared,
    next_serial: u64,
    /// Accepting is paused until then (the process ran out of file descriptors).
    accept_paused_until: Option<Instant>,
    /// Back-offs since the last successful accept (to log an episode once).
    accept_pauses: u32,
    /// Set once SIGINT/SIGTERM arrived: the loop ends by then at the latest.
    shutdown_deadline: Option<Instant>,
    /// When the next stats line is due (worker 0, with `--stats-interval`).
    next_stats: Option<Instant>,
}

impl<H: Handler> Server<H> {
    /// Binds the listener and registers it and the signal handlers with a new poll.
    pub fn bind(config: Config, handler: H) -> io::Result<Self> {
        Self::bind_worker(config, handler, Arc::new(Metrics::new(1)), 0, false)
    }

    /// Binds worker `worker` of a group counting into `metrics`; with `reuse_port` its
    /// listener may share its address with the group's others (SO_REUSEPORT).
    fn bind_worker(
        config: Config,
        handler: H,
        metrics: Arc<Metrics>,
        worker: usize,
        reuse_port: bool,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(bind_listener(&config, reuse_port)?);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        // Every worker registers its own: signal-hook calls each registration, so one
        // SIGTERM reaches every worker's poll.
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let next_stats = config
            .stats_interval
            .filter(|_| worker == 0)
            .map(|every| Instant::now() + every);
        Ok(Server {
            worker,
            poll,
            listener: Some(listener),
            signals,
            read_buf: vec![0; config.read_buffer_size.max(1024)],
            handler,
            shared: Shared {
                config,
                conns: Slab::new(),
                timers: Timers::default(),
                clock: Clock::new(Instant::now()),
                touched: Vec::new(),
                ready: Vec::new(),
                counters: metrics.worker(worker),
                metrics,
                app_closes: Vec::new(),
                broken: Vec::new(),
            },
            next_serial: 0,
            accept_paused_until: None,
            accept_pauses: 0,
            shutdown_deadline: None,
            next_stats,
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Some(listener) => listener.local_addr(),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the listener is closed (shutting down)",
            )),
        }
    }

    /// The counters of this server (of its whole group, for a worker of [`Workers`]).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Runs the loop until a shutdown signal has been handled. Returns `Ok` after a
    /// graceful shutdown.
    pub fn run(self) -> io::Result<()> {
        self.log_start(1)?;
        self.run_loop()
    }

    /// Logs the address and the limits, once for a group of `workers`.
    fn log_start(&self, workers: usize) -> io::Result<()> {
        let config = &self.shared.config;
        info!(
            "listening on {} with {workers} worker{} (max connections {}, read buffer {} B, write watermarks {}/{} B, max frame out {} B, handshake/close/idle timeouts {}/{}/{}, stats every {})",
            self.local_addr()?,
            if workers == 1 { "" } else { "s" },
            config.max_connections,
            self.read_buf.len(),
            config.write_low_watermark,
            config.write_high_watermark,
            config.max_frame_out,
            Seconds(Some(config.handshake_timeout)),
            Seconds(Some(config.close_timeout)),
            Seconds(config.idle_timeout),
            Seconds(config.stats_interval),
        );
        Ok(())
    }

    /// The loop: runs until a shutdown signal has been handled.
    fn run_loop(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => {
                        if self.accept_paused_until.is_none() {
                            self.accept_until_blocked(now);
                        }
                    }
                    SIGNALS => self.on_signal(now),
                    Token(slot) => {
                        if event.is_writable() {
                            self.shared.flush(slot, true);
                            self.settle(now);
                        }
                        if event.is_read_closed() || event.is_error() {
                            self.read_until_blocked(slot, now, Drained::AtEof);
                        } else if event.is_readable() {
                            self.read_until_blocked(slot, now, Drained::ByShortRead);
                        }
                    }
                }
            }
            for id in std::mem::take(&mut self.shared.ready) {
                if self.shared.conns.get(id.slot).is_some_and(|c| c.is(id)) {
                    self.read_until_blocked(id.slot, now, Drained::AtEof);
                }
            }
            self.fire_timers(now);
            self.log_stats(now);
            if self.accept_paused_until.is_some_and(|until| now >= until) {
                self.accept_paused_until = None;
                self.accept_until_blocked(now);
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.shared.conns.is_empty() || now >= deadline {
                    info!(
                        "worker {} shut down ({} connections left)",
                        self.worker,
                        self.shared.conns.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    /// How long `poll` may sleep: until the nearest deadline of any kind.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.shared.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        [
            self.shared
                .timers
                .next()
                .map(|at| self.shared.clock.until(now, at)),
            self.accept_paused_until
                .map(|at| at.saturating_duration_since(now)),
            self.shutdown_deadline
                .map(|at| at.saturating_duration_since(now)),
            self.next_stats.map(|at| at.saturating_duration_since(now)),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Logs the counters of the whole group when they are due (see `--stats-interval`).
    fn log_stats(&mut self, now: Instant) {
        let (Some(due), Some(every)) = (self.next_stats, self.shared.config.stats_interval) else {
            return;
        };
        if now < due {
            return;
        }
        info!("stats: {}", self.shared.metrics.snapshot());
        // Keep the rhythm, unless the loop fell more than a period behind.
        self.next_stats = Some(if now - due < every {
            due + every
        } else {
            now + every
        });
    }

    fn accept_until_blocked(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((socket, peer)) => {
                    if self.accept_pauses > 0 {
                        info!(
                            "worker {}: accepting again after {} pauses",
                            self.worker, self.accept_pauses
                        );
                        self.accept_pauses = 0;
                    }
                    self.add_connection(socket, peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_out_of_descriptors(&e) => {
                    // The pending connection stays in the backlog; retrying now would
                    // fail the same way in a busy loop. Try again shortly.
                    if self.accept_pauses == 0 {
                        warn!(
                            "worker {}: accept: {e}; pausing accepts for {} ms at a time until descriptors free up ({} connections open)",
                            self.worker,
                            ACCEPT_BACKOFF.as_millis(),
                            self.shared.conns.len()
                        );
                    }
                    self.accept_pauses += 1;
                    self.shared.counters.accept_paused();
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
                // A connection reset before it was accepted, and the like: skip it.
                Err(e) => debug!("accept: {e}"),
            }
        }
    }

    fn add_connection(&mut self, mut socket: TcpStream, peer: SocketAddr, now: Instant) {
        // Frames are written whole; Nagle's algorithm would only delay small echoes.
        let _ = socket.set_nodelay(true);
        let entry = self.shared.conns.vacant_entry();
        let slot = entry.key();
        if u32::try_from(slot).is_err() {
            // Timer entries keep 32-bit slots; 4 billion connections in one worker
            // cannot happen (the kernel caps descriptors far below).
            warn!("{peer} refused: {slot} slots in use");
            return;
        }
        if let Err(e) = self.poll.registry().register(
            &mut socket,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("{peer} register failed: {e}");
            return;
        }
        self.next_serial += 1;
        let serial = self.next_serial;
        let limits = Limits {
            max_frame_size: self.shared.config.max_frame_size,
            max_message_size: self.handler.max_message_size().unwrap_or(MAX_PAYLOAD_LEN),
        };
        entry.insert(Connection {
            serial,
            socket,
            phase: Phase::Handshaking { head: None },
            decoder: Decoder::new(Role::Server, limits),
            fragmenter: Fragmenter::new(self.shared.config.max_frame_out),
            queue: Default::default(),
            paused: false,
            app_open: false,
            touched: false,
            last_read: self.shared.clock.tick_ceil(now),
            deadline: None,
        });
        self.shared.counters.accepted();
        trace!("#{serial} {peer} accepted (slot {slot})");
        let at = self
            .shared
            .clock
            .deadline(now, self.shared.config.handshake_timeout);
        self.shared.set_deadline(slot, at);
        // The client may have sent its request already; edge-triggered readiness for
        // it may come with the registration or not, so read now.
        self.read_until_blocked(slot, now, Drained::AtEof);
    }

    /// Reads and handles what connection `slot` has sent, until the socket is drained
    /// (as `drained` tells), reading pauses, or `MAX_READS_PER_TURN` reads.
    fn read_until_blocked(&mut self, slot: usize, now: Instant, drained: Drained) {
        let now_tick = self.shared.clock.tick_ceil(now);
        for _ in 0..MAX_READS_PER_TURN {
            let Some(conn) = self.shared.conns.get_mut(slot) else {
                return;
            };
            if !conn.wants_read() {
                return;
            }
            let n = match conn.socket.read(&mut self.read_buf) {
                Ok(0) => {
                    self.on_eof(slot);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("{} read failed: {e}", conn.peer());
                    self.close_abnormally(slot, now);
                    return;
                }
            };
            self.shared.counters.bytes_in(n);
            conn.last_read = now_tick;
            if let Phase::Open { ping_outstanding } = &mut conn.phase {
                *ping_outstanding = false;
            }
            let short = n < self.read_buf.len();
            let input = &mut self.read_buf[..n];
            match conn.phase {
                Phase::Handshaking { .. } => {
                    on_handshake_input(&mut self.handler, &mut self.shared, slot, input, now)
                }
                Phase::Open { .. } | Phase::CloseSent => {
                    on_frames(&mut self.handler, &mut self.shared, slot, input, now)
                }
                // The close handshake is over: whatever else arrives is discarded.
                Phase::Draining { .. } => {}
            }
            self.settle(now);
            if short && drained == Drained::ByShortRead {
                return;
            }
        }
        // The socket may hold more: come back next turn rather than starve the others.
        if let Some(conn) = self.shared.conns.get(slot) {
            self.shared.ready.push(conn.id(slot));
        }
    }

    fn on_eof(&mut self, slot: usize) {
        let Some(conn) = self.shared.conns.get(slot) else {
            return;
        };
        match conn.phase {
            Phase::Open { .. } | Phase::CloseSent => {
                debug!(
                    "{} dropped the connection without a close frame",
                    conn.name()
                );
                self.close_abnormally(slot, Instant::now());
            }
            Phase::Draining { .. } if !conn.queue.is_empty() => {
                // The peer closed its side, but may still read: send what is queued
                // (an HTTP response, our close frame), then drop it (see `flush`).
                if let Some(Phase::Draining { peer_closed, .. }) =
                    self.shared.conns.get_mut(slot).map(|c| &mut c.phase)
                {
                    *peer_closed = true;
                }
            }
            Phase::Handshaking { .. } | Phase::Draining { .. } => self.shared.remove(slot),
        }
    }

    /// Finishes a batch of handler calls: tells the handler of the closes it started
    /// itself, flushes the output the batch queued, and drops (telling the handler)
    /// the connections whose socket failed, until none of that is left.
    fn settle(&mut self, now: Instant) {
        loop {
            for (id, frame) in std::mem::take(&mut self.shared.app_closes) {
                let ctx = &mut Ctx {
                    shared: &mut self.shared,
                    now,
                };
                self.handler.on_close(ctx, id, frame.code(), frame.reason());
            }
            self.shared.flush_touched();
            let broken = std::mem::take(&mut self.shared.broken);
            if broken.is_empty() && self.shared.app_closes.is_empty() {
                return;
            }
            for id in broken {
                if self.shared.conns.get(id.slot).is_some_and(|c| c.is(id)) {
                    self.close_abnormally(id.slot, now);
                }
            }
        }
    }

    /// Drops a connection that cannot complete a close handshake, telling the handler
    /// with 1006 (§7.1.5: "abnormal closure").
    fn close_abnormally(&mut self, slot: usize, now: Instant) {
        leave_open(
            &mut self.handler,
            &mut self.shared,
            slot,
            CloseCode::ABNORMAL,
            "",
            now,
        );
        self.shared.remove(slot);
    }

    fn fire_timers(&mut self, now: Instant) {
        let now_tick = self.shared.clock.tick_floor(now);
        while let Some((at, slot)) = self.shared.timers.pop_due(now_tick) {
            let Some(conn) = self.shared.conns.get_mut(slot as usize) else {
                continue;
            };
            // An entry for a deadline that was superseded, or that a former connection
            // of this slot set, is skipped; one whose tick is the slot's deadline now
            // is acted on, whoever pushed it (see `Timers`).
            if conn.deadline != Some(at) {
                continue;
            }
            conn.deadline = None;
            let id = conn.id(slot as usize);
            match conn.phase {
                Phase::Handshaking { .. } => {
                    debug!("{} handshake timed out", conn.peer());
                    self.shared.counters.handshake_timed_out();
                    self.shared.remove(id.slot);
                }
                Phase::Open { ping_outstanding } => {
                    let Some(idle) = self.shared.config.idle_timeout else {
                        continue;
                    };
                    let quiet_until = after_ticks(conn.last_read, idle);
                    if is_before(now_tick, quiet_until) {
                        self.shared.set_deadline(id.slot, quiet_until);
                    } else if !ping_outstanding {
                        trace!("{} idle: ping", conn.name());
                        conn.queue_control(OpCode::Ping, b"keepalive");
                        conn.phase = Phase::Open {
                            ping_outstanding: true,
                        };
                        self.shared.touch(id.slot);
                        let at = self.shared.clock.deadline(now, idle);
                        self.shared.set_deadline(id.slot, at);
                    } else {
                        debug!(
                            "{} sent nothing after a keepalive ping: dropped",
                            conn.peer()
                        );
                        self.close_abnormally(id.slot, now);
                    }
                }
                Phase::CloseSent | Phase::Draining { .. } => {
                    debug!("{} close timed out", conn.peer());
                    self.close_abnormally(id.slot, now);
                }
            }
        }
        self.settle(now);
    }

    fn on_signal(&mut self, now: Instant) {
        if self.signals.pending().next().is_none() {
            return;
        }
        if self.shutdown_deadline.is_some() {
            info!("worker {}: second signal: exiting now", self.worker);
            self.shutdown_deadline = Some(now);
            return;
        }
        info!(
            "worker {} shutting down: closing {} connections (up to {})",
            self.worker,
            self.shared.conns.len(),
            Seconds(Some(self.shared.config.shutdown_timeout))
        );
        // Close the listener, not just stop polling it: a deregistered listener still
        // completes TCP handshakes into its backlog, and those clients would hang
        // unanswered until the process exits. Closed, new connections are refused at
        // once, and those still in the backlog are reset.
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.accept_paused_until = None;
        self.shutdown_deadline = Some(now + self.shared.config.shutdown_timeout);
        let slots: Vec<usize> = self.shared.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            let Some(conn) = self.shared.conns.get(slot) else {
                continue;
            };
            match conn.phase {
                Phase::Handshaking { .. } => self.shared.remove(slot),
                Phase::Open { .. } => {
                    let id = conn.id(slot);
                    leave_open(
                        &mut self.handler,
                        &mut self.shared,
                        slot,
                        CloseCode::GOING_AWAY,
                        "server shutting down",
                        now,
                    );
                    Ctx {
                        shared: &mut self.shared,
                        now,
                    }
                    .close(id, CloseCode::GOING_AWAY, "server shutting down");
                }
                Phase::CloseSent | Phase::Draining { .. } => {}
            }
        }
        self.settle(now);
    }
}

/// Tells the handler that `slot` is no longer open (once), with the close code that
/// ended it.
fn leave_open<H: Handler>(
    handler: &mut H,
    shared: &mut Shared,
    slot: usize,
    code: CloseCode,
    reason: &str,
    now: Instant,
) {
    let Some(conn) = shared.conns.get_mut(slot) else {
        return;
    };
    if !conn.app_open {
        return;
    }
    conn.app_open = false;
    shared.counters.closed(code);
    let id = conn.id(slot);
    debug!("{} closed: code {code} reason {reason:?}", conn.peer());
    handler.on_close(&mut Ctx { shared, now }, id, code, reason);
}

/// Handles bytes of the HTTP request head: waits for the whole head, then answers it
/// with 101 (and decodes whatever followed the head as frames) or with an HTTP error.
fn on_handshake_input<H: Handler>(
    handler: &mut H,
    shared: &mut Shared,
    slot: usize,
    input: &mut [u8],
    now: Instant,
) {
    let max_head = shared.config.max_handshake_size;
    let Some(conn) = shared.conns.get_mut(slot) else {
        return;
    };
    let Phase::Handshaking { head } = &mut conn.phase else {
        return;
    };
    // A head that arrives in one read is parsed where it lies; only a head cut across
    // reads is copied into the connection's own buffer (bounded by the parser's limit).
    let mut head = head.take().map_or_else(Vec::new, |head| *head);
    let parsed = if head.is_empty() {
        parse_request(input, max_head)
    } else {
        head.extend_from_slice(input);
        parse_request(&head, max_head)
    };
    let id = conn.id(slot);
    if conn.mark_touched() {
        shared.touched.push(id);
    }
    let (request, head_len) = match parsed {
        Ok(Parsed::Partial) => {
            if head.is_empty() {
                head.extend_from_slice(input);
            }
            conn.phase = Phase::Handshaking {
                head: Some(Box::new(head)),
            };
            return;
        }
        Err(error) => {
            debug!(
                "{} bad handshake: {} ({})",
                conn.peer(),
                error.reason(),
                error.status()
            );
            shared.counters.handshake_invalid();
            conn.queue.push_bytes(&handshake::reject(&error));
            shared.begin_draining(slot, now);
            return;
        }
        Ok(Parsed::Complete {
            request: Request::Plain(request),
            ..
        }) => {
            debug!("{} {} {}", conn.peer(), request.method, request.path);
            shared.counters.http_request();
            conn.queue
                .push_bytes(&http::respond(&request, &shared.metrics));
            shared.begin_draining(slot, now);
            return;
        }
        Ok(Parsed::Complete {
            request: Request::Upgrade(request),
            head_len,
        }) => (request, head_len),
    };
    // The limit is for the whole group: with several workers, upgrades completing at
    // the same moment on different workers may pass it by up to workers - 1.
    let open = shared.metrics.connections_open();
    if open >= shared.config.max_connections as u64 {
        debug!("{} refused: {open} connections open", conn.peer());
        shared.counters.refused();
        let body = b"too many connections\n";
        conn.queue.push_bytes(&http_response(
            503,
            &[("Retry-After", "1")],
            "text/plain",
            body,
        ));
        shared.begin_draining(slot, now);
        return;
    }
    // §4.2.2: the server may only pick a subprotocol that the client offered.
    let protocol = handler
        .select_protocol(&request.protocols)
        .filter(|chosen| request.protocols.contains(chosen));
    conn.queue.push_bytes(&handshake::switching_protocols(
        &request,
        protocol.as_deref(),
    ));
    conn.phase = Phase::Open {
        ping_outstanding: false,
    };
    conn.app_open = true;
    shared.counters.opened();
    debug!(
        "{} open: {} (protocol {:?})",
        conn.peer(),
        request.path,
        protocol
    );
    if let Some(idle) = shared.config.idle_timeout {
        let at = shared.clock.deadline(now, idle);
        shared.set_deadline(slot, at);
    } else if let Some(conn) = shared.conns.get_mut(slot) {
        conn.deadline = None;
    }
    handler.on_open(&mut Ctx { shared, now }, id, &request);
    // The client may send its first frames in the same packet as its request.
    let rest = if head.is_empty() {
        input.get_mut(head_len..)
    } else {
        head.get_mut(head_len..)
    };
    if let Some(rest) = rest.filter(|rest| !rest.is_empty()) {
        on_frames(handler, shared, slot, rest, now);
    }
}

/// Decodes frames from `input` and dispatches their events until the input is used up
/// or the connection stops reading frames (close received, protocol error).
fn on_frames<H: Handler>(
    handler: &mut H,
    shared: &mut Shared,
    slot: usize,
    input: &mut [u8],
    now: Instant,
) {
    let mut pos = 0;
    loop {
        let Some(conn) = shared.conns.get_mut(slot) else {
            return;
        };
        if matches!(
            conn.phase,
            Phase::Draining { .. } | Phase::Handshaking { .. }
        ) {
            return;
        }
        let id = conn.id(slot);
        let rest = input.get_mut(pos..).unwrap_or_default();
        let (used, event) = match conn.decoder.decode(rest) {
            Ok(progress) => progress,
            Err(error) => {
                fail(handler, shared, slot, error, now);
                return;
            }
        };
        pos += used;
        let Some(event) = event else { return };
        match event {
            Event::FrameStart(h) => trace!(
                "{} frame fin={} rsv={} opcode={:?} masked={} len={}",
                conn.name(),
                u8::from(h.fin),
                h.rsv,
                h.opcode,
                h.mask.is_some(),
                h.payload_len
            ),
            Event::Data {
                kind,
                bytes,
                end_of_message,
            } => {
                // After our close (CloseSent) the peer's data is read and dropped (§7.1.2).
                if conn.app_open {
                    if end_of_message {
                        shared.counters.message_in();
                    }
                    handler.on_data(&mut Ctx { shared, now }, id, kind, bytes, end_of_message);
                }
            }
            Event::Ping(payload) => {
                // §5.5.2: answer with a pong carrying the same payload, promptly: it
                // goes behind the frames already queued, ahead of the rest of the echo.
                if conn.is_open() {
                    conn.queue_control(OpCode::Pong, payload.as_slice());
                    shared.touch(slot);
                }
            }
            Event::Pong(_) => {} // unsolicited or keepalive: any input resets the idle timer
            Event::Close(frame) => {
                on_close_frame(handler, shared, slot, frame, now);
                return;
            }
        }
    }
}

/// The peer sent a close frame (§5.5.1, §7.1.2).
fn on_close_frame<H: Handler>(
    handler: &mut H,
    shared: &mut Shared,
    slot: usize,
    frame: Option<CloseFrame>,
    now: Instant,
) {
    let Some(conn) = shared.conns.get_mut(slot) else {
        return;
    };
    if conn.is_open() {
        // Answer with the same body: the status code and reason the client sent (an
        // empty close if it sent none), which browsers show in their close event.
        let body = frame.as_ref().map_or(&[][..], |f| f.payload());
        conn.queue_control(OpCode::Close, body);
    }
    let (code, reason) = frame
        .as_ref()
        .map_or((CloseCode::NO_STATUS, ""), |f| (f.code(), f.reason()));
    leave_open(handler, shared, slot, code, reason, now);
    shared.begin_draining(slot, now);
}

/// The peer broke the protocol: send a close with the error's code and reason, then
/// close (§7.1.7 "Fail the WebSocket Connection").
fn fail<H: Handler>(
    handler: &mut H,
    shared: &mut Shared,
    slot: usize,
    error: ProtocolError,
    now: Instant,
) {
    let Some(conn) = shared.conns.get_mut(slot) else {
        return;
    };
    debug!("{} protocol error: {error}", conn.peer());
    shared.counters.protocol_error(error.close_code());
    if conn.is_open() {
        conn.queue_close(error.close_code(), error.reason());
    }
    leave_open(
        handler,
        shared,
        slot,
        error.close_code(),
        error.reason(),
        now,
    );
    shared.begin_draining(slot, now);
}

/// A duration in the start line: `1.5 s`, or `off`.
struct Seconds(Option<Duration>);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{} s", d.as_secs_f64()),
            None => f.write_str("off"),
        }
    }
}

/// Whether an accept error means the process or system is out of file descriptors
/// (or the kernel out of socket memory): retrying at once would fail the same way.
fn is_out_of_descriptors(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Creates the listening socket with the options that must be set before `listen`:
/// SO_REUSEADDR (restart without waiting for TIME_WAIT), and SO_RCVBUF/SO_SNDBUF when
/// capped, which accepted sockets inherit (and which size the TCP window scale).
///
/// With `reuse_port` (several workers) also SO_REUSEPORT, so that each worker can bind
/// its own listener to the same address and the kernel spreads new connections over
/// them by a hash of the addresses. It is left off for a single listener: with it, a
/// second server started by mistake on the same port (as the same user) would quietly
/// take half the connections instead of failing with "address in use".
fn bind_listener(config: &Config, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(config.addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if let Some(size) = config.so_rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(size) = config.so_sndbuf {
        socket.set_send_buffer_size(size)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&config.addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}
