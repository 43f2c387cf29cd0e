//! The streaming frame decoder (RFC 6455 §5): feed it any slice of bytes, it reports how
//! many it consumed and at most one [`Event`].
//!
//! It never holds a data payload. Payload bytes are unmasked in place in the caller's
//! buffer and handed back as [`Event::Data`] slices as soon as they arrive, so a frame of
//! 2^63−1 bytes costs it no more memory than one of 10 bytes. What it does keep between
//! calls is small and fixed (80 bytes on 64-bit targets): up to 14 bytes of a header cut
//! across reads, the state of the UTF-8 validator, and where it is in the frame. A
//! control frame's payload (at most 125 bytes) is taken straight from the input when it
//! arrives whole; only one cut across reads is collected, in a buffer allocated the first
//! time that happens and kept from then on. So a decoder that never saw a split control
//! frame (an idle connection, a typical one) holds no payload buffer at all.
//!
//! The states, named after what they wait for (like Node `ws`'s receiver):
//!
//! ```text
//!   Header ──(2 bytes, then +2/+8 length bytes, then +4 mask key bytes)──┐
//!     ^                                                                   v
//!     ├──────────────────── data frame: Payload{remaining} ──> Data ──────┤
//!     └──────────────── control frame: Control{remaining} ──> Ping/Pong/Close
//! ```

use super::close::CloseFrame;
use super::coding::{MessageKind, OpCode};
use super::control::{ControlPayload, MAX_CONTROL_PAYLOAD};
use super::error::ProtocolError;
use super::header::{FrameHeader, HeaderParse, MAX_HEADER_LEN, MAX_PAYLOAD_LEN};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// Which side of the connection this decoder reads for: it decides which masking rule
/// applies to incoming frames (§5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Reads frames sent by clients, which must be masked.
    Server,
    /// Reads frames sent by a server, which must not be masked.
    Client,
}

/// Size limits enforced on incoming frames and messages, both checked from the headers
/// before any payload byte is accepted (close 1009 above them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest payload one frame may declare.
    pub max_frame_size: u64,
    /// The largest total payload of one (possibly fragmented) message.
    pub max_message_size: u64,
}

impl Default for Limits {
    /// No limits beyond the protocol's own 2^63−1: a streaming consumer needs none.
    fn default() -> Self {
        Limits {
            max_frame_size: MAX_PAYLOAD_LEN,
            max_message_size: MAX_PAYLOAD_LEN,
        }
    }
}

/// What the decoder found in the bytes it consumed.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A frame header passed every check. For a text or binary opcode this starts a
    /// message; a continuation carries on the open one; a control opcode is followed
    /// by its [`Event::Ping`], [`Event::Pong`] or [`Event::Close`] once its payload is in.
    FrameStart(FrameHeader),
    /// The next payload bytes of the current data message, already unmasked. For text
    /// they are the part the UTF-8 validator has accepted so far: a prefix of valid
    /// UTF-8, though possibly ending inside a code point that the next bytes complete.
    /// Every data frame with payload yields one or more of these; an empty frame with
    /// FIN yields one with no bytes, so that the end of every message is seen.
    Data {
        /// Whether the message is text or binary (from its first frame's opcode).
        kind: MessageKind,
        /// The payload bytes (empty only when they end an empty final frame).
        bytes: &'a mut [u8],
        /// These bytes complete a frame with FIN set: the message is over.
        end_of_message: bool,
    },
    /// A complete ping; the answer is a pong with the same payload (§5.5.2).
    Ping(ControlPayload),
    /// A complete pong (§5.5.3).
    Pong(ControlPayload),
    /// A complete, valid close frame; `None` when it had no body (§5.5.1).
    Close(Option<CloseFrame>),
}

/// What the decoder is waiting for. (The small counts are `u8`: a header is at most 14
/// bytes, a control payload at most 125.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Header bytes; `filled` of them are already in `header_buf`.
    Header { filled: u8 },
    /// The rest of a data frame's payload (0 only for an empty final frame, whose
    /// `Data` event the next call reports).
    Payload { remaining: u64 },
    /// The rest of a control frame's payload. While `stashed` is 0 nothing of it has
    /// been consumed yet: if the whole payload is in the input, it is taken from there.
    /// Otherwise `stashed` bytes of it are already in the decoder's `control` buffer.
    Control { remaining: u8, stashed: u8 },
}

/// What the decoder keeps of the header of the frame whose payload is being read: the
/// parts that matter after the header was checked (8 bytes instead of the 24 of a
/// [`FrameHeader`]; the length lives on in [`State`]).
#[derive(Clone, Copy, Debug)]
struct Frame {
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
}

