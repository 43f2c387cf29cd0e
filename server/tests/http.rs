//! Plain HTTP on the WebSocket port: what the server answers besides upgrades.

mod common;

use common::{raw_connect, ServerProcess};
use std::io::{Read, Write};
use std::net::Shutdown;

/// Sends `request`, then reads everything until the server closes the connection.
fn exchange(server: &ServerProcess, request: &str) -> String {
    let mut stream = raw_connect(server);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    String::from_utf8(response).unwrap()
}

#[test]
fn head_gets_the_headers_of_get_without_a_body() {
    let server = ServerProcess::start(&[]);
    let get = exchange(&server, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = exchange(&server, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(get.ends_with("\r\n\r\nok\n"), "{get}");
    assert_eq!(head, get.trim_end_matches("ok\n"));
    let head = exchange(&server, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
}

#[test]
fn a_client_that_half_closes_after_its_request_still_gets_the_whole_response() {
    // Small socket buffers on both sides keep most of the demo page queued in the
    // server when the client's FIN arrives; it must still send all of it, then close.
    let server = ServerProcess::start(&["--so-sndbuf", "4096"]);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    // Let the server read the request and the FIN while the response cannot all go out.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a complete head");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    assert!(length > 10_000);
    assert_eq!(body.len(), length);
    assert!(body.trim_end().ends_with("</html>"));
}

#[test]
fn other_methods_get_405_naming_the_allowed_ones() {
    let server = ServerProcess::start(&[]);
    let response = exchange(&server, "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    assert!(response.contains("Allow: GET, HEAD\r\n"), "{response}");
}
