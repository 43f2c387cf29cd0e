//! Throughput of the two per-byte loops of the read path: unmasking (RFC 6455 §5.3)
//! and UTF-8 validation of text messages (§8.1).
//!
//! Run with `cargo bench --bench mask` (add `-- --quick` for a fast check).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsreactor::protocol::mask::{apply_mask, apply_mask_reference};
use wsreactor::protocol::utf8::Utf8Validator;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Offset 1, so the fast path has to rotate the key, as it does for every piece of a
/// payload that does not start on a key boundary.
const OFFSET: usize = 1;

fn bench_mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));

    for (label, size) in [
        ("16B", 16usize),
        ("256B", 256),
        ("4KiB", 4 << 10),
        ("64KiB", 64 << 10),
        ("1MiB", 1 << 20),
    ] {
        let mut buf: Vec<u8> = (0..size).map(|i| i as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("byte_loop", label), |b| {
            b.iter(|| apply_mask_reference(black_box(&mut buf), black_box(KEY), black_box(OFFSET)))
        });
        group.bench_function(BenchmarkId::new("word_at_a_time", label), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(KEY), black_box(OFFSET)))
        });
    }
    group.finish();
}

/// 64 KiB of valid UTF-8 built from repeating `pattern`, cut at a character boundary.
fn text_of(pattern: &str) -> Vec<u8> {
    let mut text = String::new();
    for c in pattern.chars().cycle() {
        if text.len() + c.len_utf8() > 64 << 10 {
            break;
        }
        text.push(c);
    }
    text.into_bytes()
}

fn bench_utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));

    let inputs = [
        (
            "ascii_64KiB",
            text_of("The quick brown fox jumps over the lazy dog. "),
        ),
        (
            "mixed_64KiB",
            text_of("κόσμε, 日本語のテキスト, emoji 🦀🚀, café, naïve, ascii text. "),
        ),
    ];
    for (label, text) in &inputs {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(BenchmarkId::new("validator_feed", label), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::default();
                let ok = v.feed(black_box(text)).is_ok();
                black_box(ok && v.is_complete())
            })
        });
        // A message usually arrives in several reads: feed it in 4 KiB pieces, which
        // cut many code points of the mixed text in half.
        group.bench_function(BenchmarkId::new("validator_feed_4KiB_pieces", label), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::default();
                let ok = black_box(text)
                    .chunks(4 << 10)
                    .all(|piece| v.feed(piece).is_ok());
                black_box(ok && v.is_complete())
            })
        });
        // The ceiling: std's validator on the whole message at once.
        group.bench_function(BenchmarkId::new("std_from_utf8", label), |b| {
            b.iter(|| black_box(std::str::from_utf8(black_box(text)).is_ok()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_mask, bench_utf8);
criterion_main!(benches);
