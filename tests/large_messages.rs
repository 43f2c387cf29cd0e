//! Issue 5, "Large payloads as streams": messages far larger than any server buffer go
//! through a server in this process over real sockets and come back intact, in frames
//! of at most `max_frame_out` bytes, with control frames answered in between. (The
//! tests that also bound the server's memory by its buffers rather than by the
//! message read the peak of a server process: they are end to end, in
//! server/tests/resources.rs.)
//!
//! Neither side of a test holds a large message: a writer thread generates the payload
//! on the fly from a deterministic stream and masks it, while a reader thread parses
//! the echo with a frame reader of its own (independent of the crate's decoder) and
//! checks every byte against the same stream as it arrives (`wsreactor_testkit::stream`).
//!
//! The 64-bit length above 2^32 is covered by a frame that declares 2^32 + 1 bytes of
//! which only the first 8 MiB are sent, whose echo must arrive while the frame is still
//! incomplete (and, end to end, by a whole frame of 4 GiB + 1 bytes).

mod common;

use common::payload::fill;
use common::{
    client_frame_header, masked_frame, raw_upgrade, read_message, TestServer, BINARY, CLOSE,
    CONTINUATION, PING, PONG, TEXT,
};
use std::io::Write;
use std::net::Shutdown;
use wsreactor_testkit::stream::{
    assert_whole_echo, binary_checker, binary_from, close_normally, exchange, is_continuation_byte,
    text, text_checker, FrameWriter, TextGen, KIB, MIB,
};

/// 64 MiB of text made mostly of 2-, 3- and 4-byte characters, sent in fragments of
/// odd sizes so that characters straddle the client's frame boundaries (and, with 64
/// KiB socket reads, the server's read boundaries): it comes back intact, as a text
/// frame followed by continuations of at most 64 KiB, FIN on the last only.
#[test]
fn a_64_mib_multibyte_text_message_is_refragmented_and_intact() {
    const SIZE: u64 = 64 * MIB;
    const SEED: u64 = 64;
    const FRAGMENTS: [u64; 9] = [65_521, 4_093, 1, 2, 3, 131_071, 7, 65_536, 300_001];
    let server = TestServer::echo();
    let mut stream = raw_upgrade(&server);

    let (straddles_tx, straddles_rx) = std::sync::mpsc::channel();
    let echo = exchange(
        &stream,
        None,
        move |w| {
            let mut gen = TextGen::new(SEED, SIZE);
            let mut sent = 0;
            let mut straddling = 0u64;
            for (i, &size) in FRAGMENTS.iter().cycle().enumerate() {
                let len = size.min(SIZE - sent);
                sent += len;
                let mut first = true;
                w.frame(
                    sent == SIZE,
                    if i == 0 { TEXT } else { CONTINUATION },
                    len,
                    &mut |out| {
                        gen.fill(out);
                        if first && is_continuation_byte(out[0]) {
                            straddling += 1;
                        }
                        first = false;
                    },
                )?;
                if sent == SIZE {
                    break;
                }
            }
            w.flush()?;
            let _ = straddles_tx.send(straddling);
            Ok(())
        },
        text_checker(SEED, SIZE),
    );
    let sent_straddling = straddles_rx.recv().expect("writer result");
    eprintln!(
        "64 MiB text: sent fragments starting inside a character: {sent_straddling}; echo: \
         {} frames, {} of them starting inside a character",
        echo.data_frames, echo.frames_starting_mid_char
    );
    assert!(
        sent_straddling > 100,
        "the test should cut characters between fragments"
    );
    assert_whole_echo(&echo, SIZE, TEXT);
    close_normally(&mut stream);
}

/// The sending side of the ping test: message fragments with pings between them.
#[derive(Default)]
struct Sender {
    /// Message bytes sent so far.
    pos: u64,
    fragments: u64,
    /// (message bytes sent before the ping, its payload)
    pings: Vec<(u64, Vec<u8>)>,
}

impl Sender {
    const SIZE: u64 = 64 * MIB;
    const SEED: u64 = 1;

    /// Sends the next `len` bytes of the message as one fragment, and a ping after every
    /// `ping_every` fragments. Returns the message bytes sent so far.
    fn send(&mut self, w: &mut FrameWriter, len: u64, ping_every: u64) -> std::io::Result<u64> {
        let fin = self.pos + len == Self::SIZE;
        let opcode = if self.pos == 0 { BINARY } else { CONTINUATION };
        w.frame(fin, opcode, len, &mut binary_from(Self::SEED, self.pos))?;
        self.pos += len;
        self.fragments += 1;
        if self.fragments.is_multiple_of(ping_every) && !fin {
            let payload = format!("ping {} at {}", self.pings.len(), self.pos).into_bytes();
            w.control(PING, &payload)?;
            self.pings.push((self.pos, payload));
        }
        Ok(self.pos)
    }
}

