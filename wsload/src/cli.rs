//! The command line: global options, the four modes, and the checks that keep the
//! tool on loopback.

use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// A load generator for WebSocket echo servers, on loopback only.
///
/// One single-threaded mio loop drives every connection (non-blocking, reading and
/// writing at the same time). Client frames are masked; every echoed byte is checked
/// against the message it answers, which is generated from (connection index, message
/// index) so that nothing is kept to compare with. Every run is bounded by its count
/// and by --timeout. Exit status: 0 on success, 1 on a timeout or on any error
/// (connection, handshake, verification, close), 2 on bad arguments.
#[derive(Parser, Debug)]
#[command(name = "wsload", version, about, long_about)]
pub struct Cli {
    /// The server's URL: ws:// on a loopback host (127.0.0.0/8, localhost or [::1]).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:9001/")]
    pub url: String,

    /// Print exactly one JSON object line on stdout instead of the summary (no
    /// progress bar).
    #[arg(long, global = true)]
    pub json: bool,

    /// Hard limit on the whole run, in seconds: past it, wsload stops and exits 1.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 60.0)]
    pub timeout: f64,

    /// Source addresses to spread the connections over, round-robin: one address
    /// (127.0.0.2), a range (127.0.0.2-127.0.0.50) or a comma-separated list of either.
    /// Each socket is bound to (address, port 0) before it connects. Linux has about
    /// 28,000 ephemeral ports per source address (net.ipv4.ip_local_port_range,
    /// 32768-60999), so more connections than that to one server need more than one
    /// address; and connect() gets slow once about half of them are in use (its port
    /// search tries one parity first), so spread more than ~14,000 connections.
    /// Without this option sockets are not bound (the kernel picks 127.0.0.1).
    #[arg(long, global = true, value_name = "IP | A-B")]
    pub source_ips: Option<String>,

    /// No progress bar on stderr (it only appears on a terminal, for runs longer than
    /// about 2 s).
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// Seed of the payloads and masking keys.
    #[arg(long, global = true, default_value_t = 0x5eed_cafe)]
    pub seed: u64,

    /// Most connections in the TCP connect or opening handshake at once (keeps the
    /// server's accept backlog from overflowing).
    #[arg(long, global = true, value_name = "N", default_value_t = 1000)]
    pub max_connecting: usize,

    /// The server is a plain TCP echo, not a WebSocket server: it answers the upgrade
    /// request, then sends back every byte it receives, unchanged (the ceiling
    /// `opponent_mio_raw` of `scripts/compare`). The echo is then this client's own
    /// masked frames: they are decoded as masked frames and every payload byte is
    /// verified as usual, and the close frame that comes back ends the connection
    /// from this side (such a server never closes first).
    #[arg(long, global = true)]
    pub raw_echo: bool,

    /// What to measure.
    #[command(subcommand)]
    pub mode: Mode,
}

/// The modes.
#[derive(Subcommand, Debug)]
pub enum Mode {
    /// Many connections, each keeping --in-flight messages in flight: messages/s,
    /// MiB/s and latency percentiles, every echoed byte verified.
    Echo(EchoArgs),
    /// One connection, --count large messages back to back (up to 4 in flight): MiB/s.
    Stream(StreamArgs),
    /// One huge message streamed (a 64-bit length; one frame unless --frame-size),
    /// generated and verified on the fly with a running checksum: MiB/s.
    Huge(HugeArgs),
    /// Opens --connections WebSocket connections and holds them idle: time to open
    /// them all, server memory per connection (--server-pid), clean closes.
    Idle(IdleArgs),
}

/// `wsload echo`.
#[derive(Args, Debug)]
pub struct EchoArgs {
    /// Connections, all open before the first message is sent.
    #[arg(long, value_name = "C", default_value_t = 1)]
    pub connections: usize,

    /// Messages each connection keeps in flight (sent and not yet echoed).
    #[arg(long, value_name = "W", default_value_t = 1)]
    pub in_flight: usize,

    /// Payload bytes per message.
    #[arg(long, value_name = "BYTES", default_value_t = 16)]
    pub size: u64,

    /// Send text messages (ASCII) instead of binary ones.
    #[arg(long)]
    pub text: bool,

    /// Messages per connection; the run ends when all are echoed.
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    pub messages: Option<u64>,

    /// Seconds of sending (default 10 without --messages); in-flight echoes are then
    /// awaited.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// The server's process id: report its VmRSS before and after, and its peak.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
}

/// `wsload stream`.
#[derive(Args, Debug)]
pub struct StreamArgs {
    /// Payload bytes per message.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub size: u64,

    /// Messages.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub count: u64,

    /// Send text messages (ASCII) instead of binary ones.
    #[arg(long)]
    pub text: bool,

    /// Messages in flight at most.
    #[arg(long, value_name = "W", default_value_t = 4)]
    pub in_flight: usize,

    /// The server's process id: report its VmRSS before and after, and its peak.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
}

/// `wsload huge`.
#[derive(Args, Debug)]
pub struct HugeArgs {
    /// Payload bytes of the message (4294967297 needs a length above 2^32).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    pub size: u64,

    /// Payload bytes per frame (binary, then continuations); default one frame.
    #[arg(long, value_name = "N")]
    pub frame_size: Option<u64>,

    /// The server's process id: report its VmRSS before and after, and its peak.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
}

/// `wsload idle`.
#[derive(Args, Debug)]
pub struct IdleArgs {
    /// Connections to open and hold.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub connections: usize,

