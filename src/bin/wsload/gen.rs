//! What is sent: payloads generated from (seed, connection index, message index,
//! position), so that the checker regenerates any range of any message instead of
//! keeping a copy; masking keys; the running checksum of `huge`.

use crate::payload::{fill, word};

/// The stream seed of message `msg` on connection `conn`.
pub fn message_seed(seed: u64, conn: usize, msg: u64) -> u64 {
    word(word(seed, conn as u64), msg)
}

/// Fills `out` with bytes `pos..pos + out.len()` of message `msg` on connection
/// `conn`. Text payloads are the same stream with the top bit cleared: ASCII, hence
/// valid UTF-8 however the message is cut.
pub fn fill_message(seed: u64, text: bool, conn: usize, msg: u64, pos: u64, out: &mut [u8]) {
    fill(message_seed(seed, conn, msg), pos, out);
    if text {
        for byte in out.iter_mut() {
            *byte &= 0x7F;
        }
    }
}

/// xorshift64: masking keys and handshake nonces. RFC 6455 §5.3 wants keys a server
/// cannot predict, to protect intermediaries from browser scripts; a load generator
/// only needs them to vary.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator for connection `index`.
    pub fn new(seed: u64, index: usize) -> Self {
        XorShift(word(seed ^ 0x6b65_7973, index as u64) | 1)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A masking key.
    pub fn key(&mut self) -> [u8; 4] {
        let [a, b, c, d, ..] = self.next_u64().to_le_bytes();
        [a, b, c, d]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Checksum;

    #[test]
    fn messages_differ_by_connection_and_index_and_cut_anywhere() {
        let mut a = vec![0u8; 100];
        let mut b = vec![0u8; 100];
        fill_message(1, false, 0, 0, 0, &mut a);
        fill_message(1, false, 1, 0, 0, &mut b);
        assert_ne!(a, b);
        fill_message(1, false, 0, 1, 0, &mut b);
        assert_ne!(a, b);
        let mut pieces = vec![0u8; 100];
        let (x, y) = pieces.split_at_mut(37);
        fill_message(1, false, 0, 0, 0, x);
        fill_message(1, false, 0, 0, 37, y);
        assert_eq!(a, pieces);
        fill_message(1, true, 0, 0, 0, &mut b);
        assert!(b.is_ascii());
    }

    #[test]
    fn checksum_does_not_depend_on_the_pieces() {
        let mut data = vec![0u8; 1001];
        fill(7, 0, &mut data);
        let mut whole = Checksum::default();
        whole.update(&data);
        let mut pieces = Checksum::default();
        for piece in data.chunks(13) {
            pieces.update(piece);
        }
        let sum = whole.finish();
        assert_eq!(sum, pieces.finish());
        data[500] ^= 1;
        let mut other = Checksum::default();
        other.update(&data);
        assert_ne!(sum, other.finish());
    }
}
