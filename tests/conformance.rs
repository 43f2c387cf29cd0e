//! RFC 6455 conformance through real sockets, with every frame built by hand: one `mod`
//! per area, in the order of the Autobahn|Testsuite sections (docs/CONFORMANCE.md).
//!
//! Each test runs its own server in this process, writes raw frames, and reads
//! *everything* the server sends back with a strict reader that is independent of the
//! crate's own code: server frames must be unmasked, carry no RSV bits, use the minimal
//! length encoding (§5.2), keep control frames whole and short (§5.5), and form a valid
//! message sequence (§5.4). Every conversation ends with a close frame from the server
//! and then the end of the TCP connection, and each test checks what came back, the
//! close code, and that EOF. No test sleeps; every read has a timeout.
//!
//! Where another test file already checks a rule in its simplest form, the `mod` doc
//! names that test, and the test here adds what it does not check: the order of what
//! is echoed before a failure, the frame-level shape of the answers, the exhaustive
//! variants.
//!
//! Run: `cargo test --test conformance` (one area: `cargo test --test conformance utf8::`).

mod common;

use common::payload::patterned_bytes;
use common::{
    config, expect_eof, masked_frame, raw_upgrade_with_read_timeout, Listening, TestServer, BINARY,
    CLOSE, CONTINUATION, PING, PONG, TEXT,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The most any single read may block: generous for a loaded 2-core machine, but a
/// server that hangs fails the test instead of stalling the run.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A client frame (masked, FIN as given).
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    masked_frame(fin, opcode, payload)
}

/// A close frame with a status code and a reason (raw bytes, possibly not UTF-8).
fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(reason);
    frame(true, CLOSE, &body)
}

/// The client's normal close (1000), which ends every conversation that should not fail.
fn normal_close() -> Vec<u8> {
    close_frame(1000, b"")
}

/// A frame with the given RSV bits (0x40, 0x20, 0x10) set in its first byte.
fn with_rsv(mut frame: Vec<u8>, rsv: u8) -> Vec<u8> {
    frame[0] |= rsv;
    frame
}

/// [`common::payload::patterned_text`] as bytes: exactly `len` bytes of valid UTF-8
/// made of 1-, 2-, 3- and 4-byte characters, with offsets written out in it.
fn patterned_text(len: usize) -> Vec<u8> {
    common::payload::patterned_text(len).into_bytes()
}

/// Whether `bytes` could begin a valid UTF-8 string: valid, or valid up to a code
/// point that is cut off at the end (never an invalid byte).
fn is_valid_utf8_prefix(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

/// One frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// Reads one server frame and checks the rules a server's frames must follow. `None`
/// on EOF before the first byte.
fn read_strict_frame(stream: &mut TcpStream) -> Option<Frame> {
    let mut head = [0u8; 2];
    match stream.read(&mut head[..1]) {
        Ok(0) => return None,
        Ok(_) => {}
        Err(e) => panic!("reading a frame: {e}"),
    }
    stream.read_exact(&mut head[1..]).expect("frame header");
    let fin = head[0] & 0x80 != 0;
    let opcode = head[0] & 0x0F;
    assert_eq!(head[0] & 0x70, 0, "a server frame with RSV bits: {head:x?}");
    assert_eq!(head[1] & 0x80, 0, "a masked server frame (§5.1): {head:x?}");
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).expect("16-bit length");
            let len = u64::from(u16::from_be_bytes(b));
            assert!(
                len >= 126,
                "length {len} not minimally encoded in 16 bits (§5.2)"
            );
            len
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).expect("64-bit length");
            let len = u64::from_be_bytes(b);
            assert!(
                len > 0xFFFF,
                "length {len} not minimally encoded in 64 bits"
            );
            assert_eq!(len >> 63, 0, "64-bit length with the top bit set");
            len
        }
        n => u64::from(n),
    };
    assert!(
        matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG),
        "the server sent reserved opcode {opcode:#x}"
    );
    if opcode >= CLOSE {
        assert!(fin, "a fragmented control frame from the server (§5.5)");
        assert!(
            len <= 125,
            "a control frame of {len} bytes from the server (§5.5)"
        );
    }
    let mut payload = vec![0u8; usize::try_from(len).expect("frame fits in memory")];
    stream.read_exact(&mut payload).expect("frame payload");
    Some(Frame {
        fin,
        opcode,
        payload,
    })
}

/// Everything the server sent on one connection, up to and including its close frame.
#[derive(Debug, Default)]
struct Transcript {
    /// Every frame's (FIN, opcode, payload length), in order.
    frames: Vec<(bool, u8, usize)>,
    /// The complete data messages, in order: (opcode, payload).
    messages: Vec<(u8, Vec<u8>)>,
    /// A message the server had started but not finished when it sent its close.
    unfinished: Option<(u8, Vec<u8>)>,
    /// The pongs' payloads, in order.
    pongs: Vec<Vec<u8>>,
    /// The close frame's code (`None` for an empty body) and reason.
    close: (Option<u16>, String),
}

