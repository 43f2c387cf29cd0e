//! Protocol errors and the closing handshake over raw TCP (RFC 6455 §5, §7): each
//! violation is answered with a close frame carrying the right status code (§7.4.1),
//! then the server closes the TCP connection; valid closes are echoed.

mod common;

use common::{
    config, expect_eof, masked_frame, raw_upgrade, read_close, read_frame, read_message, TestServer,
};
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// Sends `wire` on a fresh connection and asserts that the server answers with a close
/// frame with `code` and then ends the TCP connection (§7.1.7 "Fail the WebSocket
/// Connection"). Data frames before the close are skipped.
fn expect_failure(server: &impl common::Listening, wire: &[u8], code: u16) {
    let mut stream = raw_upgrade(server);
    stream.write_all(wire).unwrap();
    let (got, reason) = read_close(&mut stream);
    assert_eq!(got, Some(code), "reason {reason:?}");
    assert!(!reason.is_empty(), "a failure close says why");
    expect_eof(&mut stream);
}

fn close_body(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(reason);
    body
}

/// Reads frames until EOF, returning them all.
fn frames_until_eof(stream: &mut TcpStream) -> Vec<common::ServerFrame> {
    std::iter::from_fn(|| read_frame(stream)).collect()
}

#[test]
fn a_reserved_bit_fails_the_connection_with_1002() {
    let server = TestServer::echo();
    for rsv in [0x40, 0x20, 0x10] {
        let mut frame = masked_frame(true, 0x1, b"rsv");
        frame[0] |= rsv;
        expect_failure(&server, &frame, 1002);
    }
}

#[test]
fn reserved_opcodes_fail_the_connection_with_1002() {
    let server = TestServer::echo();
    expect_failure(&server, &masked_frame(true, 0x3, b"data?"), 1002);
    expect_failure(&server, &masked_frame(true, 0xB, b""), 1002);
}

#[test]
fn an_unmasked_client_frame_fails_the_connection_with_1002() {
    let server = TestServer::echo();
    expect_failure(&server, &[0x81, 0x02, b'h', b'i'], 1002);
}

#[test]
fn a_ping_with_126_bytes_fails_the_connection_with_1002() {
    let server = TestServer::echo();
    expect_failure(&server, &masked_frame(true, 0x9, &[b'p'; 126]), 1002);
}

#[test]
fn a_fragmented_ping_fails_the_connection_with_1002() {
    let server = TestServer::echo();
    expect_failure(&server, &masked_frame(false, 0x9, b"half a ping"), 1002);
}

#[test]
fn a_continuation_without_a_message_fails_the_connection_with_1002() {
    let server = TestServer::echo();
    expect_failure(&server, &masked_frame(true, 0x0, b"orphan"), 1002);
}

#[test]
fn a_new_text_frame_inside_a_fragmented_message_fails_the_connection_with_1002() {
    let server = TestServer::echo();
    let mut wire = masked_frame(false, 0x1, b"first ");
    wire.extend(masked_frame(true, 0x1, b"not a continuation"));
    expect_failure(&server, &wire, 1002);
}

#[test]
fn a_close_with_a_one_byte_body_fails_the_connection_with_1002() {
    let server = TestServer::echo();
    expect_failure(&server, &masked_frame(true, 0x8, &[0x03]), 1002);
}

#[test]
fn close_codes_not_allowed_on_the_wire_fail_the_connection_with_1002() {
    let server = TestServer::echo();
    for code in [1005, 999, 2999, 1004, 1006, 1015, 0, 5000] {
        expect_failure(
            &server,
            &masked_frame(true, 0x8, &close_body(code, b"")),
            1002,
        );
    }
}

#[test]
fn a_close_reason_that_is_not_utf8_fails_the_connection_with_1007() {
    let server = TestServer::echo();
    let body = close_body(1000, b"bad \xE8\xFF\xFE");
    expect_failure(&server, &masked_frame(true, 0x8, &body), 1007);
}

