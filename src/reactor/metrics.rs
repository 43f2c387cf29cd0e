//! What the server has done, counted: for `GET /metrics` (Prometheus text exposition
//! format) and the `--stats-interval` log line.
//!
//! Each worker (one reactor on one thread, see [`super::Workers`]) counts into its own
//! [`WorkerMetrics`]: plain atomic counters, updated with `Relaxed` stores by that worker
//! alone, on a cache line (pair) of their own, so workers never contend for a line. They
//! are bumped where events happen: a connection accepted, opened or closed, a message
//! finished in either direction, a protocol error, and (for bytes) once per `read` or
//! `writev` call. Nothing is counted per connection per loop turn, so an idle connection
//! costs nothing. Readers (whichever worker serves `/metrics`, worker 0's stats line)
//! sum all workers with `Relaxed` loads: each counter is exact, though a snapshot taken
//! while traffic flows is not one instant across counters.

use crate::protocol::CloseCode;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Close codes 1000 to 1015 are counted one by one; any other code (3000–4999 from
/// applications) in one `other` bucket.
const FIRST_CODE: u16 = 1000;
const NAMED_CODES: usize = 16;

/// Counts per close code: 1000–1015, then `other`.
#[derive(Debug, Default)]
struct CodeCounts([AtomicU64; NAMED_CODES + 1]);

impl CodeCounts {
    fn add(&self, code: CloseCode) {
        let index = usize::from(code.0.wrapping_sub(FIRST_CODE)).min(NAMED_CODES);
        self.0[index].fetch_add(1, Relaxed);
    }
}

/// The counters of one worker. Gauges go up and down; everything else only up.
#[derive(Debug, Default)]
#[repr(align(128))] // its own cache lines (two: the adjacent-line prefetcher pairs them)
pub struct WorkerMetrics {
    connections_open: AtomicU64,
    sockets_open: AtomicU64,
    accepted: AtomicU64,
    upgrades: AtomicU64,
    refused: AtomicU64,
    handshake_invalid: AtomicU64,
    handshake_timeouts: AtomicU64,
    handshakes_evicted: AtomicU64,
    http_requests: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    accept_pauses: AtomicU64,
    turn_reads_max: AtomicU64,
    turn_accepts_max: AtomicU64,
    head_bytes_parsed: AtomicU64,
    protocol_errors: CodeCounts,
    closes: CodeCounts,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

impl WorkerMetrics {
    /// A TCP connection was accepted (it holds a socket until [`Self::socket_closed`]).
    pub(crate) fn accepted(&self) {
        bump(&self.accepted, 1);
        bump(&self.sockets_open, 1);
    }

    /// An accepted socket was closed, in whatever phase.
    pub(crate) fn socket_closed(&self) {
        self.sockets_open.fetch_sub(1, Relaxed);
    }

    /// A WebSocket handshake completed: the connection is open for the handler.
    pub(crate) fn opened(&self) {
        bump(&self.upgrades, 1);
        bump(&self.connections_open, 1);
    }

    /// An open connection left the open state (its handler got, or is about to get,
    /// `on_close` with `code`).
    pub(crate) fn closed(&self, code: CloseCode) {
        self.connections_open.fetch_sub(1, Relaxed);
        self.closes.add(code);
    }

    /// An upgrade was refused: with 503 (`max_connections`), or by the application's
    /// `on_upgrade`.
    pub(crate) fn refused(&self) {
        bump(&self.refused, 1);
    }

    /// A request was answered with an HTTP error (400, 405, 426, 431, 505).
    pub(crate) fn handshake_invalid(&self) {
        bump(&self.handshake_invalid, 1);
    }

    /// A connection did not finish its request head within the handshake timeout.
    pub(crate) fn handshake_timed_out(&self) {
        bump(&self.handshake_timeouts, 1);
    }

    /// A connection still in the handshake was dropped to make room (`max_handshakes`).
    pub(crate) fn handshake_evicted(&self) {
        bump(&self.handshakes_evicted, 1);
    }

    /// A plain HTTP request (no upgrade) was answered.
    pub(crate) fn http_request(&self) {
        bump(&self.http_requests, 1);
    }

    /// A whole data message arrived (its last chunk went to the handler).
    pub(crate) fn message_in(&self) {
        bump(&self.messages_in, 1);
    }

    /// The handler finished a message it sends (it is queued whole).
    pub(crate) fn message_out(&self) {
        bump(&self.messages_out, 1);
    }

    /// `n` bytes were read from a socket.
    pub(crate) fn bytes_in(&self, n: usize) {
        bump(&self.bytes_in, n as u64);
    }

    /// `n` bytes were written to a socket.
    pub(crate) fn bytes_out(&self, n: usize) {
        bump(&self.bytes_out, n as u64);
    }

    /// A connection was failed for breaking the protocol, with close `code`.
    pub(crate) fn protocol_error(&self, code: CloseCode) {
        self.protocol_errors.add(code);
    }

    /// Accepting paused because the process ran out of file descriptors.
    pub(crate) fn accept_paused(&self) {
        bump(&self.accept_pauses, 1);
    }

    /// `n` bytes of a request head were handed to the parser.
    pub(crate) fn head_bytes_parsed(&self, n: usize) {
        bump(&self.head_bytes_parsed, n as u64);
    }

    /// A loop turn made `reads` socket reads and `accepts` accepts: keeps the most of
    /// each (this worker alone writes them, so a load and a store suffice).
    pub(crate) fn turn(&self, reads: u64, accepts: u64) {
        for (max, n) in [
            (&self.turn_reads_max, reads),
            (&self.turn_accepts_max, accepts),
        ] {
            if n > max.load(Relaxed) {
                max.store(n, Relaxed);
            }
        }
    }

    /// WebSocket connections this worker has open now.
    pub(crate) fn connections_open(&self) -> u64 {
        self.connections_open.load(Relaxed)
    }
}

/// The counters of every worker of one server (one process, normally).
#[derive(Debug)]
pub struct Metrics {
    workers: Box<[Arc<WorkerMetrics>]>,
}

impl Metrics {
    /// Zeroed counters for `workers` workers (at least one).
    pub fn new(workers: usize) -> Self {
        Metrics {
            workers: (0..workers.max(1)).map(|_| Arc::default()).collect(),
        }
    }

    /// The counters worker `index` updates (`index` modulo the number of workers).
    pub(crate) fn worker(&self, index: usize) -> Arc<WorkerMetrics> {
        Arc::clone(&self.workers[index % self.workers.len()])
    }

    /// WebSocket connections open in all workers (what `--max-connections` limits).
    pub fn connections_open(&self) -> u64 {
        self.workers
            .iter()
            .fold(0u64, |sum, w| sum.wrapping_add(w.connections_open()))
    }

    /// All counters, summed over the workers.
    pub fn snapshot(&self) -> Snapshot {
        // Wrapping: a gauge is only ever lowered by the worker that raised it, so the
        // sum is right even if loads of different workers interleave with updates.
        let sum = |field: fn(&WorkerMetrics) -> &AtomicU64| -> u64 {
            self.workers
                .iter()
                .fold(0u64, |sum, w| sum.wrapping_add(field(w).load(Relaxed)))
        };
        let max = |field: fn(&WorkerMetrics) -> &AtomicU64| -> u64 {
            self.workers
                .iter()
                .map(|w| field(w).load(Relaxed))
                .max()
                .unwrap_or(0)
        };
        let codes = |field: fn(&WorkerMetrics) -> &CodeCounts| -> [u64; NAMED_CODES + 1] {
            std::array::from_fn(|i| {
                self.workers
                    .iter()
                    .fold(0u64, |sum, w| sum.wrapping_add(field(w).0[i].load(Relaxed)))
            })
        };
        Snapshot {
            connections_open: sum(|w| &w.connections_open),
            sockets_open: sum(|w| &w.sockets_open),
            accepted: sum(|w| &w.accepted),
            upgrades: sum(|w| &w.upgrades),
            refused: sum(|w| &w.refused),
            handshake_invalid: sum(|w| &w.handshake_invalid),
            handshake_timeouts: sum(|w| &w.handshake_timeouts),
            handshakes_evicted: sum(|w| &w.handshakes_evicted),
            http_requests: sum(|w| &w.http_requests),
            messages_in: sum(|w| &w.messages_in),
            messages_out: sum(|w| &w.messages_out),
            bytes_in: sum(|w| &w.bytes_in),
            bytes_out: sum(|w| &w.bytes_out),
            accept_pauses: sum(|w| &w.accept_pauses),
            turn_reads_max: max(|w| &w.turn_reads_max),
            turn_accepts_max: max(|w| &w.turn_accepts_max),
            head_bytes_parsed: sum(|w| &w.head_bytes_parsed),
            protocol_errors: codes(|w| &w.protocol_errors),
            closes: codes(|w| &w.closes),
            accepted_by_worker: self
                .workers
                .iter()
                .map(|w| w.accepted.load(Relaxed))
                .collect(),
        }
    }
}

/// The counters of all workers, summed; its `Display` is the stats log line, and
/// [`Snapshot::prometheus`] the `/metrics` page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// WebSocket connections open (upgraded, `on_close` not yet called).
    pub connections_open: u64,
    /// TCP connections held in any phase (handshaking, open, closing): file descriptors.
    pub sockets_open: u64,
    /// TCP connections accepted.
    pub accepted: u64,
    /// WebSocket handshakes completed (101 sent).
    pub upgrades: u64,
    /// Upgrades refused: with 503 because `max_connections` were open, or by the
    /// application's `on_upgrade`.
    pub refused: u64,
    /// Requests answered with an HTTP error (400, 405, 426, 431, 505).
    pub handshake_invalid: u64,
    /// Connections dropped for not sending a request head within the handshake timeout.
    pub handshake_timeouts: u64,
    /// The oldest connections still in the handshake, dropped for a new one when a
    /// worker held `max_handshakes`.
    pub handshakes_evicted: u64,
    /// Plain HTTP requests answered (`/`, `/healthz`, `/metrics`, 404).
    pub http_requests: u64,
    /// Data messages received whole.
    pub messages_in: u64,
    /// Data messages the handler finished sending (queued whole).
    pub messages_out: u64,
    /// Bytes read from sockets (HTTP and frame headers included).
    pub bytes_in: u64,
    /// Bytes written to sockets (HTTP and frame headers included).
    pub bytes_out: u64,
    /// Times accepting paused because the process was out of file descriptors.
    pub accept_pauses: u64,
    /// The most socket reads one loop turn of a worker has made, over all its
    /// connections (each connection gets at most 16 reads a turn).
    pub turn_reads_max: u64,
    /// The most connections one loop turn of a worker has accepted (at most 64).
    pub turn_accepts_max: u64,
    /// Bytes of request heads handed to the parser (a head cut across reads is parsed
    /// again when a line of it completes, so this stays within a small multiple of
    /// the bytes of the heads).
    pub head_bytes_parsed: u64,
    /// Connections failed for a protocol error, by close code (see [`Snapshot::codes`]).
    pub protocol_errors: [u64; NAMED_CODES + 1],
    /// Open connections closed, by the code their handler saw (see [`Snapshot::codes`]).
    pub closes: [u64; NAMED_CODES + 1],
    /// TCP connections accepted by each worker.
    pub accepted_by_worker: Vec<u64>,
}

/// Prometheus metric types.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Writes the `# HELP` and `# TYPE` lines of one metric family.
fn family(out: &mut String, name: &str, kind: Kind, help: &str) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let _ = write!(
        out,
        "# HELP wsreactor_{name} {help}\n# TYPE wsreactor_{name} {kind}\n"
    );
}

