//! Cost of the opening handshake (RFC 6455 §4) on the server's side: parsing the
//! upgrade request, computing `Sec-WebSocket-Accept` (SHA-1 + base64), and both plus
//! building the 101 response, i.e. everything the server computes per new connection.
//!
//! Run with `cargo bench --bench handshake` (add `-- --quick` for a fast check).
//! (The UTF-8 validator is measured by the `utf8` group of `benches/mask.rs`.)

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wsreactor::protocol::handshake::{
    accept_key, parse_request, switching_protocols, Parsed, Request,
};

/// What Chromium sends (≈ 520 bytes, 13 header fields).
const BROWSER_REQUEST: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\n\
Host: 127.0.0.1:9001\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://127.0.0.1:9001\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

/// What a minimal client such as tungstenite sends (5 header fields).
const MINIMAL_REQUEST: &[u8] = b"GET / HTTP/1.1\r\n\
Host: 127.0.0.1:9001\r\n\
Connection: Upgrade\r\n\
Upgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
\r\n";

/// The server's default `--max-head-size`.
const MAX_HEAD: usize = 8 * 1024;

/// Parses a request and builds its 101: the whole per-connection handshake work.
fn respond(request: &[u8]) -> Vec<u8> {
    match parse_request(request, MAX_HEAD) {
        Ok(Parsed::Complete {
            request: Request::Upgrade(upgrade),
            ..
        }) => switching_protocols(&upgrade, None, &[]),
        other => panic!("not an upgrade: {other:?}"),
    }
}

fn bench_handshake(c: &mut Criterion) {
    // The RFC's own example (§1.3).
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );

    let mut group = c.benchmark_group("handshake");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));

    group.bench_function("accept_key", |b| {
        b.iter(|| accept_key(black_box("dGhlIHNhbXBsZSBub25jZQ==")))
    });
    for (label, request) in [("browser", BROWSER_REQUEST), ("minimal", MINIMAL_REQUEST)] {
        group.bench_function(format!("parse_request/{label}"), |b| {
            b.iter(|| parse_request(black_box(request), MAX_HEAD))
        });
        group.bench_function(format!("parse_and_101/{label}"), |b| {
            b.iter(|| respond(black_box(request)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_handshake);
criterion_main!(benches);
