//! A chat room on the wsreactor library: every text message a member sends goes to
//! every member, prefixed with the sender's name — with per-connection state and a
//! fan-out bounded by the send result.
//!
//! * The name is chosen at the upgrade, from the query (`/?name=ada`), and kept as
//!   the connection's [`Handler::State`]: no map from ids to names.
//! * A member that does not read its messages would make the room's memory grow
//!   with every line the others send. The send result says when a member's queue
//!   is over the high watermark ([`Sent::Backpressure`]): from then on the member is
//!   skipped (it misses lines, and is told how many when it catches up, in
//!   [`Handler::on_drain`]), so the room's memory stays flat.
//!
//! ```text
//! cargo run --release --example chat -- 127.0.0.1:9002
//! ```
//! Then connect two clients to ws://127.0.0.1:9002/?name=ada and
//! ws://127.0.0.1:9002/?name=bob (e.g. `python3 -m websockets URL`) and talk.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use wsreactor::{
    Accept, CloseCode, Config, ConnId, Ctx, Delivery, Handler, HttpResponse, MessageKind, Sent,
    Server, UpgradeRequest,
};

/// The room: who is in it.
#[derive(Default)]
pub struct Chat {
    members: BTreeSet<ConnId>,
    /// Members over their high watermark, skipped until they drain, with the number
    /// of lines each has missed.
    behind: BTreeMap<ConnId, u64>,
}

/// What the room keeps per member.
pub struct Member {
    name: String,
}

impl Chat {
    /// Sends `line` to every member that keeps up; a member whose queue goes over
    /// its high watermark is skipped from the next line on.
    fn broadcast(&mut self, ctx: &mut Ctx<'_>, line: &str) {
        for &member in &self.members {
            if let Some(missed) = self.behind.get_mut(&member) {
                *missed += 1;
                continue;
            }
            if let Ok(Sent::Backpressure) = ctx.send(member, MessageKind::Text, line.as_bytes()) {
                self.behind.insert(member, 0);
            }
        }
    }
}

impl Handler for Chat {
    type State = Member;

    fn delivery(&self) -> Delivery {
        Delivery::Whole
    }

    fn on_upgrade(
        &mut self,
        _ctx: &mut Ctx<'_>,
        request: &UpgradeRequest,
        _peer: SocketAddr,
    ) -> Result<Accept<Member>, HttpResponse> {
        let name = request
            .query()
            .into_iter()
            .flat_map(|query| query.split('&'))
            .find_map(|pair| pair.strip_prefix("name="))
            .filter(|name| !name.is_empty() && name.len() <= 32)
            .unwrap_or("anonymous");
        Ok(Accept::new(Member {
            name: name.to_string(),
        }))
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, member: &mut Member) {
        self.members.insert(conn);
        let line = format!("* {} joined ({} here)", member.name, self.members.len());
        self.broadcast(ctx, &line);
    }

    fn on_message(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        member: &mut Member,
        kind: MessageKind,
        message: &[u8],
    ) {
        if kind != MessageKind::Text {
            let _ = ctx.close(
                conn,
                CloseCode::UNSUPPORTED_DATA,
                "this chat takes text only",
            );
            return;
        }
        // The decoder validated the UTF-8 already (RFC 6455 §8.1).
        let text = String::from_utf8_lossy(message);
        self.broadcast(ctx, &format!("{}: {text}", member.name));
    }

    fn on_drain(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, _member: &mut Member) {
        if let Some(missed) = self.behind.remove(&conn) {
            let line = format!("* you missed {missed} lines");
            let _ = ctx.send(conn, MessageKind::Text, line.as_bytes());
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, member: Member, _: CloseCode, _: &str) {
        self.members.remove(&conn);
        self.behind.remove(&conn);
        self.broadcast(ctx, &format!("* {} left", member.name));
    }
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // The address to listen on is the one argument (default 127.0.0.1:9002).
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into());
    let config = Config::builder()
        .addr(addr.parse().map_err(std::io::Error::other)?)
        // Chat lines are short: refuse anything over 64 KiB with close 1009.
        .max_message_size(64 * 1024)
        .build()
        .map_err(std::io::Error::other)?;
    let server = Server::bind(config, Chat::default())?;
    println!("chat on ws://{}/", server.local_addr()?);
    server.run()
}
