//! The binary's own HTTP routes (`server/src/routes.rs`), end to end: the health check,
//! the demo page and 404 for any other path. (The library's handshake and its
//! refusals are tested in process, in the root `tests/handshake.rs`; `HEAD`, 405 and
//! a half-closed client in `http.rs`; `/metrics` in `metrics.rs`.)

mod common;

use common::{http_exchange, raw_connect, ServerProcess};
use std::io::Read;

/// Sends `GET path` and returns the response head and the body (the server closes
/// after it).
fn http_get(server: &ServerProcess, path: &str) -> (String, String) {
    let mut stream = raw_connect(server);
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let head = http_exchange(&mut stream, request.as_bytes());
    let mut body = Vec::new();
    stream.read_to_end(&mut body).expect("body until EOF");
    (head, String::from_utf8(body).expect("UTF-8 body"))
}

#[test]
fn healthz_answers_200() {
    let server = ServerProcess::start(&[]);
    let (head, body) = http_get(&server, "/healthz");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(body, "ok\n");
}

#[test]
fn the_root_path_serves_the_html_demo_page() {
    let server = ServerProcess::start(&[]);
    let (head, body) = http_get(&server, "/");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert!(body.contains("wsreactor"), "the page names the server");
}

#[test]
fn an_unknown_path_answers_404() {
    let server = ServerProcess::start(&[]);
    let (head, _) = http_get(&server, "/nope");
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
}
