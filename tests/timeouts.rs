//! The server's timers, observed from clients that stall: the handshake timeout, the
//! keepalive ping and the close timeout. Each test runs a server in this process with
//! 1-second timers and bounds every wait with a socket timeout. (The close timeout
//! during a shutdown started by SIGTERM is the binary's: server/tests/close_timeout.rs.)
//!
//! Lower bounds (not dropped before the timer) are exact: the server cannot act
//! before its deadline. Upper bounds are generous, to tolerate a loaded machine.

mod common;

use common::{
    config, connect, expect_eof, masked_frame, raw_connect, raw_upgrade,
    raw_upgrade_with_read_timeout, read_close, read_frame, read_message, small_watermarks,
    TestServer,
};
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Generous upper bound for "about one timer period" on a busy 2-core machine.
const SLACK: Duration = Duration::from_secs(3);

/// Reads until EOF (or reset) and returns how long that took.
fn time_to_eof(stream: &mut std::net::TcpStream) -> Duration {
    let start = Instant::now();
    expect_eof(stream);
    start.elapsed()
}

/// Asserts that what the server does when a `timer` expires (here: dropping a
/// client) came `elapsed` after the start: no sooner than 9/10 of the timer (the
/// server cannot act before its deadline), and sooner than the timer plus [`SLACK`].
fn assert_after_timer(what: &str, elapsed: Duration, timer: Duration) {
    let at_least = timer * 9 / 10;
    assert!(
        elapsed >= at_least,
        "{what} before the timeout ({at_least:?}): {elapsed:?}"
    );
    assert!(elapsed < timer + SLACK, "{what} too late: {elapsed:?}");
}

