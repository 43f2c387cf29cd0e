//! The opening handshake over raw TCP (RFC 6455 §4), against servers in this process:
//! good requests however they are cut into packets, each kind of bad request answered
//! with its HTTP status and a closed connection, and the connection limit. (The
//! binary's own pages, `/healthz` and the demo page, are tested end to end in
//! server/tests/routes.rs.)

mod common;

use common::{
    config, expect_eof, http_exchange, masked_frame, raw_connect, raw_upgrade, read_close,
    read_http_head, read_message, Listening, TestServer, UPGRADE_REQUEST,
};
use std::io::{Read, Write};
use std::time::Duration;
use wsreactor::{Echo, HttpResponse, Server};

/// The accept value for the sample key in `UPGRADE_REQUEST` (RFC 6455 §1.3).
const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A request built from header lines (each without CRLF), ending the head.
fn request(request_line: &str, headers: &[&str]) -> String {
    let mut out = format!("{request_line}\r\n");
    for header in headers {
        out.push_str(header);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out
}

/// The headers of a valid upgrade, with the one starting with `name` left out.
fn upgrade_headers_without(name: &str) -> Vec<&'static str> {
    [
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    .into_iter()
    .filter(|h| !h.starts_with(name))
    .collect()
}

/// The headers of a valid upgrade with `header` (a whole line such as
/// `"Upgrade: h2c"`) in place of the one with the same name, or added at the end if
/// none has it.
fn upgrade_headers_with(header: &str) -> Vec<&str> {
    let name = header.split(':').next().unwrap_or(header);
    let mut headers = upgrade_headers_without(name);
    headers.push(header);
    headers
}

/// Whether the response head has the header `name` (any case) with exactly `value`.
fn has_header(head: &str, name: &str, value: &str) -> bool {
    head.lines().any(|line| {
        line.split_once(':')
            .is_some_and(|(n, v)| n.trim().eq_ignore_ascii_case(name) && v.trim() == value)
    })
}

/// Sends `request`, asserts the response status, then that the server closes the
/// connection. Returns the response head.
fn expect_refusal(server: &impl Listening, request: &[u8], status: u16) -> String {
    let mut stream = raw_connect(server);
    let head = http_exchange(&mut stream, request);
    assert!(
        head.starts_with(&format!("HTTP/1.1 {status} ")),
        "expected {status} for {:?}, got:\n{head}",
        String::from_utf8_lossy(&request[..request.len().min(200)])
    );
    // The response says it closes the connection (426 says "Upgrade, close").
    assert!(
        head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("connection:") && l.contains("close")
        }),
        "{head}"
    );
    expect_eof(&mut stream);
    head
}

/// [`expect_refusal`] for a `GET / HTTP/1.1` request with `headers`.
fn expect_get_refusal(server: &impl Listening, headers: &[&str], status: u16) -> String {
    expect_refusal(
        server,
        request("GET / HTTP/1.1", headers).as_bytes(),
        status,
    )
}

/// Sends a plain HTTP request and returns the whole response (the server closes after
/// it).
fn http_get(server: &impl Listening, path: &str) -> (String, String) {
    let mut stream = raw_connect(server);
    let head = http_exchange(
        &mut stream,
        request(&format!("GET {path} HTTP/1.1"), &["Host: localhost"]).as_bytes(),
    );
    let mut body = Vec::new();
    stream.read_to_end(&mut body).expect("body until EOF");
    (head, String::from_utf8(body).expect("UTF-8 body"))
}

#[test]
fn the_handshake_and_the_first_frame_in_one_write_get_a_101_and_an_echo() {
    let server = TestServer::echo();
    let mut stream = raw_connect(&server);
    let mut wire = UPGRADE_REQUEST.as_bytes().to_vec();
    wire.extend(masked_frame(true, 0x1, b"right behind the head"));
    stream.write_all(&wire).unwrap();
    let head = read_http_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        has_header(&head, "Sec-WebSocket-Accept", SAMPLE_ACCEPT),
        "{head}"
    );
    let (opcode, payload) = read_message(&mut stream, &mut Vec::new());
    assert_eq!((opcode, &payload[..]), (0x1, &b"right behind the head"[..]));
}

