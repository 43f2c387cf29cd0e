//! Incremental UTF-8 validation of text messages (RFC 6455 §8.1).
//!
//! A text message's payload must be UTF-8 (§5.6), and §8.1 tells an endpoint that
//! receives invalid UTF-8 to fail the connection (with close code 1007, chosen by the
//! caller). The payload of a message arrives in pieces: several frames (§5.4), each
//! read in several socket reads. A code point may be cut anywhere, so the validator
//! carries the at most 3 bytes of an unfinished code point from one piece to the next.
//!
//! Validation is *fail-fast*: an error is reported at the first byte that no
//! continuation could turn into valid UTF-8 (for example the `0x90` in `F4 90`, which
//! would encode a code point above U+10FFFF), not when the code point ends. Autobahn's
//! 6.x cases check exactly this.

use std::fmt;

/// Validates one text message piece by piece (RFC 6455 §8.1).
///
/// Feed every payload piece of the message to [`feed`](Self::feed), then ask
/// [`is_complete`](Self::is_complete) at the end of the message, then
/// [`reset`](Self::reset) before the next one. The state is 4 bytes.
#[derive(Clone, Debug, Default)]
pub struct Utf8Validator {
    /// The leading bytes of a code point that the previous piece cut short. They are
    /// a valid prefix of some code point (fail-fast guarantees it).
    pending: [u8; 3],
    /// How many bytes of `pending` are in use (0 to 3).
    pending_len: u8,
}

/// The piece given to [`Utf8Validator::feed`] contains a byte that can never be part
/// of valid UTF-8 at its position; the message must be rejected (RFC 6455 §8.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utf8Error {
    /// How many bytes *of this piece* were accepted: the index within the piece of the
    /// first byte that made the message invalid.
    pub valid_up_to: usize,
}

impl fmt::Display for Utf8Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid UTF-8 at byte {} of the chunk", self.valid_up_to)
    }
}

impl std::error::Error for Utf8Error {}

impl Utf8Validator {
    /// A validator at the start of a message; the same as `Default::default()`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece of the message.
    ///
    /// On `Ok` every byte of `bytes` was accepted; the piece may end inside a code
    /// point, whose bytes are kept until the next call. On `Err` the message is invalid
    /// and [`Utf8Error::valid_up_to`] is the index in `bytes` of the first offending
    /// byte. After an error the validator's state is unspecified until
    /// [`reset`](Self::reset).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Utf8Error> {
        let mut rest = bytes;
        if self.pending_len > 0 {
            match self.complete_pending(bytes)? {
                Some(used) => rest = bytes.get(used..).unwrap_or(&[]),
                // `bytes` ended before the code point did: all of it was accepted.
                None => return Ok(()),
            }
        }
        // The bytes of `bytes` that came before `rest` (those that finished the
        // pending code point), needed to turn indices in `rest` into indices in `bytes`.
        let skipped = bytes.len() - rest.len();

