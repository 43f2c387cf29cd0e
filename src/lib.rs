//! wsreactor: an RFC 6455 WebSocket server on a single-threaded mio event loop.
//!
//! The crate has two halves:
//!
//! * [`protocol`] is sans-IO: bytes go in, events and bytes come out. It knows every
//!   rule of RFC 6455 and nothing about sockets or clocks, so it is unit-tested and
//!   fuzzed in isolation.
//! * [`reactor`] owns the sockets: one `mio::Poll`, a `Slab` of connections, a shared
//!   read buffer, per-connection write queues with watermarks, and timers. It parses
//!   nothing itself: it moves bytes and time into the protocol half and acts on the
//!   events that come out (answers pings, echoes close frames, closes TCP in the
//!   order §7.1.1 asks).
//!
//! [`app`] sits on top: the [`app::Handler`] trait the reactor calls, and the echo.
//!
//! ```text
//!  socket bytes -> reactor (read) -> protocol::Decoder -> events -> app::Handler
//!                                                                     |
//!  socket bytes <- reactor (write queue) <- protocol::encoder <-------+
//! ```
#![deny(missing_docs)]

pub mod app;
pub mod protocol;
pub mod reactor;

pub use reactor::config::{Config, ConfigBuilder, ConfigError};
pub use reactor::{Metrics, Server, Workers};
