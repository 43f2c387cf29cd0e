//! The echo server's handlers: every message goes back to its sender, text as text and
//! binary as binary, byte for byte.

use super::{ConnId, Handler, MessageHandler};
use crate::protocol::MessageKind;
use crate::reactor::Ctx;

/// The streaming echo: each chunk is queued back as soon as it arrives, so a message of
/// any size costs no more memory than the reactor's buffers (the reactor's write
/// watermarks pause reading while the client is slow to take the echo).
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        kind: MessageKind,
        data: &[u8],
        end_of_message: bool,
    ) {
        ctx.send(conn, kind, data, end_of_message);
    }
}

/// The same echo through the message-level API: whole messages are buffered (up to the
/// size limit given to [`super::Messages`]) and sent back in one piece. It exists to
/// compare against the streaming echo and to exercise the message API.
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoMessages;

impl MessageHandler for EchoMessages {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, kind: MessageKind, message: &[u8]) {
        ctx.send(conn, kind, message, true);
    }
}