        match std::str::from_utf8(rest) {
            Ok(_) => Ok(()),
            Err(e) => match e.error_len() {
                // The piece ends in the middle of a code point whose bytes so far are
                // valid (std checks the restricted second-byte ranges after E0, ED,
                // F0 and F4 too), so they are at most 3: keep them for the next piece.
                None => {
                    let tail = rest.get(e.valid_up_to()..).unwrap_or(&[]);
                    self.set_pending(tail);
                    Ok(())
                }
                Some(_) => Err(Utf8Error {
                    valid_up_to: skipped + first_invalid(rest, &e),
                }),
            },
        }
    }

    /// Whether the bytes fed so far end on a code point boundary. A message whose
    /// payload ends inside a code point is invalid UTF-8 (§8.1), so call this at the
    /// end of each text message.
    pub fn is_complete(&self) -> bool {
        self.pending_len == 0
    }

    /// Forgets any pending bytes, ready to validate the next message.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Finishes the pending code point with the first bytes of `bytes`.
    ///
    /// Returns `Ok(Some(n))` when the first `n` bytes of `bytes` completed it,
    /// `Ok(None)` when `bytes` was too short (all of it is now pending), and the error
    /// of [`feed`](Self::feed) if one of those bytes is invalid.
    fn complete_pending(&mut self, bytes: &[u8]) -> Result<Option<usize>, Utf8Error> {
        let have = usize::from(self.pending_len).min(self.pending.len());
        let pending = self.pending.get(..have).unwrap_or(&[]);
        // `pending` is a valid prefix, so its first byte is a valid lead byte and
        // announces the length of the code point.
        let width = pending.first().map_or(0, |&lead| sequence_width(lead));
        let wanted = width.saturating_sub(have);
        let taken = wanted.min(bytes.len());

        // The pending bytes plus the ones that should finish the code point: at most
        // 4 bytes, validated on the stack.
        let mut buf = [0u8; 4];
        let combined = have + taken;
        for (slot, &b) in buf.iter_mut().zip(pending.iter().chain(bytes.iter())) {
            *slot = b;
        }
        let candidate = buf.get(..combined).unwrap_or(&[]);

        match std::str::from_utf8(candidate) {
            Ok(_) => {
                self.pending_len = 0;
                Ok(Some(taken))
            }
            // Still a valid prefix, and `bytes` is exhausted (otherwise we would have
            // taken enough bytes to finish it).
            Err(e) if e.error_len().is_none() => {
                self.set_pending(candidate);
                Ok(None)
            }
            // `first_invalid` is an index into `candidate`; the pending bytes were a
            // valid prefix, so it is at least `have`, and the bytes of this piece
            // accepted before it are the difference.
            Err(e) => Err(Utf8Error {
                valid_up_to: first_invalid(candidate, &e).saturating_sub(have),
            }),
        }
    }

    /// Stores an incomplete, so far valid code point (at most 3 bytes).
    fn set_pending(&mut self, tail: &[u8]) {
        let len = tail.len().min(self.pending.len());
        self.pending = [0; 3];
        for (slot, &b) in self.pending.iter_mut().zip(tail) {
            *slot = b;
        }
        // `len <= 3`, so the cast is lossless.
        self.pending_len = len as u8;
    }
}

/// The index in `bytes` of the first byte that cannot belong to valid UTF-8, given the
/// error `std::str::from_utf8(bytes)` returned (with `error_len() == Some(_)`).
///
/// std reports `valid_up_to` (where the bad sequence starts) and `error_len` (the
/// length of its "maximal subpart": the lead byte and the continuation bytes that were
/// still acceptable). If the sequence starts with a valid lead byte, the offending
/// byte is the one right after that subpart; if the first byte itself can never start
/// a code point (a continuation byte, `C0`, `C1`, `F5`..`FF`), it is the offender.
fn first_invalid(bytes: &[u8], e: &std::str::Utf8Error) -> usize {
    let start = e.valid_up_to();
    let starts_validly = bytes.get(start).is_some_and(|&b| sequence_width(b) > 1);
    if starts_validly {
        start + e.error_len().unwrap_or(0)
    } else {
        start
    }
}