/// A 64 MiB binary message sent as 1 MiB of 1-byte fragments, then 1 MiB of 125-byte
/// fragments, then 64 KiB fragments and a mix of sizes, with pings between fragments:
/// every pong arrives in the middle of the echo, no later than where its ping was in
/// the message (the server answers a ping behind the echo it queued before it, ahead
/// of the echo of what follows; this server streams each piece at once, so exactly
/// there), so long before the echo completes.
#[test]
fn pings_between_tiny_fragments_are_answered_before_the_echo_completes() {
    const SIZE: u64 = Sender::SIZE;
    const SEED: u64 = Sender::SEED;
    const MIXED: [u64; 9] = [1, 125, 126, 65_535, 65_536, 65_537, 1_000_003, 3, 4_096];
    let server = TestServer::echo();
    let mut stream = raw_upgrade(&server);

    let (pings_tx, pings_rx) = std::sync::mpsc::channel();
    let echo = exchange(
        &stream,
        None,
        move |w| {
            let mut s = Sender::default();
            // (fragment size, bytes of the message sent so, a ping every n fragments)
            for (size, total, every) in [(1, MIB, 131_072), (125, MIB, 1_024)] {
                let end = s.pos + total;
                while s.pos < end {
                    s.send(w, size.min(end - s.pos), every)?;
                }
            }
            while s.pos < 32 * MIB {
                s.send(w, (64 * KIB).min(32 * MIB - s.pos), 16)?;
            }
            for size in MIXED.iter().cycle() {
                if s.send(w, (*size).min(SIZE - s.pos), 7)? == SIZE {
                    break;
                }
            }
            w.flush()?;
            let _ = pings_tx.send((s.pings, s.fragments));
            Ok(())
        },
        binary_checker(SEED),
    );
    let (pings, fragments) = pings_rx.recv().expect("writer result");
    assert_whole_echo(&echo, SIZE, BINARY);
    let pongs: Vec<_> = echo
        .controls
        .iter()
        .map(|(at, opcode, payload)| {
            assert_eq!(*opcode, PONG, "only pongs expected");
            (*at, payload.clone())
        })
        .collect();
    eprintln!(
        "{fragments} fragments, {} pings; pongs arrived at echo positions {:?}",
        pings.len(),
        pongs.iter().map(|(at, _)| at).collect::<Vec<_>>()
    );
    assert!(pings.len() >= 20, "{} pings", pings.len());
    assert_eq!(pongs.len(), pings.len(), "one pong per ping");
    let mut exact = 0;
    for ((sent_at, ping), (got_at, pong)) in pings.iter().zip(&pongs) {
        assert_eq!(pong, ping, "a pong carries its ping's payload");
        // Answered promptly: ahead of the echo of anything sent after the ping (the
        // echo may have merged the bytes before it, so not necessarily after them).
        assert!(
            got_at <= sent_at,
            "the pong to {:?} came after {got_at} echoed bytes, behind data sent after it",
            String::from_utf8_lossy(ping)
        );
        assert!(*got_at < SIZE, "pong only after the echo completed");
        exact += usize::from(got_at == sent_at);
    }
    eprintln!(
        "{exact} of {} pongs arrived exactly after the echo of the bytes before their ping",
        pongs.len()
    );
    close_normally(&mut stream);
}

