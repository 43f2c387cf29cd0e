//! Every limit of the server, with its default and the reason for it.
//!
//! [`Config`] is plain data: read its fields, build one with [`Config::builder`], and
//! check it with [`Config::validate`] (the server does, before it binds).

use crate::protocol::header::MAX_PAYLOAD_LEN;
use crate::protocol::time::MAX_SPAN;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Server configuration. Sizes are in bytes.
///
/// ```
/// use std::time::Duration;
/// use wsreactor::Config;
///
/// let config = Config::builder()
///     .addr("127.0.0.1:0".parse().unwrap())
///     .write_high_watermark(1 << 20)
///     .write_low_watermark(256 << 10)
///     .idle_timeout(Some(Duration::from_secs(30)))
///     .build()?;
/// assert_eq!(config.max_frame_out, 64 * 1024);
/// # Ok::<(), wsreactor::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Address to listen on (default `127.0.0.1:9001`; port 0 picks a free port).
    pub addr: SocketAddr,

    /// Most WebSocket connections open at once, in all workers together; further
    /// upgrades are refused with 503 and `Retry-After` (default 10,000).
    pub max_connections: usize,

    /// Largest HTTP request head; a longer one is refused with 431 (default 8 KiB:
    /// what common servers accept, and far more than a browser's upgrade request).
    pub max_handshake_size: usize,

    /// Most connections still in the opening handshake, per worker (default 1024).
    /// One more is made room for by dropping the oldest: a slowloris of half-open
    /// sockets cannot crowd out the clients that complete their handshake in
    /// milliseconds, and their heads hold at most this × `max_handshake_size` bytes.
    pub max_handshakes: usize,

    /// Largest payload one incoming frame may declare (close 1009 above it). A
    /// streaming handler needs no limit; the default is the protocol's own, 2^63-1.
    pub max_frame_size: u64,

    /// Largest message a handler that takes whole messages accepts (close 1009 above
    /// it, before anything is buffered for the excess; default 64 MiB). Streaming
    /// handlers ignore it.
    pub max_message_size: u64,

    /// Largest payload of one outgoing frame: longer messages are sent as fragments,
    /// so a pong or a close can go out between them (RFC 6455 §5.4; default 64 KiB).
    pub max_frame_out: usize,

    /// Size of the reactor's shared read buffer: the most read from one socket at a
    /// time (default 256 KiB, one per worker). Connections have no read buffer of
    /// their own. 256 KiB echoes 1 MiB messages about 1.5 times as fast as 64 KiB
    /// (fewer, larger reads and writes; docs/BENCHMARKS.md).
    pub read_buffer_size: usize,

    /// Queued outgoing bytes above which a connection stops reading (default 16 MiB):
    /// a client that sends without reading meets TCP back-pressure instead of growing
    /// server memory. It is also the echo window for clients that write a whole
    /// message before reading any of the echo (common in blocking clients, and in
    /// Autobahn's 9.* cases): with the kernel's socket buffers it must hold the rest
    /// of the message, or both sides wait for each other. Clients that read while
    /// they write need none of it.
    pub write_high_watermark: usize,

    /// Queued outgoing bytes below which a paused connection reads again, and the
    /// handler hears `on_drain` (default 4 MiB).
    pub write_low_watermark: usize,

    /// Time a client has to complete the opening handshake (slowloris guard; 10 s).
    pub handshake_timeout: Duration,

    /// Time to wait for the peer's close frame, or for its TCP close after ours,
    /// before dropping the connection (RFC 6455 §7.1.1; 5 s).
    pub close_timeout: Duration,

    /// Silence after which the server pings a connection; it is dropped if nothing
    /// arrives within as long again (default 60 s). `None` turns keepalive off.
    pub idle_timeout: Option<Duration>,

    /// Time a graceful shutdown waits for clients to answer close 1001 (5 s).
    pub shutdown_timeout: Duration,

    /// Cap on the kernel receive buffer of each connection (`SO_RCVBUF`); by default
    /// Linux autotunes it, up to several MiB per connection.
    pub so_rcvbuf: Option<usize>,

    /// Cap on the kernel send buffer of each connection (`SO_SNDBUF`).
    pub so_sndbuf: Option<usize>,

    /// Reactors that [`crate::Workers`] runs, each on its own thread with its own
    /// listener on the same address (`SO_REUSEPORT`: the kernel spreads new
    /// connections over them). They share nothing but the counters. One per core is
    /// the most that helps (default 1, at most 1024).
    pub workers: usize,

    /// Time between two `stats:` lines in the log (info level) with the counters of
    /// [`crate::Metrics`]; `None` (the default) turns them off.
    pub stats_interval: Option<Duration>,
}

/// The smallest read buffer: it must hold a frame header and a useful payload.
const MIN_READ_BUFFER: usize = 1024;
/// The smallest request-head limit: a minimal upgrade request is about 150 bytes.
const MIN_HANDSHAKE_SIZE: usize = 256;

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 9001)),
            max_connections: 10_000,
            max_handshake_size: 8 * 1024,
            max_handshakes: 1024,
            max_frame_size: MAX_PAYLOAD_LEN,
            max_message_size: 64 * 1024 * 1024,
            max_frame_out: 64 * 1024,
            read_buffer_size: 256 * 1024,
            write_high_watermark: 16 * 1024 * 1024,
            write_low_watermark: 4 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(60)),
            shutdown_timeout: Duration::from_secs(5),
            so_rcvbuf: None,
            so_sndbuf: None,
            workers: 1,
            stats_interval: None,
        }
    }
}

