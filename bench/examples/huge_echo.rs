//! Measures the streaming echo with one huge message: throughput and the server's
//! peak memory.
//!
//! ```text
//! cargo run --release --example huge_echo -- [--size BYTES] [--frames single|fragmented]
//!     [--frame-size N] [--server ADDR --pid PID] [--server-arg ARG]... [--json]
//! ```
//!
//! By default it starts `target/release/wsreactor --addr 127.0.0.1:0` itself (next to
//! this example's binary) and reads its `listening on ws://ADDR/` line; `--server-arg`
//! passes flags to it (`--server-arg=--write-high-watermark=1048576`). With `--server`
//! and `--pid` it uses a server that is already running.
//!
//! It sends ONE binary message of `--size` bytes (default 1 GiB), either as a single
//! frame (a 64-bit length when above 65535; 4294967297 exercises a length above 2^32)
//! or as frames of `--frame-size` bytes. A writer thread generates the payload on the
//! fly from a deterministic pseudo-random stream, masks it with the crate's
//! `apply_mask` and writes it; a reader thread decodes the echo with the crate's
//! client-side `Decoder` and checks every byte against the same stream (a running
//! comparison plus a 64-bit checksum on each side). Neither side ever holds the
//! message. The run fails (exit status 1) on any difference in kind, length, content
//! or framing.
//!
//! Memory is read from `/proc/PID/status`: `VmRSS` before the run, and `VmHWM` (peak
//! resident set) after it. Before the message the server's `VmHWM` is reset to its
//! current RSS (`echo 5 > /proc/PID/clear_refs`), so the peak is that of this run even
//! on a server that ran other loads before.

// The payload stream and the server start-up are shared with the integration tests
// (these files do not depend on the rest of the tests' harness).
use wsreactor_testkit::{launch, payload};

use payload::Checksum;

use clap::{Parser, ValueEnum};
use payload::{fill, word};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use wsreactor::protocol::encoder::push_masked_frame;
use wsreactor::protocol::header::MAX_HEADER_LEN;
use wsreactor::protocol::mask::apply_mask;
use wsreactor::protocol::{
    CloseCode, Decoder, Event, FrameHeader, Limits, MessageKind, OpCode, Role,
};

/// How the message goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Frames {
    /// One frame carrying the whole message.
    Single,
    /// Frames of `--frame-size` bytes (binary, then continuations, FIN on the last).
    Fragmented,
}

/// Echo one huge message through wsreactor and report throughput and server memory.
#[derive(Parser, Debug)]
#[command(name = "huge_echo")]
struct Args {
    /// Message size in bytes (4294967297 = 4 GiB + 1 needs a 64-bit length above 2^32).
    #[arg(long, default_value_t = 1 << 30)]
    size: u64,

    /// One frame, or frames of --frame-size bytes.
    #[arg(long, value_enum, default_value_t = Frames::Single)]
    frames: Frames,

    /// Payload bytes per frame with --frames fragmented.
    #[arg(long, default_value_t = 64 * 1024)]
    frame_size: u64,

    /// Use the server listening here instead of starting one (needs --pid).
    #[arg(long, requires = "pid")]
    server: Option<SocketAddr>,

    /// The process id of --server, to read its memory from /proc.
    #[arg(long, requires = "server")]
    pid: Option<u32>,

    /// An argument for the server this tool starts (repeatable), e.g.
    /// --server-arg=--write-high-watermark=1048576.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,

    /// The server binary to start (default: wsreactor next to this example's directory,
    /// i.e. target/release/wsreactor).
    #[arg(long)]
    server_bin: Option<PathBuf>,

    /// Print the result as one JSON line instead of text.
    #[arg(long)]
    json: bool,

    /// Seed of the payload stream.
    #[arg(long, default_value_t = 0x5eed_cafe)]
    seed: u64,

    /// Bytes per write and per read on the client side.
    #[arg(long, default_value_t = 256 * 1024)]
    io_size: usize,

    /// Seconds without progress after which the run counts as stalled.
    #[arg(long, default_value_t = 60)]
    stall_timeout: u64,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            if args.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
        }
        Err(error) => {
            eprintln!("huge_echo: FAILED: {error}");
            std::process::exit(1);
        }
    }
}

