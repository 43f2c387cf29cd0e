//! The streaming decoder through its public API: every RFC 6455 §5 rule, the length
//! tiers, and the property that matters most for a server reading from TCP — any
//! chunking of the same bytes decodes to the same events and payload.

use proptest::prelude::*;
use wsreactor::protocol::header::MAX_HEADER_LEN;
use wsreactor::protocol::mask::apply_mask;
use wsreactor::protocol::{
    CloseCode, CloseFrame, Decoder, Event, FrameHeader, Limits, OpCode, ProtocolError, Role,
};

/// A masked client frame, as a browser would send it.
fn client_frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let header = FrameHeader {
        fin,
        rsv: 0,
        opcode: OpCode::from(opcode),
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let len = header.encode(&mut head);
    let mut frame = head[..len].to_vec();
    let mut body = payload.to_vec();
    apply_mask(&mut body, key, 0);
    frame.extend_from_slice(&body);
    frame
}

fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(fin, opcode, payload, [0x37, 0xFA, 0x21, 0x3D])
}

/// An owned, chunking-independent view of the events: consecutive `Data` merged, and
/// the end of each message as `End`.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Seen {
    Start(OpCode, bool, u64),
    /// Payload bytes, merged across `Data` events until the next other event.
    Data(Vec<u8>),
    /// The end of a message.
    End,
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    Error(ProtocolError),
}

/// Feeds `bytes` in pieces of the given sizes (cycled) and records what happens.
fn decode_in_pieces(decoder: &mut Decoder, bytes: &[u8], sizes: &[usize]) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut buf = bytes.to_vec();
    let mut start = 0;
    let mut piece = 0;
    while start < buf.len() {
        let size = sizes
            .get(piece % sizes.len().max(1))
            .copied()
            .unwrap_or(buf.len())
            .max(1);
        piece += 1;
        let end = (start + size).min(buf.len());
        let chunk = &mut buf[start..end];
        let mut pos = 0;
        loop {
            match decoder.decode(&mut chunk[pos..]) {
                Err(e) => {
                    seen.push(Seen::Error(e));
                    return seen;
                }
                Ok((n, event)) => {
                    pos += n;
                    let Some(event) = event else { break };
                    let item = match event {
                        Event::FrameStart(h) => Seen::Start(h.opcode, h.fin, h.payload_len),
                        Event::Data {
                            bytes,
                            end_of_message,
                            ..
                        } => {
                            assert!(
                                !bytes.is_empty() || end_of_message,
                                "empty Data only ends a message"
                            );
                            match seen.last_mut() {
                                Some(Seen::Data(prev)) => prev.extend_from_slice(bytes),
                                _ if !bytes.is_empty() => seen.push(Seen::Data(bytes.to_vec())),
                                _ => {}
                            }
                            if !end_of_message {
                                continue;
                            }
                            Seen::End
                        }
                        Event::Ping(p) => Seen::Ping(p.as_slice().to_vec()),
                        Event::Pong(p) => Seen::Pong(p.as_slice().to_vec()),
                        Event::Close(c) => {
                            Seen::Close(c.map(|c| (c.code().0, c.reason().to_string())))
                        }
                        other => panic!("an event this test does not know: {other:?}"),
                    };
                    seen.push(item);
                }
            }
        }
        assert_eq!(
            pos,
            chunk.len(),
            "a None event means the whole input was consumed"
        );
        start = end;
    }
    seen
}

fn decode_whole(bytes: &[u8]) -> Vec<Seen> {
    decode_in_pieces(
        &mut Decoder::new(Role::Server, Limits::default()),
        bytes,
        &[bytes.len()],
    )
}

fn last_error(bytes: &[u8]) -> Option<ProtocolError> {
    match decode_whole(bytes).last() {
        Some(Seen::Error(e)) => Some(*e),
        _ => None,
    }
}

#[test]
fn the_browser_a_message_decodes_to_start_data_end() {
    assert_eq!(
        decode_whole(&frame(true, 0x1, b"a")),
        vec![
            Seen::Start(OpCode::Text, true, 1),
            Seen::Data(b"a".to_vec()),
            Seen::End
        ]
    );
}

#[test]
fn every_length_tier_decodes_at_its_boundaries() {
    for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 200_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let mut expected = vec![Seen::Start(OpCode::Binary, true, len as u64)];
        if len > 0 {
            expected.push(Seen::Data(payload.clone()));
        }
        expected.push(Seen::End);
        assert_eq!(
            decode_whole(&frame(true, 0x2, &payload)),
            expected,
            "length {len}"
        );
    }
}