    /// Seconds to hold them all open (pings from the server are answered).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub hold: f64,

    /// The server's process id: report its VmRSS before and after, and bytes per
    /// connection.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Connections started per second at most (default: as fast as the server takes
    /// them, --max-connecting at a time).
    #[arg(long, value_name = "N/s")]
    pub open_rate: Option<f64>,
}

/// Where the connections go, from `--url`.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// The server's address (a loopback address).
    pub addr: SocketAddr,
    /// `host[:port]` as given, for the Host header.
    pub authority: String,
    /// The request target, at least `/`.
    pub path: String,
}

/// Parses a `ws://` URL and refuses any host that is not a loopback address.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let rest = match url.strip_prefix("ws://") {
        Some(rest) => rest,
        None if url.starts_with("wss://") => {
            return Err("wss:// (TLS) is not supported: use ws://".into())
        }
        None => return Err(format!("{url:?}: the URL must start with ws://")),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) if rest[at..].starts_with('?') => (&rest[..at], format!("/{}", &rest[at..])),
        Some(at) => (&rest[..at], rest[at..].to_string()),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err(format!("{url:?}: user information is not supported"));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, parse_port(port, url)?),
            None if after.is_empty() => (host, 80),
            None => return Err(format!("{url:?}: bad port")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, parse_port(port, url)?),
            None => (authority, 80),
        }
    };
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().map_err(|_| {
            format!("refusing host {host:?}: wsload only targets loopback addresses (127.0.0.0/8, localhost, [::1])")
        })?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "refusing {ip}: wsload only targets loopback addresses (127.0.0.0/8, localhost, [::1])"
        ));
    }
    Ok(Target {
        url: url.to_string(),
        addr: SocketAddr::new(ip, port),
        authority: authority.to_string(),
        path,
    })
}

fn parse_port(port: &str, url: &str) -> Result<u16, String> {
    port.parse()
        .map_err(|_| format!("{url:?}: bad port {port:?}"))
}

/// Parses `--source-ips`: an address, a range `A-B` of IPv4 addresses, or a
/// comma-separated list of those. Every address must be a loopback address of the
/// target's family.
pub fn parse_source_ips(spec: &str, target: IpAddr) -> Result<Vec<IpAddr>, String> {
    const MAX: usize = 1 << 16;
    let mut ips = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let parse = |s: &str| {
                s.trim()
                    .parse::<Ipv4Addr>()
                    .map_err(|_| format!("--source-ips: {s:?} is not an IPv4 address"))
            };
            let (a, b) = (u32::from(parse(a)?), u32::from(parse(b)?));
            if a > b {
                return Err(format!("--source-ips: empty range {part:?}"));
            }
            if (b - a) as usize >= MAX {
                return Err(format!("--source-ips: range {part:?} is too large"));
            }
            ips.extend((a..=b).map(|ip| IpAddr::V4(Ipv4Addr::from(ip))));
        } else {
            let ip = part
                .parse::<IpAddr>()
                .map_err(|_| format!("--source-ips: {part:?} is not an IP address"))?;
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        return Err("--source-ips: no address given".into());
    }
    if ips.len() > MAX {
        return Err("--source-ips: too many addresses".into());
    }
    for ip in &ips {
        if !ip.is_loopback() {
            return Err(format!(
                "--source-ips: refusing {ip}: only loopback source addresses are allowed"
            ));
        }
        if ip.is_ipv4() != target.is_ipv4() {
            return Err(format!(
                "--source-ips: {ip} is not of the same family as the server address {target}"
            ));
        }
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_accepted() {
        let t = parse_url("ws://127.0.0.1:9001/").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(t.path, "/");
        assert_eq!(t.authority, "127.0.0.1:9001");
        let t = parse_url("ws://localhost:8080/chat?room=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path, "/chat?room=1");
        let t = parse_url("ws://[::1]:9001").unwrap();
        assert_eq!(t.addr, "[::1]:9001".parse().unwrap());
        assert_eq!(t.path, "/");
        let t = parse_url("ws://127.3.4.5?x").unwrap();
        assert_eq!(t.addr, "127.3.4.5:80".parse().unwrap());
        assert_eq!(t.path, "/?x");
    }

    #[test]
    fn other_hosts_are_refused() {
        for url in [
            "ws://10.0.0.1:9001/",
            "ws://192.168.1.1/",
            "ws://8.8.8.8/",
            "ws://example.com/",
            "ws://[::ffff:127.0.0.1]/",
            "ws://[2001:db8::1]:80/",
            "wss://127.0.0.1/",
            "http://127.0.0.1/",
            "ws://127.0.0.1:99999/",
        ] {
            assert!(parse_url(url).is_err(), "{url}");
        }
    }

    #[test]
    fn source_ip_ranges_expand() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let ips = parse_source_ips("127.0.0.2-127.0.0.4", v4).unwrap();
        assert_eq!(ips.len(), 3);
        assert_eq!(ips[2], "127.0.0.4".parse::<IpAddr>().unwrap());
        let ips = parse_source_ips("127.0.0.1, 127.0.1.0-127.0.1.1", v4).unwrap();
        assert_eq!(ips.len(), 3);
        assert!(parse_source_ips("10.0.0.1", v4).is_err());
        assert!(parse_source_ips("127.0.0.5-127.0.0.2", v4).is_err());
        assert!(parse_source_ips("::1", v4).is_err());
        assert!(parse_source_ips("::1", "::1".parse().unwrap()).is_ok());
    }
}