#[test]
fn a_head_cut_across_writes_with_a_frame_behind_its_last_part_gets_a_101_and_an_echo() {
    let server = TestServer::echo();
    let mut stream = raw_connect(&server);
    let head = UPGRADE_REQUEST.as_bytes();
    let (first, last) = head.split_at(head.len() - 3);
    stream.write_all(first).unwrap();
    // Let the server read the first part on its own (pacing, not timing).
    std::thread::sleep(Duration::from_millis(50));
    let mut wire = last.to_vec();
    wire.extend(masked_frame(true, 0x2, &[9, 8, 7]));
    stream.write_all(&wire).unwrap();
    let head = read_http_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let (opcode, payload) = read_message(&mut stream, &mut Vec::new());
    assert_eq!((opcode, &payload[..]), (0x2, &[9u8, 8, 7][..]));
}

#[test]
fn a_whole_exchange_delivered_one_byte_per_write_works() {
    let server = TestServer::echo();
    let mut stream = raw_connect(&server);
    let text = "one byte at a time: ✓".repeat(8); // > 125 bytes: a 16-bit length
    let mut wire = UPGRADE_REQUEST.as_bytes().to_vec();
    wire.extend(masked_frame(true, 0x1, text.as_bytes()));
    wire.extend(masked_frame(true, 0x9, b"ping"));
    for byte in &wire {
        stream.write_all(std::slice::from_ref(byte)).unwrap();
        // Give the server a chance to read each byte on its own (pacing, not timing).
        std::thread::sleep(Duration::from_micros(200));
    }
    let head = read_http_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        has_header(&head, "Sec-WebSocket-Accept", SAMPLE_ACCEPT),
        "{head}"
    );
    let mut controls = Vec::new();
    let (opcode, payload) = read_message(&mut stream, &mut controls);
    assert_eq!(opcode, 0x1);
    assert_eq!(String::from_utf8(payload).unwrap(), text);
    let pong = match controls.pop() {
        Some(pong) => pong,
        None => common::read_frame(&mut stream).expect("pong"),
    };
    assert_eq!((pong.opcode, &pong.payload[..]), (0xA, &b"ping"[..]));
}

#[test]
fn a_request_without_host_is_refused_with_400() {
    let server = TestServer::echo();
    expect_get_refusal(&server, &upgrade_headers_without("Host"), 400);
}

#[test]
fn a_missing_or_invalid_key_is_refused_with_400() {
    let server = TestServer::echo();
    expect_get_refusal(&server, &upgrade_headers_without("Sec-WebSocket-Key"), 400);
    // Base64 of 15 bytes, not 16.
    let short_key = upgrade_headers_with("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA");
    expect_get_refusal(&server, &short_key, 400);
    // 24 characters, but not base64.
    let bad_key = upgrade_headers_with("Sec-WebSocket-Key: !!!!not*base64*at*all!==");
    expect_get_refusal(&server, &bad_key, 400);
}

#[test]
fn an_upgrade_header_without_websocket_is_refused_with_400() {
    let server = TestServer::echo();
    expect_get_refusal(&server, &upgrade_headers_with("Upgrade: h2c"), 400);
}

#[test]
fn a_connection_header_without_upgrade_is_refused_with_400() {
    let server = TestServer::echo();
    expect_get_refusal(
        &server,
        &upgrade_headers_with("Connection: keep-alive"),
        400,
    );
}

#[test]
fn version_8_is_refused_with_426_naming_version_13() {
    let server = TestServer::echo();
    let headers = upgrade_headers_with("Sec-WebSocket-Version: 8");
    let head = expect_get_refusal(&server, &headers, 426);
    assert!(has_header(&head, "Sec-WebSocket-Version", "13"), "{head}");
}

#[test]
fn a_post_upgrade_is_refused_with_405() {
    let server = TestServer::echo();
    let req = request("POST / HTTP/1.1", &upgrade_headers_without("X-none"));
    let head = expect_refusal(&server, req.as_bytes(), 405);
    assert!(has_header(&head, "Allow", "GET"), "{head}");
}

#[test]
fn an_http_1_0_upgrade_is_refused_with_505() {
    let server = TestServer::echo();
    let req = request("GET / HTTP/1.0", &upgrade_headers_without("X-none"));
    expect_refusal(&server, req.as_bytes(), 505);
}