#[test]
fn a_client_that_never_finishes_its_handshake_is_dropped_while_others_keep_echoing() {
    let server = TestServer::echo_with(config().handshake_timeout(Duration::from_secs(1)));
    let mut ws = connect(&server);
    let mut stalled = raw_connect(&server);
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stalled
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n")
        .unwrap();
    let start = Instant::now();
    let watcher = std::thread::spawn(move || time_to_eof(&mut stalled));
    // Meanwhile the upgraded client is served as usual (the loop does not block on the
    // stalled one), before and after the drop.
    let mut echoes = 0;
    while !watcher.is_finished() || echoes < 10 {
        let text = format!("echo {echoes}");
        ws.send(Message::text(text.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text(text));
        echoes += 1;
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "stalled client never dropped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let dropped_after = watcher.join().unwrap();
    assert_after_timer("dropped", dropped_after, Duration::from_secs(1));
}

#[test]
fn a_handshake_trickled_one_byte_at_a_time_still_times_out() {
    let server = TestServer::echo_with(config().handshake_timeout(Duration::from_secs(1)));
    let mut stream = raw_connect(&server);
    let start = Instant::now();
    // Slowloris: keep sending, never finish the head. Each byte must not reset the timer.
    let mut dropped = false;
    for byte in b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
        .iter()
        .cycle()
    {
        if stream.write_all(std::slice::from_ref(byte)).is_err() {
            dropped = true;
            break;
        }
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match stream.read(&mut [0u8; 64]) {
            Ok(0) => {
                dropped = true;
                break;
            }
            Ok(n) => panic!("unexpected {n} bytes of answer"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                dropped = true; // reset
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(1) + SLACK {
            break;
        }
    }
    assert!(dropped, "a trickling handshake was not dropped");
    assert!(start.elapsed() >= Duration::from_millis(900));
}

#[test]
fn a_silent_client_is_pinged_then_dropped_when_it_does_not_answer() {
    let server = TestServer::echo_with(config().idle_timeout(Some(Duration::from_secs(1))));
    let mut stream = raw_upgrade_with_read_timeout(&server, Duration::from_secs(10));
    // Half a frame header, then silence: the server must not wait for the rest forever.
    stream.write_all(&[0x81]).unwrap();
    let start = Instant::now();
    let ping = read_frame(&mut stream).expect("keepalive ping");
    let pinged_after = start.elapsed();
    assert_eq!((ping.opcode, &ping.payload[..]), (0x9, &b"keepalive"[..]));
    assert!(
        pinged_after >= Duration::from_millis(900),
        "{pinged_after:?}"
    );
    // No pong: dropped one idle period after the ping (no close frame: the peer is
    // presumed gone, §7.1.7 allows dropping without one).
    let dropped_after = time_to_eof(&mut stream) + pinged_after;
    assert_after_timer("dropped", dropped_after, Duration::from_secs(2));
}

#[test]
fn a_client_that_answers_keepalive_pings_stays_connected() {
    let server = TestServer::echo_with(config().idle_timeout(Some(Duration::from_secs(1))));
    let mut stream = raw_upgrade_with_read_timeout(&server, Duration::from_secs(5));
    // Two rounds: each ping answered, each time the connection survives the next
    // period (it would be dropped one period after an unanswered ping).
    for _ in 0..2 {
        let ping = read_frame(&mut stream).expect("keepalive ping");
        assert_eq!(ping.opcode, 0x9);
        stream
            .write_all(&masked_frame(true, 0xA, &ping.payload))
            .unwrap();
    }
    stream
        .write_all(&masked_frame(true, 0x1, b"alive"))
        .unwrap();
    let (opcode, payload) = read_message(&mut stream, &mut Vec::new());
    assert_eq!((opcode, &payload[..]), (0x1, &b"alive"[..]));
}

#[test]
fn a_failed_connection_whose_client_keeps_its_side_open_is_released_after_the_close_timeout() {
    let server = TestServer::echo_with(config().close_timeout(Duration::from_secs(1)));
    let mut stream = raw_upgrade_with_read_timeout(&server, Duration::from_secs(5));
    // A protocol error: the server sends its close and shuts its write side (FIN) at
    // once, then waits for ours, which never comes (§7.1.1: the server closes first).
    stream.write_all(&masked_frame(true, 0x3, b"")).unwrap();
    assert_eq!(read_close(&mut stream).0, Some(1002));
    let start = Instant::now();
    expect_eof(&mut stream);
    // Until the close timeout the server still holds the socket and discards input.
    // Once it has let go, input is answered with a reset by the kernel.
    let released_after = loop {
        let elapsed = start.elapsed();
        assert!(elapsed < Duration::from_secs(1) + SLACK, "never released");
        let wrote = stream.write_all(b"ignored");
        std::thread::sleep(Duration::from_millis(50));
        let reset = wrote.is_err()
            || matches!(stream.read(&mut [0u8; 16]), Err(e) if e.kind() == ErrorKind::ConnectionReset);
        if reset {
            break elapsed;
        }
    };
    assert!(
        released_after >= Duration::from_millis(800),
        "released before the close timeout: {released_after:?}"
    );
    // The server is fine, and other clients are served.
    let mut other = raw_upgrade(&server);
    other.write_all(&masked_frame(true, 0x1, b"next")).unwrap();
    assert_eq!(read_message(&mut other, &mut Vec::new()).1, b"next");
}

#[test]
fn a_slow_reader_held_back_by_back_pressure_is_not_dropped_as_idle() {
    // Reading pauses while 256 KiB-1 MiB are queued; small socket buffers make the
    // pause last as long as the client takes to read that much.
    let server = TestServer::echo_with(
        small_watermarks()
            .idle_timeout(Some(Duration::from_secs(1)))
            .so_sndbuf(Some(65536)),
    );
    let mut stream = raw_upgrade_with_read_timeout(&server, Duration::from_secs(10));
    socket2::SockRef::from(&stream)
        .set_recv_buffer_size(65536)
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    const MESSAGES: usize = 16;
    const SIZE: usize = 256 * 1024;
    let payload = |n: usize| -> Vec<u8> { (0..SIZE).map(|i| (i * 7 + n) as u8).collect() };
    let mut write_half = stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        for n in 0..MESSAGES {
            write_half.write_all(&masked_frame(true, 0x2, &payload(n)))?;
        }
        Ok(())
    });
    // Read slowly (a 64 KiB frame every 400 ms, about 160 KiB/s) for 4 s: the client
    // is alive and reading, but the paused server reads nothing from it for several
    // idle periods. Then read the rest at full speed; check every message.
    let slow_until = Instant::now() + Duration::from_secs(4);
    let mut message = Vec::new();
    let mut n = 0;
    while n < MESSAGES {
        let frame = read_frame(&mut stream).expect("dropped while reading");
        if frame.opcode == 0x9 {
            // A keepalive ping sent before the pause showed progress. It goes
            // unanswered (a pong could not be slipped between the writer thread's
            // frames without a lock): reading alone must keep the connection.
            continue;
        }
        assert!(
            frame.opcode == 0x2 || frame.opcode == 0x0,
            "{:#x}",
            frame.opcode
        );
        message.extend_from_slice(&frame.payload);
        if frame.fin {
            assert!(message == payload(n), "message {n} corrupted");
            message.clear();
            n += 1;
        }
        if Instant::now() < slow_until {
            std::thread::sleep(Duration::from_millis(400));
        }
    }
    writer.join().unwrap().expect("writer");
}

#[test]
fn a_slow_reader_that_is_not_paused_is_not_dropped_as_idle() {
    // One 512 KiB message, far below the 16 MiB high watermark: the server never
    // pauses, has read everything, and gets no more input. The client reads the echo
    // slowly for longer than two idle periods; the socket's progress must count as
    // life even though nothing arrives.
    // Small socket buffers keep most of the echo in the server's queue, where a
    // wrongly dropped connection would lose it.
    let server = TestServer::echo_with(
        config()
            .idle_timeout(Some(Duration::from_secs(1)))
            .so_sndbuf(Some(16384)),
    );
    let mut stream = raw_upgrade_with_read_timeout(&server, Duration::from_secs(10));
    socket2::SockRef::from(&stream)
        .set_recv_buffer_size(16384)
        .unwrap();
    let payload: Vec<u8> = (0..512 * 1024).map(|i| (i * 13) as u8).collect();
    stream
        .write_all(&masked_frame(true, 0x2, &payload))
        .unwrap();
    let start = Instant::now();
    let mut echoed = Vec::new();
    while echoed.len() < payload.len() {
        let frame = read_frame(&mut stream).expect("dropped while reading");
        match frame.opcode {
            0x9 => continue, // keepalive ping, left unanswered: reading must suffice
            0x2 | 0x0 => echoed.extend_from_slice(&frame.payload),
            other => panic!("unexpected opcode {other:#x}"),
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(
        start.elapsed() > Duration::from_secs(3),
        "read too fast to test anything"
    );
    assert!(echoed == payload, "the echo differs");
}

#[test]
fn a_client_that_stops_reading_altogether_is_still_dropped_by_keepalive() {
    // The counterpart of the slow reader: back-pressure pauses the server, but this
    // client takes nothing at all, so nothing proves it alive and the keepalive ping
    // (stuck behind the queue) goes unanswered.
    let server =
        TestServer::echo_with(small_watermarks().idle_timeout(Some(Duration::from_secs(1))));
    let stream = raw_upgrade(&server);
    stream
        .set_write_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut write_half = stream.try_clone().unwrap();
    let start = Instant::now();
    let writer = std::thread::spawn(move || -> std::io::Error {
        let frame = masked_frame(true, 0x2, &vec![0x5A; 1 << 20]);
        loop {
            if let Err(e) = write_half.write_all(&frame) {
                return e;
            }
        }
    });
    while !writer.is_finished() {
        assert!(start.elapsed() < Duration::from_secs(12), "never dropped");
        std::thread::sleep(Duration::from_millis(50));
    }
    let error = writer.join().unwrap();
    let dropped_after = start.elapsed();
    assert!(
        matches!(
            error.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        "{error}"
    );
    assert_after_timer("dropped", dropped_after, Duration::from_secs(2));
    drop(stream);
}
