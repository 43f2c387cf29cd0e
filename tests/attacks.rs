//! Attacks that must not work, against a server in this process. Each test is bounded
//! in count and time, talks only to 127.0.0.1, and checks that the server both defends
//! itself and keeps serving a well-behaved client. (The attacks whose defence is
//! measured on the server process, its peak memory or its CPU time at the open-file
//! limit, are end to end, in server/tests/resources.rs.)

mod common;

use common::{
    config, echo_round_trip, expect_eof, http_exchange, masked_frame, raw_connect, raw_upgrade,
    read_close, read_frame, TestServer, UPGRADE_REQUEST,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn slowloris_handshakes_are_dropped_while_others_are_served() {
    common::raise_open_file_limit(); // both ends of 300 connections
    let server = TestServer::echo_with(config().handshake_timeout(Duration::from_secs(2)));
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
    let server = TestServer::echo_with(config().idle_timeout(Some(Duration::from_secs(1))));
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
    let server = TestServer::echo_with(config().max_connections(50));
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
fn a_close_that_is_never_answered_is_dropped_after_the_close_timeout() {
    let server = TestServer::echo_with(config().close_timeout(Duration::from_secs(1)));
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

#[test]
fn a_trickled_60_kb_head_is_parsed_in_work_linear_in_its_size() {
    let server = TestServer::echo_with(config().max_handshake_size(65536));
    let pad = "p".repeat(60_000);
    let head = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         X-Pad: {pad}\r\n\r\n"
    );
    let mut stream = raw_connect(&server);
    // 64 bytes a write: about 940 reads, each of which used to parse the whole head
    // so far again (some 28 MB in all for this head).
    for piece in head.as_bytes().chunks(64) {
        stream.write_all(piece).expect("trickle");
    }
    let answer = common::read_http_head(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    let parsed = server.metrics.snapshot().head_bytes_parsed;
    // One parse per completed line (8 lines) of at most the whole head.
    assert!(
        parsed <= 10 * head.len() as u64,
        "{parsed} bytes parsed for a head of {}",
        head.len()
    );
}

#[test]
fn past_max_handshakes_the_oldest_half_open_sockets_make_room_for_new_clients() {
    let server = TestServer::echo_with(config().max_handshakes(50));
    let mut slow: Vec<TcpStream> = (0..60u64)
        .map(|i| {
            let mut stream = raw_connect(&server);
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .expect("a head that never ends");
            // One at a time, so that the server accepts them in this order.
            while server.metrics.snapshot().accepted <= i {
                std::thread::sleep(Duration::from_millis(1));
            }
            stream
        })
        .collect();
    // The first ten were dropped for the last ten; a new client is served (and makes
    // room by dropping the next oldest).
    for stream in &mut slow[..10] {
        expect_eof(stream);
    }
    assert!(echo_round_trip(&server) < Duration::from_secs(2));
    let snapshot = server.metrics.snapshot();
    assert_eq!(snapshot.handshakes_evicted, 11);
    // The newest are still waiting for the end of their heads.
    let last = slow.last_mut().expect("sockets");
    last.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert!(
        matches!(last.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the newest half-open socket is still open"
    );
}
