//! Deterministic payload generators: the same bytes for the same arguments, so that a
//! sender and a checker can produce a message independently and compare.
//!
//! The integration tests, the `wsload` load generator and the `huge_echo`
//! measurement all use these, so what one sends another can check.

/// Word `index` of the pseudo-random stream `seed`: SplitMix64's output function on a
/// counter, so any word can be produced without producing the ones before it.
pub fn word(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `out` with the bytes at positions `pos..pos + out.len()` of the binary stream
/// `seed`, whose byte `p` is byte `p % 8` (little-endian) of `word(seed, p / 8)`. Any
/// range can be produced on its own, so a message of any size is never held whole.
pub fn fill(seed: u64, pos: u64, out: &mut [u8]) {
    let mut p = pos;
    let mut i = 0;
    while i < out.len() && !p.is_multiple_of(8) {
        out[i] = word(seed, p / 8).to_le_bytes()[(p % 8) as usize];
        i += 1;
        p += 1;
    }
    let mut words = out[i..].chunks_exact_mut(8);
    for chunk in &mut words {
        chunk.copy_from_slice(&word(seed, p / 8).to_le_bytes());
        p += 8;
    }
    let tail = words.into_remainder();
    if !tail.is_empty() {
        let last = word(seed, p / 8).to_le_bytes();
        tail.copy_from_slice(&last[..tail.len()]);
    }
}

/// `len` bytes in which no block repeats another: a shifted, dropped or duplicated
/// chunk anywhere changes the content.
pub fn patterned_bytes(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((i ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect()
}

/// Exactly `len` bytes of valid UTF-8 made of 1-, 2-, 3- and 4-byte characters (up to
/// U+10FFFF), with the byte offset written out every so often so that misplaced
/// chunks are detected.
pub fn patterned_text(len: usize) -> String {
    const CHARS: [char; 8] = ['a', 'é', '€', '😀', 'Z', 'ж', '中', '\u{10FFFF}'];
    let mut text = String::with_capacity(len);
    let mut i = 0usize;
    while text.len() < len {
        if i.is_multiple_of(64) {
            let marker = format!("<{}>", text.len());
            if text.len() + marker.len() <= len {
                text.push_str(&marker);
            }
        }
        let c = CHARS[(i * 5 + i / 7) % CHARS.len()];
        if text.len() + c.len_utf8() <= len {
            text.push(c);
        } else if text.len() < len {
            text.push(char::from(b'0' + (i % 10) as u8));
        }
        i += 1;
    }
    assert_eq!(text.len(), len);
    text
}

/// A 64-bit checksum of a byte stream, independent of how the stream is cut into
/// pieces: a multiply-rotate round per 8-byte word, the length mixed in at the end.
#[derive(Clone, Debug)]
pub struct Checksum {
    state: u64,
    len: u64,
    pending: [u8; 8],
    pending_len: usize,
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;

impl Default for Checksum {
    fn default() -> Self {
        Checksum {
            state: P3,
            len: 0,
            pending: [0; 8],
            pending_len: 0,
        }
    }
}

impl Checksum {
    fn round(&mut self, w: u64) {
        self.state = (self.state ^ w.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1);
    }

    /// Adds the next bytes of the stream.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.pending_len > 0 {
            let take = (8 - self.pending_len).min(bytes.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            if self.pending_len < 8 {
                return;
            }
            self.round(u64::from_le_bytes(self.pending));
            self.pending_len = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for chunk in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.round(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// The checksum of everything added, and a fresh state for the next stream.
    pub fn finish(&mut self) -> u64 {
        if self.pending_len > 0 {
            self.pending[self.pending_len..].fill(0);
            self.round(u64::from_le_bytes(self.pending));
        }
        let mut h = self.state ^ self.len.wrapping_mul(P3);
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P1);
        *self = Checksum::default();
        h ^ (h >> 32)
    }
}
