//! The RFC's two registries as enums: frame opcodes (§5.2, §11.8) and close status
//! codes (§7.4, §11.7).

use std::fmt;

/// A frame opcode (RFC 6455 §5.2): the 4 low bits of the first header byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// `0x0`: the frame continues a fragmented message (§5.4).
    Continuation,
    /// `0x1`: the first frame of a text message (UTF-8 payload).
    Text,
    /// `0x2`: the first frame of a binary message.
    Binary,
    /// `0x8`: the closing handshake (§5.5.1).
    Close,
    /// `0x9`: a ping, which the peer answers with a pong (§5.5.2).
    Ping,
    /// `0xA`: a pong (§5.5.3).
    Pong,
    /// `0x3`–`0x7` and `0xB`–`0xF`: reserved; receiving one fails the connection.
    Reserved(u8),
}

impl OpCode {
    /// Control frames are the opcodes with the high bit set (§5.5): close, ping, pong
    /// and the reserved `0xB`–`0xF`.
    pub fn is_control(self) -> bool {
        u8::from(self) & 0x8 != 0
    }
}

impl From<u8> for OpCode {
    /// Decodes the low 4 bits; higher bits are ignored.
    fn from(bits: u8) -> Self {
        match bits & 0x0F {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => OpCode::Reserved(other),
        }
    }
}

impl From<OpCode> for u8 {
    fn from(op: OpCode) -> u8 {
        match op {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
            OpCode::Reserved(bits) => bits & 0x0F,
        }
    }
}

/// Whether a data message carries UTF-8 text or arbitrary bytes (§5.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// Opcode `0x1`: the whole message payload must be valid UTF-8.
    Text,
    /// Opcode `0x2`: any bytes.
    Binary,
}

impl MessageKind {
    /// The opcode of the first frame of a message of this kind.
    pub fn opcode(self) -> OpCode {
        match self {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }
}

/// A close status code (RFC 6455 §7.4.1, IANA "WebSocket Close Code Number Registry").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is going down (or a browser leaves the page).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no status code was present. Never sent on the wire (§7.4.1).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection dropped without a close frame. Never sent on the wire.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a text message was not valid UTF-8 (§8.1).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message was too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);

    /// Whether a peer may put this code in a close frame (§7.4.1, §7.4.2 and the IANA
    /// registry): 1000–1003 and 1007–1014 are assigned for the wire, 3000–4999 belong to
    /// libraries and applications. 1004 is reserved, 1005/1006/1015 are for local
    /// reporting only, everything else below 3000 is reserved or unassigned.
    pub fn is_allowed_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_opcode_round_trips_through_its_bits() {
        for bits in 0u8..16 {
            assert_eq!(u8::from(OpCode::from(bits)), bits);
        }
    }

    #[test]
    fn reserved_opcodes_are_the_rfc_ranges() {
        for bits in (3u8..=7).chain(0xB..=0xF) {
            assert_eq!(OpCode::from(bits), OpCode::Reserved(bits));
        }
        assert!(OpCode::Ping.is_control() && OpCode::Reserved(0xB).is_control());
        assert!(!OpCode::Binary.is_control() && !OpCode::Reserved(3).is_control());
    }

    #[test]
    fn close_codes_allowed_on_the_wire_match_the_registry() {
        let allowed: Vec<u16> = (0..=5000)
            .filter(|&c| CloseCode(c).is_allowed_on_wire())
            .collect();
        let expected: Vec<u16> = (1000..=1003)
            .chain(1007..=1014)
            .chain(3000..=4999)
            .collect();
        assert_eq!(allowed, expected);
    }
}
