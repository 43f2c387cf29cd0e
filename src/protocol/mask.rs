//! Payload masking (RFC 6455 §5.3).
//!
//! Every frame a client sends carries a 4-byte masking key, and its payload is XORed
//! with that key repeated: octet `i` of the payload is XORed with octet `i % 4` of the
//! key (§5.3: `j = i MOD 4; transformed-octet-i = original-octet-i XOR masking-key-octet-j`).
//! XOR is its own inverse, so the same function masks and unmasks.
//!
//! A server reads payloads in pieces (whatever the socket returned), so both functions
//! take an `offset`: the number of payload bytes of this frame that came before `buf`.
//! Only `offset % 4` matters; passing the running count is the intended use.
//!
//! Unmasking touches every byte a client sends, which makes it the hottest loop of the
//! server. [`apply_mask`] therefore works on 8-byte words; [`apply_mask_reference`] is
//! the literal byte-by-byte transcription of §5.3 that the fast path is tested against.

/// Masks or unmasks `buf` in place with `key`, 8 bytes at a time (RFC 6455 §5.3).
///
/// Byte `buf[i]` is XORed with `key[(offset + i) % 4]`, where `offset` is how many
/// bytes of the same payload were (un)masked before this slice. The result is always
/// identical to [`apply_mask_reference`].
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // Rotate the key so that `rotated[j]` is the key byte for `buf[j]`. After this the
    // slice can be treated as if it started at a key boundary.
    let rotated = rotate_key(key, offset);

    // Two copies of the rotated key make one 8-byte word. 8 is a multiple of 4, so the
    // same word lines up with the key at every 8-byte chunk. Native byte order is used
    // on both sides (word and payload), so the XOR pairs up the same byte positions on
    // any endianness.
    let [k0, k1, k2, k3] = rotated;
    let word = u64::from_ne_bytes([k0, k1, k2, k3, k0, k1, k2, k3]);

    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        // `chunks_exact_mut(8)` only yields 8-byte chunks, so this conversion always
        // succeeds and the optimiser removes the check; the `if let` just keeps the
        // code free of `unwrap`. The load/XOR/store compiles to plain word (or, after
        // auto-vectorisation, SIMD) operations.
        if let Ok(bytes) = <[u8; 8]>::try_from(&*chunk) {
            let masked = u64::from_ne_bytes(bytes) ^ word;
            chunk.copy_from_slice(&masked.to_ne_bytes());
        }
    }

    // The tail (< 8 bytes) starts at a multiple of 8 from the start of `buf`, hence at
    // a multiple of 4: it lines up with `rotated[0]` again.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        // `i % 4 < 4`, so the index is always in bounds and the check is optimised out.
        *byte ^= rotated[i % 4];
    }
}

/// Masks or unmasks `buf` in place, one byte at a time: the plain loop of RFC 6455
/// §5.3.
///
/// This is the reference implementation: [`apply_mask`] is tested against it and the
/// `mask` benchmark measures the speed-up over it. Byte `buf[i]` is XORed with
/// `key[(offset + i) % 4]`.
pub fn apply_mask_reference(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // Reduce first so that `start + i` cannot overflow even for `offset == usize::MAX`;
    // it is the same value modulo 4.
    let start = offset % 4;
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[(start + i) % 4];
    }
}

