//! The sans-IO half: RFC 6455 as functions from bytes to events and back.
//!
//! Nothing in this module touches a socket, a clock or a thread. Every parser reports
//! progress (how many bytes it consumed, or that it needs more) instead of demanding a
//! whole input, and none of them panics on any input.

pub mod handshake;
pub mod mask;
pub mod utf8;