/// A streaming RFC 6455 frame decoder for one connection. See the module docs.
///
/// The fields are laid out for size (every reactor connection holds one): the message
/// in progress is split into its kind (1 byte) and its running length (8), rather than
/// an `Option` of a struct that would pad to 16, and the control payload stash is
/// boxed and created on first use.
#[derive(Clone, Debug)]
pub struct Decoder {
    role: Role,
    limits: Limits,
    state: State,
    header_buf: [u8; MAX_HEADER_LEN],
    /// The frame whose payload is being read.
    frame: Frame,
    /// Payload bytes of the current frame already unmasked, mod 4: where in the key the
    /// next byte starts (§5.3).
    mask_offset: u8,
    /// The kind of the message a data frame belongs to, while one is open (§5.4: a
    /// message may span many frames).
    message: Option<MessageKind>,
    /// Payload bytes the open message has declared so far, checked against
    /// `Limits::max_message_size`.
    declared: u64,
    utf8: Utf8Validator,
    /// A control frame's payload cut across reads, collected here. Allocated the first
    /// time a control payload arrives split, then kept for the next one.
    control: Option<Box<ControlPayload>>,
    /// Once the peer broke the protocol, every later call reports the same error.
    failed: Option<ProtocolError>,
}

impl Decoder {
    /// A decoder for the given side, with these limits.
    pub fn new(role: Role, limits: Limits) -> Self {
        Decoder {
            role,
            limits,
            state: State::Header { filled: 0 },
            header_buf: [0; MAX_HEADER_LEN],
            frame: Frame {
                fin: true,
                opcode: OpCode::Continuation,
                mask: None,
            },
            mask_offset: 0,
            message: None,
            declared: 0,
            utf8: Utf8Validator::default(),
            control: None,
            failed: None,
        }
    }

    /// The kind of the data message currently open, if a fragmented message is under way.
    pub fn open_message(&self) -> Option<MessageKind> {
        self.message
    }

    /// Whether the decoder sits exactly between two frames (nothing of a frame is
    /// pending), e.g. to know that a connection holds no partial input.
    pub fn is_between_frames(&self) -> bool {
        self.state == State::Header { filled: 0 }
    }

