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
//! cargo run --release --example chat -- 127.0.0.1:9003
//! ```
//! Then connect two clients to ws://127.0.0.1:9003/?name=ada and
//! ws://127.0.0.1:9003/?name=bob (e.g. `python3 -m websockets URL`) and talk.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use wsreactor::{
    Accept, CloseCode, Config, ConfigBuilder, ConnId, Ctx, Delivery, Handler, HttpResponse,
    MessageKind, Sent, Server, UpgradeRequest,
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
        // `/?name=ada`, taken as written (no percent-decoding), at most 32 bytes.
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

/// The room's limits, on `addr` (what `main` and the tests share).
pub fn config(addr: SocketAddr) -> ConfigBuilder {
    // Chat lines are short: anything over 64 KiB is refused with close 1009.
    Config::builder().addr(addr).max_message_size(64 * 1024)
}

/// Binds an empty room.
pub fn serve(config: Config) -> io::Result<Server<Chat>> {
    Server::bind(config, Chat::default())
}

fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // The address to listen on is the one argument (default 127.0.0.1:9003).
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9003".into());
    let config = config(addr.parse().map_err(io::Error::other)?)
        .build()
        .map_err(io::Error::other)?;
    let server = serve(config)?;
    println!("listening on ws://{}/", server.local_addr()?);
    server.run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::sync::mpsc;
    use std::thread::JoinHandle;
    use std::time::Duration;
    use tungstenite::{Message, WebSocket};

    /// The room on a free port, run on a thread of the test.
    fn start(
        config: ConfigBuilder,
    ) -> (
        SocketAddr,
        wsreactor::Handle<Chat>,
        JoinHandle<io::Result<()>>,
    ) {
        let server = serve(config.build().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let handle = server.handle();
        (addr, handle, std::thread::spawn(move || server.run()))
    }

    fn local() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// A member called `name`.
    fn join(addr: SocketAddr, name: &str) -> WebSocket<TcpStream> {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (socket, _) = tungstenite::client(format!("ws://{addr}/?name={name}"), stream).unwrap();
        socket
    }

    /// The next line `member` receives.
    fn line(member: &mut WebSocket<TcpStream>) -> String {
        match member.read().unwrap() {
            Message::Text(text) => text,
            other => panic!("expected a line, got {other:?}"),
        }
    }

    #[test]
    fn a_line_reaches_every_member_and_joins_and_leaves_are_announced() {
        let (addr, handle, thread) = start(config(local()));
        let mut ada = join(addr, "ada");
        assert_eq!(line(&mut ada), "* ada joined (1 here)");
        let mut bob = join(addr, "bob");
        assert_eq!(line(&mut ada), "* bob joined (2 here)");
        assert_eq!(line(&mut bob), "* bob joined (2 here)");

        ada.send(Message::text("hello, bob")).unwrap();
        assert_eq!(line(&mut ada), "ada: hello, bob");
        assert_eq!(line(&mut bob), "ada: hello, bob");

        bob.close(None).unwrap();
        while bob.read().is_ok() {}
        assert_eq!(line(&mut ada), "* bob left");

        // The room takes text only: binary is refused with close 1003.
        ada.send(Message::Binary(vec![1, 2, 3])).unwrap();
        match ada.read().unwrap() {
            Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1003),
            other => panic!("expected close 1003, got {other:?}"),
        }
        drop((ada, bob));
        handle.shutdown();
        thread.join().unwrap().unwrap();
    }

    #[test]
    fn memory_stays_flat_with_a_member_that_never_reads() {
        const HIGH: usize = 256 << 10;
        const LINES: usize = 20_000;
        const WINDOW: usize = 32;
        let (addr, handle, thread) = start(
            config(local())
                .write_high_watermark(HIGH)
                .write_low_watermark(64 << 10)
                .so_sndbuf(Some(64 << 10))
                .so_rcvbuf(Some(64 << 10)),
        );
        // The silent member joins, reads the answer to its upgrade, and nothing more
        // until the end. Its id is the room's only member now.
        let mut silent = join(addr, "silent");
        let (tx, rx) = mpsc::channel();
        handle
            .run_on(0, move |chat, _ctx| {
                tx.send(chat.members.iter().copied().collect::<Vec<_>>())
                    .unwrap()
            })
            .unwrap();
        let [silent_id] = rx.recv().unwrap()[..] else {
            panic!("one member expected")
        };

        let mut talker = join(addr, "talker");
        assert_eq!(line(&mut talker), "* talker joined (2 here)");
        // The talker keeps at most WINDOW lines in flight, and reads its echoes as it
        // goes: it keeps up, so it must get every line back.
        let (tx, samples) = mpsc::channel();
        let text = |i: usize| format!("{i:05} {}", "x".repeat(1024 - 6));
        for batch in (0..LINES).step_by(WINDOW) {
            let lines = batch..(batch + WINDOW).min(LINES);
            for i in lines.clone() {
                talker.write(Message::text(text(i))).unwrap();
            }
            talker.flush().unwrap();
            for i in lines {
                assert_eq!(line(&mut talker), format!("talker: {}", text(i)));
            }
            // How much the room holds for the silent member, seen on the server's
            // thread between two batches of events.
            let tx = tx.clone();
            handle
                .run_on(0, move |_chat, ctx| {
                    tx.send(ctx.queued_bytes(silent_id)).unwrap()
                })
                .unwrap();
        }
        drop(tx);
        let samples: Vec<usize> = samples.iter().map(|queued| queued.unwrap()).collect();
        assert_eq!(samples.len(), LINES.div_ceil(WINDOW));
        // The send that crossed the high watermark is the last one queued.
        let one_message = "talker: ".len() + 1024 + 4;
        let most = samples.iter().copied().max().unwrap();
        assert!(most <= HIGH + one_message, "{most} bytes queued");
        assert!(
            most > HIGH,
            "the silent member never met back-pressure ({most} bytes)"
        );

        // Now it reads: what was queued before it fell behind, then the count of
        // what it missed, which together make every line.
        assert_eq!(line(&mut silent), "* silent joined (1 here)");
        assert_eq!(line(&mut silent), "* talker joined (2 here)");
        let mut received = 0;
        let missed: usize = loop {
            let next = line(&mut silent);
            if let Some(missed) = next.strip_prefix("* you missed ") {
                break missed.strip_suffix(" lines").unwrap().parse().unwrap();
            }
            assert_eq!(next, format!("talker: {}", text(received)));
            received += 1;
        };
        assert!(missed > 0);
        assert_eq!(received + missed, LINES);
        drop((talker, silent));
        handle.shutdown();
        thread.join().unwrap().unwrap();
    }
}
