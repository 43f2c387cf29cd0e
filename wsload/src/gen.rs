//! What is sent: payloads that any range of any message can be reproduced from
//! (connection index, message index, position), so that the checker compares each
//! echoed byte without keeping a copy of what was sent; masking keys.
//!
//! **The payload stream.** Every payload is a window onto one table of [`PERIOD`]
//! pseudo-random bytes (from the seed), read cyclically: byte `p` of message `m` on
//! connection `c` is `table[(start(c, m) + p) % PERIOD]`. Producing or checking a range
//! is then a `memcpy` or a `memcmp` against the table, which keeps the load generator
//! off the critical path; a counter-based hash per 8 bytes, as before, took half of
//! its CPU at ~1.3 GiB/s. What this still catches:
//! - a changed byte anywhere (every byte is compared);
//! - bytes of another message: consecutive messages of a connection start [`STRIDE`]
//!   apart in the table, and since `PERIOD` is prime, messages fewer than `PERIOD`
//!   apart never start at the same place; connections start at hashed places;
//! - dropped, repeated or shifted bytes within a message, unless the shift is a
//!   multiple of `PERIOD` bytes. `PERIOD` is prime so that no power-of-two block a
//!   server might mishandle (a 64 KiB frame or buffer) is a multiple of it, and a
//!   shift by exactly `PERIOD` also changes where the message ends, which the length
//!   check catches unless a drop and a repeat of that size cancel out.

use crate::payload::word;

/// Length of the payload table's period: a prime a little under 64 KiB.
pub const PERIOD: usize = 65_521;
/// Distance in the table between the starts of consecutive messages of a connection.
const STRIDE: u64 = 4_099;

/// The payload table of a run, for binary and for text messages.
pub struct Payloads {
    /// `PERIOD` random bytes, then the same bytes again, so that any range of at most
    /// `PERIOD` bytes from any start is one slice.
    binary: Vec<u8>,
    /// The same with the top bit of every byte cleared: ASCII, hence valid UTF-8
    /// however a message is cut.
    text: Vec<u8>,
    seed: u64,
}

impl Payloads {
    /// The tables of `seed`.
    pub fn new(seed: u64) -> Self {
        let mut binary = vec![0u8; 2 * PERIOD];
        crate::payload::fill(seed, 0, &mut binary[..PERIOD]);
        binary.copy_within(..PERIOD, PERIOD);
        let text = binary.iter().map(|b| b & 0x7F).collect();
        Payloads { binary, text, seed }
    }

    /// Where message `msg` of connection `conn` starts in the table.
    fn start(&self, conn: usize, msg: u64) -> u64 {
        word(self.seed, conn as u64) % PERIOD as u64 + msg % PERIOD as u64 * STRIDE
    }

    /// Bytes `pos..pos + len` of message `msg` on connection `conn`, for `len` up to
    /// [`PERIOD`] (longer ranges go piece by piece).
    pub fn slice(&self, text: bool, conn: usize, msg: u64, pos: u64, len: usize) -> &[u8] {
        let table = if text { &self.text } else { &self.binary };
        let at = ((self.start(conn, msg) + pos % PERIOD as u64) % PERIOD as u64) as usize;
        // `at < PERIOD` and `len <= PERIOD`, so the range lies within the doubled table.
        &table[at..at + len.min(PERIOD)]
    }

    /// Appends bytes `pos..pos + len` of message `msg` on connection `conn` to `out`,
    /// copied straight from the table.
    pub fn append(
        &self,
        text: bool,
        conn: usize,
        msg: u64,
        pos: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) {
        let end = pos + len as u64;
        let mut at = pos;
        while at < end {
            // At most `PERIOD` bytes per slice, so the cast is lossless.
            let n = (end - at).min(PERIOD as u64) as usize;
            out.extend_from_slice(self.slice(text, conn, msg, at, n));
            at += n as u64;
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
    use crate::payload::{fill, Checksum};

    #[test]
    fn messages_differ_by_connection_and_index_and_cut_anywhere() {
        let p = Payloads::new(1);
        let len = 3 * PERIOD + 17;
        let message = |text, conn, msg| {
            let mut out = Vec::new();
            p.append(text, conn, msg, 0, len, &mut out);
            out
        };
        let a = message(false, 0, 0);
        assert_ne!(a, message(false, 1, 0));
        assert_ne!(a, message(false, 0, 1));
        // Cut anywhere, even across the table's end, the pieces are the same bytes.
        for cut in [1, 37, PERIOD - 1, PERIOD, PERIOD + 5] {
            let mut pieces = Vec::new();
            p.append(false, 0, 0, 0, cut, &mut pieces);
            p.append(false, 0, 0, cut as u64, len - cut, &mut pieces);
            assert_eq!(a, pieces, "cut at {cut}");
        }
        let text = message(true, 0, 0);
        assert!(text.is_ascii());
        assert!(text.iter().zip(&a).all(|(t, b)| *t == b & 0x7F));
    }

    #[test]
    fn consecutive_messages_never_start_at_the_same_place() {
        let p = Payloads::new(7);
        let mut starts: Vec<u64> = (0..PERIOD as u64)
            .map(|m| p.start(3, m) % PERIOD as u64)
            .collect();
        starts.sort_unstable();
        starts.dedup();
        assert_eq!(starts.len(), PERIOD);
    }

    #[test]
    fn a_shift_by_a_power_of_two_block_changes_the_bytes() {
        let p = Payloads::new(9);
        let mut a = Vec::new();
        p.append(false, 0, 0, 0, 4096, &mut a);
        for block in [1u64 << 12, 1 << 14, 1 << 16, 1 << 20] {
            let mut b = Vec::new();
            p.append(false, 0, 0, block, 4096, &mut b);
            assert_ne!(a, b, "shift by {block}");
        }
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
