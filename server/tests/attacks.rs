//! Attacks that must not work. Each test is bounded in count and time, talks only to
//! 127.0.0.1, and checks that the server both defends itself and keeps serving a
//! well-behaved client.

mod common;

use common::{
    expect_eof, http_exchange, masked_frame, raw_connect, raw_upgrade, read_close, read_frame,
    ServerProcess, SMALL_WRITE_WATERMARKS, UPGRADE_REQUEST,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A well-behaved client: upgrade, echo one message, and return the round-trip time.
fn echo_round_trip(server: &ServerProcess) -> Duration {
    let start = Instant::now();
    let mut stream = raw_upgrade(server);
    stream
        .write_all(&masked_frame(true, 0x1, b"still here?"))
        .unwrap();
    let frame = read_frame(&mut stream).expect("echo");
    assert_eq!(frame.payload, b"still here?");
    start.elapsed()
}

/// CPU time (user + system) the process has used, from /proc/PID/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the ")" that ends the command name; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

#[test]
fn slowloris_handshakes_are_dropped_while_others_are_served() {
    let server = ServerProcess::start(&["--handshake-timeout", "2"]);
    let mut slow: Vec<TcpStream> = (0..300).map(|_| raw_connect(&server)).collect();
    let request = UPGRADE_REQUEST.as_bytes();
    // Trickle the request a byte at a time on every connection for a while...
    for i in 0..3 {
        for stream in &mut slow {
            let _ = stream.write_all(&request[i..=i]);
        }
        // ...while a normal client gets its echo.
        assert!(echo_round_trip(&server) < Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(500));
    }
    // After the handshake timeout every slow connection has been closed by the server.
    for stream in &mut slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        expect_eof(stream);
    }
    assert!(echo_round_trip(&server) < Duration::from_secs(2));
}

#[test]
fn a_frame_header_then_silence_is_pinged_then_dropped() {
    let server = ServerProcess::start(&["--idle-timeout", "1"]);
    let mut stream = raw_upgrade(&server);
    // The start of a header that announces 1000 bytes, then nothing.
    stream
        .write_all(&masked_frame(true, 0x2, &[0; 1000])[..3])
        .unwrap();
    let ping = read_frame(&mut stream).expect("keepalive ping");
    assert_eq!(ping.opcode, 0x9);
    expect_eof(&mut stream);
    assert!(echo_round_trip(&server) < Duration::from_secs(2));
}

#[test]
fn a_connection_flood_past_the_limit_is_refused_with_503() {
    let server = ServerProcess::start(&["--max-connections", "50"]);
    let open: Vec<TcpStream> = (0..50).map(|_| raw_upgrade(&server)).collect();
    for _ in 0..100 {
        let mut stream = raw_connect(&server);
        let head = http_exchange(&mut stream, UPGRADE_REQUEST.as_bytes());
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        assert!(head.contains("Retry-After:"), "{head}");
        expect_eof(&mut stream);
    }
    drop(open);
    // Once they are gone, new clients are served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = raw_connect(&server);
        if http_exchange(&mut stream, UPGRADE_REQUEST.as_bytes()).starts_with("HTTP/1.1 101") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server never accepted upgrades again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn running_out_of_file_descriptors_backs_off_without_spinning_and_recovers() {
    // Start the server under a 64-file limit (its soft limit can rise no higher).
    let prlimit = std::process::Command::new("prlimit")
        .arg("--version")
        .output();
    if prlimit.is_err() {
        panic!("prlimit (util-linux) is needed for this test");
    }
    let server = ServerProcess::start_with_prefix(&["prlimit", "--nofile=64:64", "--"], &[]);
    // Well past the limit: the kernel completes these handshakes into the backlog,
    // but the server cannot accept most of them.
    let mut clients: Vec<TcpStream> = (0..150)
        .filter_map(|_| TcpStream::connect(server.addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_time(server.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time(server.pid()) - before;
    assert!(
        used < Duration::from_millis(500),
        "the accept loop spun: {used:?} of CPU in 2 s"
    );
    // Free the descriptors; the server recovers and serves a normal client.
    clients.clear();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = raw_connect(&server);
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        stream.write_all(UPGRADE_REQUEST.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        if stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 101") {
            break;
        }
        assert!(Instant::now() < deadline, "server never recovered");
    }
}

#[test]
fn a_frame_claiming_2_pow_63_minus_1_bytes_allocates_nothing_for_it() {
    let server = ServerProcess::start(&["--buffered", "--max-message-size", "1048576"]);
    let mut stream = raw_upgrade(&server);
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(i64::MAX as u64).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    stream.write_all(&header).unwrap();
    assert_eq!(read_close(&mut stream).0, Some(1009));
    expect_eof(&mut stream);

    // The streaming echo accepts the claim and forwards what actually arrives.
    let server = ServerProcess::start(&[]);
    let mut stream = raw_upgrade(&server);
    stream.write_all(&header).unwrap();
    stream.write_all(&[0u8; 100_000]).unwrap();
    let mut echoed = 0;
    while echoed < 100_000 {
        echoed += read_frame(&mut stream).expect("echo frame").payload.len();
    }
    assert!(
        server.status_kib("VmHWM") < 64 * 1024,
        "no allocation sized by the claim"
    );
}

#[test]
fn a_ping_flood_from_a_client_that_never_reads_stays_bounded() {
    let server = ServerProcess::start(&SMALL_WRITE_WATERMARKS);
    let mut stream = raw_upgrade(&server);
    stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let ping = masked_frame(true, 0x9, &[0x55; 125]);
    let batch: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 1000)
        .collect();
    // Up to 400 MiB of pings; TCP back-pressure stops the writer long before that.
    let mut sent = 0usize;
    let start = Instant::now();
    while sent < 400 << 20 && start.elapsed() < Duration::from_secs(10) {
        match stream.write(&batch) {
            Ok(n) => sent += n,
            Err(_) => break, // blocked for 3 s: the server stopped reading
        }
    }
    assert!(
        sent < 400 << 20,
        "the server kept reading pings it could not answer"
    );
    // Queue (≤ 1 MiB + one read) plus binary and kernel-independent baseline.
    let peak_kib = server.status_kib("VmHWM");
    assert!(peak_kib < 24 * 1024, "peak RSS {peak_kib} KiB");
    // Other clients are unaffected.
    assert!(echo_round_trip(&server) < Duration::from_secs(2));
}

#[test]
fn a_close_that_is_never_answered_is_dropped_after_the_close_timeout() {
    let server = ServerProcess::start(&["--close-timeout", "1"]);
    let mut stream = raw_upgrade(&server);
    // A protocol error: the server sends 1002 and closes; this client ignores it and
    // never closes its side. The server still releases the connection.
    stream.write_all(&masked_frame(true, 0x3, b"")).unwrap();
    assert_eq!(read_close(&mut stream).0, Some(1002));
    // FIN: the server shut its write side at once (it closes first, RFC 6455 §7.1.1)...
    expect_eof(&mut stream);
    // ...but keeps reading, to see ours, so our writes are still taken for now.
    stream.write_all(b"ignored").unwrap();
    // After the close timeout it closes the socket for good: writes meet a reset.
    std::thread::sleep(Duration::from_millis(1500));
    let refused = (0..20).any(|_| {
        let result = stream.write_all(b"x");
        std::thread::sleep(Duration::from_millis(50));
        result.is_err()
    });
    assert!(
        refused,
        "the server still holds the connection after its close timeout"
    );
}