    /// Decodes from the front of `input`: returns how many bytes were consumed and the
    /// event they completed, if any. `None` means every byte was consumed and more are
    /// needed; with an event, call again with the rest of the input (even if it is
    /// empty: a frame end takes no bytes). Payload bytes are unmasked in place.
    pub fn decode<'a>(
        &mut self,
        input: &'a mut [u8],
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let result = self.step(input);
        if let Err(error) = result {
            self.failed = Some(error);
        }
        result
    }

    fn step<'a>(
        &mut self,
        input: &'a mut [u8],
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        match self.state {
            State::Header { filled } => self.read_header(filled, input),
            State::Payload { remaining } => self.read_payload(remaining, input),
            State::Control { remaining, stashed } => self.read_control(remaining, stashed, input),
        }
    }

    fn read_header<'a>(
        &mut self,
        filled: u8,
        input: &'a mut [u8],
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        let mut filled = usize::from(filled);
        // Fast path: nothing stashed, so parse straight from the input without copying.
        if filled == 0 {
            if let HeaderParse::Complete { header, len } = FrameHeader::parse(input)? {
                self.start_frame(header)?;
                return Ok((len, Some(Event::FrameStart(header))));
            }
        }
        // The header is cut across reads: stash exactly the bytes it still needs, so
        // that nothing beyond it is taken out of `input`.
        let mut used = 0;
        loop {
            match FrameHeader::parse(&self.header_buf[..filled])? {
                HeaderParse::Complete { header, .. } => {
                    self.start_frame(header)?;
                    return Ok((used, Some(Event::FrameStart(header))));
                }
                HeaderParse::Partial { needed } => {
                    // `needed` ≤ MAX_HEADER_LEN and `used` ≤ `input.len()`, so both
                    // ranges below are in bounds.
                    let take = (needed - filled).min(input.len() - used);
                    if take == 0 {
                        // `filled` < MAX_HEADER_LEN (14): the cast is lossless.
                        self.state = State::Header {
                            filled: filled as u8,
                        };
                        return Ok((used, None));
                    }
                    self.header_buf[filled..filled + take]
                        .copy_from_slice(&input[used..used + take]);
                    filled += take;
                    used += take;
                }
            }
        }
    }

    /// Checks a complete header against the RFC and the decoder's state (§5.2–§5.5) and
    /// moves to reading its payload.
    fn start_frame(&mut self, header: FrameHeader) -> Result<(), ProtocolError> {
        // §5.2: "MUST be 0 unless an extension is negotiated"; we negotiate none.
        if header.rsv != 0 {
            return Err(ProtocolError::ReservedBitsSet);
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame),
            _ => {}
        }
        if header.payload_len > self.limits.max_frame_size {
            return Err(ProtocolError::FrameTooLarge);
        }
        self.frame = Frame {
            fin: header.fin,
            opcode: header.opcode,
            mask: header.mask,
        };
        self.mask_offset = 0;
        match header.opcode {
            OpCode::Reserved(_) => return Err(ProtocolError::ReservedOpcode),
            OpCode::Close | OpCode::Ping | OpCode::Pong => {
                // §5.5: control frames MUST have a payload of 125 bytes or less and
                // MUST NOT be fragmented. They may arrive between a message's frames.
                if !header.fin {
                    return Err(ProtocolError::FragmentedControlFrame);
                }
                let remaining = u8::try_from(header.payload_len)
                    .ok()
                    .filter(|&len| usize::from(len) <= MAX_CONTROL_PAYLOAD)
                    .ok_or(ProtocolError::ControlFrameTooLong)?;
                self.state = State::Control {
                    remaining,
                    stashed: 0,
                };
                return Ok(());
            }
            OpCode::Continuation => {
                if self.message.is_none() {
                    return Err(ProtocolError::UnexpectedContinuation);
                }
            }
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                let kind = if header.opcode == OpCode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                self.utf8.reset();
                self.message = Some(kind);
                self.declared = 0;
            }
        }
        // A message is open here (a continuation without one failed above).
        // Both terms are at most 2^63−1, so the sum cannot overflow a u64.
        self.declared += header.payload_len;
        if self.declared > self.limits.max_message_size {
            return Err(ProtocolError::MessageTooLarge);
        }
        // Only the running total matters from here on; clamp it so that a long stream
        // of frames can never overflow it either.
        self.declared = self.declared.min(MAX_PAYLOAD_LEN);
        self.state = if header.payload_len == 0 && !header.fin {
            // Nothing to deliver: an empty fragment in the middle of a message.
            State::Header { filled: 0 }
        } else {
            State::Payload {
                remaining: header.payload_len,
            }
        };
        Ok(())
    }

    /// Unmasks `chunk` in place and advances the key position by its length.
    fn unmask(&mut self, chunk: &mut [u8]) {
        if let Some(key) = self.frame.mask {
            let offset = usize::from(self.mask_offset);
            apply_mask(chunk, key, offset);
            // A value below 4: the cast is lossless.
            self.mask_offset = ((offset + chunk.len()) % 4) as u8;
        }
    }

    fn read_payload<'a>(
        &mut self,
        remaining: u64,
        input: &'a mut [u8],
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        if input.is_empty() && remaining > 0 {
            return Ok((0, None));
        }
        // `n` is at most input.len(), so the cast back to usize is lossless.
        let n = remaining.min(input.len() as u64) as usize;
        let remaining = remaining - n as u64;
        let chunk = &mut input[..n];
        self.unmask(chunk);
        let end_of_message = remaining == 0 && self.frame.fin;
        self.state = if remaining == 0 {
            State::Header { filled: 0 }
        } else {
            State::Payload { remaining }
        };
        let message = if end_of_message {
            self.message.take()
        } else {
            self.message
        };
        // A data frame is only accepted while a message is open (see `start_frame`).
        let kind = message.unwrap_or(MessageKind::Binary);
        if kind == MessageKind::Text {
            let valid = match self.utf8.feed(chunk) {
                Ok(()) => n,
                Err(error) => error.valid_up_to,
            };
            // A text message may not end inside a code point (§8.1).
            let cut_short = end_of_message && valid == n && !self.utf8.is_complete();
            if valid < n || cut_short {
                // §8.1 fail fast: hand on what was accepted (as not ending the
                // message), then fail on the next call.
                self.failed = Some(ProtocolError::InvalidUtf8);
                return match valid {
                    0 => Err(ProtocolError::InvalidUtf8),
                    _ => Ok((
                        valid,
                        Some(Event::Data {
                            kind,
                            bytes: &mut chunk[..valid],
                            end_of_message: false,
                        }),
                    )),
                };
            }
        }
        Ok((
            n,
            Some(Event::Data {
                kind,
                bytes: chunk,
                end_of_message,
            }),
        ))
    }

    fn read_control<'a>(
        &mut self,
        remaining: u8,
        stashed: u8,
        input: &'a mut [u8],
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        let want = usize::from(remaining);
        let payload = if stashed == 0 && input.len() >= want {
            // The whole payload is here (the usual case): unmask it where it lies and
            // copy it once, into the event.
            let chunk = &mut input[..want];
            self.unmask(chunk);
            ControlPayload::from_slice(chunk)
        } else {
            // Cut across reads: collect it in the stash, allocated on first use (and
            // not before a byte of it is here: a header may end a read).
            let n = want.min(input.len());
            if n == 0 {
                return Ok((0, None));
            }
            let chunk = &mut input[..n];
            self.unmask(chunk);
            let stash = self.control.get_or_insert_with(Box::default);
            if stashed == 0 {
                stash.clear();
            }
            let fits = stash.extend(chunk);
            debug_assert!(fits, "control payloads are checked to be at most 125 bytes");
            if want > n {
                // Both are at most 125 (`n` < `want` ≤ `remaining`): the casts are lossless.
                self.state = State::Control {
                    remaining: (want - n) as u8,
                    stashed: stashed + n as u8,
                };
                return Ok((n, None));
            }
            Some(**stash)
        };
        // At most 125 bytes were checked in `start_frame`, so the payload always fits.
        let payload = payload.unwrap_or_default();
        self.state = State::Header { filled: 0 };
        let event = match self.frame.opcode {
            OpCode::Ping => Event::Ping(payload),
            OpCode::Pong => Event::Pong(payload),
            _ => Event::Close(CloseFrame::parse(payload.as_slice())?),
        };
        Ok((want, Some(event)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked frame from a client: FIN, `opcode`, `payload` masked with a fixed key.
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        assert!(payload.len() <= 125);
        let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    /// Decodes `bytes` fed as `bytes[..cut]` then `bytes[cut..]`; returns the pings.
    fn pings(decoder: &mut Decoder, bytes: &[u8], cut: usize) -> Vec<Vec<u8>> {
        let mut bytes = bytes.to_vec();
        let (first, second) = bytes.split_at_mut(cut);
        let mut seen = Vec::new();
        for piece in [first, second] {
            let mut pos = 0;
            loop {
                let (n, event) = decoder.decode(&mut piece[pos..]).unwrap();
                pos += n;
                match event {
                    None => break,
                    Some(Event::Ping(p)) => seen.push(p.as_slice().to_vec()),
                    Some(_) => {}
                }
            }
            assert_eq!(pos, piece.len());
        }
        seen
    }

    #[test]
    fn a_control_payload_is_the_same_wherever_it_is_cut() {
        let payload: Vec<u8> = (0..125).collect();
        let mut two = client_frame(0x9, &payload);
        two.extend(client_frame(0x9, b"second"));
        for cut in 0..=two.len() {
            let mut decoder = Decoder::new(Role::Server, Limits::default());
            let seen = pings(&mut decoder, &two, cut);
            assert_eq!(seen, [payload.clone(), b"second".to_vec()], "cut at {cut}");
            // The stash exists only if the cut fell inside a payload.
            // The first payload is bytes 6..131, the second 137..143.
            let in_first_payload = (7..131).contains(&cut);
            let in_second_payload = (138..143).contains(&cut);
            assert_eq!(
                decoder.control.is_some(),
                in_first_payload || in_second_payload,
                "cut at {cut}"
            );
            assert!(decoder.is_between_frames());
        }
    }

    #[test]
    fn the_stash_is_reused_and_starts_empty_for_each_frame() {
        let mut decoder = Decoder::new(Role::Server, Limits::default());
        let long = client_frame(0x9, &[b'x'; 100]);
        assert_eq!(pings(&mut decoder, &long, 50), [vec![b'x'; 100]]);
        let short = client_frame(0x9, b"abc");
        // Whole: taken from the input, the stale stash is not read.
        assert_eq!(pings(&mut decoder, &short, short.len()), [b"abc".to_vec()]);
        // Split: collected in the same stash, cleared first.
        assert_eq!(pings(&mut decoder, &short, 7), [b"abc".to_vec()]);
    }

    #[test]
    fn a_decoder_is_small() {
        // Every reactor connection holds one (ARCHITECTURE.md §13).
        assert_eq!(std::mem::size_of::<Decoder>(), 80);
    }
}