#[test]
fn invalid_utf8_text_fails_with_1007_after_echoing_everything_sent_before_it() {
    let server = TestServer::echo();
    let mut stream = raw_upgrade(&server);
    // Nothing a client sent before an error is lost: three good messages (one of them
    // binary, one fragmented), then a text frame with a byte that is never UTF-8.
    let mut wire = masked_frame(true, 0x1, "one ✓".as_bytes());
    wire.extend(masked_frame(true, 0x2, &[0xFF, 0xFE]));
    wire.extend(masked_frame(false, 0x1, b"thr"));
    wire.extend(masked_frame(true, 0x0, b"ee"));
    wire.extend(masked_frame(true, 0x1, b"four \xC3\x28 invalid"));
    stream.write_all(&wire).unwrap();
    let mut controls = Vec::new();
    assert_eq!(
        read_message(&mut stream, &mut controls),
        (0x1, "one ✓".as_bytes().to_vec())
    );
    assert_eq!(
        read_message(&mut stream, &mut controls),
        (0x2, vec![0xFF, 0xFE])
    );
    assert_eq!(
        read_message(&mut stream, &mut controls),
        (0x1, b"three".to_vec())
    );
    assert!(controls.is_empty(), "{controls:?}");
    // The valid prefix of the bad message may have been echoed as an unfinished frame.
    let (code, _) = read_close(&mut stream);
    assert_eq!(code, Some(1007));
    expect_eof(&mut stream);
}

#[test]
fn a_64_bit_length_with_the_top_bit_set_fails_the_connection_with_1002() {
    let server = TestServer::echo();
    let mut wire = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
    wire.extend([0x11, 0x22, 0x33, 0x44]);
    expect_failure(&server, &wire, 1002);
}

#[test]
fn a_message_over_max_message_size_in_buffered_mode_fails_with_1009() {
    let server = TestServer::start(
        config().max_message_size(1024),
        wsreactor::Echo::new().whole_messages(),
    );
    // At the limit it is fine.
    let mut stream = raw_upgrade(&server);
    stream
        .write_all(&masked_frame(true, 0x2, &[7; 1024]))
        .unwrap();
    assert_eq!(
        read_message(&mut stream, &mut Vec::new()),
        (0x2, vec![7; 1024])
    );
    // One frame over the limit, and a message whose fragments add up to over it.
    expect_failure(&server, &masked_frame(true, 0x2, &[7; 1025]), 1009);
    let mut wire = masked_frame(false, 0x1, &[b'a'; 600]);
    wire.extend(masked_frame(true, 0x0, &[b'b'; 600]));
    expect_failure(&server, &wire, 1009);
}

#[test]
fn an_empty_close_is_answered_with_an_empty_close() {
    let server = TestServer::echo();
    let mut stream = raw_upgrade(&server);
    stream.write_all(&masked_frame(true, 0x8, b"")).unwrap();
    let close = read_frame(&mut stream).expect("close");
    assert_eq!((close.opcode, close.fin), (0x8, true));
    assert!(close.payload.is_empty(), "{close:?}");
    expect_eof(&mut stream);
}

#[test]
fn every_valid_close_code_is_echoed() {
    let server = TestServer::echo();
    let codes = (1000..=1003).chain(1007..=1014).chain([3000, 4999]);
    for code in codes {
        let mut stream = raw_upgrade(&server);
        let body = close_body(code, b"reason");
        stream.write_all(&masked_frame(true, 0x8, &body)).unwrap();
        assert_eq!(read_close(&mut stream).0, Some(code), "code {code}");
        expect_eof(&mut stream);
    }
}

#[test]
fn data_sent_after_the_close_frame_is_ignored() {
    let server = TestServer::echo();
    let mut stream = raw_upgrade(&server);
    let mut wire = masked_frame(true, 0x1, b"before");
    wire.extend(masked_frame(true, 0x8, &close_body(1000, b"")));
    wire.extend(masked_frame(true, 0x1, b"after"));
    wire.extend(masked_frame(true, 0x9, b"ping after"));
    stream.write_all(&wire).unwrap();
    let frames = frames_until_eof(&mut stream);
    let summary: Vec<_> = frames.iter().map(|f| (f.opcode, &f.payload[..])).collect();
    assert_eq!(
        summary,
        [(0x1, &b"before"[..]), (0x8, &1000u16.to_be_bytes()[..])],
        "the echo of what came before, then the close, then nothing"
    );
}

#[test]
fn a_message_and_the_fin_in_one_segment_are_both_seen() {
    // TCP_CORK holds the frame back, and the shutdown sends it with the FIN in one
    // segment: one readable event that also says the peer closed. The server must
    // read past its first, short read to see the EOF, since no later event comes.
    let server = TestServer::echo();
    let mut stream = common::raw_upgrade_with_read_timeout(&server, Duration::from_secs(5));
    socket2::SockRef::from(&stream).set_cork(true).unwrap();
    stream
        .write_all(&masked_frame(true, 0x1, b"last words"))
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut controls = Vec::new();
    assert_eq!(
        read_message(&mut stream, &mut controls),
        (0x1, b"last words".to_vec())
    );
    // A close without a close frame: the server drops the connection (§7.1.5, 1006).
    expect_eof(&mut stream);
}