/// Reads frames up to and including the server's close frame, checking that the data
/// frames form a valid sequence of messages (§5.4) and the close body is well formed.
fn read_until_close(stream: &mut TcpStream) -> Transcript {
    let mut transcript = Transcript::default();
    let mut open: Option<(u8, Vec<u8>)> = None;
    loop {
        let frame = read_strict_frame(stream).unwrap_or_else(|| {
            panic!(
                "EOF before a close frame; got {:?}",
                summary(&transcript.frames)
            )
        });
        transcript
            .frames
            .push((frame.fin, frame.opcode, frame.payload.len()));
        match frame.opcode {
            TEXT | BINARY => {
                assert!(open.is_none(), "a new message inside an unfinished one");
                if frame.fin {
                    transcript.messages.push((frame.opcode, frame.payload));
                } else {
                    open = Some((frame.opcode, frame.payload));
                }
            }
            CONTINUATION => {
                let (_, data) = open
                    .as_mut()
                    .expect("a continuation frame outside a message");
                data.extend_from_slice(&frame.payload);
                if frame.fin {
                    transcript.messages.extend(open.take());
                }
            }
            PONG => transcript.pongs.push(frame.payload),
            CLOSE => {
                let body = frame.payload;
                assert_ne!(body.len(), 1, "a close body of one byte (§5.5.1)");
                let code = (body.len() >= 2).then(|| u16::from_be_bytes([body[0], body[1]]));
                let reason = String::from_utf8(body.get(2..).unwrap_or_default().to_vec())
                    .expect("the close reason is UTF-8");
                transcript.close = (code, reason);
                transcript.unfinished = open;
                return transcript;
            }
            other => panic!("unexpected frame {other:#x} from the server"),
        }
    }
}

/// Asserts that the close frame was the server's last word: the next read is the end
/// of the TCP connection, with no byte in between.
fn expect_eof_right_after_close(stream: &mut TcpStream) {
    let mut byte = [0u8; 1];
    if let Ok(1) = stream.read(&mut byte) {
        panic!("the server sent {byte:x?} after its close frame");
    }
    expect_eof(stream);
}

/// Reads everything up to the close frame, then asserts the TCP connection ends.
fn read_until_eof(stream: &mut TcpStream) -> Transcript {
    let transcript = read_until_close(stream);
    expect_eof_right_after_close(stream);
    transcript
}

