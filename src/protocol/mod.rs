//! The sans-IO half: RFC 6455 as functions from bytes to events and back.
//!
//! Nothing in this module touches a socket, a clock or a thread. Every parser reports
//! progress (how many bytes it consumed, or that it needs more) instead of demanding a
//! whole input, and none of them panics on any input.
//!
//! | module | RFC 6455 | what it does |
//! |---|---|---|
//! | [`handshake`] | §4 | parses the HTTP upgrade request, builds the 101 or the error response |
//! | [`header`] | §5.2 | parses and writes frame headers |
//! | [`mask`] | §5.3 | XORs payloads with the client's 4-byte key |
//! | [`decoder`] | §5.4–§5.6 | the streaming state machine: bytes in, [`decoder::Event`]s out |
//! | [`utf8`] | §8.1 | incremental, fail-fast UTF-8 validation of text messages |
//! | [`close`] | §5.5.1, §7.4 | close codes and reasons |
//! | [`encoder`] | §5.4 | cuts outgoing messages into frames |
//! | [`session`] | §5.5, §7 | one open connection: pongs, closing, failing, keepalive |
//! | [`time`] | — | ticks: milliseconds the caller passes in, compared across the wrap |

pub mod close;
pub mod coding;
pub mod control;
pub mod decoder;
pub mod encoder;
pub mod error;
pub mod handshake;
pub mod header;
pub mod mask;
pub mod session;
pub mod time;
pub mod utf8;

pub use close::CloseFrame;
pub use coding::{CloseCode, MessageKind, OpCode};
pub use control::ControlPayload;
pub use decoder::{Decoder, Event, Limits, Role};
pub use error::ProtocolError;
pub use header::FrameHeader;
pub use session::{Closure, Deadline, Incoming, Output, SendError, Session, SessionConfig};
pub use time::Tick;
