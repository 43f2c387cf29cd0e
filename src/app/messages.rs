//! The message-level API: whole messages, buffered up to a limit.

use super::{ConnId, Handler};
use crate::protocol::handshake::UpgradeRequest;
use crate::protocol::{CloseCode, MessageKind};
use crate::reactor::Ctx;
use std::collections::HashMap;

/// An application that wants each message whole.
pub trait MessageHandler {
    /// A connection completed the opening handshake.
    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, request: &UpgradeRequest) {
        let _ = (ctx, conn, request);
    }

    /// A complete message (text is valid UTF-8, so `std::str::from_utf8` cannot fail).
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, kind: MessageKind, message: &[u8]);

    /// The connection is closing or gone (see [`Handler::on_close`]).
    fn on_close(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, code: CloseCode, reason: &str) {
        let _ = (ctx, conn, code, reason);
    }
}

/// Adapts a [`MessageHandler`] to the streaming [`Handler`] by buffering each message.
///
/// The limit is enforced by the frame decoder from frame headers (close 1009), so a
/// buffer never grows past `max_message_size`, whatever a client claims or sends.
#[derive(Debug)]
pub struct Messages<M> {
    inner: M,
    max_message_size: u64,
    /// The message being assembled on each connection that is inside one.
    partial: HashMap<ConnId, Vec<u8>>,
}

impl<M: MessageHandler> Messages<M> {
    /// Buffers messages of up to `max_message_size` bytes for `inner`.
    pub fn new(inner: M, max_message_size: u64) -> Self {
        Messages {
            inner,
            max_message_size,
            partial: HashMap::new(),
        }
    }
}

impl<M: MessageHandler> Handler for Messages<M> {
    fn max_message_size(&self) -> Option<u64> {
        Some(self.max_message_size)
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, request: &UpgradeRequest) {
        self.inner.on_open(ctx, conn, request);
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        kind: MessageKind,
        data: &[u8],
        end_of_message: bool,
    ) {
        if end_of_message && !self.partial.contains_key(&conn) {
            // The common case: the whole message arrived in one chunk; no copy.
            self.inner.on_message(ctx, conn, kind, data);
            return;
        }
        let buffer = self.partial.entry(conn).or_default();
        buffer.extend_from_slice(data);
        if end_of_message {
            if let Some(message) = self.partial.remove(&conn) {
                self.inner.on_message(ctx, conn, kind, &message);
            }
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, code: CloseCode, reason: &str) {
        self.partial.remove(&conn);
        self.inner.on_close(ctx, conn, code, reason);
    }
}