/// The result of one run.
struct Report {
    size: u64,
    frames: Frames,
    frame_size: u64,
    frames_sent: u64,
    frames_received: u64,
    max_frame_received: u64,
    elapsed: Duration,
    server_rss_before_kib: u64,
    server_hwm_before_kib: u64,
    server_hwm_reset: bool,
    server_hwm_peak_kib: u64,
    server_rss_after_kib: u64,
    client_hwm_kib: u64,
    checksum: u64,
    server_args: Vec<String>,
}

impl Report {
    fn throughput_mib_s(&self) -> f64 {
        self.size as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn frames_label(&self) -> String {
        match self.frames {
            Frames::Single => "single".into(),
            Frames::Fragmented => format!("fragmented/{}", self.frame_size),
        }
    }

    fn text(&self) -> String {
        format!(
            "message        {} bytes ({:.1} MiB), {} frame(s) sent ({})\n\
             echo           {} frame(s) received (largest {} bytes), checksum {:016x}: OK\n\
             elapsed        {:.3} s\n\
             throughput     {:.1} MiB/s\n\
             server RSS     {} KiB before the run (VmHWM before: {} KiB{})\n\
             server peak    {} KiB VmHWM during the run ({:.1} MiB), {} KiB VmRSS after\n\
             client peak    {} KiB VmHWM (this tool)\n\
             server args    {:?}\n",
            self.size,
            self.size as f64 / 1048576.0,
            self.frames_sent,
            self.frames_label(),
            self.frames_received,
            self.max_frame_received,
            self.checksum,
            self.elapsed.as_secs_f64(),
            self.throughput_mib_s(),
            self.server_rss_before_kib,
            self.server_hwm_before_kib,
            if self.server_hwm_reset {
                ", then reset"
            } else {
                ", could not reset: peak may predate the run"
            },
            self.server_hwm_peak_kib,
            self.server_hwm_peak_kib as f64 / 1024.0,
            self.server_rss_after_kib,
            self.client_hwm_kib,
            self.server_args,
        )
    }

    fn json(&self) -> String {
        let args: Vec<String> = self
            .server_args
            .iter()
            .map(|a| format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        format!(
            "{{\"ok\":true,\"size\":{},\"frames\":\"{}\",\"frames_sent\":{},\"frames_received\":{},\
             \"max_frame_received\":{},\"elapsed_s\":{:.6},\"throughput_mib_s\":{:.1},\
             \"server_rss_before_kib\":{},\"server_hwm_before_kib\":{},\"server_hwm_reset\":{},\
             \"server_hwm_peak_kib\":{},\"server_rss_after_kib\":{},\"client_hwm_kib\":{},\
             \"checksum\":\"{:016x}\",\"server_args\":[{}]}}",
            self.size,
            self.frames_label(),
            self.frames_sent,
            self.frames_received,
            self.max_frame_received,
            self.elapsed.as_secs_f64(),
            self.throughput_mib_s(),
            self.server_rss_before_kib,
            self.server_hwm_before_kib,
            self.server_hwm_reset,
            self.server_hwm_peak_kib,
            self.server_rss_after_kib,
            self.client_hwm_kib,
            self.checksum,
            args.join(","),
        )
    }
}

fn run(args: &Args) -> Result<Report, String> {
    if args.frames == Frames::Fragmented && args.frame_size == 0 {
        return Err("--frame-size must be at least 1".into());
    }
    let io_size = args.io_size.max(MAX_HEADER_LEN + 1);

    // The server: ours (killed when `_server` drops) or the one given.
    let (_server, addr, pid) = match (args.server, args.pid) {
        (Some(addr), Some(pid)) => (None, addr, pid),
        _ => {
            let server = SpawnedServer::start(args)?;
            let (addr, pid) = (server.addr, server.child.id());
            (Some(server), addr, pid)
        }
    };

    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let stall = Duration::from_secs(args.stall_timeout.max(1));
    stream
        .set_read_timeout(Some(stall))
        .and_then(|()| stream.set_write_timeout(Some(stall)))
        .map_err(|e| e.to_string())?;
    let mut stream = stream;
    handshake(&mut stream, addr)?;

    let server_rss_before_kib = proc_status_kib(pid, "VmRSS")?;
    let server_hwm_before_kib = proc_status_kib(pid, "VmHWM")?;
    // Reset the peak to the current RSS, so that the figure below is this run's.
    let server_hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();

    let plan = Plan {
        size: args.size,
        frame_size: match args.frames {
            Frames::Single => args.size.max(1),
            Frames::Fragmented => args.frame_size,
        },
        seed: args.seed,
    };

    let start = Instant::now();
    let read_half = stream.try_clone().map_err(|e| e.to_string())?;
    let write_half = stream.try_clone().map_err(|e| e.to_string())?;
    let (done_tx, done_rx) = mpsc::channel();
    let reader = thread::Builder::new()
        .name("reader".into())
        .spawn(move || read_echo(read_half, plan, io_size, done_tx))
        .map_err(|e| e.to_string())?;
    let writer = thread::Builder::new()
        .name("writer".into())
        .spawn(move || write_message(write_half, plan, io_size))
        .map_err(|e| e.to_string())?;

    // Wait for the last echoed byte (or a failure of either side).
    let echoed = match done_rx.recv() {
        Ok(result) => result?,
        Err(_) => {
            // The reader ended without a verdict: it failed; its join result says how.
            return Err(join(reader)
                .err()
                .unwrap_or_else(|| "reader ended early".into()));
        }
    };
    let elapsed = start.elapsed();
    let sent = join(writer)??;
    let server_hwm_peak_kib = proc_status_kib(pid, "VmHWM")?;
    let server_rss_after_kib = proc_status_kib(pid, "VmRSS")?;

    if sent.checksum != echoed.checksum {
        return Err(format!(
            "checksum of the echo {:016x} differs from the message's {:016x}",
            echoed.checksum, sent.checksum
        ));
    }

    // The closing handshake: our close 1000, the server's close back, then EOF.
    let mut close = Vec::new();
    push_masked_frame(
        &mut close,
        OpCode::Close,
        true,
        &1000u16.to_be_bytes(),
        [7, 7, 7, 7],
    );
    stream
        .write_all(&close)
        .map_err(|e| format!("write close: {e}"))?;
    match join(reader)?? {
        Some(code) if code == CloseCode::NORMAL => {}
        other => return Err(format!("expected close 1000 back, got {other:?}")),
    }

    Ok(Report {
        size: args.size,
        frames: args.frames,
        frame_size: plan.frame_size,
        frames_sent: sent.frames,
        frames_received: echoed.frames,
        max_frame_received: echoed.max_frame,
        elapsed,
        server_rss_before_kib,
        server_hwm_before_kib,
        server_hwm_reset,
        server_hwm_peak_kib,
        server_rss_after_kib,
        client_hwm_kib: proc_status_kib_path("/proc/self/status", "VmHWM")?,
        checksum: echoed.checksum,
        server_args: args.server_args.clone(),
    })
}

fn join<T>(handle: thread::JoinHandle<T>) -> Result<T, String> {
    handle.join().map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "thread panicked".into())
    })
}

