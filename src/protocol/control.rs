//! A control frame's payload: at most 125 bytes (RFC 6455 §5.5), kept inline so that
//! pings, pongs and closes never allocate.

use std::fmt;

/// The largest payload a control frame may carry (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Up to 125 payload bytes of a ping, pong or close frame, stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ControlPayload {
    len: u8,
    bytes: [u8; MAX_CONTROL_PAYLOAD],
}

impl ControlPayload {
    /// An empty payload.
    pub const fn new() -> Self {
        ControlPayload {
            len: 0,
            bytes: [0; MAX_CONTROL_PAYLOAD],
        }
    }

    /// Copies `bytes` into a payload; `None` if they exceed 125 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut payload = ControlPayload::new();
        payload.extend(bytes).then_some(payload)
    }

    /// Appends `more`; returns false (and appends nothing) if the result would exceed
    /// 125 bytes.
    pub fn extend(&mut self, more: &[u8]) -> bool {
        let start = usize::from(self.len);
        let Some(dest) = self.bytes.get_mut(start..start + more.len()) else {
            return false;
        };
        dest.copy_from_slice(more);
        // Bounded by MAX_CONTROL_PAYLOAD (125) by the `get_mut` above.
        self.len += more.len() as u8;
        true
    }

    /// The payload bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Forgets the bytes, ready to collect the next control frame.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Default for ControlPayload {
    fn default() -> Self {
        ControlPayload::new()
    }
}

impl fmt::Debug for ControlPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ControlPayload")
            .field(&self.as_slice())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_exactly_125_bytes() {
        assert!(ControlPayload::from_slice(&[7; 125]).is_some());
        assert!(ControlPayload::from_slice(&[7; 126]).is_none());
        let mut p = ControlPayload::from_slice(&[1; 100]).unwrap();
        assert!(!p.extend(&[2; 26]));
        assert!(p.extend(&[2; 25]));
        assert_eq!(p.as_slice().len(), 125);
        assert_eq!(p.as_slice()[100], 2);
    }
}