/// A text message that turns invalid in its last fragment: the server has echoed the
/// valid part as it arrived, never sends an invalid byte, never finishes the message,
/// and fails the connection with 1007 (RFC 6455 §8.1).
#[test]
fn invalid_utf8_in_the_last_fragment_gets_1007_and_is_never_echoed() {
    let server = TestServer::echo();

    // (a) 0xFF, a byte UTF-8 never uses, 50 000 bytes before the end of a 4 MiB message
    // whose last fragment is 64 KiB; (b) the message ends inside a 3-byte character.
    let mut bad_byte = text(5, 4 * MIB as usize);
    let mut at = bad_byte.len() - 50_000;
    while is_continuation_byte(bad_byte[at]) {
        at += 1;
    }
    bad_byte[at] = 0xFF;
    let mut cut_short = text(6, 4 * MIB as usize - 2);
    cut_short.extend_from_slice(&"€".as_bytes()[..2]);
    let cut_at = cut_short.len() - 2;

    // (message, fewest and most bytes that may be echoed). After 0xFF nothing can make
    // the message valid, so the echo stops right before it. The bytes of the unfinished
    // character at the very end are a valid prefix until the message ends: they may or
    // may not be echoed, depending on where the server's reads cut the message.
    let cases = [(bad_byte, at, at), (cut_short, cut_at, cut_at + 2)];
    for (message, fewest, most) in cases {
        let mut stream = raw_upgrade(&server);
        let message = std::sync::Arc::new(message);
        let sent = message.clone();
        let mut echoed = Vec::new();
        let echo = exchange(
            &stream,
            None,
            move |w| {
                let chunks: Vec<&[u8]> = sent.chunks(64 * KIB as usize).collect();
                for (i, chunk) in chunks.iter().enumerate() {
                    let opcode = if i == 0 { TEXT } else { CONTINUATION };
                    let mut at = 0;
                    let result = w.frame(
                        i + 1 == chunks.len(),
                        opcode,
                        chunk.len() as u64,
                        &mut |out| {
                            out.copy_from_slice(&chunk[at..at + out.len()]);
                            at += out.len();
                        },
                    );
                    // The server may close before it has read everything.
                    if result.is_err() {
                        return Ok(());
                    }
                }
                let _ = w.flush();
                Ok(())
            },
            |_, bytes| echoed.extend_from_slice(bytes),
        );
        let (code, reason) = echo.close.clone().expect("a close frame");
        assert_eq!(code, Some(1007), "reason {reason:?}");
        assert!(!echo.fin, "the invalid message must not be finished");
        assert!(!echoed.contains(&0xFF), "an invalid byte came back");
        assert_eq!(&echoed[..], &message[..echoed.len()], "not a prefix");
        // Valid UTF-8, except that it may end inside a character (never on a byte that
        // no continuation could make valid).
        if let Err(e) = std::str::from_utf8(&echoed) {
            assert!(
                e.error_len().is_none(),
                "invalid UTF-8 echoed at byte {}",
                e.valid_up_to()
            );
        }
        // Fail-fast streaming: everything before the offending byte was echoed.
        assert!(
            (fewest..=most).contains(&echoed.len()),
            "echoed {} bytes, expected {fewest} to {most}",
            echoed.len()
        );
        // The server closes the TCP connection after its close frame.
        let _ = stream.write_all(&masked_frame(true, CLOSE, &1007u16.to_be_bytes()));
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// The three length forms of §5.2 around their boundaries, end to end: 7-bit up to
/// 125, 16-bit from 126 to 65535, 64-bit from 65536.
#[test]
fn single_frames_at_the_length_boundaries_echo_intact() {
    let server = TestServer::echo();
    let mut stream = raw_upgrade(&server);
    for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 65_537, 1 << 20] {
        for opcode in [BINARY, TEXT] {
            let payload = if opcode == TEXT {
                text(len as u64, len)
            } else {
                let mut p = vec![0u8; len];
                fill(len as u64, 0, &mut p);
                p
            };
            stream
                .write_all(&masked_frame(true, opcode, &payload))
                .unwrap();
            let (got_opcode, got) = read_message(&mut stream, &mut Vec::new());
            assert_eq!(got_opcode, opcode, "length {len}");
            assert!(got == payload, "length {len} opcode {opcode}: echo differs");
        }
    }
    close_normally(&mut stream);
}

/// A frame that declares 2^32 + 1 bytes (a 64-bit length that does not fit in 32 bits)
/// streams back as its bytes arrive: the first 8 MiB come back in binary and
/// continuation frames without FIN, long before the frame could be complete. Then the
/// client drops the connection, and the server goes on serving others.
#[test]
fn a_frame_declaring_2_pow_32_plus_1_bytes_echoes_as_it_arrives() {
    const DECLARED: u64 = (1 << 32) + 1;
    const SENT: u64 = 8 * MIB;
    const SEED: u64 = 32;
    let server = TestServer::echo();
    let stream = raw_upgrade(&server);

    let echo = exchange(
        &stream,
        Some(SENT),
        |w| {
            // The header declares 2^32 + 1; only the first SENT bytes follow.
            let head = client_frame_header(true, BINARY, DECLARED, [0; 4]);
            assert_eq!(head.len(), 14);
            assert_eq!(&head[1..10], &[0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 1]);
            w.partial_frame(true, BINARY, DECLARED, SENT, &mut binary_from(SEED, 0))?;
            w.flush()
        },
        binary_checker(SEED),
    );
    assert_eq!(echo.bytes, SENT);
    assert!(!echo.fin, "the frame is far from complete");
    assert_eq!(echo.first_opcode, Some(BINARY));
    assert!(echo.max_frame <= 64 * KIB);
    drop(stream);

    let mut other = raw_upgrade(&server);
    other
        .write_all(&masked_frame(true, TEXT, b"still here"))
        .unwrap();
    assert_eq!(
        read_message(&mut other, &mut Vec::new()),
        (TEXT, b"still here".to_vec())
    );
    close_normally(&mut other);
}