/// The message's shape, shared by the writer and the reader.
#[derive(Clone, Copy, Debug)]
struct Plan {
    size: u64,
    /// Payload bytes per frame (the whole size for a single frame).
    frame_size: u64,
    seed: u64,
}

impl Plan {
    fn frame_count(&self) -> u64 {
        self.size.div_ceil(self.frame_size).max(1)
    }
}

// ----------------------------------------------------------------------------------
// The writer: frames generated, masked and written in `io_size` pieces.

struct Sent {
    frames: u64,
    checksum: u64,
}

fn write_message(mut stream: TcpStream, plan: Plan, io_size: usize) -> Result<Sent, String> {
    let mut out = vec![0u8; io_size];
    let mut filled = 0;
    let mut checksum = Checksum::default();
    let mut pos = 0u64; // message bytes generated so far
    let frames = plan.frame_count();
    let mut flush = |out: &[u8], pos: u64| {
        stream
            .write_all(out)
            .map_err(|e| format!("write failed after {pos} message bytes: {e}"))
    };
    for index in 0..frames {
        let len = plan.frame_size.min(plan.size - pos);
        // A fresh key per frame, as a browser would (§5.3: unpredictable per frame).
        let key = word(plan.seed ^ 0x6b65_7973, index).to_le_bytes();
        let key = [key[0], key[1], key[2], key[3]];
        let header = FrameHeader {
            fin: index + 1 == frames,
            rsv: 0,
            opcode: if index == 0 {
                OpCode::Binary
            } else {
                OpCode::Continuation
            },
            mask: Some(key),
            payload_len: len,
        };
        if out.len() - filled < MAX_HEADER_LEN {
            flush(&out[..filled], pos)?;
            filled = 0;
        }
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        out[filled..filled + head_len].copy_from_slice(&head[..head_len]);
        filled += head_len;

        let mut done = 0u64; // payload bytes of this frame generated so far
        while done < len {
            if filled == out.len() {
                flush(&out[..filled], pos)?;
                filled = 0;
            }
            // At most out.len() - filled, which is a usize.
            let n = (len - done).min((out.len() - filled) as u64) as usize;
            let piece = &mut out[filled..filled + n];
            fill(plan.seed, pos, piece);
            checksum.update(piece);
            // The mask position is the offset within this frame's payload (§5.3).
            apply_mask(piece, key, (done % 4) as usize);
            filled += n;
            done += n as u64;
            pos += n as u64;
        }
    }
    flush(&out[..filled], pos)?;
    Ok(Sent {
        frames,
        checksum: checksum.finish(),
    })
}

