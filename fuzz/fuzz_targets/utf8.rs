//! The incremental UTF-8 validator against `std::str::from_utf8` as the reference:
//! fed in arbitrary pieces it accepts exactly the inputs std accepts, and fails no
//! later than the first byte std rejects (and no earlier than std's valid prefix).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsreactor::protocol::utf8::Utf8Validator;

fuzz_target!(|data: &[u8]| {
    let [cut, bytes @ ..] = data else { return };
    let step = usize::from(*cut).max(1);
    let mut validator = Utf8Validator::default();
    let mut accepted = 0;
    let mut failed = false;
    for piece in bytes.chunks(step) {
        match validator.feed(piece) {
            Ok(()) => accepted += piece.len(),
            Err(e) => {
                assert!(e.valid_up_to < piece.len());
                accepted += e.valid_up_to;
                failed = true;
                break;
            }
        }
    }
    match std::str::from_utf8(bytes) {
        Ok(_) => assert!(!failed && validator.is_complete()),
        Err(e) => {
            let ok = !failed && !validator.is_complete() && e.error_len().is_none();
            assert!(failed || ok, "std rejects what the validator accepted");
            if failed {
                // Fail-fast: the bad byte is within the sequence std flags.
                assert!(accepted >= e.valid_up_to());
                assert!(accepted <= e.valid_up_to() + e.error_len().unwrap_or(0));
            }
        }
    }
});
