//! The command line: every [`Config`] field as a flag, with its default, mapped onto
//! the library's [`Config`] (which validates the combination).
//!
//! Sizes take units (`65536`, `64KiB`, `16MiB`, `1GiB`; `KB`/`MB`/`GB` are powers
//! of 1000), times take `ms`, `s`, `m` or `h` (a bare number is seconds), and the
//! address may be a host name (`localhost:9001`).

use clap::Parser;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;
use wsreactor::Config;

/// An RFC 6455 WebSocket echo server on a single-threaded mio event loop.
///
/// Messages of any size are echoed as a stream: server memory stays bounded by the
/// read buffer and the write watermarks, whatever the message size. `GET /` serves a
/// demo page; `GET /healthz` answers 200; `GET /metrics` serves the counters in the
/// Prometheus text format. Sizes take units (64KiB, 16MiB, 1GiB), times take ms, s, m
/// or h (a bare number is seconds). Logging: RUST_LOG (default info).
#[derive(Parser, Debug)]
#[command(name = "wsreactor", version, about)]
pub struct Cli {
    /// Address to listen on: IP:PORT or HOST:PORT (the first address the name
    /// resolves to).
    #[arg(long, default_value = "127.0.0.1:9001", value_parser = parse_addr)]
    pub addr: SocketAddr,

    /// Most WebSocket connections open at once, in all workers together; further
    /// upgrades are refused with 503 and Retry-After.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,

    /// Largest HTTP request head; a longer one is refused with 431.
    #[arg(long, default_value = "8KiB", value_parser = parse_size)]
    pub max_handshake_size: u64,

    /// Most connections still in the opening handshake, per worker; one more drops
    /// the oldest of them (slowloris guard).
    #[arg(long, default_value_t = 1024)]
    pub max_handshakes: usize,

    /// Largest payload one incoming frame may declare (close 1009 above it). The
    /// streaming echo needs no limit; the protocol's own is 2^63-1.
    #[arg(long, value_parser = parse_size)]
    pub max_frame_size: Option<u64>,

    /// Largest message the --buffered echo accepts (close 1009 above it, before
    /// anything is buffered for the excess).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub max_message_size: u64,

    /// Largest payload of one outgoing frame: longer messages are sent as fragments,
    /// so a pong or a close can go out between them (RFC 6455 §5.4).
    #[arg(long, default_value = "64KiB", value_parser = parse_size)]
    pub max_frame_out: u64,

    /// Size of each worker's shared read buffer: the most read from one socket at a
    /// time. Connections have no read buffer of their own.
    #[arg(long, default_value = "256KiB", value_parser = parse_size)]
    pub read_buffer_size: u64,

    /// Queued outgoing bytes above which a connection stops reading. It is also the
    /// echo window for clients that write a whole message before reading any of the
    /// echo: with the kernel's socket buffers it must hold the rest of the message.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub write_high_watermark: u64,

    /// Queued outgoing bytes below which a paused connection reads again.
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    pub write_low_watermark: u64,

    /// Time a client has to complete the opening handshake (slowloris guard).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Time to wait for the peer's close frame, or for its TCP close after ours,
    /// before dropping the connection (RFC 6455 §7.1.1).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub close_timeout: Duration,

    /// Silence after which the server pings a connection; it is dropped if nothing
    /// arrives within as long again. 0 turns keepalive off.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Time to wait at shutdown (SIGINT/SIGTERM) for clients to answer close 1001.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Cap the kernel receive buffer of each connection (SO_RCVBUF); by default Linux
    /// autotunes it, up to several MiB per connection.
    #[arg(long, value_parser = parse_size)]
    pub so_rcvbuf: Option<u64>,

    /// Cap the kernel send buffer of each connection (SO_SNDBUF).
    #[arg(long, value_parser = parse_size)]
    pub so_sndbuf: Option<u64>,

    /// Reactors to run, each on its own thread with its own listener on the same
    /// address (SO_REUSEPORT). One per core is the most that helps.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,

    /// Time between two `stats:` lines in the log with the counters that
    /// `GET /metrics` serves. 0 turns them off.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub stats_interval: Duration,

    /// Echo through whole messages: buffer each message (up to --max-message-size,
    /// close 1009 above it) and send it back in one piece.
    #[arg(long)]
    pub buffered: bool,

