//! Deterministic payload generators: the same bytes for the same arguments, so that a
//! sender and a checker can produce a message independently and compare.
//!
//! This file is self-contained (no dependency on the rest of `tests/common`):
//! `examples/huge_echo.rs` includes it too, with
//! `#[path = "../tests/common/payload.rs"] mod payload;`, and so does the `wsload`
//! load generator (`src/bin/wsload/main.rs`); the integration tests reach it as
//! `common::payload`.
#![allow(dead_code)] // each includer uses a different part of this module

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
