//! The application's side of the contract: what the server calls when something
//! happens, and the values those calls exchange.
//!
//! A [`Handler`] decides each upgrade ([`Handler::on_upgrade`], before the 101), keeps
//! a typed [`Handler::State`] per connection that the server owns and hands back on
//! every call, and hears of data either as a stream of chunks ([`Handler::on_data`])
//! or as whole messages ([`Handler::on_message`]), as [`Handler::delivery`] chooses.
//! It acts through the [`Ctx`] every call receives.

use crate::http::HttpResponse;
use crate::protocol::handshake::UpgradeRequest;
use crate::protocol::{CloseCode, MessageKind};
use crate::reactor::Ctx;
use std::net::SocketAddr;

/// Identifies one WebSocket connection for its whole life. Slots are reused, so the
/// id pairs the slot with a serial number: an id kept after its connection closed
/// never reaches the connection that took the slot next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) worker: u32,
    pub(crate) slot: u32,
    pub(crate) serial: u64,
}

impl ConnId {
    /// A number unique to this connection within its worker's run (for logs), the
    /// `#N` of the log lines.
    pub fn serial(self) -> u64 {
        self.serial
    }

    /// The worker (of a [`crate::Workers`] group; 0 for a lone server) that serves it.
    pub fn worker(self) -> usize {
        self.worker as usize
    }
}

/// How a handler receives data messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// As chunks, in the order they arrive ([`Handler::on_data`]): a message of any
    /// size costs no memory beyond the server's buffers.
    Streamed,
    /// Whole ([`Handler::on_message`]): the server buffers each message, up to
    /// [`crate::Config::max_message_size`]; a longer one fails the connection with
    /// 1009 from its frame headers, before its bytes are buffered (RFC 6455 §7.4.1).
    Whole,
}

/// The answer to an upgrade request that the application accepts: the connection's
/// state, and optionally a subprotocol and extra response headers.
///
/// ```
/// # use wsreactor::Accept;
/// let accept = Accept::new(42u32).protocol("chat.v2").header("Set-Cookie", "seen=1");
/// ```
#[derive(Debug)]
#[must_use]
pub struct Accept<S> {
    pub(crate) state: S,
    pub(crate) protocol: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
}

impl<S> Accept<S> {
    /// Accepts the connection with `state` as its [`Handler::State`].
    pub fn new(state: S) -> Self {
        Accept {
            state,
            protocol: None,
            headers: Vec::new(),
        }
    }

    /// Answers with `protocol` in `Sec-WebSocket-Protocol` (RFC 6455 §4.2.2 item
    /// 5.4). It must be one of [`UpgradeRequest::protocols`]: a choice the client did
    /// not offer is left out of the 101 (a client fails the connection on it, §4.1).
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Adds a header to the 101 response. A header whose name is not a token or
    /// whose value holds control characters is left out.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What [`Ctx::send`] and friends did with the data (the refusals are
/// [`crate::SendError`]s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sent {
    /// Queued (or written), and the connection's queue is within its high watermark.
    Queued,
    /// Queued, but the connection's queue is now above its high watermark
    /// ([`crate::Config::write_high_watermark`]): the peer is not keeping up. Stop
    /// sending to it until [`Handler::on_drain`], or close it.
    Backpressure,
}

/// Identifies a timer set with [`Ctx::set_timer`] or [`Ctx::set_conn_timer`], to
/// cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(pub(crate) u64);

/// What the server calls on the application. Only [`Handler::on_upgrade`] must be
/// written; every other method has a default that does nothing.
///
/// Calls for one connection come in order: `on_upgrade`, then (if accepted)
/// `on_open`, any number of `on_data` / `on_message`, `on_pong`, `on_drain` and
/// `on_conn_timer`, then `on_close` exactly once, whoever ended the connection — for
/// a close the handler started itself with [`Ctx::close`], right after the handler
/// call that started it returns. Pings from the peer, the closing handshake and
/// keepalive are the server's job.
pub trait Handler {
    /// What the server keeps for each open connection on the application's behalf:
    /// created by [`Handler::on_upgrade`], lent to every call about the connection,
    /// and given back by value to [`Handler::on_close`]. `()` if none is needed.
    type State;

    /// Whether data arrives as a stream of chunks or as whole messages (read once,
    /// when the server starts).
    fn delivery(&self) -> Delivery {
        Delivery::Streamed
    }

    /// A client asks to upgrade (RFC 6455 §4.2.1; the request has passed every
    /// check of the RFC). Called before the 101 is sent, with every header and the
    /// client's address: accept with the connection's state (and optionally a
    /// subprotocol and response headers), or refuse with an HTTP response (401,
    /// 403, 404, 429, …), after which the server closes the connection. A server
    /// that browsers reach should check [`UpgradeRequest::origin`] here (§10.2).
    fn on_upgrade(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: &UpgradeRequest,
        peer: SocketAddr,
    ) -> Result<Accept<Self::State>, HttpResponse>;

    /// The 101 is queued: the connection is open and may be sent to.
    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, state: &mut Self::State) {
        let _ = (ctx, conn, state);
    }

    /// With [`Delivery::Streamed`]: the next bytes of a message, as they arrived
    /// (unmasked; for text, valid UTF-8 so far — a chunk may end inside a character
    /// that the next chunk completes, and the message as a whole is valid, RFC 6455
    /// §8.1). `end_of_message` marks the last chunk.
    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        state: &mut Self::State,
        kind: MessageKind,
        data: &[u8],
        end_of_message: bool,
    ) {
        let _ = (ctx, conn, state, kind, data, end_of_message);
    }

    /// With [`Delivery::Whole`]: a complete message. Text is valid UTF-8, so
    /// `std::str::from_utf8(message)` cannot fail.
    fn on_message(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        state: &mut Self::State,
        kind: MessageKind,
        message: &[u8],
    ) {
        let _ = (ctx, conn, state, kind, message);
    }

    /// A pong arrived: the answer to a [`Ctx::ping`] (or to the server's keepalive
    /// ping, whose payload is `keepalive`), or an unsolicited one (RFC 6455 §5.5.3).
    fn on_pong(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        state: &mut Self::State,
        payload: &[u8],
    ) {
        let _ = (ctx, conn, state, payload);
    }

    /// A connection whose queue went above its high watermark ([`Sent::Backpressure`])
    /// has drained below its low watermark: it may be sent to again.
    fn on_drain(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, state: &mut Self::State) {
        let _ = (ctx, conn, state);
    }

    /// A timer set with [`Ctx::set_timer`] is due; `key` is the one it was set with.
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, key: u64) {
        let _ = (ctx, key);
    }

    /// A timer set with [`Ctx::set_conn_timer`] on `conn` is due (it does not fire
    /// after the connection closed).
    fn on_conn_timer(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        state: &mut Self::State,
        key: u64,
    ) {
        let _ = (ctx, conn, state, key);
    }

    /// The connection is closing or gone, and its state is given back: `code` is the
    /// peer's close code, the code the server (or the handler, through
    /// [`Ctx::close`]) closed or failed it with, or 1006 when it ended without a
    /// close frame (§7.1.5). No further calls come for `conn`.
    fn on_close(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        state: Self::State,
        code: CloseCode,
        reason: &str,
    ) {
        let _ = (ctx, conn, state, code, reason);
    }
}
