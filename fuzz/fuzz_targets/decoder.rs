//! The frame decoder on arbitrary bytes cut at arbitrary points: it never panics, and
//! the events (with payload merged per frame) are the same however the bytes are cut.
//! The first two input bytes choose the cutting; the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsreactor::protocol::{Decoder, Event, Limits, Role};

#[derive(Debug, PartialEq)]
enum Seen {
    Start(u8, bool, u64),
    Data(Vec<u8>, bool),
    Control(u8, Vec<u8>),
    Close(Option<(u16, String)>),
    Error(String),
}

fn decode(stream: &[u8], cut: impl Fn(usize) -> usize) -> Vec<Seen> {
    let limits = Limits {
        max_frame_size: 1 << 20,
        max_message_size: 1 << 21,
    };
    let mut decoder = Decoder::new(Role::Server, limits);
    let mut buf = stream.to_vec();
    let mut seen: Vec<Seen> = Vec::new();
    let mut start = 0;
    let mut piece = 0;
    while start < buf.len() {
        let end = (start + cut(piece).max(1)).min(buf.len());
        piece += 1;
        let mut pos = start;
        loop {
            match decoder.decode(&mut buf[pos..end]) {
                Err(e) => {
                    seen.push(Seen::Error(format!("{e:?}")));
                    return seen;
                }
                Ok((n, event)) => {
                    assert!(n <= end - pos);
                    pos += n;
                    match event {
                        None => {
                            assert_eq!(pos, end, "None means all input was consumed");
                            break;
                        }
                        Some(Event::FrameStart(h)) => {
                            seen.push(Seen::Start(u8::from(h.opcode), h.fin, h.payload_len))
                        }
                        Some(Event::Data {
                            bytes,
                            end_of_message,
                            ..
                        }) => match seen.last_mut() {
                            Some(Seen::Data(prev, ended)) if !*ended => {
                                prev.extend_from_slice(bytes);
                                *ended = end_of_message;
                            }
                            _ => seen.push(Seen::Data(bytes.to_vec(), end_of_message)),
                        },
                        Some(Event::Ping(p)) => {
                            seen.push(Seen::Control(0x9, p.as_slice().to_vec()))
                        }
                        Some(Event::Pong(p)) => {
                            seen.push(Seen::Control(0xA, p.as_slice().to_vec()))
                        }
                        Some(Event::Close(c)) => {
                            seen.push(Seen::Close(c.map(|c| (c.code().0, c.reason().to_string()))))
                        }
                        Some(other) => panic!("an event this target does not know: {other:?}"),
                    }
                }
            }
        }
        start = end;
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let [a, b, stream @ ..] = data else { return };
    let whole = decode(stream, |_| usize::MAX);
    let cut = decode(stream, |i| {
        if i % 2 == 0 {
            usize::from(*a)
        } else {
            usize::from(*b)
        }
    });
    // A data frame's payload may be split differently, but merged it must agree.
    assert_eq!(whole, cut);
});
