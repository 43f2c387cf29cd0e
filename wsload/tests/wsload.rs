//! The `wsload` binary against the real server: every mode with small sizes, its JSON
//! line checked; `--raw-echo` against a plain TCP echo; and the ways a run must fail
//! (closed port, corrupted echo, the wrong kind of echo, bad arguments), each with a
//! non-zero exit status.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::thread;
use wsreactor_testkit::Listening;

/// The library's streaming echo, in this process on a free port, for as long as the
/// test runs.
fn echo_server() -> SocketAddr {
    let config = wsreactor::Config::builder()
        .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .build()
        .expect("valid config");
    let server = wsreactor::Server::bind(config, wsreactor::Echo::new()).expect("bind");
    let addr = server.local_addr().expect("address");
    thread::spawn(move || server.run());
    addr
}

/// Runs `wsload --json --no-progress --timeout 30 ARGS…`.
fn wsload(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wsload"))
        .args(["--url", url, "--json", "--no-progress", "--timeout", "30"])
        .args(args)
        .output()
        .expect("run wsload")
}

/// The one JSON line a run printed on stdout.
fn json_of(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one line on stdout, got {stdout:?}; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(lines[0]).expect("a JSON object")
}

/// Runs and expects success: exit 0, ok, no errors.
fn run_ok(url: &str, args: &[&str]) -> Value {
    let output = wsload(url, args);
    let json = json_of(&output);
    assert!(
        output.status.success(),
        "wsload {args:?} failed ({:?}): {json}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    assert_eq!(json["error"], Value::Null, "{json}");
    json
}

fn u64_of(json: &Value, key: &str) -> u64 {
    json[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an integer in {json}"))
}

fn f64_of(json: &Value, key: &str) -> f64 {
    json[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {json}"))
}

/// p50 <= p90 <= p99 <= max, all positive.
fn assert_latency(json: &Value) {
    let l = &json["latency_us"];
    let get = |k: &str| {
        l[k].as_u64()
            .unwrap_or_else(|| panic!("latency_us.{k} in {json}"))
    };
    let (p50, p90, p99, max) = (get("p50"), get("p90"), get("p99"), get("max"));
    assert!(0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max, "{l}");
}

#[test]
fn echo_verifies_every_message_of_every_connection() {
    let server = echo_server();
    let json = run_ok(
        &server.url(),
        &["echo", "--connections", "10", "--messages", "100"],
    );
    assert_eq!(json["mode"], "echo");
    assert_eq!(json["url"], server.url());
    assert_eq!(u64_of(&json, "connections"), 10);
    assert_eq!(u64_of(&json, "in_flight"), 1);
    assert_eq!(u64_of(&json, "size"), 16);
    assert_eq!(u64_of(&json, "messages"), 1000);
    assert_eq!(u64_of(&json, "bytes"), 16_000);
    assert_eq!(u64_of(&json, "frames_received"), 1000);
    assert_eq!(u64_of(&json, "closed_ok"), 10);
    assert!(f64_of(&json, "elapsed_s") > 0.0);
    assert!(f64_of(&json, "msgs_per_s") > 0.0);
    assert!(f64_of(&json, "mib_per_s") > 0.0);
    assert_latency(&json);
}

#[test]
fn echo_with_text_messages_in_flight_for_a_duration() {
    let server = echo_server();
    // 70000 bytes: longer than the server's 64 KiB frames, so echoes come back
    // fragmented while 4 messages per connection are in flight.
    let json = run_ok(
        &server.url(),
        &[
            "echo",
            "--connections",
            "3",
            "--in-flight",
            "4",
            "--size",
            "70000",
            "--text",
            "--duration",
            "0.5",
        ],
    );
    assert_eq!(json["text"], true);
    assert_eq!(u64_of(&json, "in_flight"), 4);
    let messages = u64_of(&json, "messages");
    assert!(messages >= 12, "{json}");
    assert_eq!(u64_of(&json, "bytes"), messages * 70_000);
    assert!(u64_of(&json, "frames_received") > messages, "{json}");
    assert!(f64_of(&json, "elapsed_s") >= 0.5, "{json}");
    assert_latency(&json);
}

#[test]
fn stream_echoes_large_messages_back_to_back() {
    let server = echo_server();
    let json = run_ok(
        &server.url(),
        &["stream", "--count", "10", "--size", "65536"],
    );
    assert_eq!(json["mode"], "stream");
    assert_eq!(u64_of(&json, "connections"), 1);
    assert_eq!(u64_of(&json, "in_flight"), 4);
    assert_eq!(u64_of(&json, "messages"), 10);
    assert_eq!(u64_of(&json, "bytes"), 655_360);
    assert!(f64_of(&json, "mib_per_s") > 0.0);
    assert_latency(&json);
}

#[test]
fn huge_streams_one_message_with_a_checksum() {
    let server = echo_server();
    let json = run_ok(&server.url(), &["huge", "--size", "33554432"]);
    assert_eq!(json["mode"], "huge");
    assert_eq!(u64_of(&json, "messages"), 1);
    assert_eq!(u64_of(&json, "bytes"), 32 << 20);
    assert_eq!(u64_of(&json, "bytes_verified"), 32 << 20);
    assert_eq!(u64_of(&json, "frames_sent"), 1);
    // The server echoes in frames of at most 64 KiB.
    assert!(u64_of(&json, "frames_received") >= 512, "{json}");
    assert!(u64_of(&json, "max_frame_received") <= 65536, "{json}");
    assert_eq!(json["checksum"].as_str().map(str::len), Some(16), "{json}");
    assert!(f64_of(&json, "mib_per_s") > 0.0);

    // Fragmented on the way out, with a frame size that is no power of two.
    let json = run_ok(
        &server.url(),
        &["huge", "--size", "4194304", "--frame-size", "65537"],
    );
    assert_eq!(u64_of(&json, "frames_sent"), 4194304u64.div_ceil(65537));
    assert_eq!(u64_of(&json, "bytes"), 4 << 20);
}

#[test]
fn idle_holds_connections_and_reports_server_memory() {
    let server = echo_server();
    let pid = std::process::id().to_string();
    let json = run_ok(
        &server.url(),
        &[
            "idle",
            "--connections",
            "200",
            "--hold",
            "1",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(json["mode"], "idle");
    assert_eq!(u64_of(&json, "connections"), 200);
    assert_eq!(u64_of(&json, "opened"), 200);
    assert_eq!(u64_of(&json, "held"), 200);
    assert_eq!(u64_of(&json, "closed_ok"), 200);
    assert_eq!(u64_of(&json, "messages"), 0);
    assert_eq!(json["latency_us"], Value::Null);
    assert!(f64_of(&json, "accept_s") > 0.0);
    assert!(f64_of(&json, "conns_per_s") > 0.0);
    assert!(f64_of(&json, "elapsed_s") >= 1.0);
    assert_eq!(u64_of(&json, "server_pid"), u64::from(std::process::id()));
    assert!(u64_of(&json, "server_rss_before_kib") > 0, "{json}");
    assert!(u64_of(&json, "server_rss_after_kib") > 0, "{json}");
    // A difference of two RSS readings: a number, possibly 0, not necessarily > 0.
    assert!(json["bytes_per_conn"].is_number(), "{json}");
    assert_eq!(json["bytes_per_conn"], json["server_rss_bytes_per_conn"]);
    assert!(
        json["sockstat_tcp_mem_bytes_per_socket"].is_number(),
        "{json}"
    );
    // Both ends of each connection are TCP sockets of this machine.
    let new_sockets = u64_of(&json, "sockstat_tcp_inuse_after")
        .saturating_sub(u64_of(&json, "sockstat_tcp_inuse_before"));
    assert!(new_sockets >= 300, "{json}");
}

#[test]
fn a_closed_port_is_an_error() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port();
    let url = format!("ws://127.0.0.1:{port}/");
    let output = wsload(&url, &["echo", "--connections", "3", "--messages", "5"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let json = json_of(&output);
    assert_eq!(json["ok"], false);
    assert_eq!(u64_of(&json, "errors"), 3);
    assert_eq!(u64_of(&json, "opened"), 0);
    assert_eq!(u64_of(&json, "messages"), 0);
    let sample = json["error_samples"][0].as_str().unwrap_or_default();
    assert!(sample.contains("connect"), "{json}");
}

/// Forwards one connection to `server`, flipping one bit of the server's stream at
/// `flip_at` (counted from the first byte of its response).
fn corrupting_proxy(server: std::net::SocketAddr, flip_at: u64) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let url = format!("ws://{}/", listener.local_addr().expect("proxy address"));
    thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let Ok(upstream) = TcpStream::connect(server) else {
            return;
        };
        let (mut client_r, mut upstream_w) =
            (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        thread::spawn(move || {
            let _ = std::io::copy(&mut client_r, &mut upstream_w);
            let _ = upstream_w.shutdown(Shutdown::Write);
        });
        let (mut upstream_r, mut client_w) = (upstream, client);
        let mut buf = vec![0u8; 64 * 1024];
        let mut pos = 0u64;
        loop {
            let n = match upstream_r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if (pos..pos + n as u64).contains(&flip_at) {
                buf[(flip_at - pos) as usize] ^= 0x10;
            }
            pos += n as u64;
            if client_w.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = client_w.shutdown(Shutdown::Write);
    });
    url
}

#[test]
fn a_corrupted_echo_fails_the_run() {
    let server = echo_server();
    // Byte 100000 of the server's stream is inside the payload of the second echoed
    // frame (the 101 response and the first 64 KiB frame come before it).
    let url = corrupting_proxy(server, 100_000);
    let output = wsload(&url, &["huge", "--size", "1048576"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let json = json_of(&output);
    assert_eq!(json["ok"], false);
    assert_eq!(u64_of(&json, "messages"), 0);
    assert!(u64_of(&json, "errors") >= 1);
    let sample = json["error_samples"][0].as_str().unwrap_or_default();
    assert!(sample.contains("verification failed"), "{json}");
}

/// A plain TCP echo, like `examples/opponents/mio_raw.rs` but one thread per
/// connection: it answers the upgrade request with a 101, then sends back every byte.
fn raw_echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind raw echo");
    let url = format!("ws://{}/", listener.local_addr().expect("raw echo address"));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let head = wsreactor_testkit::raw::read_http_head(&mut stream);
                let Some(key) = head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("sec-websocket-key")
                        .then(|| value.trim().to_string())
                }) else {
                    return;
                };
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    wsreactor::protocol::handshake::accept_key(&key)
                );
                if stream.write_all(response.as_bytes()).is_err() {
                    return;
                }
                let mut reader = stream.try_clone().expect("clone the stream");
                let _ = std::io::copy(&mut reader, &mut stream);
            });
        }
    });
    url
}

