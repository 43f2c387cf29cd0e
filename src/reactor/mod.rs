//! The I/O half: one `mio::Poll` loop that owns every socket.
//!
//! The loop reads like mio's `tcp_server` example grown up. Sockets are registered
//! edge-triggered, so each readiness event is reported once: on readable the loop reads
//! until `WouldBlock`, on writable it writes until `WouldBlock`, on the listener it
//! accepts until `WouldBlock`. Bytes are read into one buffer shared by all connections
//! and handed to the connection's sans-IO [`Session`]; what it reports goes to the
//! [`Handler`]; whatever is sent is queued on the connection's write queue and flushed.
//! See `docs/ARCHITECTURE.md` for the life of a connection.
//!
//! A [`Server`] is one such loop. [`Workers`] runs several of them on as many
//! threads, sharing nothing but their [`Metrics`]. A [`Handle`] reaches either from
//! other threads.

mod app_timers;
pub(crate) mod config;
mod connection;
mod ctx;
mod handle;
pub(crate) mod metrics;
pub(crate) mod timers;
mod workers;
pub(crate) mod write_queue;

pub use config::{Config, ConfigBuilder, ConfigError};
pub use ctx::Ctx;
pub use handle::{Handle, Stopped};
pub use metrics::{Metrics, Snapshot};
pub use workers::Workers;

use crate::handler::{ConnId, Delivery, Handler};
use crate::http::{HttpRequest, HttpResponse, Routes};
use crate::protocol::handshake::{self, http_response, parse_request, Parsed, Request};
use crate::protocol::header::MAX_PAYLOAD_LEN;
use crate::protocol::session::{Closure, Deadline, Incoming, SessionConfig};
use crate::protocol::{CloseCode, Limits, Session};
use app_timers::AppTimers;
use connection::{Connection, Phase};
use handle::{Command, Mailbox};
use log::{debug, info, trace, warn};
use metrics::WorkerMetrics;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timers::{Clock, Tick, Timers};

/// The listening socket's token; connection tokens are their slab slots.
const LISTENER: Token = Token(usize::MAX - 1);
/// Commands from a [`Handle`] arrive as readiness of this token.
const WAKER: Token = Token(usize::MAX - 2);
/// Reads per connection per loop turn: a client that never stops sending is served
/// in turns with everyone else instead of holding the loop.
const MAX_READS_PER_TURN: usize = 16;
/// Connections accepted per loop turn (each with its first read): a full backlog is
/// taken in turns with the established connections instead of in one long turn.
const MAX_ACCEPTS_PER_TURN: u32 = 64;

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

/// The state every handler call may touch through its [`Ctx`], apart from the
/// handler and the connections' application state.
pub(crate) struct Shared {
    config: Config,
    /// Which worker this is (in every [`ConnId`] it hands out).
    worker: u32,
    conns: Slab<Connection>,
    timers: Timers,
    /// The application's timers.
    app_timers: AppTimers,
    /// Turns `Instant`s into the ticks that connections and timers keep.
    clock: Clock,
    /// Connections with newly queued output, flushed after each batch of events.
    touched: Vec<ConnId>,
    /// Connections to read on the next turn without waiting for an event:
    /// edge-triggered readiness is not repeated for bytes already waiting (after
    /// back-pressure paused reading, or after `MAX_READS_PER_TURN`). Each is listed
    /// once at most ([`Shared::list_ready`]).
    ready: Vec<ConnId>,
    /// Socket reads and accepts in this loop turn (for the fairness metrics, and the
    /// accept cap).
    turn_reads: u64,
    turn_accepts: u32,
    /// Connections accepted, oldest first, that may still be in the opening handshake
    /// (entries of connections that have left it are dropped when it is full): what
    /// `max_handshakes` is enforced on.
    handshakes: VecDeque<ConnId>,
    /// Connections that drained below the low watermark, for `on_drain`.
    drained: Vec<ConnId>,
    /// The counters of every worker (for `/metrics` and `--max-connections`).
    metrics: Arc<Metrics>,
    /// This worker's own counters, in `metrics`.
    counters: Arc<WorkerMetrics>,
    /// Closes started by the handler through [`Ctx::close`], whose `on_close` is due
    /// once the handler call that started them has returned.
    app_closes: Vec<(ConnId, crate::protocol::CloseFrame)>,
    /// Connections whose socket failed while writing, to drop (telling the handler)
    /// once the current batch is done.
    broken: Vec<ConnId>,
    /// The answers to plain HTTP requests.
    routes: Routes,
    /// [`Ctx::shutdown`] was called.
    shutdown_requested: bool,
}

