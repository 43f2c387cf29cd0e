//! A server that speaks first: every period (a second by default) it pushes the time
//! to every client, from a timer of the event loop — no thread, no sleep.
//!
//! * The timer is set when the first client opens and set again each time it fires
//!   (timers do not repeat); when the last client leaves it is cancelled.
//! * A client whose queue is over its high watermark ([`Sent::Backpressure`]) is
//!   skipped until it drains ([`Handler::on_drain`]): a tick nobody reads is not worth
//!   queueing.
//!
//! ```text
//! cargo run --example ticker -- 127.0.0.1:9005 [PERIOD_MS]
//! python3 -m websockets ws://127.0.0.1:9005/
//! ```

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wsreactor::{
    Accept, CloseCode, Config, ConnId, Ctx, Handler, HttpResponse, MessageKind, Sent, Server,
    TimerId, UpgradeRequest,
};

/// The key of the one timer this handler sets (`on_timer` hears it back).
const TICK: u64 = 1;

/// The clients to tick, and the timer.
pub struct Ticker {
    period: Duration,
    clients: BTreeSet<ConnId>,
    /// Clients over their high watermark, skipped until they drain.
    behind: BTreeSet<ConnId>,
    /// The pending timer, while there are clients.
    timer: Option<TimerId>,
}

impl Ticker {
    /// Ticks every `period`.
    pub fn new(period: Duration) -> Self {
        Ticker {
            period,
            clients: BTreeSet::new(),
            behind: BTreeSet::new(),
            timer: None,
        }
    }
}

impl Handler for Ticker {
    type State = ();

    fn on_upgrade(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _request: &UpgradeRequest,
        _peer: SocketAddr,
    ) -> Result<Accept<()>, HttpResponse> {
        Ok(Accept::new(()))
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, _state: &mut ()) {
        self.clients.insert(conn);
        if self.timer.is_none() {
            self.timer = Some(ctx.set_timer(self.period, TICK));
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, key: u64) {
        debug_assert_eq!(key, TICK);
        // Milliseconds since the Unix epoch, as text.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let tick = now.as_millis().to_string();
        for &client in &self.clients {
            if self.behind.contains(&client) {
                continue;
            }
            if let Ok(Sent::Backpressure) = ctx.send(client, MessageKind::Text, tick.as_bytes()) {
                self.behind.insert(client);
            }
        }
        // The next tick: `period` after this batch of events (so the ticks drift by
        // however late the loop gets to them).
        self.timer = Some(ctx.set_timer(self.period, TICK));
    }

    fn on_drain(&mut self, _ctx: &mut Ctx<'_>, conn: ConnId, _state: &mut ()) {
        self.behind.remove(&conn);
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, _: (), _: CloseCode, _: &str) {
        self.clients.remove(&conn);
        self.behind.remove(&conn);
        if self.clients.is_empty() {
            // Nobody to tick: the loop may sleep until the next client.
            if let Some(timer) = self.timer.take() {
                ctx.cancel_timer(timer);
            }
        }
    }
}

/// Binds a ticker with `period` (what `main` and the tests share).
pub fn serve(config: Config, period: Duration) -> io::Result<Server<Ticker>> {
    Server::bind(config, Ticker::new(period))
}

fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9005".into());
    let period_ms: u64 = match args.next() {
        Some(ms) => ms.parse().map_err(io::Error::other)?,
        None => 1000,
    };
    let config = Config::builder()
        .addr(addr.parse().map_err(io::Error::other)?)
        .build()
        .map_err(io::Error::other)?;
    let server = serve(config, Duration::from_millis(period_ms.max(1)))?;
    println!("listening on ws://{}/", server.local_addr()?);
    server.run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;
    use tungstenite::Message;
    use wsreactor_testkit::raw;

    #[test]
    fn a_client_gets_ticks_each_later_than_the_last_and_the_timer_stops_with_no_clients() {
        let config = Config::builder()
            .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
            .build()
            .unwrap();
        let server = serve(config, Duration::from_millis(50)).unwrap();
        let addr = server.local_addr().unwrap();
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.run());

        for _client in 0..2 {
            let started = Instant::now();
            let mut client = raw::connect(&addr);
            let mut last = 0u128;
            for _tick in 0..3 {
                let Message::Text(tick) = client.read().unwrap() else {
                    panic!("a tick is text")
                };
                let tick: u128 = tick.parse().unwrap();
                assert!(tick > last, "{tick} after {last}");
                last = tick;
            }
            // Three periods at least, and not much more.
            let elapsed = started.elapsed();
            assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
            assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

            // The peer's close reaches `on_close` before the server answers it: once
            // the client has the answer, the ticker has no clients and no timer.
            client.close(None).unwrap();
            while client.read().is_ok() {}
            let (tx, rx) = mpsc::channel();
            let posted = handle.run_on(0, move |ticker, _ctx| {
                tx.send((ticker.clients.len(), ticker.timer.is_some()))
                    .unwrap()
            });
            posted.unwrap();
            assert_eq!(rx.recv().unwrap(), (0, false));
            // The second round: the next client starts the timer again.
        }
        handle.shutdown();
        thread.join().unwrap().unwrap();
    }
}
