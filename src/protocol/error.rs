//! Protocol violations, each of which knows the close code it is answered with.

use super::coding::CloseCode;
use std::fmt;

/// Why a peer's bytes broke RFC 6455. The connection is failed (§7.1.7): the endpoint
/// sends a close frame with [`ProtocolError::close_code`] and [`ProtocolError::reason`]
/// and then drops the TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1–3 set without an extension that defines them (§5.2).
    ReservedBitsSet,
    /// Opcode 0x3–0x7 or 0xB–0xF (§5.2).
    ReservedOpcode,
    /// A client frame without the MASK bit (§5.1: the server MUST fail the connection).
    UnmaskedClientFrame,
    /// A server frame with the MASK bit (§5.1: the client MUST fail the connection).
    MaskedServerFrame,
    /// A 64-bit length with its most significant bit set (§5.2).
    LengthTopBitSet,
    /// A length not written in the minimal number of bytes (§5.2).
    NonMinimalLength,
    /// A control frame with more than 125 bytes of payload (§5.5).
    ControlFrameTooLong,
    /// A control frame with FIN=0 (§5.5: control frames MUST NOT be fragmented).
    FragmentedControlFrame,
    /// A continuation frame while no fragmented message is open (§5.4).
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is still open (§5.4).
    ExpectedContinuation,
    /// A frame longer than the configured maximum frame size.
    FrameTooLarge,
    /// A message longer than the configured maximum message size.
    MessageTooLarge,
    /// A text message that is not valid UTF-8 (§8.1).
    InvalidUtf8,
    /// A close frame with a 1-byte payload (§5.5.1: a body starts with a 2-byte code).
    InvalidClosePayload,
    /// A close frame with a code that may not appear on the wire (§7.4).
    InvalidCloseCode,
    /// A close frame whose reason is not valid UTF-8 (§5.5.1).
    InvalidCloseReason,
}

impl ProtocolError {
    /// The status code of the close frame that answers this error (§7.4.1).
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::FrameTooLarge | ProtocolError::MessageTooLarge => {
                CloseCode::MESSAGE_TOO_BIG
            }
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCloseReason => {
                CloseCode::INVALID_PAYLOAD
            }
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short sentence for the close frame's reason and the log (well under the 123
    /// bytes a close reason may have).
    pub fn reason(self) -> &'static str {
        match self {
            ProtocolError::ReservedBitsSet => "reserved bits set without an extension",
            ProtocolError::ReservedOpcode => "reserved opcode",
            ProtocolError::UnmaskedClientFrame => "client frames must be masked",
            ProtocolError::MaskedServerFrame => "server frames must not be masked",
            ProtocolError::LengthTopBitSet => "64-bit length with the top bit set",
            ProtocolError::NonMinimalLength => "payload length not minimally encoded",
            ProtocolError::ControlFrameTooLong => "control frame longer than 125 bytes",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::UnexpectedContinuation => "continuation frame outside a message",
            ProtocolError::ExpectedContinuation => "new message inside a fragmented message",
            ProtocolError::FrameTooLarge => "frame exceeds the maximum frame size",
            ProtocolError::MessageTooLarge => "message exceeds the maximum message size",
            ProtocolError::InvalidUtf8 => "text message is not valid UTF-8",
            ProtocolError::InvalidClosePayload => "close frame with a 1-byte payload",
            ProtocolError::InvalidCloseCode => "close code not allowed on the wire",
            ProtocolError::InvalidCloseReason => "close reason is not valid UTF-8",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (close {})", self.reason(), self.close_code())
    }
}

impl std::error::Error for ProtocolError {}