#[test]
fn raw_echo_verifies_a_plain_tcp_echo() {
    let url = raw_echo_server();
    let echo = run_ok(
        &url,
        &[
            "--raw-echo",
            "echo",
            "--connections",
            "3",
            "--in-flight",
            "4",
            "--size",
            "100",
            "--messages",
            "50",
        ],
    );
    assert_eq!(u64_of(&echo, "messages"), 150, "{echo}");
    assert_eq!(u64_of(&echo, "closed_ok"), 3, "{echo}");
    let huge = run_ok(&url, &["--raw-echo", "huge", "--size", "300000"]);
    assert_eq!(u64_of(&huge, "bytes_verified"), 300_000, "{huge}");
    assert_eq!(u64_of(&huge, "closed_ok"), 1, "{huge}");
}

#[test]
fn the_wrong_kind_of_echo_fails_the_run() {
    let expect_failure = |url: &str, args: &[&str], why: &str| {
        let output = wsload(url, args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {output:?}");
        let json = json_of(&output);
        assert_eq!(u64_of(&json, "messages"), 0, "{json}");
        let sample = json["error_samples"][0].as_str().unwrap_or_default();
        assert!(sample.contains(why), "{json}");
    };
    // A raw echo sends masked frames, which a server must never send (§5.1).
    let raw = raw_echo_server();
    expect_failure(&raw, &["echo", "--messages", "1"], "broke the protocol");
    // A WebSocket server's unmasked frames are not the raw echo's masked ones.
    let server = echo_server();
    expect_failure(
        &server.url(),
        &["--raw-echo", "echo", "--messages", "1"],
        "broke the protocol",
    );
}

#[test]
fn bad_arguments_exit_with_status_2_before_any_connection() {
    let usage = |url: &str, args: &[&str]| {
        let output = wsload(url, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(output.stdout.is_empty(), "{output:?}");
    };
    // Only loopback targets (the host is refused before anything is resolved).
    usage("ws://example.invalid:9001/", &["echo"]);
    usage("wss://127.0.0.1:9001/", &["echo"]);
    usage(
        "ws://127.0.0.1:9/",
        &["echo", "--messages", "1", "--duration", "1"],
    );
    usage("ws://127.0.0.1:9/", &["idle", "--hold", "31"]);
    usage("ws://127.0.0.1:9/", &["echo", "--connections", "0"]);
    usage("ws://127.0.0.1:9/", &["--source-ips", "10.1.2.3", "echo"]);
}
