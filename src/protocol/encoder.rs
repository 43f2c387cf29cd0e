//! Outgoing frames: cutting a message into frames of a bounded size (RFC 6455 §5.4)
//! and the headers of control frames.
//!
//! A server never masks (§5.1), so the payload bytes go out exactly as the application
//! gave them: the encoder only produces headers and says which slice of the payload
//! follows each one.

use super::coding::{MessageKind, OpCode};
use super::header::{FrameHeader, MAX_HEADER_LEN};
use super::mask::apply_mask;

/// Cuts outgoing data messages into frames of at most `max_frame` payload bytes.
///
/// It remembers whether a message is open, and of which kind, so a message can be
/// written in several calls (a streaming echo forwards each chunk as it arrives): the
/// first frame carries the text/binary opcode, every later one is a continuation, and
/// only the last has FIN set. Control frames may be sent between its frames (§5.4).
///
/// 8 bytes: every connection holds one.
#[derive(Clone, Debug)]
pub struct Fragmenter {
    max_frame: u32,
    /// The kind of the message started and not yet finished, if any.
    open: Option<MessageKind>,
}

impl Fragmenter {
    /// A fragmenter for frames of at most `max_frame` bytes (at least 1, at most
    /// `u32::MAX`: a larger value is cut to that).
    pub fn new(max_frame: usize) -> Self {
        Fragmenter {
            max_frame: u32::try_from(max_frame).unwrap_or(u32::MAX).max(1),
            open: None,
        }
    }

    /// The largest payload of one frame.
    pub fn max_frame(&self) -> usize {
        usize::try_from(self.max_frame).unwrap_or(usize::MAX)
    }

    /// Whether a message has been started and not yet finished.
    pub fn in_message(&self) -> bool {
        self.open.is_some()
    }

    /// The kind of the message started and not yet finished, if any.
    pub fn open_message(&self) -> Option<MessageKind> {
        self.open
    }

    /// Calls `emit(header, payload)` for each frame that carries `data` as the next part
    /// of a message of `kind`; `end_of_message` sets FIN on the last one. Empty `data`
    /// produces no frame unless it ends the message (then one empty FIN frame). A part
    /// of an open message continues it: its kind stays the one the message began with.
    #[inline]
    pub fn frames<'d>(
        &mut self,
        kind: MessageKind,
        data: &'d [u8],
        end_of_message: bool,
        mut emit: impl FnMut(FrameHeader, &'d [u8]),
    ) {
        let mut chunks = data.chunks(self.max_frame()).peekable();
        if chunks.peek().is_none() && !end_of_message {
            return;
        }
        let kind = self.open.unwrap_or(kind);
        loop {
            let chunk = chunks.next().unwrap_or_default();
            let last = chunks.peek().is_none();
            let opcode = if self.open.is_some() {
                OpCode::Continuation
            } else {
                kind.opcode()
            };
            let fin = last && end_of_message;
            self.open = (!fin).then_some(kind);
            emit(
                FrameHeader {
                    fin,
                    rsv: 0,
                    opcode,
                    mask: None,
                    payload_len: chunk.len() as u64,
                },
                chunk,
            );
            if last {
                return;
            }
        }
    }
}

/// The header of an unmasked control frame (close, ping or pong) with `payload_len`
/// bytes (at most 125, §5.5).
pub fn control_header(opcode: OpCode, payload_len: usize) -> FrameHeader {
    debug_assert!(opcode.is_control() && payload_len <= super::control::MAX_CONTROL_PAYLOAD);
    FrameHeader {
        fin: true,
        rsv: 0,
        opcode,
        mask: None,
        payload_len: payload_len as u64,
    }
}

