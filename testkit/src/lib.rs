//! What wsreactor's tests, benches and tools share: deterministic payloads
//! ([`payload`]), hand-built frames and raw connections ([`raw`]), how the server
//! binary is found and started ([`launch`], [`process`]), messages of any size
//! streamed through a server and checked as they come back ([`stream`]), and the
//! process's open-file limit ([`sys`]).
//!
//! Nothing here depends on the `wsreactor` library, so that the tests' own frame
//! builders and readers cannot share a bug with the code under test.

pub mod launch;
pub mod payload;
pub mod process;
pub mod raw;
pub mod stream;
pub mod sys;

use std::net::SocketAddr;

/// A server under test, wherever it runs (a child process, or a thread of the test).
pub trait Listening {
    /// Where it listens.
    fn addr(&self) -> SocketAddr;

    /// `ws://ADDR/`.
    fn url(&self) -> String {
        format!("ws://{}/", self.addr())
    }
}

impl Listening for SocketAddr {
    fn addr(&self) -> SocketAddr {
        *self
    }
}