#[test]
fn a_64_bit_length_above_4_gib_is_reported_without_buffering() {
    let mut wire = vec![0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 1, 1, 2, 3, 4];
    wire.extend_from_slice(&[9; 1000]);
    let seen = decode_whole(&wire);
    assert_eq!(seen[0], Seen::Start(OpCode::Binary, true, (1 << 32) + 1));
    assert!(matches!(&seen[1], Seen::Data(d) if d.len() == 1000));
    assert_eq!(seen.len(), 2, "the frame is not over yet");
}

#[test]
fn rule_violations_map_to_their_errors_and_close_codes() {
    let mut unmasked = frame(true, 0x2, b"x");
    unmasked[1] &= 0x7F;
    unmasked.truncate(2);
    unmasked.push(b'x');
    let mut rsv = frame(true, 0x2, b"x");
    rsv[0] |= 0x40;
    let cases: Vec<(Vec<u8>, ProtocolError, u16)> = vec![
        (rsv, ProtocolError::ReservedBitsSet, 1002),
        (frame(true, 0x3, b""), ProtocolError::ReservedOpcode, 1002),
        (frame(true, 0xB, b""), ProtocolError::ReservedOpcode, 1002),
        (unmasked, ProtocolError::UnmaskedClientFrame, 1002),
        (
            frame(true, 0x9, &[0; 126]),
            ProtocolError::ControlFrameTooLong,
            1002,
        ),
        (
            frame(false, 0x9, b""),
            ProtocolError::FragmentedControlFrame,
            1002,
        ),
        (
            frame(true, 0x0, b"x"),
            ProtocolError::UnexpectedContinuation,
            1002,
        ),
        (
            [frame(false, 0x1, b"a"), frame(true, 0x1, b"b")].concat(),
            ProtocolError::ExpectedContinuation,
            1002,
        ),
        (
            frame(true, 0x8, &[3]),
            ProtocolError::InvalidClosePayload,
            1002,
        ),
        (
            frame(true, 0x8, &[0x03, 0xED]),
            ProtocolError::InvalidCloseCode,
            1002,
        ),
        (
            frame(true, 0x8, &[0x03, 0xE8, 0xFF]),
            ProtocolError::InvalidCloseReason,
            1007,
        ),
        (
            frame(true, 0x1, &[b'a', 0xFF]),
            ProtocolError::InvalidUtf8,
            1007,
        ),
        (
            frame(true, 0x1, &[0xE2, 0x82]),
            ProtocolError::InvalidUtf8,
            1007,
        ),
    ];
    for (bytes, error, code) in cases {
        assert_eq!(last_error(&bytes), Some(error), "{error:?}");
        assert_eq!(error.close_code(), CloseCode(code));
    }
}

#[test]
fn size_limits_fail_with_1009_before_any_payload_is_accepted() {
    let limits = Limits {
        max_frame_size: 10,
        max_message_size: 15,
    };
    let mut decoder = Decoder::new(Role::Server, limits);
    let seen = decode_in_pieces(&mut decoder, &frame(true, 0x2, &[0; 11]), &[100]);
    assert_eq!(seen, vec![Seen::Error(ProtocolError::FrameTooLarge)]);

    let mut decoder = Decoder::new(Role::Server, limits);
    let two = [frame(false, 0x2, &[0; 10]), frame(true, 0x0, &[0; 6])].concat();
    let seen = decode_in_pieces(&mut decoder, &two, &[100]);
    assert_eq!(
        seen.last(),
        Some(&Seen::Error(ProtocolError::MessageTooLarge))
    );
    assert_eq!(
        ProtocolError::MessageTooLarge.close_code(),
        CloseCode::MESSAGE_TOO_BIG
    );
}

#[test]
fn control_frames_between_fragments_are_delivered_in_order() {
    let close = CloseFrame::new(CloseCode(4000), "done");
    let bytes = [
        frame(false, 0x1, b"Hel"),
        frame(true, 0x9, b"are you there"),
        frame(false, 0x0, b"lo, "),
        frame(true, 0xA, b""),
        frame(true, 0x0, "wörld".as_bytes()),
        frame(true, 0x8, close.payload()),
    ]
    .concat();
    assert_eq!(
        decode_whole(&bytes),
        vec![
            Seen::Start(OpCode::Text, false, 3),
            Seen::Data(b"Hel".to_vec()),
            Seen::Start(OpCode::Ping, true, 13),
            Seen::Ping(b"are you there".to_vec()),
            Seen::Start(OpCode::Continuation, false, 4),
            Seen::Data(b"lo, ".to_vec()),
            Seen::Start(OpCode::Pong, true, 0),
            Seen::Pong(Vec::new()),
            Seen::Start(OpCode::Continuation, true, 6),
            Seen::Data("wörld".as_bytes().to_vec()),
            Seen::End,
            Seen::Start(OpCode::Close, true, 6),
            Seen::Close(Some((4000, "done".to_string()))),
        ]
    );
}