/// Appends one whole client frame to `out`: the header with `key`, then `payload`
/// masked with it. Clients MUST mask every frame with a fresh key (§5.3); a server
/// never masks, so the server itself has no use for this — the load generator and
/// the measurement tools do.
pub fn push_masked_frame(
    out: &mut Vec<u8>,
    opcode: OpCode,
    fin: bool,
    payload: &[u8],
    key: [u8; 4],
) {
    let header = FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let len = header.encode(&mut head);
    out.extend_from_slice(&head[..len]);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::header::HeaderParse;

    fn collect(
        f: &mut Fragmenter,
        kind: MessageKind,
        data: &[u8],
        end: bool,
    ) -> Vec<(OpCode, bool, Vec<u8>)> {
        let mut out = Vec::new();
        f.frames(kind, data, end, |h, p| {
            out.push((h.opcode, h.fin, p.to_vec()))
        });
        out
    }

    #[test]
    fn a_small_message_is_one_frame() {
        let mut f = Fragmenter::new(4);
        assert_eq!(
            collect(&mut f, MessageKind::Text, b"hey", true),
            vec![(OpCode::Text, true, b"hey".to_vec())]
        );
        assert!(!f.in_message());
    }

    #[test]
    fn a_large_message_is_cut_into_continuations() {
        let mut f = Fragmenter::new(4);
        assert_eq!(
            collect(&mut f, MessageKind::Binary, b"0123456789", true),
            vec![
                (OpCode::Binary, false, b"0123".to_vec()),
                (OpCode::Continuation, false, b"4567".to_vec()),
                (OpCode::Continuation, true, b"89".to_vec()),
            ]
        );
    }

    #[test]
    fn a_message_written_in_parts_continues_across_calls() {
        let mut f = Fragmenter::new(64);
        assert_eq!(
            collect(&mut f, MessageKind::Text, b"ab", false),
            vec![(OpCode::Text, false, b"ab".to_vec())]
        );
        assert!(f.in_message());
        assert!(collect(&mut f, MessageKind::Text, b"", false).is_empty());
        assert_eq!(
            collect(&mut f, MessageKind::Text, b"", true),
            vec![(OpCode::Continuation, true, Vec::new())]
        );
        assert_eq!(
            collect(&mut f, MessageKind::Text, b"", true),
            vec![(OpCode::Text, true, Vec::new())]
        );
    }

    #[test]
    fn an_open_message_keeps_the_kind_it_began_with() {
        let mut f = Fragmenter::new(64);
        assert_eq!(f.open_message(), None);
        collect(&mut f, MessageKind::Binary, b"ab", false);
        assert_eq!(f.open_message(), Some(MessageKind::Binary));
        assert_eq!(
            collect(&mut f, MessageKind::Text, b"cd", false),
            vec![(OpCode::Continuation, false, b"cd".to_vec())]
        );
        assert_eq!(f.open_message(), Some(MessageKind::Binary));
        collect(&mut f, MessageKind::Binary, b"", true);
        assert_eq!(f.open_message(), None);
    }

    #[test]
    fn a_fragmenter_is_8_bytes_and_keeps_any_frame_size() {
        assert_eq!(std::mem::size_of::<Fragmenter>(), 8);
        assert_eq!(Fragmenter::new(0).max_frame(), 1);
        assert_eq!(Fragmenter::new(usize::MAX).max_frame(), u32::MAX as usize);
    }

    #[test]
    fn a_masked_client_frame_parses_back_and_unmasks_to_its_payload() {
        let mut out = vec![0xAA];
        push_masked_frame(&mut out, OpCode::Close, true, &[0x03, 0xE8], [1, 2, 3, 4]);
        let Ok(HeaderParse::Complete { header, len }) = FrameHeader::parse(&out[1..]) else {
            panic!("complete header expected");
        };
        assert_eq!(
            (header.opcode, header.fin, header.mask),
            (OpCode::Close, true, Some([1, 2, 3, 4]))
        );
        let mut payload = out[1 + len..].to_vec();
        apply_mask(&mut payload, [1, 2, 3, 4], 0);
        assert_eq!(payload, [0x03, 0xE8]);
        assert_eq!(out[0], 0xAA, "appends, keeps what was there");
    }
}
