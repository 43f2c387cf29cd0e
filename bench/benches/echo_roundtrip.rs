//! End to end: wsreactor against the opponents of `examples/opponents/`, each a real
//! server process on 127.0.0.1, driven over loopback by the same blocking `tungstenite`
//! client. One criterion group per workload, one benchmark per server in it, so the
//! report shows the servers side by side:
//!
//! * `roundtrip_16B`, `roundtrip_1KiB`, `roundtrip_64KiB`, `roundtrip_1MiB`: one binary
//!   message sent, its echo read back (time per round trip; throughput = message bytes
//!   per round trip);
//! * `burst_1000x64B`: 1,000 binary messages of 64 B written back to back on one
//!   connection, then their 1,000 echoes read (throughput in messages).
//!
//! The servers: `wsreactor` (the crate's binary, default flags), `tungstenite_mt` and
//! `tungstenite_st` (tokio-tungstenite on tokio's multi-thread and `current_thread`
//! runtimes), `fastwebsockets` (tokio `current_thread`), and `mio_raw_ceiling`, a plain
//! mio TCP echo with no WebSocket. The ceiling echoes the client's masked frames
//! unchanged, which a WebSocket client rejects, so its benchmark uses a raw-bytes
//! client instead: it writes the exact bytes of the masked frames of the same workload
//! (same frames, same sizes) and reads back as many bytes, without decoding them. That
//! client does less work than tungstenite's (no masking, no parsing, no allocation per
//! message), so the ceiling is an upper bound for the transport, not a WebSocket
//! figure.
//!
//! **Everything runs on one CPU.** Before it starts the servers, the bench pins its
//! own thread (which runs every client) to one CPU, and the servers, spawned after,
//! inherit that affinity. A round trip then costs the client's work, the server's work
//! and two context switches, which is what the figures compare, and they repeat
//! within a few percent from run to run. With the client and the server on different
//! CPUs of a virtual machine, a small message's round trip is instead dominated by how
//! long the idle vCPU takes to wake up (here 5-10 µs when the other vCPU happens to be
//! busy, about 50-60 µs when it is idle): the same server measured 8 µs in one run and
//! 60 µs in the next. `ECHO_BENCH_CPU=N` picks the CPU (default: the last one the
//! process may use), `ECHO_BENCH_CPU=off` leaves the affinity alone. Throughput with
//! the client and the server on separate CPUs is what `scripts/compare` measures.
//!
//! Run with `cargo bench --bench echo_roundtrip` (add `-- --quick` for a fast check, or
//! a filter such as `-- roundtrip_1KiB`). No manual step is needed: the bench builds
//! the servers itself, the first time a benchmark needs one, in its own profile
//! (`--release` under `cargo bench`, the dev profile under `cargo test`) with
//! `$CARGO`, the cargo running it: `cargo build -p wsreactor-server --bin wsreactor`
//! (alone, so that it is exactly the binary a user builds), then
//! `cargo build -p wsreactor-bench --example opponent_…`.
//! The servers are killed when the bench exits.

use wsreactor_testkit::launch;

use std::cell::OnceCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use tungstenite::{Message, WebSocket};
use wsreactor::protocol::header::MAX_HEADER_LEN;
use wsreactor::protocol::mask::apply_mask;
use wsreactor::protocol::{FrameHeader, OpCode};

/// The opponents: (benchmark name, example name).
const OPPONENTS: [(&str, &str); 4] = [
    ("tungstenite_mt", "opponent_tungstenite_mt"),
    ("tungstenite_st", "opponent_tungstenite_st"),
    ("fastwebsockets", "opponent_fastwebsockets"),
    ("mio_raw_ceiling", "opponent_mio_raw"),
];
/// The benchmark name of the raw TCP echo, measured with the raw-bytes client.
const RAW: &str = "mio_raw_ceiling";

const BURST_MESSAGES: usize = 1000;
const BURST_SIZE: usize = 64;

/// A server process, killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/<profile>`: the bench runs as `target/<profile>/deps/echo_roundtrip-HASH`.
fn profile_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .expect("locate the target directory")
}

/// Builds the opponent examples in the bench's own profile and returns their folder.
fn build_opponents() -> PathBuf {
    let examples: Vec<&str> = OPPONENTS.iter().map(|(_, example)| *example).collect();
    cargo_build("wsreactor-bench", "--example", &examples);
    profile_dir().join("examples")
}

