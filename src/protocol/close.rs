//! The close frame's body (RFC 6455 §5.5.1): an optional 2-byte status code followed
//! by an optional UTF-8 reason.

use super::coding::CloseCode;
use super::control::{ControlPayload, MAX_CONTROL_PAYLOAD};
use super::error::ProtocolError;

/// The longest reason that fits beside the 2-byte code in a 125-byte control payload.
pub const MAX_REASON_LEN: usize = MAX_CONTROL_PAYLOAD - 2;

/// A close frame body with a status code. (A close frame may also be empty: that is
/// `None` wherever an `Option<CloseFrame>` appears.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The code followed by the reason, exactly as on the wire.
    payload: ControlPayload,
}

impl CloseFrame {
    /// A close body with `code` and `reason`. A reason longer than 123 bytes is cut at
    /// the last character boundary that fits, so the body stays valid UTF-8.
    pub fn new(code: CloseCode, reason: &str) -> Self {
        let mut cut = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut payload = ControlPayload::new();
        let fits =
            payload.extend(&code.0.to_be_bytes()) && payload.extend(&reason.as_bytes()[..cut]);
        debug_assert!(fits, "2 + 123 bytes fit in a control payload");
        CloseFrame { payload }
    }

    /// Validates a received close body (§5.5.1, §7.4): empty is fine (`Ok(None)`); one
    /// byte cannot hold a code; the code must be one allowed on the wire; the reason
    /// must be UTF-8.
    pub fn parse(body: &[u8]) -> Result<Option<CloseFrame>, ProtocolError> {
        let (code, reason) = match body {
            [] => return Ok(None),
            [_] => return Err(ProtocolError::InvalidClosePayload),
            [hi, lo, reason @ ..] => (CloseCode(u16::from_be_bytes([*hi, *lo])), reason),
        };
        if !code.is_allowed_on_wire() {
            return Err(ProtocolError::InvalidCloseCode);
        }
        if std::str::from_utf8(reason).is_err() {
            return Err(ProtocolError::InvalidCloseReason);
        }
        let payload = ControlPayload::from_slice(body).ok_or(ProtocolError::ControlFrameTooLong)?;
        Ok(Some(CloseFrame { payload }))
    }

    /// The status code.
    pub fn code(&self) -> CloseCode {
        match self.payload.as_slice() {
            [hi, lo, ..] => CloseCode(u16::from_be_bytes([*hi, *lo])),
            _ => CloseCode::NO_STATUS,
        }
    }

    /// The reason (possibly empty).
    pub fn reason(&self) -> &str {
        let bytes = self.payload.as_slice().get(2..).unwrap_or_default();
        // Both constructors guarantee UTF-8; the fallback is never taken.
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    /// The body as sent on the wire: code (big-endian) then reason.
    pub fn payload(&self) -> &[u8] {
        self.payload.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_body_has_no_code() {
        assert_eq!(CloseFrame::parse(&[]), Ok(None));
    }

    #[test]
    fn a_one_byte_body_is_a_protocol_error() {
        assert_eq!(
            CloseFrame::parse(&[0x03]),
            Err(ProtocolError::InvalidClosePayload)
        );
    }

    #[test]
    fn code_and_reason_round_trip() {
        let frame = CloseFrame::new(CloseCode(4000), "bye now");
        assert_eq!(&frame.payload()[..2], &[0x0F, 0xA0]);
        let parsed = CloseFrame::parse(frame.payload()).unwrap().unwrap();
        assert_eq!(parsed.code(), CloseCode(4000));
        assert_eq!(parsed.reason(), "bye now");
    }

    #[test]
    fn codes_not_allowed_on_the_wire_are_rejected() {
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert_eq!(
                CloseFrame::parse(&code.to_be_bytes()),
                Err(ProtocolError::InvalidCloseCode),
                "code {code}"
            );
        }
        for code in [1000u16, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(
                CloseFrame::parse(&code.to_be_bytes()).is_ok(),
                "code {code}"
            );
        }
    }

    #[test]
    fn a_reason_that_is_not_utf8_is_rejected() {
        assert_eq!(
            CloseFrame::parse(&[0x03, 0xE8, 0xCE, 0xBA, 0xE1, 0xBD]),
            Err(ProtocolError::InvalidCloseReason)
        );
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let frame = CloseFrame::new(CloseCode::NORMAL, &reason);
        assert_eq!(frame.reason().len(), 122);
        assert!(frame.payload().len() <= MAX_CONTROL_PAYLOAD);
    }
}
