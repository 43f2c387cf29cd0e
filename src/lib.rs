//! wsreactor: an RFC 6455 WebSocket server on a single-threaded mio event loop, with
//! no async runtime, for applications that hold many connections and stream
//! messages of any size in bounded memory.
//!
//! The crate has two halves:
//!
//! * [`protocol`] is sans-IO: bytes and time go in, events and bytes come out. It knows
//!   every rule of RFC 6455 — the handshake, frames, masking, UTF-8, close codes, and
//!   the life of a connection ([`protocol::Session`]) — and nothing about sockets or
//!   clocks, so it is unit-tested and fuzzed in isolation.
//! * The server ([`Server`], [`Workers`]) owns the sockets: one `mio::Poll`, a slab of
//!   connections, a shared read buffer, per-connection write queues with watermarks,
//!   and timers. It moves bytes and time into the protocol half and calls the
//!   application's [`Handler`] with what comes out.
//!
//! ```text
//!  socket bytes -> Server (read) -> protocol::Session -> events -> Handler
//!                                                                    | Ctx::send
//!  socket bytes <- Server (write queue) <- protocol::encoder <-------+
//! ```
//!
//! An application implements [`Handler`]: it decides each upgrade before the 101
//! (with every header and the client's address), keeps typed state per connection,
//! and acts through the [`Ctx`] each call receives; [`Ctx::send`] says whether the
//! peer keeps up ([`Sent`]) and [`Handler::on_drain`] when it caught up. A [`Handle`]
//! does the same from other threads and stops the server.
//!
//! The streaming echo in a few lines ([`Echo`] is the same, with options):
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use wsreactor::protocol::MessageKind;
//! use wsreactor::{Accept, Config, ConnId, Ctx, Handler, HttpResponse, Server, UpgradeRequest};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     type State = ();
//!
//!     fn on_upgrade(&mut self, _: &mut Ctx<'_>, _: &UpgradeRequest, _: SocketAddr)
//!         -> Result<Accept<()>, HttpResponse> {
//!         Ok(Accept::new(()))
//!     }
//!
//!     fn on_data(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, _: &mut (),
//!                kind: MessageKind, data: &[u8], end_of_message: bool) {
//!         let _ = ctx.send_part(conn, kind, data, end_of_message);
//!     }
//! }
//!
//! let server = Server::bind(Config::default(), Echo)?;
//! server.run()?; // until a Handle shuts it down
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! `docs/LIBRARY.md` walks through the examples (`examples/`): authentication, a chat
//! room with bounded fan-out, timers, and feeding the server from another thread.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod echo;
mod handler;
mod http;
pub mod protocol;
mod reactor;

pub use echo::Echo;
pub use handler::{Accept, ConnId, Delivery, Handler, Sent, TimerId};
pub use http::{HttpRequest, HttpResponse};
pub use protocol::handshake::UpgradeRequest;
pub use protocol::{CloseCode, MessageKind, SendError};
pub use reactor::{
    Config, ConfigBuilder, ConfigError, Ctx, Handle, Metrics, Server, Snapshot, Stopped, Workers,
};