impl Shared {
    /// The connection `id`, if it is still the one in its slot and open for the
    /// application.
    fn open_conn(&mut self, id: ConnId) -> Option<&mut Connection> {
        if id.worker != self.worker {
            // Another worker's connection (a handler shared an id across workers):
            // it is not here, whatever lives in the same slot.
            return None;
        }
        self.conns
            .get_mut(id.slot as usize)
            .filter(|c| c.is(id) && c.app_open)
    }

    fn set_deadline(&mut self, slot: u32, at: Tick) {
        if let Some(conn) = self.conns.get_mut(slot as usize) {
            conn.deadline = Some(at);
            self.timers.schedule(at, slot);
        }
    }

    /// Writes what `slot` has queued, unless its socket is known to be full and this is
    /// not a writable event (the write would only fail again); shuts its write side, or
    /// drops it, once a draining connection has sent everything; applies the write
    /// watermarks.
    fn flush(&mut self, slot: usize, writable: bool) {
        let worker = self.worker;
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
                    if written > 0 && was_blocked && matches!(conn.phase, Phase::WebSocket) {
                        conn.session
                            .heard_from_peer(self.clock.tick_ceil(Instant::now()));
                    }
                }
                Err(e) => {
                    debug!("{} write failed: {e}", conn.peer());
                    self.broken.push(conn.id(worker, slot));
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
            let id = conn.id(worker, slot);
            if conn.app_open {
                self.drained.push(id);
            }
            self.list_ready(slot);
        }
    }

    /// Counts the new connection `id` among those in the handshake, and if that makes
    /// more than `max_handshakes`, drops the oldest still in it. Entries of connections
    /// that have left the handshake are dropped first (one pass, only when full), so
    /// no connection is dropped while fewer than the limit are still in it.
    fn limit_handshakes(&mut self, id: ConnId) {
        self.handshakes.push_back(id);
        let max = self.config.max_handshakes;
        if self.handshakes.len() <= max {
            return;
        }
        let conns = &self.conns;
        let in_handshake = |id: &ConnId| {
            conns
                .get(id.slot as usize)
                .is_some_and(|c| c.is(*id) && matches!(c.phase, Phase::Handshaking { .. }))
        };
        self.handshakes.retain(in_handshake);
        while self.handshakes.len() > max {
            let Some(oldest) = self.handshakes.pop_front() else {
                return;
            };
            if let Some(conn) = self.conns.get(oldest.slot as usize) {
                debug!(
                    "{} dropped: the oldest of {max} connections in the handshake",
                    conn.peer()
                );
            }
            self.counters.handshake_evicted();
            self.remove(oldest.slot as usize);
        }
    }

    /// Puts the connection in `slot` on the ready list, unless it is on it already.
    fn list_ready(&mut self, slot: usize) {
        let worker = self.worker;
        if let Some(conn) = self.conns.get_mut(slot) {
            if !std::mem::replace(&mut conn.listed, true) {
                self.ready.push(conn.id(worker, slot));
            }
        }
    }

    /// A direct write of [`Ctx::send`] failed: as in [`Shared::flush`], the connection
    /// is dropped once the batch is done.
    #[cold]
    fn write_failed(&mut self, id: ConnId, e: io::Error) {
        if let Some(conn) = self.conns.get(id.slot as usize) {
            debug!("{} write failed: {e}", conn.peer());
        }
        self.broken.push(id);
    }

    fn flush_touched(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        for id in touched.drain(..) {
            if let Some(conn) = self.conns.get_mut(id.slot as usize).filter(|c| c.is(id)) {
                conn.touched = false;
                self.flush(id.slot as usize, false);
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
        let id = conn.id(self.worker, slot);
        let at = self.clock.deadline(now, self.config.close_timeout);
        self.set_deadline(id.slot, at);
        self.touch(id);
    }

    /// Lists `id` for the next `flush_touched`, once however often output is queued.
    fn touch(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(id.slot as usize) {
            if conn.mark_touched() {
                self.touched.push(id);
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

/// The application's side of a worker: the handler and what it keeps per
/// connection, next to (not inside) the connections, so that a handler call can
/// borrow one connection's state and the [`Ctx`] at once.
struct App<H: Handler> {
    handler: H,
    /// By slab slot: the state of the open connection there, if any.
    slots: Vec<Option<AppSlot<H::State>>>,
    /// The handler takes whole messages ([`Delivery::Whole`]).
    whole: bool,
}

/// What the server keeps for the application per open connection.
struct AppSlot<S> {
    state: S,
    /// The message being assembled, with [`Delivery::Whole`], when it came in more
    /// than one chunk (bounded by the decoder's message limit). Boxed, so that
    /// connections between messages (and streaming handlers) pay 8 bytes for it.
    #[allow(clippy::box_collection)]
    partial: Option<Box<Vec<u8>>>,
}

impl<H: Handler> App<H> {
    /// The handler and the state of the connection in `slot`, if the application
    /// has it (borrowed together, for a call about that connection).
    fn split(&mut self, slot: u32) -> Option<(&mut H, &mut AppSlot<H::State>)> {
        let App { handler, slots, .. } = self;
        let state = slots.get_mut(slot as usize).and_then(Option::as_mut)?;
        Some((handler, state))
    }
}

/// A WebSocket server: a listener, a poll loop and a handler, on the thread that calls
/// [`Server::run`]. This is one reactor whatever `config.workers` says; [`Workers`]
/// runs several.
///
/// ```no_run
/// use wsreactor::{Config, Echo, Server};
///
/// let server = Server::bind(Config::default(), Echo::new())?;
/// println!("listening on ws://{}/", server.local_addr()?);
/// server.run()?; // until a Handle asks it to shut down
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Server<H: Handler> {
    /// Which worker this is (0 for a lone server): for logs; worker 0 logs the stats.
    worker: usize,
    poll: Poll,
    /// The listening socket; `None` once shutdown began (dropping it closes it).
    listener: Option<TcpListener>,
    mailbox: Arc<Mailbox<H>>,
    read_buf: Vec<u8>,
    app: App<H>,
    shared: Shared,
    next_serial: u64,
    /// Accepting is paused until then (the process ran out of file descriptors).
    accept_paused_until: Option<Instant>,
    /// Back-offs since the last successful accept (to log an episode once).
    accept_pauses: u32,
    /// This turn accepted `MAX_ACCEPTS_PER_TURN` connections: the listener may hold
    /// more, and edge-triggered readiness will not say so again.
    accept_backlog: bool,
    /// Set once shutdown began: the loop ends by then at the latest.
    shutdown_deadline: Option<Instant>,
    /// When the next stats line is due (worker 0, with `stats_interval`).
    next_stats: Option<Instant>,
}

impl<H: Handler> Server<H> {
    /// Checks `config`, binds the listener and registers it with a new poll.
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
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(bind_listener(&config, reuse_port)?);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mailbox = Arc::new(Mailbox::new(Waker::new(poll.registry(), WAKER)?));
        let next_stats = config
            .stats_interval
            .filter(|_| worker == 0)
            .map(|every| Instant::now() + every);
        let whole = handler.delivery() == Delivery::Whole;
        Ok(Server {
            worker,
            poll,
            listener: Some(listener),
            mailbox,
            read_buf: vec![0; config.read_buffer_size],
            app: App {
                handler,
                slots: Vec::new(),
                whole,
            },
            shared: Shared {
                config,
                // `Workers` starts at most 1024 workers (Config::validate).
                worker: worker as u32,
                conns: Slab::new(),
                timers: Timers::default(),
                app_timers: AppTimers::default(),
                clock: Clock::new(Instant::now()),
                touched: Vec::new(),
                ready: Vec::new(),
                turn_reads: 0,
                turn_accepts: 0,
                handshakes: VecDeque::new(),
                drained: Vec::new(),
                counters: metrics.worker(worker),
                metrics,
                app_closes: Vec::new(),
                broken: Vec::new(),
                routes: Arc::new(|_: &HttpRequest| HttpResponse::not_found()),
                shutdown_requested: false,
            },
            next_serial: 0,
            accept_paused_until: None,
            accept_pauses: 0,
            accept_backlog: false,
            shutdown_deadline: None,
            next_stats,
        })
    }

    /// Answers plain HTTP requests (no upgrade) with `routes`; without them every
    /// such request gets 404. A `HEAD` request gets the headers of the response
    /// `routes` gives, without its body.
    ///
    /// ```no_run
    /// # use wsreactor::{Config, Echo, HttpResponse, Server};
    /// let server = Server::bind(Config::default(), Echo::new())?.http(|request| {
    ///     match request.resource_path() {
    ///         "/healthz" => HttpResponse::new(200).text("ok\n"),
    ///         _ => HttpResponse::not_found(),
    ///     }
    /// });
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn http(
        self,
        routes: impl Fn(&HttpRequest) -> HttpResponse + Send + Sync + 'static,
    ) -> Self {
        self.with_routes(Arc::new(routes))
    }

    fn with_routes(mut self, routes: Routes) -> Self {
        self.shared.routes = routes;
        self
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

    /// A handle to reach this server from other threads (see [`Handle`]).
    pub fn handle(&self) -> Handle<H> {
        Handle::new(vec![self.mailbox.clone()])
    }

    /// Runs the loop until a graceful shutdown (from a [`Handle`] or [`Ctx::shutdown`])
    /// has finished. Returns `Ok` after it.
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

    /// The loop: runs until shutdown has finished.
    fn run_loop(mut self) -> io::Result<()> {
        // However the loop ends (also by a panic), handles learn that it has.
        let _closed = CloseOnDrop(self.mailbox.clone());
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
            self.shared.turn_reads = 0;
            self.shared.turn_accepts = 0;
            // Listed on earlier turns: read after the events, once each. Whatever is
            // listed during this turn waits for the next, so no connection gets more
            // than MAX_READS_PER_TURN reads a turn.
            let ready = std::mem::take(&mut self.shared.ready);
            if std::mem::take(&mut self.accept_backlog) && self.accept_paused_until.is_none() {
                self.accept_until_blocked(now);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => {
                        if self.accept_paused_until.is_none() {
                            self.accept_until_blocked(now);
                        }
                    }
                    WAKER => self.on_commands(now),
                    Token(slot) => {
                        if event.is_writable() {
                            self.shared.flush(slot, true);
                            self.settle(now);
                        }
                        // A listed connection is read from the ready list below.
                        if self.shared.conns.get(slot).is_none_or(|c| c.listed) {
                            continue;
                        }
                        if event.is_read_closed() || event.is_error() {
                            self.read_until_blocked(slot, now, Drained::AtEof);
                        } else if event.is_readable() {
                            self.read_until_blocked(slot, now, Drained::ByShortRead);
                        }
                    }
                }
            }
            for id in ready {
                let slot = id.slot as usize;
                if let Some(conn) = self.shared.conns.get_mut(slot).filter(|c| c.is(id)) {
                    conn.listed = false;
                    self.read_until_blocked(slot, now, Drained::AtEof);
                }
            }
            self.fire_timers(now);
            self.log_stats(now);
            if self.accept_paused_until.is_some_and(|until| now >= until) {
                self.accept_paused_until = None;
                self.accept_until_blocked(now);
            }
            self.shared
                .counters
                .turn(self.shared.turn_reads, u64::from(self.shared.turn_accepts));
            if std::mem::take(&mut self.shared.shutdown_requested) {
                self.begin_shutdown(now);
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
        if !self.shared.ready.is_empty() || self.shared.shutdown_requested || self.accept_backlog {
            return Some(Duration::ZERO);
        }
        let wheel = self
            .shared
            .timers
            .next()
            .map(|at| self.shared.clock.until(now, at));
        let instants = [
            self.shared.app_timers.next(),
            self.accept_paused_until,
            self.shutdown_deadline,
            self.next_stats,
        ];
        let instants = instants
            .into_iter()
            .flatten()
            .map(|at| at.saturating_duration_since(now));
        wheel.into_iter().chain(instants).min()
    }

    /// Logs the counters of the whole group when they are due (see `stats_interval`).
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
    /// Accepts until `WouldBlock`, or until this turn has accepted
    /// `MAX_ACCEPTS_PER_TURN` (then the rest waits for the next turn).
    fn accept_until_blocked(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            if self.shared.turn_accepts >= MAX_ACCEPTS_PER_TURN {
                self.accept_backlog = true;
                return;
            }
            match listener.accept() {
                Ok((socket, peer)) => {
                    self.shared.turn_accepts += 1;
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
        let Ok(slot32) = u32::try_from(slot) else {
            // Ids and timer entries keep 32-bit slots; 4 billion connections in one
            // worker cannot happen (the kernel caps descriptors far below).
            warn!("{peer} refused: {slot} slots in use");
            return;
        };
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
        let config = &self.shared.config;
        let limits = Limits {
            max_frame_size: config.max_frame_size,
            max_message_size: if self.app.whole {
                config.max_message_size
            } else {
                MAX_PAYLOAD_LEN
            },
        };
        let session_config = SessionConfig {
            close_timeout: config.close_timeout,
            idle_timeout: config.idle_timeout,
            // Frame headers are only traced: without the trace level they take no
            // step of their own through the session.
            report_frames: log::log_enabled!(log::Level::Trace),
        };
        let now_tick = self.shared.clock.tick_ceil(now);
        entry.insert(Connection {
            serial,
            socket,
            phase: Phase::Handshaking { head: None },
            session: Session::new(limits, config.max_frame_out, session_config, now_tick),
            queue: Default::default(),
            paused: false,
            app_open: false,
            touched: false,
            listed: false,
            deadline: None,
        });
        self.shared.counters.accepted();
        trace!("#{serial} {peer} accepted (slot {slot})");
        let id = ConnId {
            worker: self.shared.worker,
            slot: slot32,
            serial,
        };
        self.shared.limit_handshakes(id);
        let at = self
            .shared
            .clock
            .deadline(now, self.shared.config.handshake_timeout);
        self.shared.set_deadline(slot32, at);
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
            self.shared.turn_reads += 1;
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
            let short = n < self.read_buf.len();
            let input = &mut self.read_buf[..n];
            match conn.phase {
                Phase::Handshaking { .. } => {
                    on_handshake_input(&mut self.app, &mut self.shared, slot, input, now)
                }
                Phase::WebSocket => {
                    conn.session.heard_from_peer(now_tick);
                    on_frames(&mut self.app, &mut self.shared, slot, input, now)
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
        self.shared.list_ready(slot);
    }

    fn on_eof(&mut self, slot: usize) {
        let Some(conn) = self.shared.conns.get_mut(slot) else {
            return;
        };
        match &mut conn.phase {
            Phase::WebSocket => {
                debug!(
                    "{} dropped the connection without a close frame",
                    conn.name()
                );
                self.close_abnormally(slot, Instant::now());
            }
            Phase::Draining { peer_closed, .. } if !conn.queue.is_empty() => {
                // The peer closed its side, but may still read: send what is queued
                // (an HTTP response, our close frame), then drop it (see `flush`).
                *peer_closed = true;
            }
            Phase::Handshaking { .. } | Phase::Draining { .. } => self.shared.remove(slot),
        }
    }

    /// Finishes a batch of handler calls: tells the handler of the closes it started
    /// itself, flushes the output the batch queued, tells it of the connections that
    /// drained, and drops (telling the handler) the connections whose socket failed,
    /// until none of that is left.
    fn settle(&mut self, now: Instant) {
        loop {
            for (id, frame) in std::mem::take(&mut self.shared.app_closes) {
                // The slot is still this connection's, or empty: closes are settled
                // before anything else can accept a connection into it.
                let slot = id.slot as usize;
                if self.shared.conns.get(slot).is_some_and(|c| !c.is(id)) {
                    continue;
                }
                if let Some(slot) = self.app.slots.get_mut(slot).and_then(Option::take) {
                    let ctx = &mut Ctx {
                        shared: &mut self.shared,
                        now,
                    };
                    self.app
                        .handler
                        .on_close(ctx, id, slot.state, frame.code(), frame.reason());
                }
            }
            self.shared.flush_touched();
            for id in std::mem::take(&mut self.shared.drained) {
                if self.shared.open_conn(id).is_some() {
                    if let Some((handler, slot)) = self.app.split(id.slot) {
                        let ctx = &mut Ctx {
                            shared: &mut self.shared,
                            now,
                        };
                        handler.on_drain(ctx, id, &mut slot.state);
                    }
                }
            }
            let broken = std::mem::take(&mut self.shared.broken);
            let more = !self.shared.app_closes.is_empty()
                || !self.shared.drained.is_empty()
                || !self.shared.touched.is_empty();
            if broken.is_empty() && !more {
                return;
            }
            for id in broken {
                let slot = id.slot as usize;
                if self.shared.conns.get(slot).is_some_and(|c| c.is(id)) {
                    self.close_abnormally(slot, now);
                }
            }
        }
    }

    /// Drops a connection that cannot complete a close handshake, telling the handler
    /// with 1006 (§7.1.5: "abnormal closure").
    fn close_abnormally(&mut self, slot: usize, now: Instant) {
        leave_open(
            &mut self.app,
            &mut self.shared,
            slot,
            &Closure::TimedOut,
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
            let id = conn.id(self.shared.worker, slot as usize);
            match conn.phase {
                Phase::Handshaking { .. } => {
                    debug!("{} handshake timed out", conn.peer());
                    self.shared.counters.handshake_timed_out();
                    self.shared.remove(id.slot as usize);
                }
                Phase::WebSocket => match conn.session.on_deadline(now_tick, &mut conn.queue) {
                    Deadline::NotYet(at) => self.shared.set_deadline(id.slot, at),
                    Deadline::Pinged(at) => {
                        trace!("{} idle: ping", conn.name());
                        self.shared.touch(id);
                        self.shared.set_deadline(id.slot, at);
                    }
                    Deadline::Expired => {
                        debug!("{} timed out (keepalive or close)", conn.peer());
                        self.close_abnormally(id.slot as usize, now);
                    }
                },
                Phase::Draining { .. } => {
                    debug!("{} close timed out", conn.peer());
                    self.close_abnormally(id.slot as usize, now);
                }
            }
        }
        // Only the timers due now: one set from `on_timer` without a delay fires on
        // the next turn, so a handler that keeps re-arming cannot hold the loop.
        for (conn, key) in self.shared.app_timers.take_due(now) {
            let ctx = &mut Ctx {
                shared: &mut self.shared,
                now,
            };
            match conn {
                None => self.app.handler.on_timer(ctx, key),
                Some(id) => {
                    if ctx.shared.open_conn(id).is_none() {
                        continue;
                    }
                    if let Some((handler, slot)) = self.app.split(id.slot) {
                        handler.on_conn_timer(ctx, id, &mut slot.state, key);
                    }
                }
            }
        }
        self.settle(now);
    }

    /// Carries out what handles have asked since the last turn.
    fn on_commands(&mut self, now: Instant) {
        for command in self.mailbox.take() {
            if let Command::Shutdown = command {
                // Each one counts: a second shutdown stops at once.
                self.begin_shutdown(now);
                continue;
            }
            let ctx = &mut Ctx {
                shared: &mut self.shared,
                now,
            };
            match command {
                Command::Send { conn, kind, data } => {
                    if let Err(e) = ctx.send(conn, kind, &data) {
                        debug!("#{} send from a handle refused: {e}", conn.serial());
                    }
                }
                Command::Close { conn, code, reason } => {
                    let _ = ctx.close(conn, code, &reason);
                }
                Command::Run(job) => job(&mut self.app.handler, ctx),
                Command::Shutdown => {}
            }
            self.settle(now);
        }
    }

    /// Starts a graceful shutdown: the listener closes, every open connection gets
    /// close 1001, and the loop ends when all are gone or the shutdown timeout has
    /// passed. Asked again while shutting down, it ends the loop at once.
    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some() {
            info!("worker {}: asked again: exiting now", self.worker);
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
        self.accept_backlog = false;
        self.shutdown_deadline = Some(now + self.shared.config.shutdown_timeout);
        let worker = self.shared.worker;
        let conns: Vec<(ConnId, bool)> = self
            .shared
            .conns
            .iter()
            .map(|(slot, c)| {
                (
                    c.id(worker, slot),
                    matches!(c.phase, Phase::Handshaking { .. }),
                )
            })
            .collect();
        for (id, handshaking) in conns {
            if handshaking {
                self.shared.remove(id.slot as usize);
            } else {
                // Refused for connections already closing: they finish on their own.
                let _ = Ctx {
                    shared: &mut self.shared,
                    now,
                }
                .close(id, CloseCode::GOING_AWAY, "server shutting down");
            }
        }
        self.settle(now);
    }
}

/// Marks a worker's mailbox closed when its loop ends, however it ends.
struct CloseOnDrop<H>(Arc<Mailbox<H>>);

impl<H> Drop for CloseOnDrop<H> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Tells the handler that `slot` is no longer open (once), with the code and reason
/// that ended it, and gives it back the connection's state.
fn leave_open<H: Handler>(
    app: &mut App<H>,
    shared: &mut Shared,
    slot: usize,
    closure: &Closure,
    now: Instant,
) {
    let Some(conn) = shared.conns.get_mut(slot) else {
        return;
    };
    if !conn.app_open {
        return;
    }
    conn.app_open = false;
    let (code, reason) = (closure.code(), closure.reason());
    shared.counters.closed(code);
    let id = conn.id(shared.worker, slot);
    debug!("{} closed: code {code} reason {reason:?}", conn.peer());
    if let Some(state) = app.slots.get_mut(slot).and_then(Option::take) {
        app.handler
            .on_close(&mut Ctx { shared, now }, id, state.state, code, reason);
    }
}

/// Handles bytes of the HTTP request head: waits for the whole head, then answers it
/// (an upgrade the application accepts with 101, decoding whatever followed the head
/// as frames; anything else with an HTTP response).
fn on_handshake_input<H: Handler>(
    app: &mut App<H>,
    shared: &mut Shared,
    slot: usize,
    input: &mut [u8],
    now: Instant,
) {
    let max_head = shared.config.max_handshake_size;
    let worker = shared.worker;
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
        shared.counters.head_bytes_parsed(input.len().min(max_head));
        parse_request(input, max_head)
    } else {
        head.extend_from_slice(input);
        if !input.contains(&b'\n') && head.len() < max_head {
            // No line was completed: parsing again would find the same complete lines
            // (an error inside the unfinished one shows once it ends, or the head
            // reaches its limit). So a trickled head is parsed once per line, not once
            // per read: its cost is linear in its size, not quadratic.
            Ok(Parsed::Partial)
        } else {
            shared.counters.head_bytes_parsed(head.len().min(max_head));
            parse_request(&head, max_head)
        }
    };
    let id = conn.id(worker, slot);
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
            // The path without its query: a query may carry a token.
            debug!(
                "{} {} {}",
                conn.peer(),
                request.method,
                request.resource_path()
            );
            shared.counters.http_request();
            let response = (shared.routes)(&request);
            conn.queue
                .push_bytes(&response.to_bytes(request.method == "HEAD"));
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
    let Ok(peer) = conn.socket.peer_addr() else {
        // Reset by the peer since: nobody to answer.
        shared.remove(slot);
        return;
    };
    let decision = app
        .handler
        .on_upgrade(&mut Ctx { shared, now }, &request, peer);
    let Some(conn) = shared.conns.get_mut(slot) else {
        return;
    };
    let accept = match decision {
        Ok(accept) => accept,
        Err(response) => {
            debug!(
                "{} upgrade refused by the application: {}",
                conn.peer(),
                response.status()
            );
            shared.counters.refused();
            conn.queue.push_bytes(&response.to_bytes(false));
            shared.begin_draining(slot, now);
            return;
        }
    };
    // §4.2.2: the server may only pick a subprotocol that the client offered.
    let protocol = accept
        .protocol
        .filter(|chosen| request.protocols.contains(chosen));
    conn.queue.push_bytes(&handshake::switching_protocols(
        &request,
        protocol.as_deref(),
        &accept.headers,
    ));
    conn.phase = Phase::WebSocket;
    conn.app_open = true;
    conn.session.heard_from_peer(shared.clock.tick_ceil(now));
    let keepalive = conn.session.deadline();
    conn.deadline = None;
    shared.counters.opened();
    debug!(
        "{} open: {} (subprotocol {})",
        conn.peer(),
        request.resource_path(),
        protocol.as_deref().unwrap_or("none"),
    );
    if let Some(at) = keepalive {
        shared.set_deadline(id.slot, at);
    }
    shared.touch(id);
    if app.slots.len() <= slot {
        app.slots.resize_with(slot + 1, || None);
    }
    let state = app.slots.get_mut(slot).map(|s| {
        s.insert(AppSlot {
            state: accept.state,
            partial: None,
        })
    });
    if let Some(state) = state {
        app.handler
            .on_open(&mut Ctx { shared, now }, id, &mut state.state);
    }
    // The client may send its first frames in the same packet as its request.
    let rest = if head.is_empty() {
        input.get_mut(head_len..)
    } else {
        head.get_mut(head_len..)
    };
    if let Some(rest) = rest.filter(|rest| !rest.is_empty()) {
        on_frames(app, shared, slot, rest, now);
    }
}

/// Decodes frames from `input` and hands what the session reports to the handler,
/// until the input is used up or the session has closed.
fn on_frames<H: Handler>(
    app: &mut App<H>,
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
        if !matches!(conn.phase, Phase::WebSocket) {
            return;
        }
        let id = conn.id(shared.worker, slot);
        let rest = input.get_mut(pos..).unwrap_or_default();
        let queued = conn.queue.len();
        let (used, incoming) = conn.session.receive(rest, &mut conn.queue);
        pos += used;
        let app_open = conn.app_open;
        if conn.queue.len() != queued {
            // The session answered (a pong, a close).
            shared.touch(id);
        }
        // No event: the session has used up the input.
        let Some(incoming) = incoming else { return };
        match incoming {
            Incoming::Frame(h) => trace!(
                "#{} frame fin={} rsv={} opcode={:?} masked={} len={}",
                id.serial(),
                u8::from(h.fin),
                h.rsv,
                h.opcode,
                h.mask.is_some(),
                h.payload_len
            ),
            Incoming::Data {
                kind,
                bytes,
                end_of_message,
            } => {
                if !app_open {
                    // After the handler's own close the peer's data is dropped (§7.1.2).
                    continue;
                }
                if end_of_message {
                    shared.counters.message_in();
                }
                let whole = app.whole;
                let Some((handler, state)) = app.split(id.slot) else {
                    continue;
                };
                let ctx = &mut Ctx { shared, now };
                if !whole {
                    handler.on_data(ctx, id, &mut state.state, kind, bytes, end_of_message);
                } else if end_of_message && state.partial.is_none() {
                    // The common case: the whole message arrived in one chunk; no copy.
                    handler.on_message(ctx, id, &mut state.state, kind, bytes);
                } else {
                    // Bounded: the decoder fails a message over the limit (1009).
                    let partial = state.partial.get_or_insert_with(Box::default);
                    partial.extend_from_slice(bytes);
                    if end_of_message {
                        if let Some(message) = state.partial.take() {
                            handler.on_message(ctx, id, &mut state.state, kind, &message);
                        }
                    }
                }
            }
            Incoming::Pong(payload) => {
                if let Some((handler, state)) = app.split(id.slot).filter(|_| app_open) {
                    let ctx = &mut Ctx { shared, now };
                    handler.on_pong(ctx, id, &mut state.state, payload.as_slice());
                }
            }
            Incoming::Closed(closure) => {
                if let Closure::Failed(error) = &*closure {
                    if let Some(conn) = shared.conns.get(slot) {
                        debug!("{} protocol error: {error}", conn.peer());
                    }
                    shared.counters.protocol_error(error.close_code());
                }
                leave_open(app, shared, slot, &closure, now);
                shared.begin_draining(slot, now);
                return;
            }
        }
    }
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
