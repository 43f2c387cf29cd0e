//! The server's plain HTTP routes: the demo page, a health check, the metrics, and
//! 404 / 405 for everything else.

use wsreactor::{HttpRequest, HttpResponse, Metrics};

/// The demo page: one self-contained HTML file, embedded in the binary.
pub const DEMO_PAGE: &str = include_str!("demo.html");

/// The answer to a plain HTTP request. `/metrics` serves `metrics` (every worker's
/// counters, summed) in the Prometheus text exposition format. (The library sends
/// `HEAD` the headers of the `GET` answer, without its body.)
pub fn respond(request: &HttpRequest, metrics: &Metrics) -> HttpResponse {
    let readable = matches!(request.method.as_str(), "GET" | "HEAD");
    match (readable, request.resource_path()) {
        (true, "/") => HttpResponse::new(200).body("text/html; charset=utf-8", DEMO_PAGE),
        (true, "/healthz") => HttpResponse::new(200).body("text/plain", "ok\n"),
        (true, "/metrics") => HttpResponse::new(200).body(
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.snapshot().prometheus(),
        ),
        (true, _) => HttpResponse::not_found(),
        (false, _) => HttpResponse::new(405)
            .header("Allow", "GET, HEAD")
            .body("text/plain", "method not allowed\n"),
    }
}
