//! Plain HTTP requests (no upgrade): the demo page, a health check, the metrics, and
//! 404.

use super::metrics::Metrics;
use crate::protocol::handshake::{http_response, PlainRequest};

/// The demo page: one self-contained HTML file, embedded in the binary.
pub const DEMO_PAGE: &str = include_str!("demo.html");

/// The complete response to a plain HTTP request. Every response closes the
/// connection: the server speaks HTTP only to hand out these pages and upgrades.
/// `HEAD` gets the headers `GET` would get, without the body (RFC 9110 §9.3.2).
/// `/metrics` serves `metrics` (every worker's counters, summed) in the Prometheus text
/// exposition format.
pub fn respond(request: &PlainRequest, metrics: &Metrics) -> Vec<u8> {
    let path = request.path.split('?').next().unwrap_or_default();
    let mut response = match (request.method.as_str(), path) {
        ("GET" | "HEAD", "/") => {
            http_response(200, &[], "text/html; charset=utf-8", DEMO_PAGE.as_bytes())
        }
        ("GET" | "HEAD", "/healthz") => http_response(200, &[], "text/plain", b"ok\n"),
        ("GET" | "HEAD", "/metrics") => http_response(
            200,
            &[],
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.snapshot().prometheus().as_bytes(),
        ),
        ("GET" | "HEAD", _) => http_response(404, &[], "text/plain", b"not found\n"),
        _ => http_response(
            405,
            &[("Allow", "GET, HEAD")],
            "text/plain",
            b"method not allowed\n",
        ),
    };
    if request.method == "HEAD" {
        if let Some(head_end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            response.truncate(head_end + 4);
        }
    }
    response
}