impl Config {
    /// A builder that starts from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder(Config::default())
    }

    /// Checks that the values make sense together: the low watermark is not above
    /// the high one, sizes are at least their minimum, timeouts are between 1 ms and
    /// [`MAX_SPAN`] (2^30 ms, 12.4 days: the timers count 32-bit milliseconds). The first problem found is returned, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least = |field, value: u64, min: u64| {
            if value < min {
                Err(ConfigError::new(
                    field,
                    format!("is {value}, below the minimum of {min}"),
                ))
            } else {
                Ok(())
            }
        };
        at_least("max_connections", self.max_connections as u64, 1)?;
        at_least(
            "max_handshake_size",
            self.max_handshake_size as u64,
            MIN_HANDSHAKE_SIZE as u64,
        )?;
        at_least("max_handshakes", self.max_handshakes as u64, 1)?;
        at_least("max_frame_size", self.max_frame_size, 1)?;
        at_least("max_message_size", self.max_message_size, 1)?;
        at_least("max_frame_out", self.max_frame_out as u64, 1)?;
        at_least(
            "read_buffer_size",
            self.read_buffer_size as u64,
            MIN_READ_BUFFER as u64,
        )?;
        at_least("write_high_watermark", self.write_high_watermark as u64, 1)?;
        at_least("workers", self.workers as u64, 1)?;
        if self.workers > 1024 {
            return Err(ConfigError::new(
                "workers",
                format!("is {}, above the maximum of 1024", self.workers),
            ));
        }
        if self.write_low_watermark > self.write_high_watermark {
            return Err(ConfigError::new(
                "write_low_watermark",
                format!(
                    "({}) is above write_high_watermark ({})",
                    self.write_low_watermark, self.write_high_watermark
                ),
            ));
        }
        if self.max_frame_size > MAX_PAYLOAD_LEN || self.max_message_size > MAX_PAYLOAD_LEN {
            return Err(ConfigError::new(
                "max_frame_size",
                "and max_message_size may not exceed 2^63-1 (RFC 6455 §5.2)".to_string(),
            ));
        }
        let timeouts = [
            ("handshake_timeout", Some(self.handshake_timeout)),
            ("close_timeout", Some(self.close_timeout)),
            ("idle_timeout", self.idle_timeout),
            ("shutdown_timeout", Some(self.shutdown_timeout)),
            ("stats_interval", self.stats_interval),
        ];
        for (field, timeout) in timeouts {
            if let Some(t) = timeout {
                if t < Duration::from_millis(1) || t > MAX_SPAN {
                    return Err(ConfigError::new(
                        field,
                        format!("is {t:?}; it must be between 1 ms and 12 days (2^30 ms, the longest span the timers keep)"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A value of [`Config`] that cannot work, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    problem: String,
}

impl ConfigError {
    fn new(field: &'static str, problem: String) -> Self {
        ConfigError { field, problem }
    }

    /// The name of the offending [`Config`] field.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Builds a [`Config`] from the defaults, one field at a time; [`ConfigBuilder::build`]
/// validates the result.
#[derive(Clone, Debug)]
pub struct ConfigBuilder(Config);

/// One builder method per field, each documented by the field it sets.
macro_rules! setters {
    ($($field:ident: $ty:ty),* $(,)?) => {
        impl ConfigBuilder {
            $(
                #[doc = concat!("Sets [`Config::", stringify!($field), "`].")]
                pub fn $field(mut self, value: $ty) -> Self {
                    self.0.$field = value;
                    self
                }
            )*
        }
    };
}

setters! {
    addr: SocketAddr,
    max_connections: usize,
    max_handshake_size: usize,
    max_handshakes: usize,
    max_frame_size: u64,
    max_message_size: u64,
    max_frame_out: usize,
    read_buffer_size: usize,
    write_high_watermark: usize,
    write_low_watermark: usize,
    handshake_timeout: Duration,
    close_timeout: Duration,
    idle_timeout: Option<Duration>,
    shutdown_timeout: Duration,
    so_rcvbuf: Option<usize>,
    so_sndbuf: Option<usize>,
    workers: usize,
    stats_interval: Option<Duration>,
}

impl ConfigBuilder {
    /// The configuration, if [`Config::validate`] accepts it.
    pub fn build(self) -> Result<Config, ConfigError> {
        self.0.validate()?;
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn a_low_watermark_above_the_high_one_is_refused() {
        let error = Config::builder()
            .write_high_watermark(1000)
            .write_low_watermark(2000)
            .build()
            .unwrap_err();
        assert_eq!(error.field(), "write_low_watermark");
        assert_eq!(
            error.to_string(),
            "write_low_watermark (2000) is above write_high_watermark (1000)"
        );
    }

    #[test]
    fn sizes_below_their_minimum_are_refused() {
        let cases = [
            ("max_frame_out", Config::builder().max_frame_out(0)),
            ("read_buffer_size", Config::builder().read_buffer_size(0)),
            (
                "max_handshake_size",
                Config::builder().max_handshake_size(10),
            ),
            ("max_connections", Config::builder().max_connections(0)),
            ("workers", Config::builder().workers(0)),
            ("workers", Config::builder().workers(5000)),
        ];
        for (field, builder) in cases {
            assert_eq!(builder.build().unwrap_err().field(), field);
        }
    }

    #[test]
    fn timeouts_must_be_between_a_millisecond_and_the_longest_timer_span() {
        let zero = Config::builder().close_timeout(Duration::ZERO).build();
        assert_eq!(zero.unwrap_err().field(), "close_timeout");
        let long = Config::builder()
            .idle_timeout(Some(MAX_SPAN + Duration::from_millis(1)))
            .build();
        assert_eq!(long.unwrap_err().field(), "idle_timeout");
        assert!(Config::builder().idle_timeout(None).build().is_ok());
    }
}
