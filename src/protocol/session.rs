//! One connection after its opening handshake, sans IO: the state machine of RFC 6455
//! §7, driven by the bytes the peer sent and the time the caller says it is.
//!
//! A [`Session`] decodes the peer's frames ([`Session::receive`]), answers what the
//! protocol answers by itself (pings with pongs, §5.5.2; the peer's close with a close,
//! §5.5.1; a broken frame with a close carrying the error's code, §7.1.7), keeps the
//! keepalive and close deadlines ([`Session::on_deadline`]), and says what the
//! application may still send. It reads no socket and no clock: the frames it sends go
//! to an [`Output`], the time comes in as [`Tick`]s (see [`super::time`]), and closing
//! the TCP connection once the session is [`State::Closed`] is the caller's business
//! (the server closes first, §7.1.1).
//!
//! ```text
//!           close(): our close is sent          the peer's close (not echoed), a
//!   Open ───────────────────────────> CloseSent ── protocol error, or the close ───┐
//!    │ ↺ quiet for the idle timeout:                timeout passed (nothing sent)   │
//!    │   a keepalive ping is sent                                                   v
//!    └── the peer's close (echoed), a protocol error (close sent), or still ───> Closed
//!        quiet an idle timeout after the ping (nothing sent)
//! ```
//!
//! * **Open**: data flows both ways. Pings are answered, pongs reported (§5.5.3: an
//!   unsolicited pong is fine). With a keepalive (`idle_timeout`), a peer quiet for that
//!   long gets a ping; one still quiet for as long again is dropped (§5.5.2).
//! * **CloseSent**: we started the closing handshake (§7.1.2) and sent nothing after
//!   our close (§5.5.1). The peer's data, pings and pongs are read and dropped until
//!   its close arrives (§7.1.3) or the close timeout passes.
//! * **Closed**: the WebSocket connection is closed (§7.1.4); the [`Closure`] said how,
//!   and gives the close code and reason to report (§7.1.5, §7.1.6, §7.4: 1005 for a
//!   close without a code, 1006 for a connection dropped without one).

use super::close::CloseFrame;
use super::coding::{CloseCode, MessageKind, OpCode};
use super::control::{ControlPayload, MAX_CONTROL_PAYLOAD};
use super::decoder::{Decoder, Event, Limits, Role};
use super::encoder::{control_header, Fragmenter};
use super::error::ProtocolError;
use super::header::{FrameHeader, MAX_HEADER_LEN};
use super::time::{after_ticks, is_before, Tick, MAX_SPAN};
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

/// Where the frames a [`Session`] sends go, in order: a write queue, a buffer.
pub trait Output {
    /// Takes one frame: `header` (unmasked: a server never masks, §5.1), then exactly
    /// `header.payload_len` bytes of `payload`.
    fn push_frame(&mut self, header: &FrameHeader, payload: &[u8]);
}

impl Output for Vec<u8> {
    /// Appends the frame as it goes on the wire.
    fn push_frame(&mut self, header: &FrameHeader, payload: &[u8]) {
        let mut head = [0u8; MAX_HEADER_LEN];
        let len = header.encode(&mut head);
        self.extend_from_slice(head.get(..len).unwrap_or_default());
        self.extend_from_slice(payload);
    }
}

/// The timeouts of a session.
#[derive(Clone, Copy, Debug)]
pub struct SessionConfig {
    /// How long to wait for the peer's close after sending ours (§7.1.1: then the
    /// connection is dropped). Cut to [`MAX_SPAN`], rounded up to whole milliseconds.
    pub close_timeout: Duration,
    /// Keepalive: how long the peer may be quiet before it is pinged, and then how long
    /// it has to show life before it is dropped. `None`: never. Cut to [`MAX_SPAN`] and
    /// rounded up to whole milliseconds, at least 1.
    pub idle_timeout: Option<Duration>,
    /// Whether [`Session::receive`] reports each frame header ([`Incoming::Frame`]),
    /// for a trace log. Off, headers cost no step of their own.
    pub report_frames: bool,
}

/// Where a session is in the closing of the connection (RFC 6455 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Frames flow both ways.
    Open,
    /// We sent a close and wait for the peer's (§7.1.2); nothing more may be sent.
    CloseSent,
    /// The closing handshake is over, or the connection failed or timed out: nothing
    /// more is read or sent (§7.1.4).
    Closed,
}

/// Why a [`Session`] refused to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// Closing or closed: nothing more may be sent (§5.5.1).
    Closed,
    /// Another message to this connection is unfinished (§5.4: messages don't
    /// interleave).
    MessageOpen,
    /// A control payload over 125 bytes (§5.5).
    TooLong,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Closed => "the connection is closing or closed",
            SendError::MessageOpen => "another message to this connection is unfinished",
            SendError::TooLong => "a control frame payload may have at most 125 bytes",
        })
    }
}

impl std::error::Error for SendError {}

/// How a session came to be [`State::Closed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Closure {
    /// The peer's close frame (`None`: an empty body, reported as 1005, §7.1.5). While
    /// open, it was echoed with the same body (§5.5.1).
    Peer(Option<CloseFrame>),
    /// The peer broke the protocol: unless our own close was out already, we sent a
    /// close with the error's code and reason (§7.1.7).
    Failed(ProtocolError),
    /// A deadline passed (an unanswered keepalive ping, or no answer to our close): the
    /// connection is dropped without further frames, 1006 (§7.1.5).
    TimedOut,
}

