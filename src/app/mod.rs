//! The application side: what the reactor calls when something happens on a connection.
//!
//! A [`Handler`] sees a message as a stream of data chunks, in the order they arrive, so
//! it never has to hold a whole message (the [`echo::Echo`] handler forwards each chunk
//! at once). Applications that want whole messages wrap a [`MessageHandler`] in
//! [`Messages`], which buffers up to a size limit.

pub mod echo;
mod messages;

pub use messages::{MessageHandler, Messages};

use crate::protocol::handshake::UpgradeRequest;
use crate::protocol::{CloseCode, MessageKind};
use crate::reactor::Ctx;

/// Identifies one WebSocket connection for its whole life. Slab slots are reused, so
/// the id pairs the slot with a serial number: an id kept after its connection closed
/// never reaches the connection that took the slot next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) slot: usize,
    pub(crate) serial: u64,
}

impl ConnId {
    /// A number unique to this connection within the server's run (for logs and maps).
    pub fn serial(self) -> u64 {
        self.serial
    }
}

/// What the reactor calls on the application. Every method has a default that does
/// nothing, except [`Handler::on_data`].
///
/// Calls for one connection come in order: `on_open`, any number of `on_data` (a
/// message is the chunks up to one with `end_of_message`), then `on_close` exactly
/// once, whoever ended the connection (for a close the handler started with
/// [`Ctx::close`], right after the handler call that started it returns). Pings,
/// pongs and the closing handshake are answered by the reactor.
pub trait Handler {
    /// Picks a subprotocol from those the client offered in `Sec-WebSocket-Protocol`
    /// (RFC 6455 §4.2.2 item 5.4). A choice that was not offered is ignored.
    fn select_protocol(&mut self, offered: &[String]) -> Option<String> {
        let _ = offered;
        None
    }

    /// The largest message this handler accepts, if it buffers whole messages: the
    /// reactor then fails longer ones with 1009 from their frame headers, before any
    /// of their bytes are buffered. Streaming handlers return `None`.
    fn max_message_size(&self) -> Option<u64> {
        None
    }

    /// A connection completed the opening handshake.
    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, request: &UpgradeRequest) {
        let _ = (ctx, conn, request);
    }

    /// The next bytes of a message, as they arrived (already unmasked, and for text
    /// already accepted by the UTF-8 validator). `end_of_message` marks the last chunk.
    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        kind: MessageKind,
        data: &[u8],
        end_of_message: bool,
    );

    /// The connection is closing or gone: `code` is the peer's close code, the code
    /// the server (or the handler, through [`Ctx::close`]) closed or failed it with, or
    /// 1006 when the TCP connection dropped without a close frame. No further calls
    /// come for `conn`.
    fn on_close(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, code: CloseCode, reason: &str) {
        let _ = (ctx, conn, code, reason);
    }
}
