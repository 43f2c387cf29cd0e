//! The connection session on arbitrary bytes cut at arbitrary points, with the clock
//! moving and the application closing and pinging in between: it never panics, every
//! step uses at most the input it was given, and once closed it stays closed and
//! sends nothing more. The first two input bytes choose the cutting and the actions;
//! the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use wsreactor::protocol::session::{Incoming, SessionConfig, State};
use wsreactor::protocol::{CloseCode, Limits, MessageKind, Session};

fuzz_target!(|data: &[u8]| {
    let [cut, actions, stream @ ..] = data else {
        return;
    };
    let limits = Limits {
        max_frame_size: 1 << 20,
        max_message_size: 1 << 21,
    };
    let config = SessionConfig {
        close_timeout: Duration::from_millis(50),
        idle_timeout: Some(Duration::from_millis(20)),
        report_frames: actions & 1 == 1,
    };
    let mut session = Session::new(limits, 1 + usize::from(*cut), config, 0);
    let mut out = Vec::new();
    let mut buf = stream.to_vec();
    let mut start = 0;
    let mut now: u32 = 0;
    for piece in 0usize.. {
        if start >= buf.len() {
            break;
        }
        let size = 1 + (usize::from(*cut) * (piece + 1)) % 97;
        let end = (start + size).min(buf.len());
        let mut pos = start;
        loop {
            let closed_before = session.state() == State::Closed;
            let sent_before = out.len();
            let (used, incoming) = session.receive(&mut buf[pos..end], &mut out);
            assert!(used <= end - pos);
            pos += used;
            if closed_before {
                assert_eq!(out.len(), sent_before, "nothing is sent once closed");
                assert!(incoming.is_none());
            }
            match incoming {
                None => break,
                Some(Incoming::Closed(_)) => assert_eq!(session.state(), State::Closed),
                Some(_) => {}
            }
        }
        start = end;
        now = now.wrapping_add(u32::from(*actions) % 13);
        session.heard_from_peer(now);
        let _ = session.on_deadline(now.wrapping_add(40), &mut out);
        match (actions >> 1) % 4 {
            1 if piece == 3 => {
                let _ = session.close(CloseCode::NORMAL, "fuzz", now, &mut out);
            }
            2 => {
                let _ = session.ping(&buf[..buf.len().min(130)], &mut out);
            }
            3 => {
                let _ = session
                    .fragmenter_for(MessageKind::Binary, piece % 2 == 0)
                    .map(|f| f.frames(MessageKind::Binary, b"x", piece % 3 == 0, |_, _| {}));
            }
            _ => {}
        }
    }
});