/// The key as seen from a slice that starts `offset` bytes into the payload:
/// `rotate_key(key, offset)[j] == key[(offset + j) % 4]`.
#[inline]
fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    // Read as a little-endian u32, key byte `j` sits at bits `8j..8j+8`; shifting the
    // word right by `8 * (offset % 4)` (with wrap-around) moves byte `j + offset` down
    // to position `j`. One rotate instruction, where `<[u8]>::rotate_left` with a
    // run-time amount would be a generic memmove-style routine.
    let shift = 8 * (offset % 4) as u32;
    u32::from_le_bytes(key).rotate_right(shift).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 6455 §5.7, "A single-frame masked text message": "Hello" with masking key
    /// 0x37 0xfa 0x21 0x3d is sent as 0x7f 0x9f 0x4d 0x51 0x58.
    #[test]
    fn rfc_5_7_hello_example() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let masked = [0x7f, 0x9f, 0x4d, 0x51, 0x58];

        let mut buf = *b"Hello";
        apply_mask(&mut buf, key, 0);
        assert_eq!(buf, masked);
        apply_mask(&mut buf, key, 0);
        assert_eq!(&buf, b"Hello");

        let mut buf = *b"Hello";
        apply_mask_reference(&mut buf, key, 0);
        assert_eq!(buf, masked);
    }

    /// The same example unmasked in pieces ("He", "llo") with the running offset.
    #[test]
    fn rfc_5_7_hello_in_pieces() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut buf = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let (first, second) = buf.split_at_mut(2);
        apply_mask(first, key, 0);
        apply_mask(second, key, 2);
        assert_eq!(&buf, b"Hello");
    }

    #[test]
    fn masking_twice_restores_input() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        let original: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for offset in 0..8 {
            let mut buf = original.clone();
            apply_mask(&mut buf, key, offset);
            assert_ne!(buf, original);
            apply_mask(&mut buf, key, offset);
            assert_eq!(buf, original, "offset {offset}");
        }
    }

    #[test]
    fn empty_and_short_buffers() {
        let key = [1, 2, 4, 8];
        let mut empty: [u8; 0] = [];
        apply_mask(&mut empty, key, 3);
        for len in 0..20 {
            for offset in 0..4 {
                let mut fast = vec![0u8; len];
                let mut slow = vec![0u8; len];
                apply_mask(&mut fast, key, offset);
                apply_mask_reference(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    /// Offsets are only meaningful modulo 4, including near `usize::MAX`.
    #[test]
    fn huge_offsets_do_not_overflow() {
        let key = [0x11, 0x22, 0x33, 0x44];
        let mut fast = [0u8; 13];
        let mut slow = [0u8; 13];
        apply_mask(&mut fast, key, usize::MAX);
        apply_mask_reference(&mut slow, key, usize::MAX);
        assert_eq!(fast, slow);
        // usize::MAX % 4 == 3, so the first byte uses key[3].
        assert_eq!(fast[0], 0x44);
    }

    #[test]
    fn pieces_with_running_offset_equal_whole() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let original: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, key, 0);

        // Uneven piece sizes so that every offset modulo 4 and every tail length occurs.
        let mut pieces = original.clone();
        let mut done = 0;
        for size in [1, 2, 3, 5, 8, 9, 13, 17, 31, 64, 100].iter().cycle() {
            if done >= pieces.len() {
                break;
            }
            let end = (done + size).min(pieces.len());
            apply_mask(&mut pieces[done..end], key, done);
            done = end;
        }
        assert_eq!(pieces, whole);
    }

    proptest! {
        #[test]
        fn fast_path_equals_reference(
            buf in proptest::collection::vec(any::<u8>(), 0..2000),
            key in any::<[u8; 4]>(),
            offset in any::<usize>(),
        ) {
            let mut fast = buf.clone();
            let mut slow = buf.clone();
            apply_mask(&mut fast, key, offset);
            apply_mask_reference(&mut slow, key, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn random_split_points_equal_whole(
            buf in proptest::collection::vec(any::<u8>(), 0..2000),
            key in any::<[u8; 4]>(),
            offset in 0usize..1024,
            splits in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        ) {
            let mut whole = buf.clone();
            apply_mask_reference(&mut whole, key, offset);

            let mut cuts: Vec<usize> = splits.iter().map(|ix| ix.index(buf.len() + 1)).collect();
            cuts.push(0);
            cuts.push(buf.len());
            cuts.sort_unstable();

            let mut pieces = buf.clone();
            for pair in cuts.windows(2) {
                let (start, end) = (pair[0], pair[1]);
                apply_mask(&mut pieces[start..end], key, offset + start);
            }
            prop_assert_eq!(pieces, whole);
        }
    }
}
