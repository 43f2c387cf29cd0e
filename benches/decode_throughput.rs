//! Throughput of the frame decoder (RFC 6455 §5.2–§5.4) on the server's side: a stream
//! of masked client frames, fed to `Decoder` (Role::Server) in 64 KiB pieces, as the
//! reactor reads it from a socket into its 64 KiB read buffer.
//!
//! Run with `cargo bench --bench decode_throughput` (add `-- --quick` for a fast check).
//!
//! Each stream holds about 1 MiB of payload in frames of 16 B, 1 KiB or 64 KiB; the
//! throughput counts the wire bytes the decoder consumes (headers and mask keys
//! included: 6 bytes per 16 B frame, 8 per 1 KiB frame, 14 per 64 KiB frame). The
//! 64 KiB pieces cut headers and payloads at arbitrary points, which exercises the
//! decoder's stash for a header split across reads.
//!
//! The decoder unmasks in place, so each pass leaves the payloads unmasked and the next
//! pass masks them again; the headers are never modified, so the same buffer is
//! decoded over and over without a copy. The masking key has its high bits clear:
//! XOR with it maps ASCII to ASCII, so the text stream stays valid UTF-8 in both states
//! and the text variant measures unmasking plus UTF-8 validation on every pass.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsreactor::protocol::header::MAX_HEADER_LEN;
use wsreactor::protocol::mask::apply_mask;
use wsreactor::protocol::{Decoder, Event, FrameHeader, Limits, OpCode, Role};

/// A masking key whose bytes are all below 0x80 (see the module docs).
const KEY: [u8; 4] = [0x37, 0x7a, 0x21, 0x3d];
/// The reactor's read buffer: how much one socket read hands the decoder.
const READ_SIZE: usize = 64 * 1024;
/// Payload bytes per stream.
const STREAM_PAYLOAD: usize = 1 << 20;

/// `STREAM_PAYLOAD` bytes of payload as masked frames of `frame_size` bytes each.
fn masked_stream(opcode: OpCode, frame_size: usize) -> Vec<u8> {
    let payload: Vec<u8> = b"The quick brown fox jumps over the lazy dog. "
        .iter()
        .copied()
        .cycle()
        .take(frame_size)
        .collect();
    let frames = STREAM_PAYLOAD / frame_size;
    let mut stream = Vec::with_capacity(frames * (frame_size + MAX_HEADER_LEN));
    for _ in 0..frames {
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(KEY),
            payload_len: frame_size as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let len = header.encode(&mut head);
        stream.extend_from_slice(&head[..len]);
        let start = stream.len();
        stream.extend_from_slice(&payload);
        apply_mask(&mut stream[start..], KEY, 0);
    }
    stream
}

/// Decodes the whole stream in `READ_SIZE` pieces; returns the number of messages.
fn decode_all(decoder: &mut Decoder, stream: &mut [u8]) -> usize {
    let mut messages = 0;
    for piece in stream.chunks_mut(READ_SIZE) {
        let mut pos = 0;
        loop {
            match decoder.decode(&mut piece[pos..]) {
                Ok((used, event)) => {
                    pos += used;
                    match event {
                        // Every byte was consumed and the decoder wants the next read.
                        None => break,
                        Some(Event::Data {
                            bytes,
                            end_of_message,
                            ..
                        }) => {
                            black_box(bytes);
                            messages += usize::from(end_of_message);
                        }
                        Some(other) => {
                            black_box(other);
                        }
                    }
                }
                Err(e) => panic!("decode error: {e:?}"),
            }
        }
    }
    messages
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_throughput");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(20);

    for (label, frame_size) in [("16B", 16usize), ("1KiB", 1 << 10), ("64KiB", 64 << 10)] {
        for (kind, opcode) in [("binary", OpCode::Binary), ("text", OpCode::Text)] {
            let mut stream = masked_stream(opcode, frame_size);
            let expected = STREAM_PAYLOAD / frame_size;
            // One decoder for the whole run, as for a long-lived connection: the stream
            // ends between frames, so the next pass starts cleanly.
            let mut decoder = Decoder::new(Role::Server, Limits::default());
            assert_eq!(decode_all(&mut decoder, &mut stream), expected);
            group.throughput(Throughput::Bytes(stream.len() as u64));
            group.bench_function(BenchmarkId::new(kind, label), |b| {
                b.iter(|| decode_all(&mut decoder, black_box(&mut stream)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