#[test]
fn invalid_utf8_hands_on_the_valid_prefix_then_fails() {
    let seen = decode_whole(&frame(true, 0x1, b"valid\xF4\x90rest"));
    assert_eq!(
        seen,
        vec![
            Seen::Start(OpCode::Text, true, 11),
            Seen::Data(b"valid\xF4".to_vec()),
            Seen::Error(ProtocolError::InvalidUtf8),
        ]
    );
}

#[test]
fn a_client_decoder_rejects_masked_frames_and_reads_unmasked_ones() {
    let mut decoder = Decoder::new(Role::Client, Limits::default());
    let seen = decode_in_pieces(&mut decoder, &[0x82, 0x02, 7, 8], &[1]);
    assert_eq!(
        seen,
        vec![
            Seen::Start(OpCode::Binary, true, 2),
            Seen::Data(vec![7, 8]),
            Seen::End
        ]
    );
    let mut decoder = Decoder::new(Role::Client, Limits::default());
    let seen = decode_in_pieces(&mut decoder, &frame(true, 0x2, b"x"), &[100]);
    assert_eq!(seen, vec![Seen::Error(ProtocolError::MaskedServerFrame)]);
}

/// One frame of a random but legal conversation.
fn legal_stream() -> impl Strategy<Value = Vec<u8>> {
    let message = (
        any::<bool>(),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..4),
        prop::collection::vec(0usize..3, 0..3),
        any::<[u8; 4]>(),
    );
    prop::collection::vec(message, 1..5).prop_map(|messages| {
        let mut out = Vec::new();
        for (text, fragments, pings, key) in messages {
            let count = fragments.len();
            for (i, fragment) in fragments.into_iter().enumerate() {
                let opcode = match (i, text) {
                    (0, true) => 0x1,
                    (0, false) => 0x2,
                    _ => 0x0,
                };
                // Text payloads must be UTF-8: map random bytes onto a UTF-8 string.
                let payload = if text {
                    String::from_utf8_lossy(&fragment).into_owned().into_bytes()
                } else {
                    fragment
                };
                out.extend(client_frame(i + 1 == count, opcode, &payload, key));
                if let Some(&n) = pings.get(i) {
                    out.extend(client_frame(true, 0x9, &vec![n as u8; n * 40], key));
                }
            }
        }
        out
    })
}

proptest! {
    #[test]
    fn any_chunking_decodes_to_the_same_events(
        bytes in legal_stream(),
        sizes in prop::collection::vec(1usize..40, 1..10),
    ) {
        let whole = decode_whole(&bytes);
        prop_assert!(!whole.iter().any(|s| matches!(s, Seen::Error(_))), "{:?}", whole);
        let mut decoder = Decoder::new(Role::Server, Limits::default());
        prop_assert_eq!(decode_in_pieces(&mut decoder, &bytes, &sizes), whole.clone());
        let mut decoder = Decoder::new(Role::Server, Limits::default());
        prop_assert_eq!(decode_in_pieces(&mut decoder, &bytes, &[1]), whole);
    }

    #[test]
    fn random_bytes_never_panic_and_errors_are_sticky(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        sizes in prop::collection::vec(1usize..64, 1..5),
    ) {
        let mut decoder = Decoder::new(Role::Server, Limits { max_frame_size: 1000, max_message_size: 5000 });
        let seen = decode_in_pieces(&mut decoder, &bytes, &sizes);
        if let Some(Seen::Error(e)) = seen.last() {
            let mut more = [0u8; 4];
            prop_assert_eq!(decoder.decode(&mut more), Err(*e));
        }
    }
}

#[test]
fn a_text_message_ending_inside_a_code_point_fails_the_same_however_it_is_cut() {
    let bytes = frame(true, 0x1, b"ab\xE2\x82");
    let whole = decode_whole(&bytes);
    assert_eq!(
        whole,
        vec![
            Seen::Start(OpCode::Text, true, 4),
            Seen::Data(b"ab\xE2\x82".to_vec()),
            Seen::Error(ProtocolError::InvalidUtf8),
        ]
    );
    let mut decoder = Decoder::new(Role::Server, Limits::default());
    assert_eq!(decode_in_pieces(&mut decoder, &bytes, &[1]), whole);
}
