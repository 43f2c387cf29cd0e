//! Plain HTTP requests (no upgrade): the demo page, a health check, and 404.

use crate::protocol::handshake::{http_response, PlainRequest};

/// The demo page: one self-contained HTML file, embedded in the binary.
pub const DEMO_PAGE: &str = include_str!("demo.html");

/// The complete response to a plain HTTP request. Every response closes the
/// connection: the server speaks HTTP only to hand out these pages and upgrades.
pub fn respond(request: &PlainRequest) -> Vec<u8> {
    let path = request.path.split('?').next().unwrap_or_default();
    match (request.method.as_str(), path) {
        ("GET", "/") => http_response(200, &[], "text/html; charset=utf-8", DEMO_PAGE.as_bytes()),
        ("GET", "/healthz") => http_response(200, &[], "text/plain", b"ok\n"),
        ("GET", _) => http_response(404, &[], "text/plain", b"not found\n"),
        _ => http_response(
            405,
            &[("Allow", "GET")],
            "text/plain",
            b"method not allowed\n",
        ),
    }
}
