//! A server fed from another thread: lines typed on stdin go to every connected
//! client; end of input (Ctrl-D) shuts the server down, with close 1001 to each.
//!
//! * The event loop owns the handler; other threads reach it through a [`Handle`],
//!   which posts commands to the loop and wakes it. Here a producer thread runs
//!   `feed.publish(ctx, line)` on the loop's thread for every line
//!   ([`Handle::run_on_each`]: on every worker; with one, it is `run_on(0, ...)`).
//! * It serves with [`Workers`]: `WORKERS` reactors, each on its own thread with its
//!   own subscribers, sharing the port. A worker's handler sees only its own
//!   connections, so a publication goes to each worker.
//! * A subscriber that cannot keep up (over its high watermark) is disconnected with
//!   1008: a feed's clients resynchronise when they reconnect, rather than the server
//!   holding an ever longer backlog for them.
//!
//! ```text
//! cargo run --example feed -- 127.0.0.1:9006 [WORKERS]
//! python3 -m websockets ws://127.0.0.1:9006/     # in other terminals
//! ```

use std::collections::BTreeSet;
use std::io::{self, BufRead};
use std::net::SocketAddr;
use wsreactor::{
    Accept, CloseCode, Config, ConnId, Ctx, Handle, Handler, HttpResponse, MessageKind, Sent,
    UpgradeRequest, Workers,
};

/// One worker's subscribers.
#[derive(Default)]
pub struct Feed {
    subscribers: BTreeSet<ConnId>,
}

impl Feed {
    /// Sends `line` to every subscriber of this worker (called on its thread, through
    /// the handle).
    pub fn publish(&mut self, ctx: &mut Ctx<'_>, line: &str) {
        for &conn in &self.subscribers {
            if let Ok(Sent::Backpressure) = ctx.send(conn, MessageKind::Text, line.as_bytes()) {
                // Its `on_close` follows once this call returns.
                let _ = ctx.close(conn, CloseCode::POLICY_VIOLATION, "too slow");
            }
        }
    }
}

impl Handler for Feed {
    type State = ();

    fn on_upgrade(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _request: &UpgradeRequest,
        _peer: SocketAddr,
    ) -> Result<Accept<()>, HttpResponse> {
        Ok(Accept::new(()))
    }

    fn on_open(&mut self, _ctx: &mut Ctx<'_>, conn: ConnId, _state: &mut ()) {
        self.subscribers.insert(conn);
    }

    // What subscribers send is ignored: `on_data` keeps its default, which does
    // nothing.

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, conn: ConnId, _: (), _: CloseCode, _: &str) {
        self.subscribers.remove(&conn);
    }
}

/// Binds `config.workers` reactors, each with an empty feed.
pub fn serve(config: Config) -> io::Result<Workers<Feed>> {
    Workers::bind(config, |_worker| Feed::default())
}

/// Publishes each line of `input` through `handle`; at the end of the input, shuts
/// the server down. Returns early if the server stopped.
pub fn produce(input: impl BufRead, handle: Handle<Feed>) {
    for line in input.lines() {
        let Ok(line) = line else { break };
        let published = handle.run_on_each(move |feed, ctx| feed.publish(ctx, &line));
        if published.is_err() {
            return; // `Stopped`: nobody is listening any more.
        }
    }
    handle.shutdown();
}

fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9006".into());
    let workers = match args.next() {
        Some(n) => n.parse().map_err(io::Error::other)?,
        None => 1,
    };
    let config = Config::builder()
        .addr(addr.parse().map_err(io::Error::other)?)
        .workers(workers)
        .build()
        .map_err(io::Error::other)?;
    let server = serve(config)?;
    println!("listening on ws://{}/", server.local_addr()?);
    let handle = server.handle();
    std::thread::spawn(move || produce(io::stdin().lock(), handle));
    // Until the producer shuts it down (or the process is killed: this program
    // handles no signals; server/src/main.rs shows how).
    server.run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};
    use tungstenite::Message;
    use wsreactor_testkit::raw;

    #[test]
    fn a_line_from_another_thread_reaches_every_client_and_shutdown_closes_them_with_1001() {
        let config = Config::builder()
            .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
            .workers(2)
            .shutdown_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let server = serve(config).unwrap();
        let addr = server.local_addr().unwrap();
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.run());

        // Open (the 101 is sent after `on_open`), wherever the kernel put them.
        let mut clients = [raw::connect(&addr), raw::connect(&addr)];
        let producer = {
            let handle = handle.clone();
            std::thread::spawn(move || {
                let input: &[u8] = b"first line\nsecond line\n";
                for line in input.lines() {
                    let line = line.unwrap();
                    handle
                        .run_on_each(move |feed, ctx| feed.publish(ctx, &line))
                        .unwrap();
                }
            })
        };
        producer.join().unwrap();
        for client in &mut clients {
            assert_eq!(client.read().unwrap(), Message::text("first line"));
            assert_eq!(client.read().unwrap(), Message::text("second line"));
        }

        // `Handle::send` reaches one connection, on whichever worker serves it.
        let (tx, rx) = mpsc::channel();
        handle
            .run_on_each(move |feed, _ctx| {
                tx.send(feed.subscribers.iter().copied().collect::<Vec<_>>())
                    .unwrap()
            })
            .unwrap();
        let ids: Vec<ConnId> = rx.iter().take(2).flatten().collect();
        assert_eq!(ids.len(), 2);
        for id in ids {
            handle.send(id, MessageKind::Text, "just for you").unwrap();
        }
        for client in &mut clients {
            assert_eq!(client.read().unwrap(), Message::text("just for you"));
        }

        // The end of the input: `produce` shuts the server down.
        let started = Instant::now();
        produce(&b""[..], handle.clone());
        for mut client in clients {
            match client.read().unwrap() {
                Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
                other => panic!("expected close 1001, got {other:?}"),
            }
            while client.read().is_ok() {} // answers the close, then sees the FIN
        }
        thread.join().unwrap().unwrap();
        // Every client answered: `run` did not wait for the shutdown timeout.
        assert!(started.elapsed() < Duration::from_secs(5));
        // A stopped server refuses commands, which ends a producer.
        assert!(handle.run_on_each(|_, _| {}).is_err());
    }
}
