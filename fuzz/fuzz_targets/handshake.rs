//! The handshake parser on arbitrary bytes: it never panics, a complete head never
//! claims more bytes than it was given, every error maps to a real HTTP status, and
//! the answer does not depend on how the head was cut across reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsreactor::protocol::handshake::{parse_request, reject, switching_protocols, Parsed, Request};

const MAX_HEAD: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let whole = parse_request(data, MAX_HEAD);
    match &whole {
        Ok(Parsed::Complete { request, head_len }) => {
            assert!(*head_len <= data.len() && *head_len <= MAX_HEAD);
            if let Request::Upgrade(upgrade) = request {
                let response =
                    switching_protocols(upgrade, upgrade.protocols.first().map(String::as_str), &[]);
                assert!(response.starts_with(b"HTTP/1.1 101 "));
            }
            // A reader that stopped at any earlier point saw a partial head, or
            // the same head (once all of it had arrived).
            for cut in 0..data.len() {
                match parse_request(&data[..cut], MAX_HEAD) {
                    Ok(Parsed::Partial) => assert!(cut < *head_len),
                    Ok(complete) => assert_eq!(&Ok(complete), &whole),
                    Err(e) => panic!("a prefix of an acceptable head failed: {e:?}"),
                }
            }
        }
        Ok(Parsed::Partial) => assert!(data.len() < MAX_HEAD),
        Err(error) => {
            assert!(matches!(error.status(), 400 | 405 | 426 | 431 | 505));
            assert!(!reject(error).is_empty());
        }
    }
});