/// Frame headers as a short readable list, for assertion messages.
fn summary(frames: &[(bool, u8, usize)]) -> String {
    frames
        .iter()
        .map(|(fin, opcode, len)| format!("{}{opcode:X}:{len}", if *fin { "F" } else { "-" }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A fresh upgraded connection with the suite's read timeout.
fn open(server: &impl Listening) -> TcpStream {
    raw_upgrade_with_read_timeout(server, READ_TIMEOUT)
}

/// Opens a connection, writes `writes` (each with its own `write_all`, from a second
/// thread so that the echo is read while big messages are still going out), and
/// returns everything the server sent until it closed the TCP connection.
fn converse<I>(server: &impl Listening, writes: I) -> Transcript
where
    I: IntoIterator<Item = Vec<u8>>,
    I::IntoIter: Send + 'static,
{
    let mut stream = open(server);
    let mut writer = stream.try_clone().expect("clone the socket");
    let writes = writes.into_iter();
    let sender = std::thread::spawn(move || {
        for bytes in writes {
            writer.write_all(&bytes)?;
        }
        std::io::Result::Ok(())
    });
    let transcript = read_until_eof(&mut stream);
    sender
        .join()
        .expect("writer thread")
        .expect("the server took every byte we sent");
    transcript
}

/// Like [`converse`] with everything in one write: the server sees the frames back to
/// back, as one read.
fn converse_in_one_write(server: &impl Listening, frames: &[Vec<u8>]) -> Transcript {
    converse(server, [frames.concat()])
}

/// Asserts that the messages came back exactly (without printing megabytes).
fn assert_messages(transcript: &Transcript, expected: &[(u8, &[u8])]) {
    let got: Vec<(u8, usize)> = transcript
        .messages
        .iter()
        .map(|(op, data)| (*op, data.len()))
        .collect();
    let want: Vec<(u8, usize)> = expected
        .iter()
        .map(|(op, data)| (*op, data.len()))
        .collect();
    assert_eq!(
        got,
        want,
        "messages (opcode, length); frames {}",
        summary(&transcript.frames)
    );
    for (i, ((_, got), (_, want))) in transcript.messages.iter().zip(expected).enumerate() {
        if got.as_slice() != *want {
            let at = got.iter().zip(want.iter()).position(|(a, b)| a != b);
            panic!("message {i} differs from what was sent, first at byte {at:?}");
        }
    }
}

/// Asserts a conversation that the client ended normally: the messages echoed, no
/// unfinished message, close 1000 echoed.
fn assert_echoed_then_closed(transcript: &Transcript, expected: &[(u8, &[u8])]) {
    assert_messages(transcript, expected);
    assert_eq!(transcript.unfinished, None);
    assert_eq!(transcript.close.0, Some(1000), "the client's code echoed");
}

/// Asserts a failed connection (§7.1.7): close with `code` and a reason saying why.
fn assert_failed_with(transcript: &Transcript, code: u16) {
    assert_eq!(
        transcript.close.0,
        Some(code),
        "close code; reason {:?}, frames {}",
        transcript.close.1,
        summary(&transcript.frames)
    );
    assert!(!transcript.close.1.is_empty(), "a failure close says why");
}

/// Asserts that whatever the server echoed of a message it never finished is a prefix
/// of `sent` with the right opcode (a streaming echo forwards fragments at once).
fn assert_unfinished_is_prefix(transcript: &Transcript, opcode: u8, sent: &[u8]) {
    if let Some((op, echoed)) = &transcript.unfinished {
        assert_eq!(*op, opcode, "opcode of the unfinished echo");
        assert!(
            sent.starts_with(echoed),
            "the unfinished echo {echoed:x?} is not a prefix of {sent:x?}"
        );
    }
}

/// §5.2 payload lengths in 7, 16 and 64 bits, and the empty message.
///
/// Elsewhere: tests/large_messages.rs `single_frames_at_the_length_boundaries_echo_intact`
/// (each tier alone, one request and echo at a time) and tests/echo.rs (the same size
/// classes through tungstenite). Here all tiers follow each other in one write, so the
/// decoder crosses every tier boundary inside one read buffer, and the server's own
/// frames are checked: minimal length encoding (by the strict reader), at most
/// `--max-frame-out` bytes each.
mod framing {
    use super::*;

    /// Every boundary of the length encoding: 7-bit (0, 1, 125), 16-bit (126, 127,
    /// 65535), 64-bit (65536), and 1 MiB (which the server sends as several frames).
    const TIERS: [usize; 8] = [0, 1, 125, 126, 127, 65_535, 65_536, 1 << 20];

    /// The server's largest outgoing frame, given explicitly rather than relying on
    /// the default.
    const MAX_FRAME_OUT: usize = 64 << 10;

    #[test]
    fn text_and_binary_messages_at_every_length_tier_back_to_back_are_echoed_intact() {
        let server = TestServer::echo_with(config().max_frame_out(MAX_FRAME_OUT));
        let mut messages = Vec::new();
        for &len in &TIERS {
            messages.push((TEXT, patterned_text(len)));
            messages.push((BINARY, patterned_bytes(len, len as u64)));
        }
        let mut frames: Vec<Vec<u8>> = messages
            .iter()
            .map(|(opcode, data)| frame(true, *opcode, data))
            .collect();
        frames.push(normal_close());
        let transcript = converse_in_one_write(&server, &frames);
        let expected: Vec<(u8, &[u8])> = messages.iter().map(|(op, d)| (*op, &d[..])).collect();
        assert_echoed_then_closed(&transcript, &expected);
        let longest = transcript.frames.iter().map(|f| f.2).max();
        assert!(longest <= Some(MAX_FRAME_OUT), "{longest:?}");
    }

    #[test]
    fn zero_length_text_and_binary_messages_are_echoed_as_zero_length_messages() {
        let server = TestServer::echo();
        let frames = [
            frame(true, TEXT, b""),
            frame(true, BINARY, b""),
            frame(true, TEXT, b""),
            normal_close(),
        ];
        let transcript = converse_in_one_write(&server, &frames);
        // Each comes back as exactly one empty frame with FIN, of its own kind.
        assert_eq!(
            transcript.frames,
            [
                (true, TEXT, 0),
                (true, BINARY, 0),
                (true, TEXT, 0),
                (true, CLOSE, 2)
            ],
            "{}",
            summary(&transcript.frames)
        );
        assert_echoed_then_closed(&transcript, &[(TEXT, b""), (BINARY, b""), (TEXT, b"")]);
    }
}

/// §5.5.2 and §5.5.3: pings answered with identical pongs, pongs never answered.
///
/// Elsewhere: tests/echo.rs `a_ping_is_answered_with_a_pong_carrying_the_same_payload`
/// (ping alone), `a_ping_between_fragments_is_answered_before_the_message_is_finished`,
/// `an_unsolicited_pong_is_ignored_and_the_connection_keeps_working`; tests/close.rs
/// `a_ping_with_126_bytes_fails_the_connection_with_1002` (first frame);
/// server/tests/resources.rs
/// `a_ping_flood_from_a_client_that_never_reads_stays_bounded` (memory, not answers).
mod ping_pong {
    use super::*;

    #[test]
    fn pings_of_0_and_125_bytes_get_identical_pongs_in_order_with_the_echoes() {
        let server = TestServer::echo();
        let full: Vec<u8> = (0..125u8).collect(); // every key offset, no repeated byte
        let frames = [
            frame(true, TEXT, b"a"),
            frame(true, PING, b""),
            frame(true, BINARY, &[0xB]),
            frame(true, PING, &full),
            normal_close(),
        ];
        let transcript = converse_in_one_write(&server, &frames);
        // A pong goes out behind what is already queued and ahead of later echoes.
        assert_eq!(
            transcript.frames,
            [
                (true, TEXT, 1),
                (true, PONG, 0),
                (true, BINARY, 1),
                (true, PONG, 125),
                (true, CLOSE, 2)
            ],
            "{}",
            summary(&transcript.frames)
        );
        assert_eq!(transcript.pongs, [Vec::new(), full]);
        assert_echoed_then_closed(&transcript, &[(TEXT, b"a"), (BINARY, &[0xB])]);
    }

    #[test]
    fn a_ping_or_pong_of_126_bytes_fails_with_1002_after_the_earlier_echo() {
        let server = TestServer::echo();
        for opcode in [PING, PONG] {
            let frames = [
                frame(true, TEXT, b"before"),
                frame(true, opcode, &[b'p'; 126]),
                frame(true, TEXT, b"never echoed"),
            ];
            let transcript = converse_in_one_write(&server, &frames);
            assert_messages(&transcript, &[(TEXT, b"before")]);
            assert!(transcript.pongs.is_empty(), "opcode {opcode:#x}");
            assert_failed_with(&transcript, 1002);
        }
    }

    #[test]
    fn unsolicited_pongs_get_no_answer_even_between_fragments_and_the_echo_goes_on() {
        let server = TestServer::echo();
        let frames = [
            frame(true, PONG, b""),
            frame(true, PONG, &[0x5A; 125]),
            frame(false, TEXT, b"un"),
            frame(true, PONG, b"mid-message"),
            frame(true, CONTINUATION, b"solicited"),
            frame(true, BINARY, b"after"),
            normal_close(),
        ];
        let transcript = converse_in_one_write(&server, &frames);
        assert!(transcript.pongs.is_empty(), "{:?}", transcript.pongs);
        assert_echoed_then_closed(&transcript, &[(TEXT, b"unsolicited"), (BINARY, b"after")]);
    }

    #[test]
    fn a_flood_of_1000_pings_with_distinct_payloads_is_answered_by_1000_pongs_in_order() {
        let server = TestServer::echo();
        // Distinct payloads (the index, then filler) of 2 to 125 bytes, in one write.
        let payloads: Vec<Vec<u8>> = (0..1000u16)
            .map(|i| {
                let mut p = i.to_be_bytes().to_vec();
                p.resize(2 + usize::from(i) % 124, (i % 251) as u8);
                p
            })
            .collect();
        let mut frames: Vec<Vec<u8>> = payloads.iter().map(|p| frame(true, PING, p)).collect();
        frames.push(normal_close());
        let transcript = converse_in_one_write(&server, &frames);
        assert_eq!(transcript.pongs.len(), 1000);
        for (i, (got, sent)) in transcript.pongs.iter().zip(&payloads).enumerate() {
            assert_eq!(got, sent, "pong {i}");
        }
        assert_echoed_then_closed(&transcript, &[]);
    }
}

/// §5.2: RSV1–3 "MUST be 0 unless an extension is negotiated" (wsreactor negotiates
/// none), and the connection is failed only after everything before the bad frame has
/// been answered (what Autobahn 3.* calls strict).
///
/// Elsewhere: tests/close.rs `a_reserved_bit_fails_the_connection_with_1002` (each
/// bit on the first frame of a connection).
mod reserved_bits {
    use super::*;

    const BITS: [(u8, &str); 3] = [(0x40, "RSV1"), (0x20, "RSV2"), (0x10, "RSV3")];

    #[test]
    fn each_reserved_bit_fails_with_1002_after_the_messages_before_it_are_echoed_in_order() {
        let server = TestServer::echo();
        for (bit, name) in BITS {
            let frames = [
                frame(true, TEXT, b"one"),
                frame(true, BINARY, &[2, 2]),
                frame(false, TEXT, b"th"),
                frame(true, CONTINUATION, b"ree"),
                frame(true, PING, b"four"),
                with_rsv(frame(true, TEXT, b"five"), bit),
                frame(true, TEXT, b"never echoed"),
                frame(true, PING, b"never answered"),
            ];
            let transcript = converse_in_one_write(&server, &frames);
            assert_messages(
                &transcript,
                &[(TEXT, b"one"), (BINARY, &[2, 2]), (TEXT, b"three")],
            );
            assert_eq!(transcript.pongs, [b"four".to_vec()], "{name}");
            assert_eq!(transcript.unfinished, None, "{name}");
            assert_failed_with(&transcript, 1002);
        }
    }

    #[test]
    fn a_reserved_bit_on_a_control_frame_or_a_continuation_fails_with_1002() {
        let server = TestServer::echo();
        for (bit, name) in BITS {
            let carriers = [
                ("ping", vec![with_rsv(frame(true, PING, b"p"), bit)]),
                ("pong", vec![with_rsv(frame(true, PONG, b"p"), bit)]),
                ("close", vec![with_rsv(close_frame(1000, b""), bit)]),
                (
                    "continuation",
                    vec![
                        frame(false, BINARY, b"open"),
                        with_rsv(frame(true, CONTINUATION, b"end"), bit),
                    ],
                ),
            ];
            for (carrier, bad) in carriers {
                let mut frames = vec![frame(true, TEXT, b"ok")];
                frames.extend(bad);
                let transcript = converse_in_one_write(&server, &frames);
                assert_messages(&transcript, &[(TEXT, b"ok")]);
                assert!(transcript.pongs.is_empty(), "{name} on a {carrier}");
                assert_unfinished_is_prefix(&transcript, BINARY, b"open");
                assert_failed_with(&transcript, 1002);
            }
        }
    }
}

/// §5.2: opcodes 0x3–0x7 (data) and 0xB–0xF (control) are reserved.
///
/// Elsewhere: tests/close.rs `reserved_opcodes_fail_the_connection_with_1002` (0x3
/// and 0xB on the first frame of a connection).
mod opcodes {
    use super::*;

    const RESERVED: [u8; 10] = [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF];

    #[test]
    fn each_reserved_opcode_fails_with_1002_after_the_messages_before_it_are_echoed() {
        let server = TestServer::echo();
        for (i, opcode) in RESERVED.into_iter().enumerate() {
            // Empty and non-empty payloads in turn.
            let payload: &[u8] = if i % 2 == 0 { b"reserved" } else { b"" };
            let frames = [
                frame(true, TEXT, b"first"),
                frame(true, BINARY, &[0xFF]),
                frame(true, PING, b"still fine"),
                frame(true, opcode, payload),
                frame(true, TEXT, b"never echoed"),
            ];
            let transcript = converse_in_one_write(&server, &frames);
            assert_messages(&transcript, &[(TEXT, b"first"), (BINARY, &[0xFF])]);
            assert_eq!(
                transcript.pongs,
                [b"still fine".to_vec()],
                "opcode {opcode:#x}"
            );
            assert_eq!(transcript.unfinished, None);
            assert_failed_with(&transcript, 1002);
        }
    }

    #[test]
    fn a_reserved_opcode_between_fragments_fails_with_1002() {
        let server = TestServer::echo();
        for opcode in RESERVED {
            let frames = [
                frame(false, TEXT, b"half a "),
                frame(true, opcode, b"?"),
                frame(true, CONTINUATION, b"message"),
            ];
            let transcript = converse_in_one_write(&server, &frames);
            assert_messages(&transcript, &[]);
            assert_unfinished_is_prefix(&transcript, TEXT, b"half a ");
            assert_failed_with(&transcript, 1002);
        }
    }
}

/// §5.4: a message may span frames (continuations, FIN on the last), control frames
/// may come between them, nothing else may.
///
/// Elsewhere: tests/echo.rs `a_binary_message_in_five_fragments_comes_back_as_one_message`
/// and `a_text_message_split_inside_a_character_comes_back_as_one_message`; tests/close.rs
/// `a_continuation_without_a_message_fails_the_connection_with_1002` (as the first
/// frame), `a_new_text_frame_inside_a_fragmented_message_fails_the_connection_with_1002`
/// (text in text) and `a_fragmented_ping_fails_the_connection_with_1002`.
mod fragmentation {
    use super::*;

    /// Cuts `data` into `n` non-empty, unequal parts.
    fn cut(data: &[u8], n: usize) -> Vec<&[u8]> {
        let mut parts = Vec::with_capacity(n);
        let mut rest = data;
        for i in 0..n - 1 {
            let take = (rest.len() / (n - i)).max(1) + i % 2;
            let (part, tail) = rest.split_at(take.min(rest.len() - (n - 1 - i)));
            parts.push(part);
            rest = tail;
        }
        parts.push(rest);
        assert!(parts.iter().all(|p| !p.is_empty()));
        parts
    }

    #[test]
    fn text_and_binary_in_2_to_5_fragments_with_a_ping_or_pong_at_every_position_are_echoed_whole()
    {
        let server = TestServer::echo();
        let mut writes = Vec::new();
        let mut messages = Vec::new();
        let mut pongs = Vec::new();
        let mut case = 0;
        for opcode in [TEXT, BINARY] {
            for n in 2..=5 {
                // Position 0 is before the first fragment, n after the last.
                for position in 0..=n {
                    for control in [PING, PONG] {
                        let data = format!("case {case}: {n} fragments, ✓ at {position}");
                        let data = data.into_bytes();
                        let control_payload = format!("{control:X} {case}").into_bytes();
                        let mut frames = Vec::new();
                        for (i, part) in cut(&data, n).into_iter().enumerate() {
                            if i == position {
                                frames.push(frame(true, control, &control_payload));
                            }
                            let op = if i == 0 { opcode } else { CONTINUATION };
                            frames.push(frame(i == n - 1, op, part));
                        }
                        if position == n {
                            frames.push(frame(true, control, &control_payload));
                        }
                        // Half the cases as one write, half with a write per frame.
                        if case % 2 == 0 {
                            writes.push(frames.concat());
                        } else {
                            writes.extend(frames);
                        }
                        if control == PING {
                            pongs.push(control_payload);
                        }
                        messages.push((opcode, data));
                        case += 1;
                    }
                }
            }
        }
        writes.push(normal_close());
        let transcript = converse(&server, writes);
        let expected: Vec<(u8, &[u8])> = messages.iter().map(|(op, d)| (*op, &d[..])).collect();
        assert_echoed_then_closed(&transcript, &expected);
        // Every ping answered once, in order; our pongs never answered.
        assert_eq!(transcript.pongs, pongs);
    }

    #[test]
    fn empty_fragments_and_a_final_empty_continuation_are_echoed_as_the_joined_message() {
        let server = TestServer::echo();
        let frames = [
            // Empty first fragment, empty middle one, empty final continuation.
            frame(false, TEXT, b""),
            frame(false, CONTINUATION, "Grü".as_bytes()),
            frame(false, CONTINUATION, b""),
            frame(false, CONTINUATION, "ße".as_bytes()),
            frame(true, CONTINUATION, b""),
            // A binary message whose last fragment is empty.
            frame(false, BINARY, &[1, 2]),
            frame(true, CONTINUATION, b""),
            // A message made of empty fragments only.
            frame(false, TEXT, b""),
            frame(false, CONTINUATION, b""),
            frame(true, CONTINUATION, b""),
            normal_close(),
        ];
        let transcript = converse_in_one_write(&server, &frames);
        assert_echoed_then_closed(
            &transcript,
            &[(TEXT, "Grüße".as_bytes()), (BINARY, &[1, 2]), (TEXT, b"")],
        );
    }

    #[test]
    fn a_continuation_after_a_finished_message_fails_with_1002() {
        let server = TestServer::echo();
        for fin in [true, false] {
            let frames = [
                frame(false, TEXT, b"com"),
                frame(true, CONTINUATION, b"plete"),
                frame(fin, CONTINUATION, b"one too many"),
            ];
            let transcript = converse_in_one_write(&server, &frames);
            assert_messages(&transcript, &[(TEXT, b"complete")]);
            assert_eq!(transcript.unfinished, None);
            assert_failed_with(&transcript, 1002);
        }
    }

    #[test]
    fn a_new_text_or_binary_frame_inside_an_open_message_fails_with_1002() {
        let server = TestServer::echo();
        for open in [TEXT, BINARY] {
            for intruder in [TEXT, BINARY] {
                for fin in [true, false] {
                    let frames = [
                        frame(true, BINARY, b"done"),
                        frame(false, open, b"open "),
                        frame(fin, intruder, b"intruder"),
                        frame(true, CONTINUATION, b"end"),
                    ];
                    let transcript = converse_in_one_write(&server, &frames);
                    assert_messages(&transcript, &[(BINARY, b"done")]);
                    assert_unfinished_is_prefix(&transcript, open, b"open ");
                    assert_failed_with(&transcript, 1002);
                }
            }
        }
    }

    #[test]
    fn a_fragmented_ping_pong_or_close_fails_with_1002_inside_or_outside_a_message() {
        let server = TestServer::echo();
        for control in [PING, PONG, CLOSE] {
            let body: &[u8] = if control == CLOSE {
                &[0x03, 0xE8]
            } else {
                b"ctl"
            };
            for inside in [false, true] {
                let mut frames = vec![frame(true, TEXT, b"ok")];
                if inside {
                    frames.push(frame(false, TEXT, b"open"));
                }
                frames.push(frame(false, control, body));
                frames.push(frame(true, CONTINUATION, b"rest of the control frame"));
                let transcript = converse_in_one_write(&server, &frames);
                assert_messages(&transcript, &[(TEXT, b"ok")]);
                assert!(transcript.pongs.is_empty(), "{control:#x} inside={inside}");
                assert_unfinished_is_prefix(&transcript, TEXT, b"open");
                assert_failed_with(&transcript, 1002);
            }
        }
    }
}

/// §8.1: text messages must be valid UTF-8 (checked across fragments), invalid text
/// fails with 1007, and an endpoint should fail as soon as the text cannot become
/// valid.
///
/// Elsewhere: tests/close.rs
/// `invalid_utf8_text_fails_with_1007_after_echoing_everything_sent_before_it`;
/// tests/echo.rs `a_text_message_split_inside_a_character_comes_back_as_one_message`.
mod utf8 {
    use super::*;

    /// Characters at every encoding boundary: 1 byte (U+0000, U+007F), 2 bytes
    /// (U+0080, U+07FF), 3 bytes (U+0800, U+D7FF, U+E000, U+FFFD, U+FFFF), 4 bytes
    /// (U+10000, U+10FFFF), and everyday text.
    const BOUNDARIES: &str =
        "\u{0}\u{7F}|\u{80}\u{7FF}|\u{800}\u{D7FF}\u{E000}\u{FFFD}\u{FFFF}|\u{10000}\u{10FFFF}|κόσμε 中文 😀";

    #[test]
    fn valid_multi_byte_text_in_one_frame_is_echoed_intact() {
        let server = TestServer::echo();
        let frames = [frame(true, TEXT, BOUNDARIES.as_bytes()), normal_close()];
        let transcript = converse_in_one_write(&server, &frames);
        assert_echoed_then_closed(&transcript, &[(TEXT, BOUNDARIES.as_bytes())]);
    }

    #[test]
    fn the_same_text_fragmented_at_every_byte_position_is_echoed_intact() {
        let server = TestServer::echo();
        let text = BOUNDARIES.as_bytes();
        let mut frames = Vec::new();
        // One message per split point, including an empty first or last fragment.
        for split in 0..=text.len() {
            frames.push(frame(false, TEXT, &text[..split]));
            frames.push(frame(true, CONTINUATION, &text[split..]));
        }
        // And one message with a fragment per byte.
        for (i, byte) in text.iter().enumerate() {
            let opcode = if i == 0 { TEXT } else { CONTINUATION };
            frames.push(frame(i == text.len() - 1, opcode, &[*byte]));
        }
        frames.push(normal_close());
        let transcript = converse_in_one_write(&server, &frames);
        let expected = vec![(TEXT, text); text.len() + 2];
        assert_echoed_then_closed(&transcript, &expected);
    }

    /// Byte sequences that are never UTF-8, by kind.
    const INVALID: [(&str, &[u8]); 14] = [
        ("overlong '/' in 2 bytes", b"\xC0\xAF"),
        ("overlong U+007F in 2 bytes", b"\xC1\xBF"),
        ("overlong '/' in 3 bytes", b"\xE0\x80\xAF"),
        ("overlong U+FFFF in 4 bytes", b"\xF0\x8F\xBF\xBF"),
        ("high surrogate U+D800", b"\xED\xA0\x80"),
        ("low surrogate U+DFFF", b"\xED\xBF\xBF"),
        ("surrogate pair", b"\xED\xA0\x80\xED\xB0\x80"),
        ("U+110000", b"\xF4\x90\x80\x80"),
        ("5-byte form", b"\xF8\x88\x80\x80\x80"),
        ("0xFF", b"\xFF"),
        ("lone continuation byte", b"\x80"),
        ("continuation after a complete character", b"\xC3\xA9\xA9"),
        ("lead byte followed by ASCII", b"\xE2\x82A"),
        ("4-byte lead followed by ASCII", b"\xF0\x9F\x98 "),
    ];

    /// A valid multi-byte character cut short at the very end of the message.
    const TRUNCATED: [(&str, &[u8]); 4] = [
        ("1 of 2 bytes", b"\xC3"),
        ("2 of 3 bytes", b"\xE2\x82"),
        ("3 of 4 bytes", b"\xF0\x9F\x98"),
        ("1 of 4 bytes", b"\xF4"),
    ];

    #[test]
    fn invalid_utf8_in_one_frame_fails_with_1007_and_only_a_valid_prefix_is_echoed() {
        let server = TestServer::echo();
        let mut cases: Vec<(&str, Vec<u8>)> = INVALID
            .iter()
            .map(|(name, bad)| {
                (
                    *name,
                    [b"valid \xCE\xBA ".as_slice(), bad, b" tail"].concat(),
                )
            })
            .collect();
        cases.extend(
            TRUNCATED
                .iter()
                .map(|(name, cut)| (*name, [b"valid \xCE\xBA ".as_slice(), cut].concat())),
        );
        for (name, payload) in cases {
            let frames = [
                frame(true, TEXT, b"fine"),
                frame(true, TEXT, &payload),
                frame(true, TEXT, b"never echoed"),
            ];
            let transcript = converse_in_one_write(&server, &frames);
            assert_messages(&transcript, &[(TEXT, b"fine")]);
            assert_unfinished_is_prefix(&transcript, TEXT, &payload);
            if let Some((_, echoed)) = &transcript.unfinished {
                assert!(is_valid_utf8_prefix(echoed), "{name}: echoed {echoed:x?}");
            }
            assert_failed_with(&transcript, 1007);
        }
    }

    #[test]
    fn a_text_message_whose_last_fragment_ends_inside_a_character_fails_with_1007() {
        let server = TestServer::echo();
        for (name, cut) in TRUNCATED {
            // The cut character in the last fragment, or at the end of a middle
            // fragment followed by an empty final continuation.
            for empty_last in [false, true] {
                let mut frames = vec![
                    frame(false, TEXT, "€ = ".as_bytes()),
                    frame(false, CONTINUATION, b"\xE2\x82\xAC, "),
                    frame(!empty_last, CONTINUATION, cut),
                ];
                if empty_last {
                    frames.push(frame(true, CONTINUATION, b""));
                }
                let transcript = converse_in_one_write(&server, &frames);
                assert_messages(&transcript, &[]);
                let sent = [b"\xE2\x82\xAC = \xE2\x82\xAC, ".as_slice(), cut].concat();
                assert_unfinished_is_prefix(&transcript, TEXT, &sent);
                assert!(
                    transcript.unfinished.is_some(),
                    "{name}: the valid fragments were streamed back unfinished"
                );
                assert_failed_with(&transcript, 1007);
            }
        }
    }

    #[test]
    fn an_invalid_byte_in_the_second_of_three_fragments_fails_with_1007_before_the_third_is_sent() {
        let server = TestServer::echo();
        // A short timeout: the close must come on its own, without the third fragment.
        let mut stream = raw_upgrade_with_read_timeout(&server, Duration::from_secs(5));
        let first = "Grüße, ".as_bytes();
        let second = b"w\xC3\xB6r\xFFld";
        let wire = [
            frame(false, TEXT, first),
            frame(false, CONTINUATION, second),
        ]
        .concat();
        stream.write_all(&wire).unwrap();
        let transcript = read_until_close(&mut stream);
        assert_failed_with(&transcript, 1007);
        assert_messages(&transcript, &[]);
        let sent = [first, second].concat();
        let (opcode, echoed) = transcript
            .unfinished
            .clone()
            .expect("the first fragment was echoed before the failure");
        assert_eq!(opcode, TEXT);
        assert!(sent.starts_with(&echoed), "echoed {echoed:x?}");
        assert!(is_valid_utf8_prefix(&echoed), "echoed {echoed:x?}");
        assert!(echoed.len() >= first.len(), "echoed {echoed:x?}");
        // The server has already ended the connection on its side...
        expect_eof_right_after_close(&mut stream);
        // ...so the third fragment is unnecessary: sent now, it changes nothing.
        let _ = stream.write_all(&frame(true, CONTINUATION, b"!"));
        let mut rest = [0u8; 64];
        assert!(
            matches!(stream.read(&mut rest), Ok(0) | Err(_)),
            "nothing more after EOF"
        );
    }

    #[test]
    fn an_invalid_byte_fails_with_1007_before_the_rest_of_its_frame_arrives() {
        let server = TestServer::echo();
        let mut stream = raw_upgrade_with_read_timeout(&server, Duration::from_secs(5));
        // A text frame declaring 100 bytes; only the first 20 are sent, with a byte
        // that can never be UTF-8 at offset 10.
        let mut payload = [b'x'; 100];
        payload[10] = 0xC0;
        let whole = frame(true, TEXT, &payload);
        let header_len = whole.len() - payload.len();
        stream.write_all(&whole[..header_len + 20]).unwrap();
        let transcript = read_until_close(&mut stream);
        assert_failed_with(&transcript, 1007);
        assert_messages(&transcript, &[]);
        assert_unfinished_is_prefix(&transcript, TEXT, &payload[..10]);
        expect_eof_right_after_close(&mut stream);
    }
}

/// §5.5.1 and §7.4: the closing handshake and the close body.
///
/// Elsewhere: tests/close.rs `an_empty_close_is_answered_with_an_empty_close`,
/// `a_close_with_a_one_byte_body_fails_the_connection_with_1002`,
/// `close_codes_not_allowed_on_the_wire_fail_the_connection_with_1002`,
/// `a_close_reason_that_is_not_utf8_fails_the_connection_with_1007` (one reason),
/// `every_valid_close_code_is_echoed` and `data_sent_after_the_close_frame_is_ignored`
/// (data in the same write as the close).
mod close {
    use super::*;

    #[test]
    fn an_empty_close_between_fragments_is_answered_with_an_empty_close() {
        let server = TestServer::echo();
        let frames = [
            frame(true, TEXT, b"whole"),
            frame(false, BINARY, b"part"),
            frame(true, CLOSE, b""),
            frame(true, CONTINUATION, b"never echoed"),
        ];
        let transcript = converse_in_one_write(&server, &frames);
        assert_messages(&transcript, &[(TEXT, b"whole")]);
        assert_unfinished_is_prefix(&transcript, BINARY, b"part");
        assert_eq!(
            transcript.close,
            (None, String::new()),
            "an empty close back"
        );
        assert_eq!(transcript.frames.last(), Some(&(true, CLOSE, 0)));
    }

    #[test]
    fn invalid_close_codes_and_a_one_byte_body_fail_with_1002_after_the_earlier_echo() {
        let server = TestServer::echo();
        let codes = [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ];
        let bodies = codes
            .iter()
            .map(|code| (format!("code {code}"), close_frame(*code, b"")))
            .chain([("a 1-byte body".to_string(), frame(true, CLOSE, &[0x03]))]);
        for (what, close) in bodies {
            let frames = [frame(true, TEXT, b"before"), close];
            let transcript = converse_in_one_write(&server, &frames);
            assert_messages(&transcript, &[(TEXT, b"before")]);
            assert_eq!(transcript.close.0, Some(1002), "{what}");
            assert_failed_with(&transcript, 1002);
        }
    }

    #[test]
    fn a_close_reason_that_is_not_utf8_fails_with_1007() {
        let server = TestServer::echo();
        let reasons: [&[u8]; 6] = [
            b"\x80",
            b"overlong \xC0\xAF",
            b"surrogate \xED\xA0\x80",
            b"too high \xF4\x90\x80\x80",
            b"cut at the end \xE2\x82",
            b"\xFF\xFE",
        ];
        for reason in reasons {
            let frames = [frame(true, BINARY, b"before"), close_frame(1000, reason)];
            let transcript = converse_in_one_write(&server, &frames);
            assert_messages(&transcript, &[(BINARY, b"before")]);
            assert_eq!(transcript.close.0, Some(1007), "reason {reason:x?}");
            assert_failed_with(&transcript, 1007);
        }
    }

    #[test]
    fn a_close_reason_of_123_bytes_is_accepted_and_its_code_echoed() {
        let server = TestServer::echo();
        // 123 bytes, the most that fits beside the code in 125, with multi-byte text.
        let reason = format!("{}{}", "é".repeat(40), "x".repeat(43));
        assert_eq!(reason.len(), 123);
        for code in [1000u16, 4000] {
            let frames = [
                frame(true, TEXT, b"before"),
                close_frame(code, reason.as_bytes()),
            ];
            let transcript = converse_in_one_write(&server, &frames);
            assert_messages(&transcript, &[(TEXT, b"before")]);
            assert_eq!(transcript.unfinished, None);
            assert_eq!(transcript.close.0, Some(code));
        }
    }

    #[test]
    fn a_close_reason_of_124_bytes_makes_the_frame_too_long_and_fails_with_1002() {
        let server = TestServer::echo();
        let frames = [
            frame(true, TEXT, b"before"),
            close_frame(1000, &[b'r'; 124]),
        ];
        let transcript = converse_in_one_write(&server, &frames);
        assert_messages(&transcript, &[(TEXT, b"before")]);
        assert_failed_with(&transcript, 1002);
    }

    #[test]
    fn data_frames_sent_after_the_servers_close_reply_are_not_echoed() {
        let server = TestServer::echo();
        let mut stream = open(&server);
        let wire = [frame(true, TEXT, b"before"), close_frame(1001, b"leaving")].concat();
        stream.write_all(&wire).unwrap();
        let transcript = read_until_close(&mut stream);
        assert_messages(&transcript, &[(TEXT, b"before")]);
        assert_eq!(transcript.close.0, Some(1001));
        // After the close handshake the client (wrongly) goes on: text, a fragment,
        // binary, a ping. None of it is echoed or answered.
        let late = [
            frame(true, TEXT, b"after"),
            frame(false, TEXT, b"half"),
            frame(true, CONTINUATION, b"way"),
            frame(true, BINARY, &[1; 200]),
            frame(true, PING, b"anyone?"),
        ]
        .concat();
        // The write itself may fail if the server has let go of the socket already.
        let _ = stream.write_all(&late);
        expect_eof_right_after_close(&mut stream);
    }
}

/// Autobahn 9.*: big messages in frames of every size, streamed back intact.
///
/// Elsewhere: tests/echo.rs sends 16 MiB messages in the client library's framing;
/// tests/large_messages.rs covers messages far above 16 MiB, and
/// server/tests/resources.rs the server's memory.
mod limits {
    use super::*;

    /// Frame sizes cycled through to cut a message: 1 B … 64 KiB … 1 MiB, including
    /// every length-encoding boundary and odd sizes that cut through characters.
    const MIXED: [usize; 14] = [
        1,
        2,
        3,
        125,
        126,
        127,
        1000,
        4096,
        65_535,
        65_536,
        65_537,
        1 << 20,
        (1 << 20) + 1,
        7,
    ];

    /// Frames carrying `data` as one message of `opcode`, cut by `sizes` (cycled).
    fn cut_into_frames(opcode: u8, data: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut wire = Vec::with_capacity(data.len() + data.len() / 8 + 64);
        let mut start = 0;
        let mut sizes = sizes.iter().cycle();
        loop {
            let end = (start + sizes.next().expect("sizes")).min(data.len());
            let op = if start == 0 { opcode } else { CONTINUATION };
            wire.extend(frame(end == data.len(), op, &data[start..end]));
            start = end;
            if start == data.len() {
                return wire;
            }
        }
    }

    const SIXTEEN_MIB: usize = 16 << 20;

    #[test]
    fn sixteen_mib_messages_in_mixed_frames_from_1_byte_to_1_mib_are_echoed_intact() {
        let server = TestServer::echo();
        // Generated again on the writer thread: only one copy of each is kept here.
        let writes = (0..2)
            .map(|i| match i {
                0 => cut_into_frames(BINARY, &patterned_bytes(SIXTEEN_MIB, 16), &MIXED),
                _ => cut_into_frames(TEXT, &patterned_text(SIXTEEN_MIB), &MIXED),
            })
            .chain([normal_close()]);
        let transcript = converse(&server, writes);
        let binary = patterned_bytes(SIXTEEN_MIB, 16);
        let text = patterned_text(SIXTEEN_MIB);
        assert_echoed_then_closed(&transcript, &[(BINARY, &binary), (TEXT, &text)]);
    }

    #[test]
    fn messages_in_uniform_frames_of_1_byte_to_1_mib_are_echoed_intact() {
        let server = TestServer::echo();
        // (frame size, message size): 64 KiB in 1-byte frames, 1 MiB in 125- and
        // 126-byte frames, 16 MiB in 64 KiB and in 1 MiB frames.
        const PLAN: [(usize, usize); 5] = [
            (1, 64 << 10),
            (125, 1 << 20),
            (126, 1 << 20),
            (64 << 10, SIXTEEN_MIB),
            (1 << 20, SIXTEEN_MIB),
        ];
        let writes = PLAN
            .iter()
            .enumerate()
            .map(|(i, &(frame_size, len))| {
                cut_into_frames(BINARY, &patterned_bytes(len, i as u64), &[frame_size])
            })
            .chain([normal_close()]);
        let transcript = converse(&server, writes);
        let expected: Vec<Vec<u8>> = PLAN
            .iter()
            .enumerate()
            .map(|(i, &(_, len))| patterned_bytes(len, i as u64))
            .collect();
        let expected: Vec<(u8, &[u8])> = expected.iter().map(|d| (BINARY, &d[..])).collect();
        assert_echoed_then_closed(&transcript, &expected);
    }
}