impl Closure {
    /// The close code to report (§7.1.5): the peer's, 1005 for its empty close, the
    /// error's, or 1006 for a timeout.
    pub fn code(&self) -> CloseCode {
        match self {
            Closure::Peer(Some(frame)) => frame.code(),
            Closure::Peer(None) => CloseCode::NO_STATUS,
            Closure::Failed(error) => error.close_code(),
            Closure::TimedOut => CloseCode::ABNORMAL,
        }
    }

    /// The close reason to report (§7.1.6), possibly empty.
    pub fn reason(&self) -> &str {
        match self {
            Closure::Peer(Some(frame)) => frame.reason(),
            Closure::Failed(error) => error.reason(),
            Closure::Peer(None) | Closure::TimedOut => "",
        }
    }
}

/// What [`Session::receive`] found in the peer's bytes.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming<'a> {
    /// A frame header was decoded (for trace logs, with
    /// [`SessionConfig::report_frames`]); its payload follows in later events.
    Frame(FrameHeader),
    /// The next bytes of a data message, unmasked (only while open: after our close the
    /// peer's data is read and dropped, §7.1.2). For text they are valid UTF-8 so far,
    /// though possibly ending inside a code point the next bytes complete.
    Data {
        /// Whether the message is text or binary.
        kind: MessageKind,
        /// The payload bytes (empty only when they end an empty final frame).
        bytes: &'a [u8],
        /// These bytes end the message.
        end_of_message: bool,
    },
    /// A pong (§5.5.3), solicited or not (only while open). Boxed, like the closure:
    /// the payload takes up to 125 bytes, and every step's result, on the hot path of
    /// data, would otherwise be as large.
    Pong(Box<ControlPayload>),
    /// The session is now [`State::Closed`]: nothing more will be read.
    Closed(Box<Closure>),
}

/// What [`Session::on_deadline`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Deadline {
    /// Nothing is due: come back at this tick.
    NotYet(Tick),
    /// A keepalive ping was sent (§5.5.2); come back at this tick.
    Pinged(Tick),
    /// The session timed out and is now [`State::Closed`] ([`Closure::TimedOut`]).
    Expired,
}

/// [`State`] with what matters of the keepalive while open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Open; `pinged`: a keepalive ping is out and the peer has not shown life since.
    Open {
        pinged: bool,
    },
    CloseSent,
    Closed,
}

/// The protocol state of one connection after its opening handshake, for the server's
/// side. See the module docs.
///
/// Every connection holds one, so it is kept to 104 bytes: the decoder (80), the
/// fragmenter (8), one deadline tick, and the timeouts as millisecond counts.
#[derive(Clone, Debug)]
pub struct Session {
    decoder: Decoder,
    fragmenter: Fragmenter,
    phase: Phase,
    /// The deadline that matters in the phase: the end of the quiet time allowed while
    /// open (the peer last heard from + idle, or the ping sent + idle), the end of the
    /// close timeout in `CloseSent`.
    due: Tick,
    /// The keepalive's idle timeout in ms; `None`: no keepalive.
    idle: Option<NonZeroU32>,
    /// The close timeout in ms.
    close_timeout: u32,
    /// See [`SessionConfig::report_frames`].
    report_frames: bool,
}

impl Session {
    /// An open session of a server (its peer masks every frame, §5.1) that has just
    /// completed the opening handshake at `now`: it decodes with `limits`, cuts
    /// outgoing messages into frames of at most `max_frame_out` bytes, and keeps the
    /// timeouts of `config`.
    pub fn new(limits: Limits, max_frame_out: usize, config: SessionConfig, now: Tick) -> Self {
        let idle = config
            .idle_timeout
            .map(|idle| NonZeroU32::new(span_ms(idle)).unwrap_or(NonZeroU32::MIN));
        let mut session = Session {
            decoder: Decoder::new(Role::Server, limits),
            fragmenter: Fragmenter::new(max_frame_out),
            phase: Phase::Open { pinged: false },
            due: now,
            idle,
            close_timeout: span_ms(config.close_timeout),
            report_frames: config.report_frames,
        };
        session.heard_from_peer(now);
        session
    }