/// Writes one metric family without labels.
fn single(out: &mut String, name: &str, kind: Kind, help: &str, value: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "wsreactor_{name} {value}");
}

impl Snapshot {
    /// `(label, count)` for a per-code array: the label is the code (`"1006"`) or
    /// `"other"`. The codes in `always` are listed even at zero (so a dashboard's
    /// series exist from the start); the rest only once they have happened.
    pub fn codes<'a>(
        counts: &'a [u64; NAMED_CODES + 1],
        always: &'a [u16],
    ) -> impl Iterator<Item = (String, u64)> + 'a {
        counts.iter().enumerate().filter_map(move |(i, &count)| {
            let label = match u16::try_from(i) {
                Ok(offset) if i < NAMED_CODES => {
                    let code = FIRST_CODE + offset;
                    if count == 0 && !always.contains(&code) {
                        return None;
                    }
                    code.to_string()
                }
                _ if count == 0 => return None,
                _ => "other".to_string(),
            };
            Some((label, count))
        })
    }

    /// The snapshot in the Prometheus text exposition format (version 0.0.4).
    pub fn prometheus(&self) -> String {
        use Kind::{Counter, Gauge};
        let mut out = String::with_capacity(4096);
        single(
            &mut out,
            "connections_open",
            Gauge,
            "WebSocket connections open (upgraded and not closed yet).",
            self.connections_open,
        );
        single(
            &mut out,
            "sockets_open",
            Gauge,
            "TCP connections held in any phase (handshaking, open, closing); each is a file descriptor.",
            self.sockets_open,
        );
        single(
            &mut out,
            "connections_total",
            Counter,
            "TCP connections accepted.",
            self.accepted,
        );
        single(
            &mut out,
            "upgrades_total",
            Counter,
            "WebSocket handshakes completed (101 Switching Protocols sent).",
            self.upgrades,
        );
        single(
            &mut out,
            "refused_total",
            Counter,
            "Upgrades refused: 503 at --max-connections, or by the application.",
            self.refused,
        );
        family(
            &mut out,
            "handshake_failures_total",
            Counter,
            "Requests answered with an HTTP error (reason invalid), dropped at the handshake timeout (reason timeout), or dropped as the oldest of --max-handshakes to make room (reason evicted).",
        );
        let _ = write!(
            out,
            "wsreactor_handshake_failures_total{{reason=\"invalid\"}} {}\n\
             wsreactor_handshake_failures_total{{reason=\"timeout\"}} {}\n\
             wsreactor_handshake_failures_total{{reason=\"evicted\"}} {}\n",
            self.handshake_invalid, self.handshake_timeouts, self.handshakes_evicted
        );
        single(
            &mut out,
            "http_requests_total",
            Counter,
            "Plain HTTP requests answered (/, /healthz, /metrics, 404, 405).",
            self.http_requests,
        );
        family(
            &mut out,
            "messages_total",
            Counter,
            "WebSocket data messages: received whole (in), finished by the handler and queued (out).",
        );
        let _ = write!(
            out,
            "wsreactor_messages_total{{direction=\"in\"}} {}\n\
             wsreactor_messages_total{{direction=\"out\"}} {}\n",
            self.messages_in, self.messages_out
        );
        family(
            &mut out,
            "bytes_total",
            Counter,
            "Bytes read from (in) and written to (out) sockets, HTTP and frame headers included.",
        );
        let _ = write!(
            out,
            "wsreactor_bytes_total{{direction=\"in\"}} {}\n\
             wsreactor_bytes_total{{direction=\"out\"}} {}\n",
            self.bytes_in, self.bytes_out
        );
        family(
            &mut out,
            "protocol_errors_total",
            Counter,
            "Connections failed for breaking the protocol, by the close code sent (1002 protocol error, 1007 invalid UTF-8, 1009 too big).",
        );
        for (code, count) in Self::codes(&self.protocol_errors, &[1002, 1007, 1009]) {
            let _ = writeln!(
                out,
                "wsreactor_protocol_errors_total{{code=\"{code}\"}} {count}"
            );
        }
        family(
            &mut out,
            "closes_total",
            Counter,
            "WebSocket connections closed, by the code the handler saw: the peer's, ours, 1005 (close without a code) or 1006 (dropped without a close).",
        );
        for (code, count) in Self::codes(&self.closes, &[1000, 1001, 1006]) {
            let _ = writeln!(out, "wsreactor_closes_total{{code=\"{code}\"}} {count}");
        }
        single(
            &mut out,
            "accept_pauses_total",
            Counter,
            "Times accepting paused for 100 ms because the process was out of file descriptors.",
            self.accept_pauses,
        );
        single(
            &mut out,
            "handshake_bytes_parsed_total",
            Counter,
            "Bytes of request heads handed to the parser (again for each line of a head cut across reads).",
            self.head_bytes_parsed,
        );
        single(
            &mut out,
            "turn_reads_max",
            Gauge,
            "The most socket reads one loop turn of a worker has made, over all connections (each connection gets at most 16 a turn).",
            self.turn_reads_max,
        );
        single(
            &mut out,
            "turn_accepts_max",
            Gauge,
            "The most connections one loop turn of a worker has accepted (at most 64).",
            self.turn_accepts_max,
        );
        single(
            &mut out,
            "workers",
            Gauge,
            "Reactor threads (--workers).",
            self.accepted_by_worker.len() as u64,
        );
        family(
            &mut out,
            "worker_connections_total",
            Counter,
            "TCP connections accepted by each worker (SO_REUSEPORT spreads them).",
        );
        for (worker, count) in self.accepted_by_worker.iter().enumerate() {
            let _ = writeln!(
                out,
                "wsreactor_worker_connections_total{{worker=\"{worker}\"}} {count}"
            );
        }
        out
    }
}