#[test]
fn a_request_head_over_8_kib_is_refused_with_431() {
    let server = TestServer::echo();
    let filler = format!("X-Filler: {}", "a".repeat(9000));
    expect_get_refusal(&server, &upgrade_headers_with(&filler), 431);
    // A head that never ends is refused as soon as it passes the limit.
    let endless = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Filler: {}",
        "b".repeat(9000)
    );
    expect_refusal(&server, endless.as_bytes(), 431);
}

#[test]
fn max_handshake_size_lowers_the_head_limit() {
    let server = TestServer::echo_with(config().max_handshake_size(1024));
    let filler = format!("X-Filler: {}", "a".repeat(1100));
    expect_get_refusal(&server, &upgrade_headers_with(&filler), 431);
    // A normal request still fits.
    let mut stream = raw_upgrade(&server);
    stream
        .write_all(&masked_frame(true, 0x2, &[1, 2, 3]))
        .unwrap();
    let (opcode, payload) = read_message(&mut stream, &mut Vec::new());
    assert_eq!((opcode, &payload[..]), (0x2, &[1u8, 2, 3][..]));
}

#[test]
fn garbage_bytes_are_refused_with_400() {
    let server = TestServer::echo();
    // The start of a TLS ClientHello, as sent by a client that expected wss://: refused
    // at once, without waiting for the end of a head that will never come.
    expect_refusal(
        &server,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x9a\xbc",
        400,
    );
    expect_refusal(&server, b"this is not http\r\n\r\n", 400);
    expect_refusal(&server, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400);
}

#[test]
fn connection_keep_alive_upgrade_is_accepted() {
    let server = TestServer::echo();
    let headers = upgrade_headers_with("Connection: keep-alive, Upgrade");
    let mut stream = raw_connect(&server);
    let head = http_exchange(
        &mut stream,
        request("GET /chat HTTP/1.1", &headers).as_bytes(),
    );
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        has_header(&head, "Sec-WebSocket-Accept", SAMPLE_ACCEPT),
        "{head}"
    );
    stream
        .write_all(&masked_frame(true, 0x1, b"firefox"))
        .unwrap();
    let (_, payload) = read_message(&mut stream, &mut Vec::new());
    assert_eq!(payload, b"firefox");
}

#[test]
fn over_max_connections_an_upgrade_gets_503_until_a_connection_closes() {
    // With a `/healthz` route, as the binary has, to show that plain HTTP is served.
    let server = Server::bind(config().max_connections(2).build().unwrap(), Echo::new())
        .expect("bind")
        .http(|request| match request.resource_path() {
            "/healthz" => HttpResponse::new(200).text("ok\n"),
            _ => HttpResponse::not_found(),
        });
    let server = TestServer::run(server);
    let mut first = raw_upgrade(&server);
    let _second = raw_upgrade(&server);
    let head = expect_refusal(&server, UPGRADE_REQUEST.as_bytes(), 503);
    assert!(
        head.lines()
            .any(|l| l.to_ascii_lowercase().starts_with("retry-after:")),
        "{head}"
    );
    // Plain HTTP is still served: only WebSocket connections count.
    let (head, _) = http_get(&server, "/healthz");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    // Close the first connection properly; then there is room again.
    first
        .write_all(&masked_frame(true, 0x8, &1000u16.to_be_bytes()))
        .unwrap();
    assert_eq!(read_close(&mut first).0, Some(1000));
    expect_eof(&mut first);
    let mut third = raw_upgrade(&server);
    third.write_all(&masked_frame(true, 0x1, b"room")).unwrap();
    let (_, payload) = read_message(&mut third, &mut Vec::new());
    assert_eq!(payload, b"room");
}

#[test]
fn an_offered_subprotocol_is_not_selected_by_the_echo_server() {
    let server = TestServer::echo();
    let headers = upgrade_headers_with("Sec-WebSocket-Protocol: chat, superchat");
    let mut stream = raw_connect(&server);
    let head = http_exchange(&mut stream, request("GET / HTTP/1.1", &headers).as_bytes());
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "no subprotocol may be announced when none was chosen (RFC 6455 §4.2.2):\n{head}"
    );
}