    /// Where the session is.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Open { .. } => State::Open,
            Phase::CloseSent => State::CloseSent,
            Phase::Closed => State::Closed,
        }
    }

    /// Whether the session is open: data may be sent and received.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open { .. })
    }

    /// One decoding step over `input` (the caller loops, like [`Decoder::decode`]):
    /// returns how many bytes were used and at most one event. `None` means all of
    /// `input` was used and more is needed; after an event, call again with the rest
    /// (even if it is empty: the end of a frame takes no bytes). Payload bytes are
    /// unmasked in place.
    ///
    /// While open, pings are answered here with a pong carrying the same payload
    /// (§5.5.2), pushed to `out`; the peer's close is echoed with the same body (its code
    /// and reason, or empty, §5.5.1); a frame that breaks the protocol is answered with
    /// a close with the error's code and reason (§7.1.7). Either way the session is
    /// then [`State::Closed`] and the step returns [`Incoming::Closed`]. After our close
    /// (§7.1.2) only frame headers and the peer's close (or a protocol error) are
    /// reported, and nothing is sent. Once closed, all input is used and nothing
    /// reported.
    #[inline]
    pub fn receive<'a>(
        &mut self,
        input: &'a mut [u8],
        out: &mut impl Output,
    ) -> (usize, Option<Incoming<'a>>) {
        if matches!(self.phase, Phase::Closed) {
            return (input.len(), None);
        }
        // Every branch that changes the phase returns.
        let open = self.is_open();
        let mut pos = 0;
        // Steps whose event is not reported (a ping answered, data dropped after our
        // close) go on to the next, so that `None` always means all input was used.
        // The decoder's result is matched where it lies, not moved out first: an event
        // can carry a control payload of up to 125 bytes, and this is the hot path.
        let (kind, end_of_message, start) = loop {
            let start = pos;
            let rest = input.get_mut(pos..).unwrap_or_default();
            match self.decoder.decode(rest) {
                Err(error) => {
                    if open {
                        push_close(out, error.close_code(), error.reason());
                    }
                    self.phase = Phase::Closed;
                    return (
                        input.len(),
                        Some(Incoming::Closed(Box::new(Closure::Failed(error)))),
                    );
                }
                Ok((used, None)) => return (pos + used, None),
                Ok((used, Some(Event::FrameStart(header)))) => {
                    pos += used;
                    if self.report_frames {
                        return (pos, Some(Incoming::Frame(header)));
                    }
                }
                Ok((
                    used,
                    Some(Event::Data {
                        kind,
                        bytes,
                        end_of_message,
                    }),
                )) => {
                    debug_assert_eq!(bytes.len(), used, "data is the input used, in place");
                    pos += used;
                    if open {
                        break (kind, end_of_message, start);
                    }
                    // §7.1.2: after our close the peer's data is read and dropped.
                }
                Ok((used, Some(Event::Ping(payload)))) => {
                    pos += used;
                    if open {
                        push_control(out, OpCode::Pong, payload.as_slice());
                    }
                }
                Ok((used, Some(Event::Pong(payload)))) => {
                    pos += used;
                    if open {
                        return (pos, Some(Incoming::Pong(Box::new(payload))));
                    }
                }
                Ok((used, Some(Event::Close(frame)))) => {
                    pos += used;
                    if open {
                        let body = frame.as_ref().map_or(&[][..], CloseFrame::payload);
                        push_control(out, OpCode::Close, body);
                    }
                    self.phase = Phase::Closed;
                    return (pos, Some(Incoming::Closed(Box::new(Closure::Peer(frame)))));
                }
            }
        };
        // The decoder unmasks data in place and hands out exactly the bytes it used from
        // the front of the slice it was given (asserted above), so the data is
        // `input[start..pos]`. It is taken again here because the decoder's borrow of
        // `input` could not both be returned and be lent again for the next step.
        let input: &'a [u8] = input;
        let bytes = input.get(start..pos).unwrap_or_default();
        (
            pos,
            Some(Incoming::Data {
                kind,
                bytes,
                end_of_message,
            }),
        )
    }

    /// The peer showed life at `now` (bytes arrived, or it took our output while the
    /// socket was full): the keepalive starts over, with no ping outstanding.
    #[inline]
    pub fn heard_from_peer(&mut self, now: Tick) {
        if let Phase::Open { pinged } = &mut self.phase {
            *pinged = false;
            self.due = now.wrapping_add(self.idle.map_or(0, NonZeroU32::get));
        }
    }

    /// Starts the closing handshake at `now` (§7.1.2): pushes a close with `code` and
    /// `reason` (a code not allowed on the wire, §7.4, goes out as an empty close body;
    /// a reason over 123 bytes is cut), and the close timeout starts. The session is
    /// then [`State::CloseSent`]. `Err(Closed)` unless open.
    pub fn close(
        &mut self,
        code: CloseCode,
        reason: &str,
        now: Tick,
        out: &mut impl Output,
    ) -> Result<(), SendError> {
        if !self.is_open() {
            return Err(SendError::Closed);
        }
        push_close(out, code, reason);
        self.phase = Phase::CloseSent;
        self.due = now.wrapping_add(self.close_timeout);
        Ok(())
    }

    /// Pushes a ping with `payload` (§5.5.2); its pong comes back as an
    /// [`Incoming::Pong`]. `Err(Closed)` unless open, `Err(TooLong)` over 125 bytes.
    pub fn ping(&mut self, payload: &[u8], out: &mut impl Output) -> Result<(), SendError> {
        if !self.is_open() {
            return Err(SendError::Closed);
        }
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::TooLong);
        }
        push_control(out, OpCode::Ping, payload);
        Ok(())
    }

    /// The fragmenter to cut the next part of a `kind` message with, if it may be sent;
    /// `whole`: the caller sends a complete message with it. `Err(Closed)` unless open
    /// (§5.5.1); `Err(MessageOpen)` if another message is unfinished (§5.4: a whole
    /// message, or a part of another kind, would interleave with it).
    #[inline]
    pub fn fragmenter_for(
        &mut self,
        kind: MessageKind,
        whole: bool,
    ) -> Result<&mut Fragmenter, SendError> {
        if !self.is_open() {
            return Err(SendError::Closed);
        }
        match self.fragmenter.open_message() {
            Some(open) if whole || open != kind => Err(SendError::MessageOpen),
            _ => Ok(&mut self.fragmenter),
        }
    }

    /// When [`Session::on_deadline`] should next be called, if ever: while open with a
    /// keepalive, when the peer has been quiet for the idle timeout (since it was last
    /// heard from, or since the keepalive ping); after our close, when the close
    /// timeout ends. `None` while open without keepalive, and once closed.
    pub fn deadline(&self) -> Option<Tick> {
        match self.phase {
            Phase::Open { .. } => self.idle.map(|_| self.due),
            Phase::CloseSent => Some(self.due),
            Phase::Closed => None,
        }
    }

    /// Acts on the deadline, at `now` (at or after [`Session::deadline`]): a peer quiet
    /// for the idle timeout gets a keepalive ping (`b"keepalive"`, pushed to `out`); a
    /// peer still quiet an idle timeout after it, or a close unanswered for the close
    /// timeout, closes the session ([`Deadline::Expired`]; nothing is sent, the caller
    /// drops the connection, §7.1.1). Called early it does nothing and says when to
    /// come back; with no deadline at all it does nothing ([`Deadline::NotYet`] at the
    /// longest span ticks represent).
    pub fn on_deadline(&mut self, now: Tick, out: &mut impl Output) -> Deadline {
        let Some(due) = self.deadline() else {
            return Deadline::NotYet(after_ticks(now, MAX_SPAN));
        };
        if is_before(now, due) {
            return Deadline::NotYet(due);
        }
        // Open without keepalive, and closed, have no deadline (returned above).
        match (self.phase, self.idle) {
            (Phase::Open { pinged: false }, Some(idle)) => {
                push_control(out, OpCode::Ping, b"keepalive");
                self.phase = Phase::Open { pinged: true };
                self.due = now.wrapping_add(idle.get());
                Deadline::Pinged(self.due)
            }
            _ => {
                self.phase = Phase::Closed;
                Deadline::Expired
            }
        }
    }
}

