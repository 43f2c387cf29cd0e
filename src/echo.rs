//! The echo, the server's main job: every message goes back to its sender, text as
//! text and binary as binary, byte for byte.

use crate::handler::{Accept, ConnId, Delivery, Handler};
use crate::http::HttpResponse;
use crate::protocol::handshake::UpgradeRequest;
use crate::protocol::MessageKind;
use crate::reactor::Ctx;
use std::net::SocketAddr;

/// Which subprotocols (RFC 6455 §1.9) an [`Echo`] accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subprotocols {
    /// None: the 101 names no subprotocol (the default).
    #[default]
    None,
    /// Whichever the client offers first.
    Any,
    /// The first of these (in this order of preference) that the client offers;
    /// none if it offers none of them.
    OneOf(Vec<String>),
}

impl Subprotocols {
    /// The subprotocol to answer `offered` with.
    pub fn choose<'a>(&self, offered: &'a [String]) -> Option<&'a str> {
        match self {
            Subprotocols::None => None,
            Subprotocols::Any => offered.first(),
            Subprotocols::OneOf(accepted) => accepted
                .iter()
                .find_map(|want| offered.iter().find(|offer| *offer == want)),
        }
        .map(String::as_str)
    }
}

/// The echo handler.
///
/// Streamed (the default), each chunk is queued back as soon as it arrives, so a
/// message of any size costs no more memory than the server's buffers (the write
/// watermarks pause reading while the client is slow to take the echo).
/// [`Echo::whole_messages`] echoes through whole messages instead, to compare and
/// to exercise that path.
#[derive(Clone, Debug, Default)]
pub struct Echo {
    whole: bool,
    subprotocols: Subprotocols,
}

impl Echo {
    /// The streaming echo, choosing no subprotocol.
    pub fn new() -> Self {
        Self::default()
    }

    /// Buffers each message whole (up to [`crate::Config::max_message_size`]) and
    /// sends it back in one piece.
    pub fn whole_messages(mut self) -> Self {
        self.whole = true;
        self
    }

    /// Which subprotocols to accept.
    pub fn subprotocols(mut self, subprotocols: Subprotocols) -> Self {
        self.subprotocols = subprotocols;
        self
    }
}

impl Handler for Echo {
    type State = ();

    fn delivery(&self) -> Delivery {
        if self.whole {
            Delivery::Whole
        } else {
            Delivery::Streamed
        }
    }

    fn on_upgrade(
        &mut self,
        _ctx: &mut Ctx<'_>,
        request: &UpgradeRequest,
        _peer: SocketAddr,
    ) -> Result<Accept<()>, HttpResponse> {
        let accept = Accept::new(());
        Ok(match self.subprotocols.choose(&request.protocols) {
            Some(protocol) => accept.protocol(protocol),
            None => accept,
        })
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        _state: &mut (),
        kind: MessageKind,
        data: &[u8],
        end_of_message: bool,
    ) {
        // Refused only once the connection is closing: then there is no one to
        // echo to. Back-pressure needs no answer here: above the high watermark the
        // server stops reading this connection until its queue drains.
        let _ = ctx.send_part(conn, kind, data, end_of_message);
    }

    fn on_message(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        _state: &mut (),
        kind: MessageKind,
        message: &[u8],
    ) {
        let _ = ctx.send(conn, kind, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn subprotocols_are_chosen_by_the_servers_preference_among_those_offered() {
        let offer = offered(&["mqtt", "chat", "echo"]);
        assert_eq!(Subprotocols::None.choose(&offer), None);
        assert_eq!(Subprotocols::Any.choose(&offer), Some("mqtt"));
        let list = Subprotocols::OneOf(offered(&["echo", "chat"]));
        assert_eq!(list.choose(&offer), Some("echo"));
        assert_eq!(list.choose(&offered(&["soap"])), None);
        assert_eq!(Subprotocols::Any.choose(&[]), None);
    }
}