/// How many bytes the code point led by `lead` has (RFC 3629 §4): 1 for ASCII, 2-4 for
/// the lead bytes `C2`..`F4`, and 0 for bytes that cannot start a code point
/// (continuation bytes `80`..`BF`, the always-overlong `C0` and `C1`, and `F5`..`FF`,
/// which would encode values above U+10FFFF).
fn sequence_width(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::sync::OnceLock;

    // ----- brute-force reference -------------------------------------------------

    /// Every proper, non-empty prefix (1 to 3 bytes) of the UTF-8 encoding of every
    /// Unicode scalar value. Built from `char::encode_utf8` alone, so it is independent
    /// of the std error reporting the validator relies on.
    fn code_point_prefixes() -> &'static HashSet<Vec<u8>> {
        static SET: OnceLock<HashSet<Vec<u8>>> = OnceLock::new();
        SET.get_or_init(|| {
            let mut set = HashSet::new();
            let mut buf = [0u8; 4];
            for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
                let encoded = c.encode_utf8(&mut buf).as_bytes();
                for len in 1..encoded.len() {
                    set.insert(encoded[..len].to_vec());
                }
            }
            set
        })
    }

    /// Whether some valid UTF-8 string starts with `p`. If so, the last code point
    /// boundary of that string inside `p` splits `p` into a complete valid part and
    /// a proper prefix (0 to 3 bytes) of one more code point, and conversely.
    fn is_valid_prefix(p: &[u8]) -> bool {
        (0..=3.min(p.len())).any(|tail_len| {
            let (head, tail) = p.split_at(p.len() - tail_len);
            std::str::from_utf8(head).is_ok()
                && (tail.is_empty() || code_point_prefixes().contains(tail))
        })
    }

    /// The failing byte: the first index `i` such that `bytes[..=i]` is not a prefix of
    /// any valid UTF-8 string. `None` if `bytes` is valid or a valid prefix.
    fn first_invalid_index(bytes: &[u8]) -> Option<usize> {
        (0..bytes.len()).find(|&i| !is_valid_prefix(&bytes[..=i]))
    }

    /// What the validator says about `bytes` cut into `chunks`: `Err(n)` with the total
    /// number of accepted bytes on error, `Ok(is_complete)` otherwise.
    fn run(chunks: &[&[u8]]) -> Result<bool, usize> {
        let mut v = Utf8Validator::new();
        let mut accepted = 0;
        for chunk in chunks {
            match v.feed(chunk) {
                Ok(()) => accepted += chunk.len(),
                Err(e) => {
                    assert!(e.valid_up_to < chunk.len(), "{e:?} for chunk {chunk:x?}");
                    return Err(accepted + e.valid_up_to);
                }
            }
        }
        Ok(v.is_complete())
    }

    /// `bytes` fed whole, split at every position into two pieces, and one byte at a
    /// time: all must give `expected`.
    fn check_all_splits(bytes: &[u8], expected: Result<bool, usize>) {
        assert_eq!(run(&[bytes]), expected, "whole {bytes:x?}");
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(run(&[a, b]), expected, "{a:x?} | {b:x?}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&singles), expected, "byte by byte {bytes:x?}");
    }

    // ----- valid input -----------------------------------------------------------

    #[test]
    fn valid_sequences_split_everywhere() {
        let samples = [
            "",
            "a",
            "\u{0}",
            "\u{7F}", // 1 byte
            "\u{80}",
            "é",
            "\u{7FF}", // 2 bytes
            "\u{800}",
            "€",
            "\u{D7FF}",
            "\u{E000}",
            "\u{FFFD}",
            "\u{FFFF}", // 3 bytes
            "\u{10000}",
            "🦀",
            "\u{10FFFF}", // 4 bytes
        ];
        for s in samples {
            check_all_splits(s.as_bytes(), Ok(true));
            // Surrounded by other text, so the code point also starts mid-piece.
            let padded = format!("x{s}κ{s}y");
            check_all_splits(padded.as_bytes(), Ok(true));
        }
    }

    /// Every Unicode scalar value, fed one byte at a time.
    #[test]
    fn every_scalar_value_byte_by_byte() {
        let mut buf = [0u8; 4];
        let mut v = Utf8Validator::new();
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let encoded = c.encode_utf8(&mut buf).as_bytes();
            let (last, init) = encoded.split_last().expect("never empty");
            for b in init {
                assert_eq!(v.feed(std::slice::from_ref(b)), Ok(()), "{c:?}");
                assert!(!v.is_complete(), "{c:?}");
            }
            assert_eq!(v.feed(std::slice::from_ref(last)), Ok(()), "{c:?}");
            assert!(v.is_complete(), "{c:?}");
        }
    }

    #[test]
    fn reset_forgets_pending_bytes() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xE2, 0x82]), Ok(()));
        assert!(!v.is_complete());
        v.reset();
        assert!(v.is_complete());
        // Without the reset, 'a' would be an invalid continuation of E2 82.
        assert_eq!(v.feed(b"a"), Ok(()));
        assert!(v.is_complete());
    }

    #[test]
    fn validator_is_small() {
        assert!(std::mem::size_of::<Utf8Validator>() <= 4);
    }

    // ----- invalid input ---------------------------------------------------------

    #[test]
    fn overlong_forms() {
        // 2 bytes: C0 and C1 can only start overlong forms, so they fail at once.
        check_all_splits(&[0xC0, 0x80], Err(0));
        check_all_splits(&[0xC1, 0xBF], Err(0));
        // 3 bytes: after E0 the second byte must be A0..BF.
        check_all_splits(&[0xE0, 0x80, 0x80], Err(1));
        check_all_splits(&[0xE0, 0x9F, 0xBF], Err(1));
        // 4 bytes: after F0 the second byte must be 90..BF.
        check_all_splits(&[0xF0, 0x80, 0x80, 0x80], Err(1));
        check_all_splits(&[0xF0, 0x8F, 0xBF, 0xBF], Err(1));
    }

    #[test]
    fn surrogates() {
        // U+D800..U+DFFF are ED A0 80..ED BF BF; after ED the second byte must be 80..9F.
        check_all_splits(&[0xED, 0xA0, 0x80], Err(1));
        check_all_splits(&[0xED, 0xBF, 0xBF], Err(1));
        check_all_splits(&[0xED, 0xAD, 0xBF, 0xED, 0xB0, 0x80], Err(1));
        // Just below and above the surrogate block are fine.
        check_all_splits("\u{D7FF}\u{E000}".as_bytes(), Ok(true));
    }

    #[test]
    fn above_u10ffff() {
        // U+110000 would be F4 90 80 80: after F4 the second byte must be 80..8F.
        check_all_splits(&[0xF4, 0x90, 0x80, 0x80], Err(1));
        check_all_splits(&[0xF4, 0xBF, 0xBF, 0xBF], Err(1));
        for lead in 0xF5..=0xFF {
            check_all_splits(&[lead, 0x80, 0x80, 0x80], Err(0));
            check_all_splits(&[b'a', lead], Err(1));
        }
    }

    #[test]
    fn lone_continuation_bytes() {
        for b in 0x80..=0xBF {
            check_all_splits(&[b], Err(0));
            check_all_splits(&[b'a', b'b', b], Err(2));
        }
        // One continuation byte too many after a complete code point.
        check_all_splits(&[0xC3, 0xA9, 0xA9], Err(2));
    }

    #[test]
    fn truncated_at_message_end() {
        check_all_splits(&[0xC3], Ok(false));
        check_all_splits(&[0xE2, 0x82], Ok(false));
        check_all_splits(&[0xF0, 0x9F, 0x98], Ok(false));
        check_all_splits(&[b'o', b'k', 0xF4, 0x8F, 0xBF], Ok(false));
    }

    #[test]
    fn invalid_byte_right_after_pending_prefix() {
        // A lead byte ends one piece; the next piece breaks the code point.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[b'a', 0xE2]), Ok(()));
        assert_eq!(v.feed(&[0x82, b'A']), Err(Utf8Error { valid_up_to: 1 }));

        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xF0]), Ok(()));
        assert_eq!(v.feed(&[0x9F]), Ok(()));
        assert_eq!(v.feed(&[b'A', 0x98]), Err(Utf8Error { valid_up_to: 0 }));

        // The restricted second-byte ranges are checked across pieces too.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xED]), Ok(()));
        assert_eq!(v.feed(&[0xA0, 0x80]), Err(Utf8Error { valid_up_to: 0 }));

        // A new lead byte where a continuation byte was due.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xC3]), Ok(()));
        assert_eq!(v.feed(&[0xC3, 0xA9]), Err(Utf8Error { valid_up_to: 0 }));

        // The code point completes, then the rest of the piece is invalid.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xE2, 0x82]), Ok(()));
        assert_eq!(
            v.feed(&[0xAC, b'x', 0xFF]),
            Err(Utf8Error { valid_up_to: 2 })
        );
    }

    /// Autobahn 6.4.x: "κόσμε" is valid, then a sequence above U+10FFFF must be
    /// rejected at its second byte, whether or not it arrives in its own frame.
    #[test]
    fn autobahn_kosme_then_invalid() {
        // The bytes Autobahn sends; its "ό" is U+1F79 (E1 BD B9), not U+03CC.
        let kosme: &[u8] = &[
            0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5,
        ];
        assert_eq!(std::str::from_utf8(kosme), Ok("κ\u{1F79}σμε"));
        let mut message = kosme.to_vec();
        message.extend_from_slice(&[0xF4, 0x90, 0x80, 0x80]);
        message.extend_from_slice(b"edited");
        check_all_splits(&message, Err(kosme.len() + 1));

        // As three fragments: "κόσμε", F4, 90 80 80 65 64 69 74 65 64.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(kosme), Ok(()));
        assert_eq!(v.feed(&[0xF4]), Ok(()));
        assert_eq!(
            v.feed(&[0x90, 0x80, 0x80, b'e', b'd']),
            Err(Utf8Error { valid_up_to: 0 })
        );
    }

    /// All two-byte inputs, fed whole and split, against the brute-force reference.
    #[test]
    fn all_two_byte_inputs_match_reference() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let bytes = [a, b];
                let expected = match first_invalid_index(&bytes) {
                    Some(i) => Err(i),
                    None => Ok(std::str::from_utf8(&bytes).is_ok()),
                };
                assert_eq!(run(&[&bytes]), expected, "{bytes:x?}");
                assert_eq!(run(&[&bytes[..1], &bytes[1..]]), expected, "{bytes:x?}");
            }
        }
    }

    #[test]
    fn error_display() {
        let e = Utf8Error { valid_up_to: 3 };
        assert_eq!(e.to_string(), "invalid UTF-8 at byte 3 of the chunk");
        let _: &dyn std::error::Error = &e;
    }

    // ----- properties ------------------------------------------------------------

    /// Byte vectors that are mostly UTF-8: random strings' bytes, sometimes mixed with
    /// a few random bytes (which are often, but not always, invalid).
    fn mostly_utf8() -> impl Strategy<Value = Vec<u8>> {
        let segment = prop_oneof![
            6 => any::<String>().prop_map(String::into_bytes),
            1 => proptest::collection::vec(any::<u8>(), 1..4),
        ];
        proptest::collection::vec(segment, 0..8).prop_map(|segments| segments.concat())
    }

    /// Cuts `bytes` at the given (random) points.
    fn split_at_points<'a>(bytes: &'a [u8], points: &[proptest::sample::Index]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = points.iter().map(|ix| ix.index(bytes.len() + 1)).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The validator accepts the message iff std accepts it whole, and on failure
        /// the total number of accepted bytes is the failing byte index: the first `i`
        /// such that `bytes[..=i]` is a prefix of no valid UTF-8 string. In std's terms
        /// that is `valid_up_to` plus the length of the bad sequence's valid prefix
        /// (`error_len` if it starts with a lead byte, else 0).
        #[test]
        fn agrees_with_std_and_brute_force(
            bytes in mostly_utf8(),
            points in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
        ) {
            let chunks = split_at_points(&bytes, &points);
            let got = run(&chunks);
            let reference = first_invalid_index(&bytes);
            match std::str::from_utf8(&bytes) {
                Ok(_) => {
                    prop_assert_eq!(got, Ok(true));
                    prop_assert_eq!(reference, None);
                }
                Err(e) => match e.error_len() {
                    None => {
                        // Truncated: every byte is fine, but the message is unfinished.
                        prop_assert_eq!(got, Ok(false));
                        prop_assert_eq!(reference, None);
                    }
                    Some(error_len) => {
                        let start = e.valid_up_to();
                        let lead_is_valid = matches!(bytes[start], 0xC2..=0xF4);
                        let expected = start + if lead_is_valid { error_len } else { 0 };
                        prop_assert_eq!(reference, Some(expected));
                        prop_assert_eq!(got, Err(expected));
                    }
                },
            }

            // Byte by byte gives the same answer as the random split.
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(run(&singles), got);
        }
    }
}