/// `span` in whole milliseconds, rounded up, at most [`MAX_SPAN`] (2^30).
fn span_ms(span: Duration) -> u32 {
    after_ticks(0, span)
}

/// Pushes a control frame (at most 125 bytes of payload, §5.5).
fn push_control(out: &mut impl Output, opcode: OpCode, payload: &[u8]) {
    out.push_frame(&control_header(opcode, payload.len()), payload);
}

/// Pushes a close with `code` and `reason` (§5.5.1); a code that may not appear on the
/// wire (§7.4.1: 1005, 1006, 1015, reserved and unassigned ones) as an empty body.
fn push_close(out: &mut impl Output, code: CloseCode, reason: &str) {
    if code.is_allowed_on_wire() {
        push_control(out, OpCode::Close, CloseFrame::new(code, reason).payload());
    } else {
        push_control(out, OpCode::Close, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encoder::push_masked_frame;
    use crate::protocol::header::HeaderParse;
    use proptest::prelude::*;
    use std::mem::size_of;

    const KEY: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];
    const CLOSE_TIMEOUT: u32 = 1_000;
    const IDLE: u32 = 10_000;

    fn config(idle: Option<u32>) -> SessionConfig {
        SessionConfig {
            close_timeout: Duration::from_millis(CLOSE_TIMEOUT.into()),
            idle_timeout: idle.map(|ms| Duration::from_millis(ms.into())),
            report_frames: true,
        }
    }

    fn session_at(now: Tick) -> Session {
        Session::new(Limits::default(), 1 << 16, config(Some(IDLE)), now)
    }

    fn session() -> Session {
        session_at(0)
    }

    /// One masked client frame.
    fn client(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        push_masked_frame(&mut frame, opcode, fin, payload, KEY);
        frame
    }

    fn client_close(code: u16, reason: &str) -> Vec<u8> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(reason.as_bytes());
        client(OpCode::Close, true, &body)
    }

    /// An event with its bytes copied out (frame headers left out).
    #[derive(Debug, PartialEq, Eq)]
    enum Got {
        Data(MessageKind, Vec<u8>, bool),
        Pong(Vec<u8>),
        Closed(Closure),
    }

    /// Feeds `input` as one read, the way a caller loops: until a step reports nothing.
    fn feed(session: &mut Session, input: &[u8], out: &mut Vec<u8>) -> Vec<Got> {
        let mut input = input.to_vec();
        let mut pos = 0;
        let mut got = Vec::new();
        loop {
            let (used, event) = session.receive(&mut input[pos..], out);
            pos += used;
            match event {
                None => {
                    assert_eq!(pos, input.len(), "no event: all input used");
                    return got;
                }
                Some(Incoming::Frame(_)) => {}
                Some(Incoming::Data {
                    kind,
                    bytes,
                    end_of_message,
                }) => got.push(Got::Data(kind, bytes.to_vec(), end_of_message)),
                Some(Incoming::Pong(payload)) => got.push(Got::Pong(payload.as_slice().to_vec())),
                Some(Incoming::Closed(closure)) => got.push(Got::Closed(*closure)),
            }
        }
    }

    /// The frames the session pushed: opcode, FIN and payload of each (all unmasked).
    fn frames(mut wire: &[u8]) -> Vec<(OpCode, bool, Vec<u8>)> {
        let mut frames = Vec::new();
        while !wire.is_empty() {
            let Ok(HeaderParse::Complete { header, len }) = FrameHeader::parse(wire) else {
                panic!("a whole frame header expected in {wire:?}");
            };
            assert_eq!((header.mask, header.rsv), (None, 0));
            let end = len + usize::try_from(header.payload_len).unwrap();
            frames.push((header.opcode, header.fin, wire[len..end].to_vec()));
            wire = &wire[end..];
        }
        frames
    }

    fn close_body(code: CloseCode, reason: &str) -> Vec<u8> {
        CloseFrame::new(code, reason).payload().to_vec()
    }

    fn close_frame(code: CloseCode, reason: &str) -> (OpCode, bool, Vec<u8>) {
        (OpCode::Close, true, close_body(code, reason))
    }

    /// Sends `data` as the next part of a `kind` message through `fragmenter_for`.
    fn send(
        session: &mut Session,
        kind: MessageKind,
        data: &[u8],
        end_of_message: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), SendError> {
        session.fragmenter_for(kind, false)?.frames(
            kind,
            data,
            end_of_message,
            |header, payload| out.push_frame(&header, payload),
        );
        Ok(())
    }

    #[test]
    fn the_peers_close_is_echoed_with_its_code_and_reason() {
        let mut s = session();
        let mut out = Vec::new();
        let got = feed(&mut s, &client_close(4000, "done here"), &mut out);
        let frame = CloseFrame::new(CloseCode(4000), "done here");
        assert_eq!(got, [Got::Closed(Closure::Peer(Some(frame)))]);
        assert_eq!(frames(&out), [close_frame(CloseCode(4000), "done here")]);
        assert_eq!(s.state(), State::Closed);
        assert_eq!(s.deadline(), None);
        let closure = Closure::Peer(Some(frame));
        assert_eq!(
            (closure.code(), closure.reason()),
            (CloseCode(4000), "done here")
        );
    }

    #[test]
    fn an_empty_close_is_answered_with_an_empty_close_and_reported_as_1005() {
        let mut s = session();
        let mut out = Vec::new();
        let got = feed(&mut s, &client(OpCode::Close, true, b""), &mut out);
        assert_eq!(got, [Got::Closed(Closure::Peer(None))]);
        assert_eq!(frames(&out), [(OpCode::Close, true, Vec::new())]);
        assert_eq!(
            (Closure::Peer(None).code(), Closure::Peer(None).reason()),
            (CloseCode::NO_STATUS, "")
        );
    }

    #[test]
    fn a_close_we_started_completes_when_the_peer_answers() {
        let mut s = session();
        let mut out = Vec::new();
        s.close(CloseCode::NORMAL, "bye", 5, &mut out).unwrap();
        assert_eq!(s.state(), State::CloseSent);
        assert!(!s.is_open());
        assert_eq!(s.deadline(), Some(5 + CLOSE_TIMEOUT));
        let got = feed(&mut s, &client_close(1000, "bye"), &mut out);
        let frame = CloseFrame::new(CloseCode::NORMAL, "bye");
        assert_eq!(got, [Got::Closed(Closure::Peer(Some(frame)))]);
        assert_eq!(s.state(), State::Closed);
        assert_eq!(
            frames(&out),
            [close_frame(CloseCode::NORMAL, "bye")],
            "no second close"
        );
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn data_after_our_close_is_dropped() {
        let mut s = session();
        let mut out = Vec::new();
        s.close(CloseCode::GOING_AWAY, "", 0, &mut out).unwrap();
        let mut input = client(OpCode::Text, false, b"late");
        input.extend(client(OpCode::Ping, true, b"still there?"));
        input.extend(client(OpCode::Pong, true, b"unsolicited"));
        input.extend(client(OpCode::Continuation, true, b" data"));
        assert_eq!(feed(&mut s, &input, &mut out), []);
        assert_eq!(s.state(), State::CloseSent);
        let got = feed(&mut s, &client(OpCode::Close, true, b""), &mut out);
        assert_eq!(got, [Got::Closed(Closure::Peer(None))]);
        assert_eq!(
            frames(&out),
            [close_frame(CloseCode::GOING_AWAY, "")],
            "no pong after our close"
        );
    }

    #[test]
    fn the_close_timeout_expires_without_an_answer() {
        let mut s = session();
        let mut out = Vec::new();
        s.close(CloseCode::NORMAL, "", 100, &mut out).unwrap();
        assert_eq!(s.deadline(), Some(1_100));
        assert_eq!(s.on_deadline(1_099, &mut out), Deadline::NotYet(1_100));
        s.heard_from_peer(1_099);
        assert_eq!(s.deadline(), Some(1_100), "life is no answer to a close");
        assert_eq!(s.on_deadline(1_100, &mut out), Deadline::Expired);
        assert_eq!(s.state(), State::Closed);
        assert_eq!(s.deadline(), None);
        assert_eq!(frames(&out), [close_frame(CloseCode::NORMAL, "")]);
        let closure = Closure::TimedOut;
        assert_eq!(
            (closure.code(), closure.reason()),
            (CloseCode::ABNORMAL, "")
        );
    }

    #[test]
    fn a_close_arriving_while_a_fragmented_message_is_half_sent() {
        let mut s = session();
        let mut out = Vec::new();
        send(&mut s, MessageKind::Text, b"first half", false, &mut out).unwrap();
        let got = feed(&mut s, &client_close(1001, "leaving"), &mut out);
        assert_eq!(
            got,
            [Got::Closed(Closure::Peer(Some(CloseFrame::new(
                CloseCode::GOING_AWAY,
                "leaving"
            ))))]
        );
        assert_eq!(
            frames(&out),
            [
                (OpCode::Text, false, b"first half".to_vec()),
                close_frame(CloseCode::GOING_AWAY, "leaving"),
            ]
        );
        assert_eq!(
            s.fragmenter_for(MessageKind::Text, false).err(),
            Some(SendError::Closed)
        );
    }

    #[test]
    fn protocol_errors_fail_the_connection_with_1002_1007_and_1009() {
        let unmasked = {
            let mut wire = Vec::new();
            let header = FrameHeader {
                fin: true,
                rsv: 0,
                opcode: OpCode::Text,
                mask: None,
                payload_len: 2,
            };
            wire.push_frame(&header, b"hi");
            wire
        };
        let mut reserved_bits = client(OpCode::Binary, true, b"x");
        reserved_bits[0] |= 0x40;
        let cases = [
            (unmasked, ProtocolError::UnmaskedClientFrame, 1002),
            (reserved_bits, ProtocolError::ReservedBitsSet, 1002),
            (
                client(OpCode::Text, true, &[0xFF]),
                ProtocolError::InvalidUtf8,
                1007,
            ),
            (
                client(OpCode::Binary, true, &[0; 17]),
                ProtocolError::FrameTooLarge,
                1009,
            ),
        ];
        for (input, error, code) in cases {
            let limits = Limits {
                max_frame_size: 16,
                ..Limits::default()
            };
            let mut s = Session::new(limits, 1 << 16, config(Some(IDLE)), 0);
            let mut out = Vec::new();
            let got = feed(&mut s, &input, &mut out);
            assert_eq!(got, [Got::Closed(Closure::Failed(error))], "{error:?}");
            assert_eq!(error.close_code(), CloseCode(code));
            assert_eq!(frames(&out), [close_frame(CloseCode(code), error.reason())]);
            assert_eq!(s.state(), State::Closed);
            let closure = Closure::Failed(error);
            assert_eq!(
                (closure.code(), closure.reason()),
                (CloseCode(code), error.reason())
            );
            assert_eq!(feed(&mut s, &client(OpCode::Ping, true, b""), &mut out), []);
            assert_eq!(frames(&out).len(), 1, "nothing more after the close");
        }
    }

    #[test]
    fn text_that_turns_invalid_is_delivered_up_to_the_error_then_fails() {
        let mut s = session();
        let mut out = Vec::new();
        let got = feed(&mut s, &client(OpCode::Text, true, b"ok\xC0"), &mut out);
        assert_eq!(
            got,
            [
                Got::Data(MessageKind::Text, b"ok".to_vec(), false),
                Got::Closed(Closure::Failed(ProtocolError::InvalidUtf8)),
            ]
        );
        assert_eq!(
            frames(&out),
            [close_frame(
                CloseCode::INVALID_PAYLOAD,
                ProtocolError::InvalidUtf8.reason()
            )]
        );
    }

    #[test]
    fn a_protocol_error_after_our_close_sends_nothing_more() {
        let mut s = session();
        let mut out = Vec::new();
        s.close(CloseCode::NORMAL, "", 0, &mut out).unwrap();
        let got = feed(&mut s, &client(OpCode::Reserved(3), true, b""), &mut out);
        assert_eq!(
            got,
            [Got::Closed(Closure::Failed(ProtocolError::ReservedOpcode))]
        );
        assert_eq!(frames(&out), [close_frame(CloseCode::NORMAL, "")]);
        assert_eq!(s.state(), State::Closed);
    }

    #[test]
    fn a_ping_is_answered_between_the_fragments_of_an_outgoing_message() {
        let mut s = session();
        let mut out = Vec::new();
        send(&mut s, MessageKind::Binary, b"part one", false, &mut out).unwrap();
        assert_eq!(
            feed(
                &mut s,
                &client(OpCode::Ping, true, b"are you there"),
                &mut out
            ),
            []
        );
        send(&mut s, MessageKind::Binary, b"part two", true, &mut out).unwrap();
        assert_eq!(
            frames(&out),
            [
                (OpCode::Binary, false, b"part one".to_vec()),
                (OpCode::Pong, true, b"are you there".to_vec()),
                (OpCode::Continuation, true, b"part two".to_vec()),
            ]
        );
    }

    #[test]
    fn data_pings_and_pongs_in_one_read_come_out_one_step_at_a_time() {
        let mut s = session();
        let mut out = Vec::new();
        let mut input = client(OpCode::Text, false, "héllo, ".as_bytes());
        input.extend(client(OpCode::Ping, true, b"1"));
        input.extend(client(OpCode::Continuation, true, b"world"));
        input.extend(client(OpCode::Pong, true, b"2"));
        input.extend(client(OpCode::Binary, true, b""));
        // Cut inside a ping's header, then byte by byte: the same events.
        let whole = feed(&mut s, &input, &mut out);
        let mut split = session();
        let mut split_out = Vec::new();
        let (head, tail) = input.split_at(11);
        let mut got = feed(&mut split, head, &mut split_out);
        for byte in tail {
            got.extend(feed(&mut split, &[*byte], &mut split_out));
        }
        assert_eq!(
            whole,
            [
                Got::Data(MessageKind::Text, "héllo, ".as_bytes().to_vec(), false),
                Got::Data(MessageKind::Text, b"world".to_vec(), true),
                Got::Pong(b"2".to_vec()),
                Got::Data(MessageKind::Binary, Vec::new(), true),
            ]
        );
        let joined: Vec<u8> = got
            .iter()
            .flat_map(|g| match g {
                Got::Data(_, bytes, _) => bytes.clone(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(joined, "héllo, world".as_bytes());
        assert_eq!(frames(&out), [(OpCode::Pong, true, b"1".to_vec())]);
        assert_eq!(split_out, out);
    }

    #[test]
    fn keepalive_pings_after_silence_then_drops_a_silent_peer() {
        let mut s = session();
        let mut out = Vec::new();
        assert_eq!(s.deadline(), Some(IDLE));
        assert_eq!(s.on_deadline(IDLE - 1, &mut out), Deadline::NotYet(IDLE));
        assert!(out.is_empty());
        assert_eq!(s.on_deadline(IDLE, &mut out), Deadline::Pinged(2 * IDLE));
        assert_eq!(frames(&out), [(OpCode::Ping, true, b"keepalive".to_vec())]);
        assert_eq!(s.deadline(), Some(2 * IDLE));
        assert_eq!(
            s.on_deadline(2 * IDLE - 1, &mut out),
            Deadline::NotYet(2 * IDLE)
        );
        assert_eq!(s.state(), State::Open);
        assert_eq!(s.on_deadline(2 * IDLE, &mut out), Deadline::Expired);
        assert_eq!(s.state(), State::Closed);
        assert_eq!(frames(&out).len(), 1, "dropped without a close frame");
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn hearing_from_the_peer_after_a_ping_cancels_the_drop() {
        let mut s = session();
        let mut out = Vec::new();
        s.heard_from_peer(600);
        assert_eq!(s.on_deadline(IDLE, &mut out), Deadline::NotYet(IDLE + 600));
        assert_eq!(
            s.on_deadline(IDLE + 600, &mut out),
            Deadline::Pinged(2 * IDLE + 600)
        );
        s.heard_from_peer(IDLE + 700);
        assert_eq!(s.deadline(), Some(2 * IDLE + 700));
        assert_eq!(
            s.on_deadline(2 * IDLE + 600, &mut out),
            Deadline::NotYet(2 * IDLE + 700)
        );
        assert_eq!(s.state(), State::Open);
        assert_eq!(
            s.on_deadline(2 * IDLE + 700, &mut out),
            Deadline::Pinged(3 * IDLE + 700),
            "quiet again: a new ping, not a drop"
        );
        assert_eq!(frames(&out).len(), 2);
    }

    #[test]
    fn keepalive_off_means_no_deadline_while_open() {
        let mut s = Session::new(Limits::default(), 1 << 16, config(None), 0);
        let mut out = Vec::new();
        assert_eq!(s.deadline(), None);
        s.heard_from_peer(50);
        assert_eq!(s.deadline(), None);
        assert!(matches!(
            s.on_deadline(1 << 31, &mut out),
            Deadline::NotYet(_)
        ));
        assert!(out.is_empty());
        assert_eq!(s.state(), State::Open);
        s.close(CloseCode::NORMAL, "", 70, &mut out).unwrap();
        assert_eq!(s.deadline(), Some(70 + CLOSE_TIMEOUT));
    }

    #[test]
    fn a_whole_message_is_refused_while_another_is_open_and_a_part_of_another_kind_too() {
        let mut s = session();
        let mut out = Vec::new();
        send(&mut s, MessageKind::Text, b"a", false, &mut out).unwrap();
        assert_eq!(
            s.fragmenter_for(MessageKind::Text, true).err(),
            Some(SendError::MessageOpen)
        );
        assert_eq!(
            s.fragmenter_for(MessageKind::Binary, false).err(),
            Some(SendError::MessageOpen)
        );
        assert_eq!(
            send(&mut s, MessageKind::Binary, b"b", true, &mut out),
            Err(SendError::MessageOpen)
        );
        send(&mut s, MessageKind::Text, b"b", true, &mut out).unwrap();
        assert!(s.fragmenter_for(MessageKind::Binary, true).is_ok());
        assert_eq!(
            frames(&out),
            [
                (OpCode::Text, false, b"a".to_vec()),
                (OpCode::Continuation, true, b"b".to_vec()),
            ]
        );
    }

    #[test]
    fn nothing_can_be_sent_after_close() {
        let mut s = session();
        let mut out = Vec::new();
        s.close(CloseCode::NORMAL, "", 0, &mut out).unwrap();
        assert_eq!(
            s.close(CloseCode::NORMAL, "", 0, &mut out),
            Err(SendError::Closed)
        );
        assert_eq!(s.ping(b"", &mut out), Err(SendError::Closed));
        assert_eq!(
            s.fragmenter_for(MessageKind::Binary, true).err(),
            Some(SendError::Closed)
        );
        feed(&mut s, &client(OpCode::Close, true, b""), &mut out);
        assert_eq!(s.state(), State::Closed);
        assert_eq!(
            s.close(CloseCode::NORMAL, "", 0, &mut out),
            Err(SendError::Closed)
        );
        assert_eq!(s.ping(b"", &mut out), Err(SendError::Closed));
        assert_eq!(frames(&out), [close_frame(CloseCode::NORMAL, "")]);
        assert_eq!(
            SendError::Closed.to_string(),
            "the connection is closing or closed"
        );
    }

    #[test]
    fn a_close_code_not_allowed_on_the_wire_goes_out_as_an_empty_close() {
        for code in [
            CloseCode::NO_STATUS,
            CloseCode::ABNORMAL,
            CloseCode(1015),
            CloseCode(0),
        ] {
            let mut s = session();
            let mut out = Vec::new();
            s.close(code, "ignored", 0, &mut out).unwrap();
            assert_eq!(frames(&out), [(OpCode::Close, true, Vec::new())], "{code}");
        }
    }

    #[test]
    fn application_pings_reach_the_wire_and_their_pongs_come_back_as_events() {
        let mut s = session();
        let mut out = Vec::new();
        s.ping(b"rtt 1", &mut out).unwrap();
        s.ping(&[7; 125], &mut out).unwrap();
        assert_eq!(s.ping(&[7; 126], &mut out), Err(SendError::TooLong));
        assert_eq!(
            frames(&out),
            [
                (OpCode::Ping, true, b"rtt 1".to_vec()),
                (OpCode::Ping, true, vec![7; 125]),
            ]
        );
        let got = feed(&mut s, &client(OpCode::Pong, true, b"rtt 1"), &mut out);
        assert_eq!(got, [Got::Pong(b"rtt 1".to_vec())]);
        assert_eq!(
            s.deadline(),
            Some(IDLE),
            "an application ping is no keepalive"
        );
    }

    #[test]
    fn deadlines_work_across_the_tick_wraparound() {
        let start = u32::MAX - 5_000;
        let mut s = session_at(start);
        let mut out = Vec::new();
        let idle_end = start.wrapping_add(IDLE);
        assert!(idle_end < start, "the deadline is past the wrap");
        assert_eq!(
            s.on_deadline(u32::MAX, &mut out),
            Deadline::NotYet(idle_end)
        );
        assert_eq!(s.on_deadline(0, &mut out), Deadline::NotYet(idle_end));
        let ping_end = idle_end.wrapping_add(IDLE);
        assert_eq!(
            s.on_deadline(idle_end, &mut out),
            Deadline::Pinged(ping_end)
        );
        assert_eq!(
            s.on_deadline(ping_end - 1, &mut out),
            Deadline::NotYet(ping_end)
        );
        assert_eq!(s.on_deadline(ping_end, &mut out), Deadline::Expired);

        let mut s = session();
        s.close(CloseCode::NORMAL, "", u32::MAX - 10, &mut out)
            .unwrap();
        let close_end = (u32::MAX - 10).wrapping_add(CLOSE_TIMEOUT);
        assert_eq!(s.deadline(), Some(close_end));
        assert_eq!(
            s.on_deadline(u32::MAX, &mut out),
            Deadline::NotYet(close_end)
        );
        assert_eq!(s.on_deadline(close_end, &mut out), Deadline::Expired);
    }

    #[test]
    fn timeouts_round_up_to_whole_milliseconds_and_zero_idle_is_one() {
        let config = SessionConfig {
            close_timeout: Duration::from_micros(1_500),
            idle_timeout: Some(Duration::ZERO),
            report_frames: true,
        };
        let mut s = Session::new(Limits::default(), 1 << 16, config, 10);
        assert_eq!(s.deadline(), Some(11));
        s.close(CloseCode::NORMAL, "", 20, &mut Vec::new()).unwrap();
        assert_eq!(s.deadline(), Some(22));
    }

    /// Every connection pays for a session.
    #[test]
    fn a_session_stays_small() {
        assert!(size_of::<Session>() <= 104, "{}", size_of::<Session>());
    }

    /// A piece of client input: a well-formed frame of a random kind, or random bytes.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        let opcode = prop_oneof![
            Just(OpCode::Continuation),
            Just(OpCode::Text),
            Just(OpCode::Binary),
            Just(OpCode::Close),
            Just(OpCode::Ping),
            Just(OpCode::Pong),
        ];
        let frame = (
            opcode,
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(opcode, fin, payload)| {
                let fin = fin || opcode.is_control();
                let payload = match opcode {
                    OpCode::Text | OpCode::Continuation => {
                        String::from_utf8_lossy(&payload).into_owned().into_bytes()
                    }
                    OpCode::Close if payload.len() >= 2 => {
                        let mut body = 1000u16.to_be_bytes().to_vec();
                        body.extend(String::from_utf8_lossy(&payload[2..]).as_bytes());
                        body.truncate(MAX_CONTROL_PAYLOAD);
                        body
                    }
                    _ => payload,
                };
                client(opcode, fin, &payload)
            });
        prop_oneof![
            8 => frame,
            1 => proptest::collection::vec(any::<u8>(), 0..20),
        ]
    }

    proptest! {
        /// No input panics the session, every step keeps the contract of `receive`, and
        /// what it sends is well-formed and ends with at most one close.
        #[test]
        fn no_input_panics_and_every_run_ends_consistently(
            pieces in proptest::collection::vec(piece(), 0..12),
            cuts in proptest::collection::vec(1usize..64, 1..16),
            close_first in any::<bool>(),
        ) {
            let limits = Limits { max_frame_size: 30, max_message_size: 60 };
            let mut s = Session::new(limits, 8, config(Some(IDLE)), 0);
            let mut out = Vec::new();
            if close_first {
                s.close(CloseCode::NORMAL, "", 0, &mut out).unwrap();
            }
            let mut input = pieces.concat();
            let mut closures = 0;
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at == input.len() {
                    break;
                }
                let end = (at + cut).min(input.len());
                let chunk = &mut input[at..end];
                let len = chunk.len();
                let mut pos = 0;
                let mut steps = 0;
                loop {
                    steps += 1;
                    prop_assert!(steps <= 2 * len + 2, "a step made no progress");
                    let was = s.state();
                    let (used, event) = s.receive(&mut chunk[pos..], &mut out);
                    prop_assert!(used <= len - pos);
                    pos += used;
                    match event {
                        None => {
                            prop_assert_eq!(pos, len);
                            break;
                        }
                        Some(Incoming::Closed(_)) => {
                            closures += 1;
                            prop_assert_eq!(s.state(), State::Closed);
                        }
                        Some(Incoming::Data { .. } | Incoming::Pong(_)) => {
                            prop_assert_eq!(was, State::Open);
                        }
                        Some(Incoming::Frame(_)) => {}
                    }
                    prop_assert!(was != State::Closed || s.state() == State::Closed);
                }
                at = end;
            }
            prop_assert!(closures <= 1);
            prop_assert_eq!(closures == 1, s.state() == State::Closed);
            let sent = frames(&out);
            let closes = sent.iter().filter(|(op, ..)| *op == OpCode::Close).count();
            prop_assert!(closes <= 1);
            if closes == 1 {
                prop_assert_eq!(sent.last().map(|(op, ..)| *op), Some(OpCode::Close));
            }
            for (opcode, fin, payload) in &sent {
                prop_assert!(*opcode == OpCode::Pong || *opcode == OpCode::Close);
                prop_assert!(*fin && payload.len() <= MAX_CONTROL_PAYLOAD);
            }
            prop_assert_eq!(close_first || s.state() == State::Closed, closes == 1);
        }
    }
}