/// The stats log line: `open 3, sockets 4, accepted 120, …`.
impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "open {}, sockets {}, accepted {}, upgrades {}, refused {}, bad handshakes {}, handshake timeouts {}, http {}, messages in {} out {}, bytes in {} out {}",
            self.connections_open,
            self.sockets_open,
            self.accepted,
            self.upgrades,
            self.refused,
            self.handshake_invalid,
            self.handshake_timeouts,
            self.http_requests,
            self.messages_in,
            self.messages_out,
            self.bytes_in,
            self.bytes_out,
        )?;
        for (title, counts) in [
            ("protocol errors", &self.protocol_errors),
            ("closes", &self.closes),
        ] {
            write!(f, ", {title} {}", counts.iter().sum::<u64>())?;
            let mut codes = Self::codes(counts, &[]).peekable();
            if codes.peek().is_some() {
                let list: Vec<String> = codes.map(|(code, n)| format!("{code}: {n}")).collect();
                write!(f, " ({})", list.join(", "))?;
            }
        }
        if self.accept_pauses > 0 {
            write!(f, ", accept pauses {}", self.accept_pauses)?;
        }
        if self.accepted_by_worker.len() > 1 {
            write!(f, ", accepted by worker {:?}", self.accepted_by_worker)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_summed_and_codes_bucketed() {
        let metrics = Metrics::new(2);
        let (a, b) = (metrics.worker(0), metrics.worker(1));
        a.accepted();
        b.accepted();
        b.accepted();
        a.opened();
        b.opened();
        b.opened();
        b.closed(CloseCode(1006));
        b.closed(CloseCode(4000));
        a.protocol_error(CloseCode::PROTOCOL_ERROR);
        a.bytes_in(10);
        b.bytes_in(5);
        let s = metrics.snapshot();
        assert_eq!(s.accepted, 3);
        assert_eq!(s.accepted_by_worker, vec![1, 2]);
        assert_eq!(s.sockets_open, 3);
        assert_eq!(s.bytes_in, 15);
        assert_eq!(s.closes[6], 1);
        assert_eq!(s.closes[NAMED_CODES], 1);
        assert_eq!(s.protocol_errors[2], 1);
        let text = s.prometheus();
        assert!(
            text.contains("wsreactor_closes_total{code=\"1006\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("wsreactor_closes_total{code=\"other\"} 1\n"));
        assert!(text.contains("wsreactor_closes_total{code=\"1000\"} 0\n"));
        assert!(!text.contains("code=\"1003\""));
        assert!(text.contains("wsreactor_protocol_errors_total{code=\"1002\"} 1\n"));
        assert!(text.contains("wsreactor_worker_connections_total{worker=\"1\"} 2\n"));
        let line = s.to_string();
        assert!(line.contains("closes 2 (1006: 1, other: 1)"), "{line}");
        assert!(line.contains("accepted by worker [1, 2]"), "{line}");
    }

    #[test]
    fn every_sample_follows_its_help_and_type() {
        let text = Metrics::new(3).snapshot().prometheus();
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap_or_default().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert_eq!(declared.last().map(String::as_str), Some(name), "{line}");
                let value = line.rsplit(' ').next().unwrap_or_default();
                assert!(value.parse::<u64>().is_ok(), "{line}");
            }
        }
    }
}