/// The `wsreactor` binary, built by `cargo build -p wsreactor-server --bin wsreactor`
/// in the bench's profile: a cargo invocation of its own, so that no feature of
/// the opponents' dependencies is unified into it and it is the binary a user runs.
fn build_wsreactor() -> PathBuf {
    cargo_build("wsreactor-server", "--bin", &["wsreactor"]);
    profile_dir().join("wsreactor")
}

/// Runs `cargo build -p PACKAGE KIND TARGET…` in the bench's own profile.
fn cargo_build(package: &str, kind: &str, targets: &[&str]) {
    let dir = profile_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut command = Command::new(cargo);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "-p", package]);
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(profile) => {
            command.args(["--profile", profile]);
        }
        None => panic!("unexpected bench location {}", dir.display()),
    }
    for target in targets {
        command.args([kind, target]);
    }
    let status = command.status().expect("run cargo build");
    assert!(status.success(), "building {package} failed: {status}");
}

/// Starts `binary --addr 127.0.0.1:0` and reads the address from its first line.
fn start(name: &'static str, binary: &Path) -> Server {
    let no_args: [&str; 0] = [];
    let mut child = launch::configure_server(&mut Command::new(binary), no_args)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    let addr = launch::listening_addr(&line)
        .unwrap_or_else(|| panic!("{name}: unexpected first line {line:?}"));
    Server { name, child, addr }
}

/// Pins the calling thread (criterion's, which runs every client) to one CPU, before
/// the servers are spawned so that they inherit it: see the module docs. The CPU is
/// `ECHO_BENCH_CPU` (a number, or `off` to leave the affinity alone), by default the
/// last CPU this process may use.
fn pin_to_one_cpu() {
    let choice = std::env::var("ECHO_BENCH_CPU").unwrap_or_default();
    if choice == "off" {
        return;
    }
    // SAFETY: cpu_set_t is a plain bit set; sched_getaffinity/sched_setaffinity only
    // read and write the set we pass, for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, size, &mut set) != 0 {
            return;
        }
        let mut allowed = (0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set));
        let cpu = match choice.parse::<usize>() {
            Ok(cpu) => cpu,
            Err(_) => match allowed.next_back() {
                Some(cpu) => cpu,
                None => return,
            },
        };
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size, &set) != 0 {
            panic!(
                "cannot pin to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
        eprintln!("echo_roundtrip: client and servers pinned to CPU {cpu}");
    }
}

/// Every server, started on first use.
#[derive(Default)]
struct Lab {
    servers: OnceCell<Vec<Server>>,
}

impl Lab {
    fn servers(&self) -> &[Server] {
        self.servers.get_or_init(|| {
            let wsreactor = build_wsreactor();
            let examples = build_opponents();
            pin_to_one_cpu();
            let mut servers = vec![start("wsreactor", &wsreactor)];
            for (name, example) in OPPONENTS {
                servers.push(start(name, &examples.join(example)));
            }
            servers
        })
    }

    fn addr(&self, name: &str) -> SocketAddr {
        self.servers()
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.addr)
            .expect("known server")
    }
}

/// The names of the benchmarks in each group, in report order.
fn server_names() -> impl Iterator<Item = &'static str> {
    std::iter::once("wsreactor").chain(OPPONENTS.iter().map(|(name, _)| *name))
}

/// One connection to one server.
enum Client {
    /// A WebSocket client; `payload` is the next message to send (each echo becomes
    /// the next message, so no copy is made per round trip).
    Ws {
        ws: Box<WebSocket<TcpStream>>,
        payload: Vec<u8>,
    },
    /// The raw-bytes client of the ceiling: `frames` are the masked frames that the
    /// WebSocket client would send for one round trip (or one burst).
    Raw {
        stream: TcpStream,
        frames: Vec<u8>,
        echo: Vec<u8>,
    },
}

