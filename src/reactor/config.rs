//! Every limit of the server, with its default and the reason for it. The same struct
//! is the command line (`wsreactor --help` prints these docs and defaults).

use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;

/// Server configuration. Sizes are in bytes, times in whole seconds. Only the idle
/// (keepalive) timer can be turned off, with 0; the other timeouts are always on.
#[derive(Args, Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub addr: SocketAddr,

    /// Most WebSocket connections open at once, in all workers together; further
    /// upgrades are refused with 503 and Retry-After.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,

    /// Largest HTTP request head; a longer one is refused with 431. 8 KiB is what
    /// common servers accept and far more than a browser's upgrade request needs.
    #[arg(long, default_value_t = 8 * 1024)]
    pub max_handshake_size: usize,

    /// Largest payload one incoming frame may declare (close 1009 above it). The
    /// streaming echo needs no limit; the protocol's own is 2^63-1.
    #[arg(long, default_value_t = crate::protocol::header::MAX_PAYLOAD_LEN)]
    pub max_frame_size: u64,

    /// Largest message a buffering (message-level) handler accepts (close 1009 above
    /// it, before anything is allocated for the excess). Streaming handlers ignore it.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_message_size: u64,

    /// Largest payload of one outgoing frame: longer messages are sent as fragments,
    /// so a pong or a close can go out between them (RFC 6455 §5.4).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_frame_out: usize,

    /// Size of the reactor's shared read buffer: the most read from one socket at a
    /// time. Connections have no read buffer of their own. 256 KiB echoes 1 MiB
    /// messages about 1.5 times as fast as 64 KiB (fewer, larger reads and writes;
    /// docs/BENCHMARKS.md), and there is one per worker.
    #[arg(long, default_value_t = 256 * 1024)]
    pub read_buffer_size: usize,

    /// Queued outgoing bytes above which a connection stops reading: a client that
    /// sends without reading meets TCP back-pressure instead of growing server memory.
    /// It is also the echo window for clients that write a whole message before
    /// reading any of the echo (common in blocking clients, and in Autobahn's 9.*
    /// cases): with the kernel's socket buffers it must hold the rest of the message,
    /// or both sides wait for each other. 16 MiB serves such clients up to about 24
    /// MiB here; clients that read while they write need none of it.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub write_high_watermark: usize,

    /// Queued outgoing bytes below which a paused connection reads again.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub write_low_watermark: usize,

    /// Seconds a client has to complete the opening handshake (slowloris guard).
    #[arg(long, default_value_t = 10)]
    pub handshake_timeout: u64,

    /// Seconds to wait for the peer's close frame, or for its TCP close after ours,
    /// before dropping the connection (RFC 6455 §7.1.1).
    #[arg(long, default_value_t = 5)]
    pub close_timeout: u64,

    /// Seconds of silence after which the server pings a connection; it is dropped
    /// if nothing arrives within as long again. 0 turns keepalive off.
    #[arg(long, default_value_t = 60)]
    pub idle_timeout: u64,

    /// Seconds to wait at shutdown (SIGINT/SIGTERM) for clients to answer close 1001.
    #[arg(long, default_value_t = 5)]
    pub shutdown_timeout: u64,

    /// Cap the kernel receive buffer of each connection (SO_RCVBUF); by default Linux
    /// autotunes it, up to several MiB per connection.
    #[arg(long)]
    pub so_rcvbuf: Option<usize>,

    /// Cap the kernel send buffer of each connection (SO_SNDBUF).
    #[arg(long)]
    pub so_sndbuf: Option<usize>,

    /// Reactors to run, each on its own thread with its own listener on the same
    /// address (SO_REUSEPORT: the kernel spreads new connections over them). They share
    /// nothing but the counters. One per core is the most that helps.
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub workers: usize,

    /// Seconds between two `stats:` lines in the log (info level) with the counters
    /// that `GET /metrics` serves. 0 turns them off.
    #[arg(long, default_value_t = 0)]
    pub stats_interval: u64,
}

impl Default for Config {
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        // Parsing no arguments yields exactly the defaults declared above.
        <Defaults as clap::Parser>::parse_from(["wsreactor"]).config
    }
}

impl Config {
    /// The handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout)
    }

    /// The close timeout as a duration.
    pub fn close_timeout(&self) -> Duration {
        Duration::from_secs(self.close_timeout)
    }

    /// The keepalive interval, if keepalive is on.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout))
    }

    /// The interval between stats lines, if they are on.
    pub fn stats_interval(&self) -> Option<Duration> {
        (self.stats_interval > 0).then(|| Duration::from_secs(self.stats_interval))
    }

    /// The shutdown grace period as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout)
    }
}