// ----------------------------------------------------------------------------------
// The reader: the echo decoded with the crate's client-side decoder and checked.

struct Echoed {
    frames: u64,
    max_frame: u64,
    checksum: u64,
}

/// Reads the echo, checks it, reports on `done` when the last byte is in (or on the
/// first failure), then reads on to the server's close frame and returns its code.
fn read_echo(
    mut stream: TcpStream,
    plan: Plan,
    io_size: usize,
    done: mpsc::Sender<Result<Echoed, String>>,
) -> Result<Option<CloseCode>, String> {
    let mut check = EchoCheck {
        plan,
        pos: 0,
        frames: 0,
        max_frame: 0,
        first: true,
        complete: false,
        checksum: Checksum::default(),
        expected: vec![0u8; io_size],
    };
    let mut decoder = Decoder::new(Role::Client, Limits::default());
    let mut buf = vec![0u8; io_size];
    let mut reported = false;
    let fail = |done: &mpsc::Sender<Result<Echoed, String>>, reported: bool, e: String| {
        if !reported {
            let _ = done.send(Err(e.clone()));
        }
        Err(e)
    };
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => {
                let e = format!(
                    "EOF from the server after {} of {} echoed bytes",
                    check.pos, plan.size
                );
                return fail(&done, reported, e);
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let e = format!(
                    "read failed after {} of {} echoed bytes (stalled?): {e}",
                    check.pos, plan.size
                );
                return fail(&done, reported, e);
            }
        };
        let mut at = 0;
        loop {
            let (used, event) = match decoder.decode(&mut buf[at..n]) {
                Ok(progress) => progress,
                Err(e) => {
                    let e = format!("the echo broke the protocol at byte {}: {e}", check.pos);
                    return fail(&done, reported, e);
                }
            };
            at += used;
            let Some(event) = event else { break };
            match event {
                Event::FrameStart(header) => {
                    if let Err(e) = check.frame_start(&header) {
                        return fail(&done, reported, e);
                    }
                }
                Event::Data {
                    kind,
                    bytes,
                    end_of_message,
                } => {
                    if let Err(e) = check.data(kind, bytes, end_of_message) {
                        return fail(&done, reported, e);
                    }
                    if check.complete && !reported {
                        reported = true;
                        let _ = done.send(Ok(Echoed {
                            frames: check.frames,
                            max_frame: check.max_frame,
                            checksum: check.checksum.finish(),
                        }));
                    }
                }
                Event::Close(frame) => {
                    if !check.complete {
                        let e = format!(
                            "close {:?} from the server after {} of {} echoed bytes",
                            frame.map(|f| (f.code(), f.reason().to_string())),
                            check.pos,
                            plan.size
                        );
                        return fail(&done, reported, e);
                    }
                    return Ok(frame.map(|f| f.code()));
                }
                // Pings, pongs, and any event a later decoder adds: nothing to check.
                _ => {}
            }
        }
    }
}

/// The running check of the echo against the message.
struct EchoCheck {
    plan: Plan,
    /// Echoed message bytes checked so far.
    pos: u64,
    frames: u64,
    max_frame: u64,
    first: bool,
    complete: bool,
    checksum: Checksum,
    expected: Vec<u8>,
}