/// `count` masked binary frames of `size` bytes, as a client sends them.
fn masked_frames(count: usize, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * (size + MAX_HEADER_LEN));
    for i in 0..count {
        let key = (0x9e37_79b9u32.wrapping_mul(i as u32 + 1)).to_be_bytes();
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask: Some(key),
            payload_len: size as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let len = header.encode(&mut head);
        out.extend_from_slice(&head[..len]);
        let start = out.len();
        out.extend((0..size).map(|j| j as u8));
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

impl Client {
    /// Connects to `server` for messages of `size` bytes, `count` per round (1, or
    /// `BURST_MESSAGES` for a burst).
    fn connect(server: &str, addr: SocketAddr, count: usize, size: usize) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        if server == RAW {
            let mut stream = stream;
            stream
                .write_all(
                    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n\
                      Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                )
                .expect("send the request");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).expect("read the 101");
                head.push(byte[0]);
            }
            assert!(head.starts_with(b"HTTP/1.1 101"), "no 101 from {server}");
            let frames = masked_frames(count, size);
            let echo = vec![0; frames.len()];
            Client::Raw {
                stream,
                frames,
                echo,
            }
        } else {
            let (ws, _) = tungstenite::client(format!("ws://{addr}/"), stream)
                .unwrap_or_else(|e| panic!("handshake with {server}: {e}"));
            Client::Ws {
                ws: Box::new(ws),
                payload: (0..size).map(|i| i as u8).collect(),
            }
        }
    }

    /// One message there and back.
    fn roundtrip(&mut self) {
        match self {
            Client::Ws { ws, payload } => {
                let size = payload.len();
                ws.send(Message::Binary(std::mem::take(payload)))
                    .expect("send");
                *payload = read_binary(ws);
                assert_eq!(payload.len(), size, "echo of a different size");
            }
            Client::Raw {
                stream,
                frames,
                echo,
            } => raw_roundtrip(stream, frames, echo),
        }
    }

    /// `BURST_MESSAGES` messages written back to back, then all their echoes read.
    fn burst(&mut self) {
        match self {
            Client::Ws { ws, payload } => {
                for _ in 0..BURST_MESSAGES {
                    ws.write(Message::Binary(payload.clone())).expect("write");
                }
                ws.flush().expect("flush");
                for _ in 0..BURST_MESSAGES {
                    assert_eq!(read_binary(ws).len(), payload.len());
                }
            }
            Client::Raw {
                stream,
                frames,
                echo,
            } => raw_roundtrip(stream, frames, echo),
        }
    }
}

/// The next binary message (pings and pongs skipped).
fn read_binary(ws: &mut WebSocket<TcpStream>) -> Vec<u8> {
    loop {
        match ws.read().expect("read the echo") {
            Message::Binary(bytes) => return bytes,
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Writes the frames and reads back as many bytes. The server echoes while it reads
/// (and queues up to 16 MiB), so writing everything before reading cannot deadlock for
/// the sizes used here.
fn raw_roundtrip(stream: &mut TcpStream, frames: &[u8], echo: &mut [u8]) {
    stream.write_all(frames).expect("write the frames");
    stream.read_exact(echo).expect("read the echo");
}

fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(20);
}

fn bench_roundtrips(c: &mut Criterion, lab: &Lab) {
    for (label, size) in [
        ("16B", 16usize),
        ("1KiB", 1 << 10),
        ("64KiB", 64 << 10),
        ("1MiB", 1 << 20),
    ] {
        let mut group = c.benchmark_group(format!("roundtrip_{label}"));
        configure(&mut group);
        group.throughput(Throughput::Bytes(size as u64));
        for server in server_names() {
            // Connected on the first call only: criterion calls the closure again for
            // the warm-up and for each sample, and not at all when filtered out.
            let mut client = None;
            group.bench_function(BenchmarkId::from_parameter(server), |b| {
                let client = client
                    .get_or_insert_with(|| Client::connect(server, lab.addr(server), 1, size));
                b.iter(|| client.roundtrip())
            });
        }
        group.finish();
    }
}

fn bench_burst(c: &mut Criterion, lab: &Lab) {
    let mut group = c.benchmark_group(format!("burst_{BURST_MESSAGES}x{BURST_SIZE}B"));
    configure(&mut group);
    group.throughput(Throughput::Elements(BURST_MESSAGES as u64));
    for server in server_names() {
        let mut client = None;
        group.bench_function(BenchmarkId::from_parameter(server), |b| {
            let client = client.get_or_insert_with(|| {
                Client::connect(server, lab.addr(server), BURST_MESSAGES, BURST_SIZE)
            });
            b.iter(|| client.burst())
        });
    }
    group.finish();
}

fn main() {
    let lab = Lab::default();
    let mut criterion = Criterion::default().configure_from_args();
    bench_roundtrips(&mut criterion, &lab);
    bench_burst(&mut criterion, &lab);
    criterion.final_summary();
    // `lab` is dropped here: every server is killed.
}
