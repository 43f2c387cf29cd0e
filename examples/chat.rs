//! A broadcast chat room on the wsreactor library: every text message a client sends
//! goes to every connected client, prefixed with the sender's number.
//!
//! It shows that the reactor serves more than echo: the handler keeps its own state
//! (who is connected) and sends to other connections than the one that spoke.
//! It uses the message-level API, so each chat line arrives whole.
//!
//! ```text
//! cargo run --release --example chat -- 127.0.0.1:9002
//! ```
//! Then open http://127.0.0.1:9002/ in two browser tabs (the demo page works as a
//! chat client) and send text from one: both tabs receive it.

use std::collections::BTreeSet;
use wsreactor::app::{ConnId, MessageHandler, Messages};
use wsreactor::protocol::handshake::UpgradeRequest;
use wsreactor::protocol::{CloseCode, MessageKind};
use wsreactor::reactor::{Config, Ctx, Server};

/// The chat room: the set of connected clients.
#[derive(Default)]
struct Chat {
    members: BTreeSet<ConnId>,
}

impl Chat {
    fn broadcast(&self, ctx: &mut Ctx<'_>, line: &str) {
        for &member in &self.members {
            ctx.send(member, MessageKind::Text, line.as_bytes(), true);
        }
    }
}

impl MessageHandler for Chat {
    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, _request: &UpgradeRequest) {
        self.members.insert(conn);
        self.broadcast(
            ctx,
            &format!("* #{} joined ({} here)", conn.serial(), self.members.len()),
        );
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, kind: MessageKind, message: &[u8]) {
        if kind != MessageKind::Text {
            ctx.close(
                conn,
                CloseCode::UNSUPPORTED_DATA,
                "this chat takes text only",
            );
            self.members.remove(&conn);
            return;
        }
        // The decoder validated the UTF-8 already (RFC 6455 §8.1).
        let text = String::from_utf8_lossy(message);
        self.broadcast(ctx, &format!("#{}: {text}", conn.serial()));
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, _code: CloseCode, _reason: &str) {
        self.members.remove(&conn);
        self.broadcast(ctx, &format!("* #{} left", conn.serial()));
    }
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // The address to listen on is the one argument (default 127.0.0.1:9002).
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into());
    let addr = addr.parse().map_err(std::io::Error::other)?;
    let config = Config::builder()
        .addr(addr)
        .build()
        .map_err(std::io::Error::other)?;
    // Chat lines are short: refuse anything over 64 KiB with close 1009.
    let server = Server::bind(config, Messages::new(Chat::default(), 64 * 1024))?;
    println!("chat on ws://{}/", server.local_addr()?);
    server.run()
}