    /// Subprotocols to accept (RFC 6455 §1.9), comma-separated, in order of
    /// preference: the first one the client offers is chosen. `*` accepts whatever
    /// the client offers first. By default none is chosen.
    #[arg(long, value_delimiter = ',')]
    pub subprotocols: Vec<String>,
}

impl Cli {
    /// The library configuration these flags describe, validated.
    pub fn config(&self) -> Result<Config, String> {
        let size = |flag: &str, value: u64| {
            usize::try_from(value).map_err(|_| format!("--{flag} {value} is too large"))
        };
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        Config::builder()
            .addr(self.addr)
            .max_connections(self.max_connections)
            .max_handshake_size(size("max-handshake-size", self.max_handshake_size)?)
            .max_handshakes(self.max_handshakes)
            .max_frame_size(
                self.max_frame_size
                    .unwrap_or(Config::default().max_frame_size),
            )
            .max_message_size(self.max_message_size)
            .max_frame_out(size("max-frame-out", self.max_frame_out)?)
            .read_buffer_size(size("read-buffer-size", self.read_buffer_size)?)
            .write_high_watermark(size("write-high-watermark", self.write_high_watermark)?)
            .write_low_watermark(size("write-low-watermark", self.write_low_watermark)?)
            .handshake_timeout(self.handshake_timeout)
            .close_timeout(self.close_timeout)
            .idle_timeout(nonzero(self.idle_timeout))
            .shutdown_timeout(self.shutdown_timeout)
            .so_rcvbuf(self.so_rcvbuf.map(|v| size("so-rcvbuf", v)).transpose()?)
            .so_sndbuf(self.so_sndbuf.map(|v| size("so-sndbuf", v)).transpose()?)
            .workers(self.workers)
            .stats_interval(nonzero(self.stats_interval))
            .build()
            // The library names fields; the user typed flags.
            .map_err(|e| format!("--{}", e.to_string().replace('_', "-")))
    }
}

/// `IP:PORT`, or `HOST:PORT` resolved to its first address.
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {text:?}: {e} (expected HOST:PORT)"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// A byte count: digits, then optionally a unit (`B`, `KiB`, `MiB`, `GiB`, `TiB`, or
/// the decimal `KB`, `MB`, `GB`, `TB`; case-insensitive, a space allowed).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text)?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "unknown size unit {unit:?} (use B, KiB, MiB, GiB, or KB, MB, GB)"
            ))
        }
    };
    let value = number * multiplier as f64;
    if value.fract() != 0.0 || value >= u64::MAX as f64 {
        return Err(format!("{text:?} is not a whole number of bytes"));
    }
    Ok(value as u64)
}

/// A duration: digits, then optionally a unit (`ms`, `s`, `m`, `h`); a bare number is
/// seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text)?;
    let seconds = match unit.to_ascii_lowercase().as_str() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("unknown time unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Splits `1.5 MiB` into 1.5 and `MiB`. The number may have a fraction, never a sign.
fn split_number(text: &str) -> Result<(f64, &str), String> {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(end);
    let number = digits
        .parse::<f64>()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    Ok((number, unit.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5MiB"), Ok(3 << 19));
        assert_eq!(parse_size("2kb"), Ok(2000));
        assert!(parse_size("16 parsecs").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("0.5B").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn durations_take_units_and_bare_numbers_are_seconds() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10 fortnights").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn host_names_resolve() {
        let addr = parse_addr("localhost:9001").expect("localhost resolves");
        assert!(addr.ip().is_loopback());
        assert_eq!(addr.port(), 9001);
        assert!(parse_addr("localhost").is_err());
    }

    #[test]
    fn inconsistent_flags_are_refused_naming_the_flag() {
        let cli = Cli::parse_from([
            "wsreactor",
            "--write-high-watermark",
            "1MiB",
            "--write-low-watermark",
            "2MiB",
        ]);
        let error = cli.config().unwrap_err();
        assert!(error.starts_with("--write-low-watermark"), "{error}");
        let cli = Cli::parse_from(["wsreactor", "--max-frame-out", "0"]);
        assert!(cli.config().unwrap_err().starts_with("--max-frame-out"));
    }

    #[test]
    fn no_flags_give_the_library_defaults() {
        let config = Cli::parse_from(["wsreactor"]).config().expect("valid");
        let defaults = Config::default();
        assert_eq!(format!("{config:?}"), format!("{defaults:?}"));
    }
}