impl EchoCheck {
    fn frame_start(&mut self, header: &FrameHeader) -> Result<(), String> {
        if header.opcode.is_control() {
            return Ok(());
        }
        if self.complete {
            return Err(format!(
                "a data frame after the end of the message: {header:?}"
            ));
        }
        let expected = if self.first {
            OpCode::Binary
        } else {
            OpCode::Continuation
        };
        if header.opcode != expected {
            return Err(format!(
                "echo frame {} has opcode {:?}, expected {expected:?}",
                self.frames, header.opcode
            ));
        }
        self.first = false;
        self.frames += 1;
        self.max_frame = self.max_frame.max(header.payload_len);
        if self.pos + header.payload_len > self.plan.size {
            return Err(format!(
                "echo frame of {} bytes at {} overruns the {}-byte message",
                header.payload_len, self.pos, self.plan.size
            ));
        }
        Ok(())
    }

    fn data(&mut self, kind: MessageKind, bytes: &[u8], end: bool) -> Result<(), String> {
        if kind != MessageKind::Binary {
            return Err(format!("echo is {kind:?}, sent Binary"));
        }
        for piece in bytes.chunks(self.expected.len()) {
            let expected = &mut self.expected[..piece.len()];
            fill(self.plan.seed, self.pos, expected);
            if piece != &expected[..] {
                let i = piece
                    .iter()
                    .zip(expected.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                return Err(format!(
                    "echoed byte {} is {:#04x}, sent {:#04x}",
                    self.pos + i as u64,
                    piece[i],
                    expected[i]
                ));
            }
            self.checksum.update(piece);
            self.pos += piece.len() as u64;
        }
        if end {
            if self.pos != self.plan.size {
                return Err(format!(
                    "the echo ended (FIN) after {} of {} bytes",
                    self.pos, self.plan.size
                ));
            }
            self.complete = true;
        }
        Ok(())
    }
}

// ----------------------------------------------------------------------------------
// Handshake, server process, /proc.

fn handshake(stream: &mut TcpStream, addr: SocketAddr) -> Result<(), String> {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write upgrade request: {e}"))?;
    // Byte by byte up to the blank line, so no frame byte is taken from the socket.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => {
                return Err(format!(
                    "connection ended in the response head ({other:?}): {:?}",
                    String::from_utf8_lossy(&head)
                ))
            }
        }
        if head.len() > 16 * 1024 {
            return Err("response head too long".into());
        }
    }
    let head = String::from_utf8_lossy(&head);
    // RFC 6455 §1.3's sample key has this accept value.
    if !head.starts_with("HTTP/1.1 101") || !head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") {
        return Err(format!("no valid 101 response: {head:?}"));
    }
    Ok(())
}

/// A server started by this tool; killed when dropped.
struct SpawnedServer {
    child: Child,
    addr: SocketAddr,
    /// Kept open so that the server never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl SpawnedServer {
    fn start(args: &Args) -> Result<Self, String> {
        let bin = match &args.server_bin {
            Some(bin) => bin.clone(),
            None => default_server_bin(),
        };
        let mut child = launch::configure_server(&mut Command::new(&bin), &args.server_args)
            .spawn()
            .map_err(|e| {
                format!(
                    "start {}: {e} (build it: cargo build --release)",
                    bin.display()
                )
            })?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        let addr = launch::listening_addr(&line);
        match (read, addr) {
            (Ok(_), Some(addr)) => Ok(SpawnedServer {
                child,
                addr,
                _stdout: stdout,
            }),
            (read, _) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "{} did not print its address: {read:?} {line:?}",
                    bin.display()
                ))
            }
        }
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/<profile>/wsreactor`, next to the `examples/` directory holding this binary.
fn default_server_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("wsreactor")))
        .filter(|bin| bin.exists())
        .unwrap_or_else(|| PathBuf::from("target/release/wsreactor"))
}

fn proc_status_kib(pid: u32, field: &str) -> Result<u64, String> {
    proc_status_kib_path(&format!("/proc/{pid}/status"), field)
}

fn proc_status_kib_path(path: &str, field: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} in {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_the_same_stream_however_it_is_cut() {
        let mut whole = vec![0u8; 1000];
        fill(42, 3, &mut whole);
        let mut pieces = vec![0u8; 1000];
        let mut at = 0;
        for size in [1, 7, 8, 9, 100, 3].iter().cycle() {
            if at == pieces.len() {
                break;
            }
            let end = (at + size).min(pieces.len());
            fill(42, 3 + at as u64, &mut pieces[at..end]);
            at = end;
        }
        assert_eq!(whole, pieces);
    }
}
