//! The library's application API through real sockets: the upgrade hook, accept
//! options, per-connection state, send results and back-pressure, pings, timers, the
//! `Handle`, worker groups, HTTP routes, whole-message delivery and closes started by
//! the handler.
//!
//! Every server runs in this process on a free loopback port; the clients are raw TCP
//! with hand-built frames (or `tungstenite`). Handlers report what they are called
//! with through a channel, and the tests assert on those calls and on the bytes the
//! clients read. Waits are bounded by `WAIT`, and nothing is asserted about speed.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wsreactor::{
    Accept, CloseCode, ConnId, Ctx, Delivery, Handle, Handler, HttpResponse, MessageKind,
    SendError, Sent, Server, Stopped, UpgradeRequest, Workers,
};

/// How long any single wait of a test may take before it fails.
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------
// The probe: a handler that reports every call, with a few commands for the tests.
// ---------------------------------------------------------------------------------

/// A handler call, as the [`Probe`] saw it (`name` is the connection's state).
#[derive(Clone, Debug, PartialEq)]
enum Event {
    Open {
        conn: ConnId,
        name: String,
    },
    Data {
        conn: ConnId,
        name: String,
        kind: MessageKind,
        data: Vec<u8>,
        end: bool,
    },
    Message {
        conn: ConnId,
        name: String,
        kind: MessageKind,
        data: Vec<u8>,
    },
    Pong {
        conn: ConnId,
        name: String,
        payload: Vec<u8>,
    },
    Drain {
        conn: ConnId,
        name: String,
    },
    Timer(u64),
    ConnTimer {
        conn: ConnId,
        name: String,
        key: u64,
    },
    Close {
        conn: ConnId,
        name: String,
        messages: u32,
        code: u16,
        reason: String,
    },
    /// What the `close me` command's calls returned.
    Closing {
        conn: ConnId,
        close: Result<(), SendError>,
        close_again: Result<(), SendError>,
        send_after: Result<Sent, SendError>,
        ping_after: Result<Sent, SendError>,
    },
    /// What the `flood NAME` command did: how many 64 KiB messages it queued, and
    /// the result that stopped it.
    Flooded {
        sent: u32,
        last: Option<Result<Sent, SendError>>,
    },
}

impl Event {
    fn conn(&self) -> Option<ConnId> {
        match self {
            Event::Open { conn, .. }
            | Event::Data { conn, .. }
            | Event::Message { conn, .. }
            | Event::Pong { conn, .. }
            | Event::Drain { conn, .. }
            | Event::ConnTimer { conn, .. }
            | Event::Close { conn, .. }
            | Event::Closing { conn, .. } => Some(*conn),
            Event::Timer(_) | Event::Flooded { .. } => None,
        }
    }
}

/// The state the probe keeps per connection: a name from the query (`?name=ada`),
/// and how many messages arrived.
#[derive(Debug)]
struct Member {
    name: String,
    messages: u32,
    /// A streamed message is under way (its first chunk has arrived).
    mid_message: bool,
}

/// Reports every call on `events`. Messages that are commands (a whole text message
/// in one chunk): `close me` closes the connection with 4001 from the handler,
/// `flood NAME` sends 64 KiB messages to member NAME until back-pressure, `panic`
/// panics.
struct Probe {
    events: Sender<Event>,
    whole: bool,
    /// The worker of a group this handler serves (0 for a lone server).
    worker: usize,
    /// Open members by name.
    members: HashMap<String, ConnId>,
    /// Free for jobs run with `Handle::run_on` to read and write.
    note: String,
}

impl Probe {
    /// A streaming probe.
    fn streamed(events: Sender<Event>) -> Self {
        Probe {
            events,
            whole: false,
            worker: 0,
            members: HashMap::new(),
            note: String::new(),
        }
    }

    /// A probe that takes whole messages.
    fn whole(events: Sender<Event>) -> Self {
        Probe {
            whole: true,
            ..Probe::streamed(events)
        }
    }

    fn report(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn command(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, kind: MessageKind, message: &[u8]) {
        if kind != MessageKind::Text {
            return;
        }
        let text = std::str::from_utf8(message).expect("text is UTF-8");
        if text == "close me" {
            let close = ctx.close(conn, CloseCode(4001), "as you wish");
            let close_again = ctx.close(conn, CloseCode(4002), "again");
            let send_after = ctx.send(conn, MessageKind::Text, b"too late");
            let ping_after = ctx.ping(conn, b"too late");
            self.report(Event::Closing {
                conn,
                close,
                close_again,
                send_after,
                ping_after,
            });
        } else if text == "panic" {
            panic!("boom: the handler of worker {} panics", self.worker);
        } else if let Some(target) = text.strip_prefix("flood ") {
            self.flood(ctx, target);
        }
    }

    /// Sends 64 KiB binary messages (message `i` filled with byte `i % 251`) to
    /// member `target` until a send says something else than `Queued`.
    fn flood(&mut self, ctx: &mut Ctx<'_>, target: &str) {
        let to = *self.members.get(target).expect("the flood target is open");
        let mut sent = 0;
        let mut last = None;
        for i in 0..1000u32 {
            let message = vec![(i % 251) as u8; 64 << 10];
            match ctx.send(to, MessageKind::Binary, &message) {
                Ok(Sent::Queued) => sent += 1,
                other => {
                    if other.is_ok() {
                        sent += 1;
                    }
                    last = Some(other);
                    break;
                }
            }
        }
        self.report(Event::Flooded { sent, last });
    }
}

/// The value of `key` in the query of `request`, if any.
fn query_value<'r>(request: &'r UpgradeRequest, key: &str) -> Option<&'r str> {
    request
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

impl Handler for Probe {
    type State = Member;

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
    ) -> Result<Accept<Member>, HttpResponse> {
        let name = query_value(request, "name").unwrap_or("anonymous");
        Ok(Accept::new(Member {
            name: name.to_string(),
            messages: 0,
            mid_message: false,
        }))
    }

    fn on_open(&mut self, _ctx: &mut Ctx<'_>, conn: ConnId, state: &mut Member) {
        self.members.insert(state.name.clone(), conn);
        self.report(Event::Open {
            conn,
            name: state.name.clone(),
        });
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        state: &mut Member,
        kind: MessageKind,
        data: &[u8],
        end_of_message: bool,
    ) {
        let whole_in_one_chunk = end_of_message && !state.mid_message;
        state.mid_message = !end_of_message;
        if end_of_message {
            state.messages += 1;
        }
        self.report(Event::Data {
            conn,
            name: state.name.clone(),
            kind,
            data: data.to_vec(),
            end: end_of_message,
        });
        if whole_in_one_chunk {
            self.command(ctx, conn, kind, data);
        }
    }

    fn on_message(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        state: &mut Member,
        kind: MessageKind,
        message: &[u8],
    ) {
        state.messages += 1;
        self.report(Event::Message {
            conn,
            name: state.name.clone(),
            kind,
            data: message.to_vec(),
        });
        self.command(ctx, conn, kind, message);
    }

    fn on_pong(&mut self, _ctx: &mut Ctx<'_>, conn: ConnId, state: &mut Member, payload: &[u8]) {
        self.report(Event::Pong {
            conn,
            name: state.name.clone(),
            payload: payload.to_vec(),
        });
    }

    fn on_drain(&mut self, _ctx: &mut Ctx<'_>, conn: ConnId, state: &mut Member) {
        self.report(Event::Drain {
            conn,
            name: state.name.clone(),
        });
    }

    fn on_timer(&mut self, _ctx: &mut Ctx<'_>, key: u64) {
        self.report(Event::Timer(key));
    }

    fn on_conn_timer(&mut self, _ctx: &mut Ctx<'_>, conn: ConnId, state: &mut Member, key: u64) {
        self.report(Event::ConnTimer {
            conn,
            name: state.name.clone(),
            key,
        });
    }

    fn on_close(
        &mut self,
        _ctx: &mut Ctx<'_>,
        conn: ConnId,
        state: Member,
        code: CloseCode,
        reason: &str,
    ) {
        if self.members.get(&state.name) == Some(&conn) {
            self.members.remove(&state.name);
        }
        self.report(Event::Close {
            conn,
            name: state.name,
            messages: state.messages,
            code: code.0,
            reason: reason.to_string(),
        });
    }
}

/// What a probe has reported so far.
struct Events {
    rx: Receiver<Event>,
    seen: Vec<Event>,
}

impl Events {
    fn new() -> (Sender<Event>, Events) {
        let (tx, rx) = mpsc::channel();
        (
            tx,
            Events {
                rx,
                seen: Vec::new(),
            },
        )
    }

    /// Takes in whatever has been reported by now.
    fn drain(&mut self) -> &[Event] {
        self.seen.extend(self.rx.try_iter());
        &self.seen
    }

    /// Waits until some event reported so far matches `what`; returns it.
    fn wait_for(&mut self, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + WAIT;
        loop {
            self.drain();
            if let Some(event) = self.seen.iter().find(|e| matches(e)) {
                return event.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(event) => self.seen.push(event),
                Err(_) => panic!("no {what} within {WAIT:?}; seen: {:#?}", self.seen),
            }
        }
    }

    /// Waits for the `on_open` of the connection named `name`; returns its id.
    fn opened(&mut self, name: &str) -> ConnId {
        let event = self.wait_for(
            &format!("on_open of {name}"),
            |e| matches!(e, Event::Open { name: n, .. } if n == name),
        );
        event.conn().expect("an open event has a connection")
    }

    /// Waits for the `on_close` of `conn`; returns it.
    fn closed(&mut self, conn: ConnId) -> Event {
        self.wait_for(
            &format!("on_close of {conn:?}"),
            |e| matches!(e, Event::Close { conn: c, .. } if *c == conn),
        )
    }

    /// Waits for `on_timer(key)`.
    fn timer(&mut self, key: u64) {
        self.wait_for(&format!("on_timer({key})"), |e| *e == Event::Timer(key));
    }

    /// The events about `conn` seen so far.
    fn of(&mut self, conn: ConnId) -> Vec<Event> {
        self.drain();
        self.seen
            .iter()
            .filter(|e| e.conn() == Some(conn))
            .cloned()
            .collect()
    }

    fn count(&mut self, matches: impl Fn(&Event) -> bool) -> usize {
        self.drain().iter().filter(|e| matches(e)).count()
    }
}

// ---------------------------------------------------------------------------------
// Client side.
// ---------------------------------------------------------------------------------

/// An upgrade request for `path` with `extra` headers after the required ones.
fn upgrade_request(path: &str, extra: &[(&str, &str)]) -> String {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// A raw client upgraded at `path`.
fn open(server: &impl Listening, path: &str) -> TcpStream {
    let mut stream = raw_connect(server);
    let head = http_exchange(&mut stream, upgrade_request(path, &[]).as_bytes());
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    stream
}

/// Sends `request` on a new connection and reads the whole response, up to the
/// server's end of the connection (every plain HTTP answer closes it).
fn http_to_end(server: &impl Listening, request: &str) -> String {
    let mut stream = raw_connect(server);
    stream.write_all(request.as_bytes()).expect("write request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response to its end");
    response
}

/// The head (without the blank line) and the body of a response.
fn split_response(response: &str) -> (&str, &str) {
    response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {response:?}"))
}

fn send_frame(stream: &mut TcpStream, fin: bool, opcode: u8, payload: &[u8]) {
    stream
        .write_all(&masked_frame(fin, opcode, payload))
        .expect("write frame");
}

fn send_text(stream: &mut TcpStream, text: &str) {
    send_frame(stream, true, TEXT, text.as_bytes());
}

fn close_body(code: u16, reason: &str) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(reason.as_bytes());
    body
}

/// Sends a close frame with `code` and `reason`.
fn send_close(stream: &mut TcpStream, code: u16, reason: &str) {
    send_frame(stream, true, CLOSE, &close_body(code, reason));
}

/// Closes from the client's side: a close, the server's echo of it, then EOF.
fn close_from_client(stream: &mut TcpStream, code: u16, reason: &str) {
    send_close(stream, code, reason);
    assert_eq!(read_close(stream), (Some(code), reason.to_string()));
    expect_eof(stream);
}

/// Runs `job` on worker `worker` of the server behind `handle` and returns what it
/// returned.
fn on_server<H: 'static, R: Send + 'static>(
    handle: &Handle<H>,
    worker: usize,
    job: impl FnOnce(&mut H, &mut Ctx<'_>) -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    handle
        .run_on(worker, move |handler, ctx| {
            let _ = tx.send(job(handler, ctx));
        })
        .expect("the server is running");
    rx.recv_timeout(WAIT).expect("the job ran on the server")
}

/// Waits until the server holds `count` sockets (a closed connection's slot is
/// free for the next one only once its socket is gone).
fn wait_sockets<H: Handler>(server: &TestServer<H>, count: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let open = server.metrics.snapshot().sockets_open;
        if open == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} sockets open, not {count}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits up to `within` for `thread` to end; returns what it returned.
fn join_within<T>(thread: JoinHandle<T>, within: Duration) -> T {
    let deadline = Instant::now() + within;
    while !thread.is_finished() {
        assert!(Instant::now() < deadline, "the thread did not end in time");
        std::thread::sleep(Duration::from_millis(5));
    }
    thread.join().expect("the thread did not panic")
}

// ---------------------------------------------------------------------------------
// 1. The upgrade hook.
// ---------------------------------------------------------------------------------

/// The origins a [`Gate`] lets in (requests without an `Origin` come from
/// non-browser clients and are let in too).
const ALLOWED_ORIGINS: &[&str] = &["https://app.example"];

/// What the upgrade hook was called with.
#[derive(Debug)]
struct Seen {
    peer: SocketAddr,
    path: String,
    headers: Vec<(String, String)>,
}

/// Lets in requests with `?token=secret` or `Authorization: Bearer secret` from an
/// allowed origin; reports every request it sees.
struct Gate {
    seen: Sender<Seen>,
}

impl Handler for Gate {
    type State = ();

    fn on_upgrade(
        &mut self,
        _ctx: &mut Ctx<'_>,
        request: &UpgradeRequest,
        peer: SocketAddr,
    ) -> Result<Accept<()>, HttpResponse> {
        let _ = self.seen.send(Seen {
            peer,
            path: request.path.clone(),
            headers: request.headers.clone(),
        });
        if let Some(origin) = request.origin.as_deref() {
            if !ALLOWED_ORIGINS.contains(&origin) {
                return Err(HttpResponse::new(403).text("origin not allowed\n"));
            }
        }
        let by_query = query_value(request, "token") == Some("secret");
        let by_header = request.header("authorization") == Some("Bearer secret");
        if !(by_query || by_header) {
            return Err(HttpResponse::new(401)
                .header("WWW-Authenticate", "Bearer realm=\"api\"")
                .text("a token is required\n"));
        }
        Ok(Accept::new(()))
    }
}

fn gate() -> (TestServer<Gate>, Receiver<Seen>) {
    let (tx, rx) = mpsc::channel();
    (TestServer::start(config(), Gate { seen: tx }), rx)
}

/// The response head to an upgrade request for `path` with `extra` headers: the
/// head of a 101 (the connection stays open), or the whole refusal.
fn upgrade_answer(server: &impl Listening, path: &str, extra: &[(&str, &str)]) -> String {
    let request = upgrade_request(path, extra);
    let mut stream = raw_connect(server);
    let head = http_exchange(&mut stream, request.as_bytes());
    if head.starts_with("HTTP/1.1 101 ") {
        return head;
    }
    let mut rest = String::new();
    stream
        .read_to_string(&mut rest)
        .expect("a refusal ends the connection");
    head + &rest
}

#[test]
fn an_upgrade_without_the_token_is_refused_with_401_a_challenge_and_a_body() {
    let (server, _seen) = gate();
    let refused: [(&str, &[(&str, &str)]); 5] = [
        ("/", &[]),
        ("/?token=wrong", &[]),
        ("/?tokens=secret", &[]),
        ("/", &[("Authorization", "Bearer nope")]),
        ("/", &[("Authorization", "Basic c2VjcmV0")]),
    ];
    for (path, headers) in refused {
        let response = upgrade_answer(&server, path, headers);
        let (head, body) = split_response(&response);
        assert!(
            head.starts_with("HTTP/1.1 401 "),
            "{path} {headers:?}: {head}"
        );
        assert!(
            head.contains("\r\nWWW-Authenticate: Bearer realm=\"api\""),
            "{head}"
        );
        assert!(head.contains("\r\nContent-Length: 20"), "{head}");
        assert!(!head.contains("Sec-WebSocket-Accept"), "{head}");
        assert_eq!(body, "a token is required\n");
    }
    let accepted: [(&str, &[(&str, &str)]); 3] = [
        ("/?token=secret", &[]),
        ("/chat?room=1&token=secret", &[]),
        ("/", &[("Authorization", "Bearer secret")]),
    ];
    for (path, headers) in accepted {
        let head = upgrade_answer(&server, path, headers);
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{path} {headers:?}: {head}"
        );
        assert!(head.contains("\r\nSec-WebSocket-Accept: "), "{head}");
    }
}

#[test]
fn an_origin_outside_the_allow_list_is_refused_with_403_even_with_the_token() {
    let (server, _seen) = gate();
    for origin in ["https://evil.example", "https://app.example.evil", "null"] {
        let response = upgrade_answer(&server, "/?token=secret", &[("Origin", origin)]);
        let (head, body) = split_response(&response);
        assert!(
            head.starts_with("HTTP/1.1 403 Forbidden\r\n"),
            "{origin}: {head}"
        );
        assert_eq!(body, "origin not allowed\n");
    }
    let head = upgrade_answer(
        &server,
        "/?token=secret",
        &[("Origin", "https://app.example")],
    );
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    // A client that sends no Origin (not a browser) is judged by its token alone.
    let head = upgrade_answer(&server, "/?token=secret", &[]);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
}

#[test]
fn the_upgrade_hook_sees_the_peer_address_the_target_and_every_header() {
    let (server, seen) = gate();
    let mut stream = raw_connect(&server);
    let extra = [
        ("Cookie", "session=abc123; theme=dark"),
        ("X-Request-Id", "  42  "),
        ("Authorization", "Bearer secret"),
    ];
    let request = upgrade_request("/rooms/7?x=1", &extra);
    let head = http_exchange(&mut stream, request.as_bytes());
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let call = seen.recv_timeout(WAIT).expect("the hook was called");
    assert_eq!(call.peer, stream.local_addr().expect("client address"));
    assert_eq!(call.peer.ip().to_string(), "127.0.0.1");
    assert_eq!(call.path, "/rooms/7?x=1");
    let expected: Vec<(String, String)> = [
        ("Host", "localhost"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("Cookie", "session=abc123; theme=dark"),
        ("X-Request-Id", "42"),
        ("Authorization", "Bearer secret"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    assert_eq!(call.headers, expected);
    assert!(seen.try_recv().is_err(), "one request, one call");
}

// ---------------------------------------------------------------------------------
// 2. Accept options: subprotocol and extra headers.
// ---------------------------------------------------------------------------------

/// Accepts with the subprotocol named by `?pick=`, and with extra headers, one of
/// which tries to forge another header and one of which has no valid name.
struct Picky;

impl Handler for Picky {
    type State = ();

    fn on_upgrade(
        &mut self,
        _ctx: &mut Ctx<'_>,
        request: &UpgradeRequest,
        _peer: SocketAddr,
    ) -> Result<Accept<()>, HttpResponse> {
        let mut accept = Accept::new(())
            .header("X-Served-By", "api-test")
            .header("X-Forged", "a\r\nSet-Cookie: evil=1")
            .header("X-Bell", "ding\x07")
            .header("Bad Name", "x")
            .header("Set-Cookie", "seen=1; HttpOnly");
        if let Some(pick) = query_value(request, "pick") {
            accept = accept.protocol(pick);
        }
        Ok(accept)
    }
}

#[test]
fn the_101_names_the_subprotocol_the_handler_picked_among_those_offered() {
    let server = TestServer::start(config(), Picky);
    let offer = [("Sec-WebSocket-Protocol", "a, b")];
    for pick in ["a", "b"] {
        let head = upgrade_answer(&server, &format!("/?pick={pick}"), &offer);
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert_eq!(
            head.matches("Sec-WebSocket-Protocol").count(),
            1,
            "one protocol header: {head}"
        );
        assert!(
            head.contains(&format!("\r\nSec-WebSocket-Protocol: {pick}\r\n")),
            "{head}"
        );
    }
    // A real client agrees: it checks that the protocol was one it offered.
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/?pick=b",
        server.addr
    ))
    .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        // Without the space: tungstenite 0.24 splits its own offer on "," without
        // trimming, so it would not recognise "b" in "a, b".
        "a,b".parse().expect("header value"),
    );
    let stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let (mut socket, response) = tungstenite::client(request, stream).expect("handshake");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().expect("ASCII")),
        Some("b")
    );
    let _ = socket.close(None);
}

#[test]
fn a_subprotocol_that_was_not_offered_is_left_out_of_the_101() {
    let server = TestServer::start(config(), Picky);
    let head = upgrade_answer(&server, "/?pick=c", &[("Sec-WebSocket-Protocol", "a, b")]);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(!head.contains("Sec-WebSocket-Protocol"), "{head}");
    // Nor is one picked when nothing was offered.
    let head = upgrade_answer(&server, "/?pick=a", &[]);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(!head.contains("Sec-WebSocket-Protocol"), "{head}");
}

#[test]
fn extra_accept_headers_appear_in_the_101_unless_their_value_or_name_is_unsafe() {
    let server = TestServer::start(config(), Picky);
    let head = upgrade_answer(&server, "/", &[]);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("\r\nX-Served-By: api-test\r\n"), "{head}");
    assert!(head.contains("\r\nSet-Cookie: seen=1; HttpOnly"), "{head}");
    assert!(!head.contains("X-Forged"), "{head}");
    assert!(!head.contains("evil"), "{head}");
    assert!(!head.contains("X-Bell"), "{head}");
    assert!(!head.contains("Bad Name"), "{head}");
    // Every line of the head is a well-formed header after the status line.
    for line in head.trim_end().lines().skip(1) {
        let (name, _) = line.split_once(": ").expect("name: value");
        assert!(!name.is_empty() && !name.contains(' '), "{line:?}");
    }
}

// ---------------------------------------------------------------------------------
// 3. Per-connection state.
// ---------------------------------------------------------------------------------

#[test]
fn state_from_on_upgrade_is_lent_to_every_call_and_given_back_by_on_close() {
    let (tx, mut events) = Events::new();
    let server = TestServer::start(config(), Probe::streamed(tx));
    let names = ["ada", "bob", "cy"];
    let mut clients: Vec<(TcpStream, ConnId)> = names
        .iter()
        .map(|name| {
            let stream = open(&server, &format!("/?name={name}"));
            let conn = events.opened(name);
            (stream, conn)
        })
        .collect();
    let ids: Vec<ConnId> = clients.iter().map(|(_, c)| *c).collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    // ada sends 1 message, bob 2, cy 3, interleaved; each in two fragments.
    for round in 0..3 {
        for (i, (stream, _)) in clients.iter_mut().enumerate() {
            if round <= i {
                send_frame(stream, false, TEXT, names[i].as_bytes());
                send_frame(stream, true, CONTINUATION, format!(" {round}").as_bytes());
            }
        }
    }
    for (i, (stream, conn)) in clients.iter_mut().enumerate() {
        close_from_client(stream, 1000, &format!("bye {}", names[i]));
        let close = events.closed(*conn);
        assert_eq!(
            close,
            Event::Close {
                conn: *conn,
                name: names[i].to_string(),
                messages: i as u32 + 1,
                code: 1000,
                reason: format!("bye {}", names[i]),
            }
        );
    }
    for (i, conn) in ids.iter().enumerate() {
        let mut messages = Vec::new();
        let mut current = Vec::new();
        for event in events.of(*conn) {
            if let Event::Data {
                name, data, end, ..
            } = event
            {
                assert_eq!(name, names[i], "on_data of {conn:?} got another's state");
                current.extend_from_slice(&data);
                if end {
                    messages.push(String::from_utf8(std::mem::take(&mut current)).unwrap());
                }
            }
        }
        let expected: Vec<String> = (0..=i).map(|r| format!("{} {r}", names[i])).collect();
        assert_eq!(messages, expected);
        let closes = events.count(|e| matches!(e, Event::Close { conn: c, .. } if c == conn));
        assert_eq!(closes, 1, "on_close once for {conn:?}");
    }
}

#[test]
fn state_is_lent_to_on_message_with_whole_delivery_for_concurrent_connections() {
    let (tx, mut events) = Events::new();
    let server = TestServer::start(config(), Probe::whole(tx));
    let mut a = open(&server, "/?name=left");
    let a_id = events.opened("left");
    let mut b = open(&server, "/?name=right");
    let b_id = events.opened("right");
    send_frame(&mut a, false, TEXT, b"from ");
    send_frame(&mut b, false, BINARY, b"from ");
    send_frame(&mut a, true, CONTINUATION, b"left");
    send_frame(&mut b, true, CONTINUATION, b"right");
    let got_a = events.wait_for(
        "left's message",
        |e| matches!(e, Event::Message { conn, .. } if *conn == a_id),
    );
    let got_b = events.wait_for(
        "right's message",
        |e| matches!(e, Event::Message { conn, .. } if *conn == b_id),
    );
    assert_eq!(
        got_a,
        Event::Message {
            conn: a_id,
            name: "left".into(),
            kind: MessageKind::Text,
            data: b"from left".to_vec()
        }
    );
    assert_eq!(
        got_b,
        Event::Message {
            conn: b_id,
            name: "right".into(),
            kind: MessageKind::Binary,
            data: b"from right".to_vec()
        }
    );
    drop(a); // no close frame: 1006
    close_from_client(&mut b, 4321, "done");
    match events.closed(a_id) {
        Event::Close {
            name,
            messages,
            code,
            ..
        } => assert_eq!((name.as_str(), messages, code), ("left", 1, 1006)),
        other => panic!("{other:?}"),
    }
    match events.closed(b_id) {
        Event::Close {
            name,
            messages,
            code,
            reason,
            ..
        } => assert_eq!(
            (name.as_str(), messages, code, reason.as_str()),
            ("right", 1, 4321, "done")
        ),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------
// 4. Send results.
// ---------------------------------------------------------------------------------

#[test]
fn sends_to_a_client_that_never_reads_report_backpressure_and_on_drain_follows_once() {
    let (tx, mut events) = Events::new();
    let server = TestServer::start(
        config()
            .write_high_watermark(256 << 10)
            .write_low_watermark(64 << 10)
            .so_sndbuf(Some(16 << 10)),
        Probe::whole(tx),
    );
    let mut reader = open(&server, "/?name=reader");
    let reader_id = events.opened("reader");
    let mut driver = open(&server, "/?name=driver");
    let driver_id = events.opened("driver");
    // The driver's message makes the handler send to the reader, which reads nothing.
    send_text(&mut driver, "flood reader");
    let flooded = events.wait_for("the flood", |e| matches!(e, Event::Flooded { .. }));
    let Event::Flooded { sent, last } = flooded else {
        unreachable!()
    };
    assert_eq!(last, Some(Ok(Sent::Backpressure)), "after {sent} sends");
    // Over 256 KiB queued: at least 4 messages of 64 KiB were sent.
    assert!(sent >= 4, "{sent}");
    assert_eq!(
        events.count(|e| matches!(e, Event::Drain { .. })),
        0,
        "nothing drained while the reader reads nothing"
    );
    // The reader catches up: every message arrives whole and in order.
    let mut controls = Vec::new();
    for i in 0..sent {
        let (opcode, data) = read_message(&mut reader, &mut controls);
        assert_eq!(opcode, BINARY);
        assert_eq!(data.len(), 64 << 10, "message {i}");
        assert!(data.iter().all(|&b| b == (i % 251) as u8), "message {i}");
    }
    assert!(controls.is_empty(), "{controls:?}");
    events.wait_for(
        "on_drain of the reader",
        |e| matches!(e, Event::Drain { conn, .. } if *conn == reader_id),
    );
    // A round trip through the reader: any second on_drain would come before it.
    send_text(&mut reader, "after");
    events.wait_for("the reader's message", |e| {
        matches!(e, Event::Message { conn, data, .. } if *conn == reader_id && data == b"after")
    });
    let drains =
        |conn: ConnId| move |e: &Event| matches!(e, Event::Drain { conn: c, .. } if *c == conn);
    assert_eq!(events.count(drains(reader_id)), 1, "on_drain exactly once");
    assert_eq!(events.count(drains(driver_id)), 0);
    // Drained, the reader may be sent to again without back-pressure.
    let result = on_server(&server.handle, 0, move |_, ctx| {
        ctx.send(reader_id, MessageKind::Text, b"welcome back")
    });
    assert_eq!(result, Ok(Sent::Queued));
    assert_eq!(
        read_message(&mut reader, &mut controls),
        (TEXT, b"welcome back".to_vec())
    );
}

#[test]
fn a_whole_send_or_a_part_of_the_other_kind_is_refused_while_a_streamed_message_is_open() {
    let (tx, mut events) = Events::new();
    let server = TestServer::start(config(), Probe::streamed(tx));
    let mut client = open(&server, "/?name=c");
    let conn = events.opened("c");
    let first = on_server(&server.handle, 0, move |_, ctx| {
        [
            ctx.send_part(conn, MessageKind::Text, b"str", false),
            ctx.send(conn, MessageKind::Text, b"whole text"),
            ctx.send(conn, MessageKind::Binary, b"whole binary"),
            ctx.send_part(conn, MessageKind::Binary, b"other kind", false),
            ctx.send_part(conn, MessageKind::Binary, b"other kind", true),
        ]
    });
    assert_eq!(
        first,
        [
            Ok(Sent::Queued),
            Err(SendError::MessageOpen),
            Err(SendError::MessageOpen),
            Err(SendError::MessageOpen),
            Err(SendError::MessageOpen),
        ]
    );
    // The message stays open across handler calls, and a ping may go out inside it.
    let second = on_server(&server.handle, 0, move |_, ctx| {
        [
            ctx.send_part(conn, MessageKind::Text, b"eam", false),
            ctx.ping(conn, b"inside"),
            ctx.send(conn, MessageKind::Binary, b"still refused"),
            ctx.send_part(conn, MessageKind::Text, b"ed", true),
            ctx.send(conn, MessageKind::Binary, b"next"),
        ]
    });
    assert_eq!(
        second,
        [
            Ok(Sent::Queued),
            Ok(Sent::Queued),
            Err(SendError::MessageOpen),
            Ok(Sent::Queued),
            Ok(Sent::Queued),
        ]
    );
    let frames: Vec<ServerFrame> = (0..5)
        .map(|_| read_frame(&mut client).expect("a frame"))
        .collect();
    let frame = |fin, opcode, payload: &[u8]| ServerFrame {
        fin,
        opcode,
        payload: payload.to_vec(),
    };
    assert_eq!(
        frames,
        [
            frame(false, TEXT, b"str"),
            frame(false, CONTINUATION, b"eam"),
            frame(true, PING, b"inside"),
            frame(true, CONTINUATION, b"ed"),
            frame(true, BINARY, b"next"),
        ]
    );
    close_from_client(&mut client, 1000, "");
}

#[test]
fn sends_after_ctx_close_and_to_a_connection_that_is_gone_are_refused_as_closed() {
    let (tx, mut events) = Events::new();
    let server = TestServer::start(config(), Probe::streamed(tx));
    // Closed by the handler: refused at once, within the same call.
    let mut closing = open(&server, "/?name=closing");
    let closing_id = events.opened("closing");
    let after_close = on_server(&server.handle, 0, move |_, ctx| {
        let close = ctx.close(closing_id, CloseCode::NORMAL, "done");
        (
            close,
            ctx.send(closing_id, MessageKind::Text, b"late"),
            ctx.send_part(closing_id, MessageKind::Text, b"late", true),
            ctx.ping(closing_id, b"late"),
            ctx.close(closing_id, CloseCode::NORMAL, "again"),
            ctx.queued_bytes(closing_id),
        )
    });
    assert_eq!(
        after_close,
        (
            Ok(()),
            Err(SendError::Closed),
            Err(SendError::Closed),
            Err(SendError::Closed),
            Err(SendError::Closed),
            None
        )
    );
    assert_eq!(read_close(&mut closing), (Some(1000), "done".into()));
    send_close(&mut closing, 1000, "done");
    expect_eof(&mut closing);
    drop(closing);
    wait_sockets(&server, 0);
    // Gone: the client closed, and a new connection takes the freed slot.
    let mut gone = open(&server, "/?name=gone");
    let gone_id = events.opened("gone");
    close_from_client(&mut gone, 1000, "");
    drop(gone);
    events.closed(gone_id);
    wait_sockets(&server, 0);
    let mut next = open(&server, "/?name=next");
    let next_id = events.opened("next");
    assert_ne!(next_id, gone_id);
    let results = on_server(&server.handle, 0, move |_, ctx| {
        (
            ctx.send(gone_id, MessageKind::Text, b"to the old id"),
            ctx.send_part(gone_id, MessageKind::Binary, b"to the old id", false),
            ctx.ping(gone_id, b"old"),
            ctx.close(gone_id, CloseCode::NORMAL, ""),
            ctx.queued_bytes(gone_id),
            ctx.send(next_id, MessageKind::Text, b"to the new one"),
        )
    });
    assert_eq!(
        results,
        (
            Err(SendError::Closed),
            Err(SendError::Closed),
            Err(SendError::Closed),
            Err(SendError::Closed),
            None,
            Ok(Sent::Queued)
        )
    );
    // What was meant for the old id did not reach the new connection.
    let mut controls = Vec::new();
    assert_eq!(
        read_message(&mut next, &mut controls),
        (TEXT, b"to the new one".to_vec())
    );
    assert!(controls.is_empty(), "{controls:?}");
    // Nor does a handle's send to the old id (the server is running: Ok).
    assert_eq!(
        server.handle.send(gone_id, MessageKind::Text, "old"),
        Ok(())
    );
    server
        .handle
        .send(next_id, MessageKind::Text, "fence")
        .expect("running");
    assert_eq!(
        read_message(&mut next, &mut controls),
        (TEXT, b"fence".to_vec())
    );
}

// ---------------------------------------------------------------------------------
// 5. Pings.
// ---------------------------------------------------------------------------------

#[test]
fn ctx_ping_reaches_the_client_and_its_pong_comes_back_through_on_pong() {
    let (tx, mut events) = Events::new();
    let server = TestServer::start(config(), Probe::streamed(tx));
    let mut client = open(&server, "/?name=p");
    let conn = events.opened("p");
    let results = on_server(&server.handle, 0, move |_, ctx| {
        (
            ctx.ping(conn, b"t1"),
            ctx.ping(conn, &[b'x'; 126]),
            ctx.ping(conn, &[b'y'; 125]),
        )
    });
    assert_eq!(
        results,
        (Ok(Sent::Queued), Err(SendError::TooLong), Ok(Sent::Queued))
    );
    let ping = read_frame(&mut client).expect("ping");
    assert_eq!(
        (ping.fin, ping.opcode, &ping.payload[..]),
        (true, PING, &b"t1"[..])
    );
    let ping = read_frame(&mut client).expect("second ping");
    assert_eq!((ping.opcode, ping.payload), (PING, vec![b'y'; 125]));
    send_frame(&mut client, true, PONG, b"t1");
    let pong = events.wait_for("on_pong", |e| matches!(e, Event::Pong { .. }));
    assert_eq!(
        pong,
        Event::Pong {
            conn,
            name: "p".into(),
            payload: b"t1".to_vec()
        }
    );
    // The client's own ping is answered by the server, without the handler.
    send_frame(&mut client, true, PING, b"c1");
    let answer = read_frame(&mut client).expect("pong");
    assert_eq!((answer.opcode, answer.payload), (PONG, b"c1".to_vec()));
    close_from_client(&mut client, 1000, "");
    events.closed(conn);
    assert_eq!(events.count(|e| matches!(e, Event::Pong { .. })), 1);
}

// ---------------------------------------------------------------------------------
// 6. Timers.
// ---------------------------------------------------------------------------------

/// Re-arms a zero-delay timer from every `on_timer`, and echoes.
struct Spinner {
    fired: u64,
}

impl Handler for Spinner {
    type State = ();

    fn on_upgrade(
        &mut self,
        ctx: &mut Ctx<'_>,
        _: &UpgradeRequest,
        _: SocketAddr,
    ) -> Result<Accept<()>, HttpResponse> {
        ctx.set_timer(Duration::ZERO, 0);
        Ok(Accept::new(()))
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, key: u64) {
        self.fired += 1;
        ctx.set_timer(Duration::ZERO, key);
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        _: &mut (),
        kind: MessageKind,
        data: &[u8],
        end_of_message: bool,
    ) {
        let _ = ctx.send_part(conn, kind, data, end_of_message);
    }
}

#[test]
fn a_timer_re_armed_without_delay_fires_once_a_turn_and_the_server_keeps_serving() {
    let server = TestServer::start(config(), Spinner { fired: 0 });
    let mut stream = raw_upgrade(&server);
    for round in 0..20u8 {
        stream
            .write_all(&masked_frame(true, TEXT, &[round]))
            .unwrap();
        assert_eq!(read_frame(&mut stream).expect("echo").payload, [round]);
    }
    let fired = on_server(&server.handle, 0, |spinner: &mut Spinner, _| spinner.fired);
    assert!(fired > 0, "the timer fired");
}

#[test]
fn set_timer_calls_on_timer_once_with_its_key_and_cancel_timer_prevents_the_call() {
    let (tx, mut events) = Events::new();
    let server = TestServer::start(config(), Probe::streamed(tx));
    let (fires, cancelled_late) = on_server(&server.handle, 0, |_, ctx| {
        let fires = ctx.set_timer(Duration::from_millis(50), 7);
        let cancelled = ctx.set_timer(Duration::from_millis(50), 8);
        ctx.cancel_timer(cancelled);
        let cancelled_late = ctx.set_timer(Duration::from_millis(500), 9);
        (fires, cancelled_late)
    });
    // Cancelled from a later call, before it is due; the fence is due after it would
    // have been, and timers fire in the order of their deadlines.
    on_server(&server.handle, 0, move |_, ctx| {
        ctx.cancel_timer(cancelled_late);
        ctx.set_timer(Duration::from_millis(600), 1000);
    });
    events.timer(1000);
    assert_eq!(events.count(|e| *e == Event::Timer(7)), 1);
    assert_eq!(events.count(|e| *e == Event::Timer(8)), 0);
    assert_eq!(events.count(|e| *e == Event::Timer(9)), 0);
    // Cancelling a timer that fired already is ignored, and it never fires again.
    on_server(&server.handle, 0, move |_, ctx| {
        ctx.cancel_timer(fires);
        ctx.set_timer(Duration::from_millis(100), 1001);
    });
    events.timer(1001);
    assert_eq!(events.count(|e| *e == Event::Timer(7)), 1);
    assert_eq!(events.count(|e| matches!(e, Event::Timer(_))), 3);
}

#[test]
fn set_conn_timer_calls_on_conn_timer_with_the_state_and_never_after_the_close() {
    let (tx, mut events) = Events::new();
    let server = TestServer::start(config(), Probe::streamed(tx));
    let _ada = open(&server, "/?name=ada");
    let ada = events.opened("ada");
    let _bob = open(&server, "/?name=bob");
    let bob = events.opened("bob");
    let mut cy_client = open(&server, "/?name=cy");
    let cy = events.opened("cy");
    on_server(&server.handle, 0, move |_, ctx| {
        ctx.set_conn_timer(ada, Duration::from_millis(50), 1);
        let bobs = ctx.set_conn_timer(bob, Duration::from_millis(50), 2);
        ctx.cancel_timer(bobs);
        // cy is closed by the handler before its timer is due.
        ctx.set_conn_timer(cy, Duration::from_millis(50), 3);
        ctx.close(cy, CloseCode::NORMAL, "closed first")
            .expect("open");
        ctx.set_timer(Duration::from_millis(200), 1000);
    });
    events.timer(1000);
    let conn_timers: Vec<Event> = events
        .drain()
        .iter()
        .filter(|e| matches!(e, Event::ConnTimer { .. }))
        .cloned()
        .collect();
    assert_eq!(
        conn_timers,
        [Event::ConnTimer {
            conn: ada,
            name: "ada".into(),
            key: 1
        }]
    );
    assert_eq!(
        read_close(&mut cy_client),
        (Some(1000), "closed first".into())
    );
    send_close(&mut cy_client, 1000, "");
    expect_eof(&mut cy_client);
    drop(cy_client);
    wait_sockets(&server, 2);
    // A connection the peer closed gets no call either, not even through the
    // connection that takes its slot next.
    let mut dave_client = open(&server, "/?name=dave");
    let dave = events.opened("dave");
    close_from_client(&mut dave_client, 1000, "");
    drop(dave_client);
    events.closed(dave);
    wait_sockets(&server, 2);
    let _eve = open(&server, "/?name=eve");
    let eve = events.opened("eve");
    on_server(&server.handle, 0, move |_, ctx| {
        ctx.set_conn_timer(dave, Duration::from_millis(50), 4);
        ctx.set_conn_timer(eve, Duration::from_millis(50), 5);
        ctx.set_timer(Duration::from_millis(200), 1001);
    });
    events.timer(1001);
    let conn_timers: Vec<Event> = events
        .drain()
        .iter()
        .filter(|e| matches!(e, Event::ConnTimer { .. }))
        .cloned()
        .collect();
    assert_eq!(
        conn_timers,
        [
            Event::ConnTimer {
                conn: ada,
                name: "ada".into(),
                key: 1
            },
            Event::ConnTimer {
                conn: eve,
                name: "eve".into(),
                key: 5
            }
        ]
    );
}

// ---------------------------------------------------------------------------------
// 7. The handle.
// ---------------------------------------------------------------------------------

#[test]
fn a_handle_on_another_thread_sends_to_and_closes_a_connection() {
    let (tx, mut events) = Events::new();
    let server = TestServer::start(config(), Probe::streamed(tx));
    let mut client = open(&server, "/?name=h");
    let conn = events.opened("h");
    let handle = server.handle.clone();
    let sender = std::thread::spawn(move || {
        (
            handle.send(conn, MessageKind::Text, "hi"),
            handle.send(conn, MessageKind::Binary, vec![1u8, 2, 3]),
        )
    });
    assert_eq!(join_within(sender, WAIT), (Ok(()), Ok(())));
    let mut controls = Vec::new();
    assert_eq!(
        read_message(&mut client, &mut controls),
        (TEXT, b"hi".to_vec())
    );
    assert_eq!(
        read_message(&mut client, &mut controls),
        (BINARY, vec![1, 2, 3])
    );
    let handle = server.handle.clone();
    let closer = std::thread::spawn(move || handle.close(conn, CloseCode(4000), "bye"));
    assert_eq!(join_within(closer, WAIT), Ok(()));
    assert_eq!(read_close(&mut client), (Some(4000), "bye".into()));
    send_close(&mut client, 4000, "bye");
    expect_eof(&mut client);
    match events.closed(conn) {
        Event::Close { code, reason, .. } => assert_eq!((code, reason.as_str()), (4000, "bye")),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        events.count(|e| matches!(e, Event::Close { .. })),
        1,
        "on_close once"
    );
}

#[test]
fn run_on_runs_a_job_on_the_server_thread_with_the_handler_and_a_ctx() {
    let (tx, mut events) = Events::new();
    let server = TestServer::start(config(), Probe::streamed(tx));
    let mut client = open(&server, "/?name=ada");
    let conn = events.opened("ada");
    let handle = server.handle.clone();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        handle
            .run_on(0, move |probe: &mut Probe, ctx: &mut Ctx<'_>| {
                probe.note = "set by a job".into();
                let _ = done_tx.send((
                    std::thread::current().name().map(str::to_string),
                    probe.members.get("ada").copied(),
                    ctx.send(conn, MessageKind::Text, b"from a job"),
                ));
            })
            .expect("running");
    });
    let (thread, member, sent) = done_rx.recv_timeout(WAIT).expect("the job ran");
    assert_eq!(thread.as_deref(), Some("test-server"));
    assert_eq!(member, Some(conn));
    assert_eq!(sent, Ok(Sent::Queued));
    let mut controls = Vec::new();
    assert_eq!(
        read_message(&mut client, &mut controls),
        (TEXT, b"from a job".to_vec())
    );
    // The handler the next job sees is the one the first changed.
    let note = on_server(&server.handle, 0, |probe: &mut Probe, _| probe.note.clone());
    assert_eq!(note, "set by a job");
    // A lone server has worker 0 only.
    assert_eq!(server.handle.workers(), 1);
    assert_eq!(server.handle.run_on(1, |_, _| {}), Err(Stopped));
}

#[test]
fn shutdown_closes_every_client_with_1001_and_afterwards_handle_calls_are_stopped() {
    let (tx, mut events) = Events::new();
    let server = TestServer::start(config(), Probe::streamed(tx));
    let mut conns = Vec::new();
    let mut clients = Vec::new();
    for name in ["one", "two", "three"] {
        let mut stream = open(&server, &format!("/?name={name}"));
        conns.push(events.opened(name));
        clients.push(std::thread::spawn(move || {
            let close = read_close(&mut stream);
            send_close(&mut stream, 1001, "");
            expect_eof(&mut stream);
            close
        }));
    }
    let handle = server.handle.clone();
    server.shutdown(WAIT); // asserts that `run` returned Ok
    for client in clients {
        let (code, _reason) = join_within(client, WAIT);
        assert_eq!(code, Some(1001));
    }
    for conn in conns {
        match events.closed(conn) {
            Event::Close { code, .. } => assert_eq!(code, 1001),
            other => panic!("{other:?}"),
        }
    }
    let conn = events.opened("one");
    assert_eq!(handle.send(conn, MessageKind::Text, "late"), Err(Stopped));
    assert_eq!(handle.close(conn, CloseCode::NORMAL, "late"), Err(Stopped));
    assert_eq!(handle.run_on(0, |_, _| {}), Err(Stopped));
    assert_eq!(handle.run_on_each(|_, _| {}), Err(Stopped));
    handle.shutdown(); // stopped already: nothing to do, and no panic
}

// ---------------------------------------------------------------------------------
// 8. Workers.
// ---------------------------------------------------------------------------------

/// A group of `count` probes (worker `w`'s `worker` field is `w`) running on a thread.
fn workers(
    count: usize,
    whole: bool,
) -> (
    SocketAddr,
    Handle<Probe>,
    JoinHandle<std::io::Result<()>>,
    Events,
) {
    let (tx, events) = Events::new();
    let config = config().workers(count).build().expect("valid config");
    let group = Workers::bind(config, |worker| Probe {
        worker,
        whole,
        ..Probe::streamed(tx.clone())
    })
    .expect("bind the workers");
    let addr = group.local_addr().expect("address");
    let handle = group.handle();
    let thread = std::thread::spawn(move || group.run());
    (addr, handle, thread, events)
}

#[test]
fn run_on_each_runs_once_per_worker_and_shutdown_stops_the_whole_group() {
    let (addr, handle, thread, _events) = workers(2, false);
    assert_eq!(handle.workers(), 2);
    let (tx, rx) = mpsc::channel();
    handle
        .run_on_each(move |probe: &mut Probe, _ctx: &mut Ctx<'_>| {
            let thread = std::thread::current().name().map(str::to_string);
            let _ = tx.send((probe.worker, thread));
        })
        .expect("running");
    // A job after it on each worker: commands run in order, so once both of these
    // have run, every run of the first job has too.
    let fences: Vec<usize> = (0..2)
        .map(|worker| on_server(&handle, worker, |probe: &mut Probe, _| probe.worker))
        .collect();
    assert_eq!(fences, [0, 1]);
    let mut runs: Vec<(usize, Option<String>)> = rx.try_iter().collect();
    runs.sort();
    assert_eq!(
        runs,
        [
            (0, Some("wsreactor-0".to_string())),
            (1, Some("wsreactor-1".to_string()))
        ]
    );
    // A client is served by the group until the shutdown, which closes it with 1001.
    let mut client = open(&addr, "/?name=w");
    handle.shutdown();
    assert_eq!(read_close(&mut client).0, Some(1001));
    send_close(&mut client, 1001, "");
    expect_eof(&mut client);
    drop(client); // the worker waits for the client's end of the connection
    join_within(thread, WAIT).expect("the group ran and stopped cleanly");
    assert_eq!(handle.run_on_each(|_, _| {}), Err(Stopped));
    assert_eq!(handle.run_on(1, |_, _| {}), Err(Stopped));
}

#[test]
fn a_handler_panic_on_one_worker_stops_the_group_and_run_reports_it() {
    let (addr, handle, thread, mut events) = workers(2, true);
    // Connect until each worker serves one client (the kernel picks the worker).
    let mut by_worker: [Option<TcpStream>; 2] = [None, None];
    for i in 0..200 {
        let stream = open(&addr, &format!("/?name=c{i}"));
        let conn = events.opened(&format!("c{i}"));
        let slot = &mut by_worker[conn.worker()];
        if slot.is_none() {
            *slot = Some(stream);
        } else {
            let mut stream = stream;
            close_from_client(&mut stream, 1000, "");
        }
        if by_worker.iter().all(Option::is_some) {
            break;
        }
    }
    let [Some(mut on_0), Some(mut on_1)] = by_worker else {
        panic!("200 connections all went to one worker");
    };
    send_text(&mut on_1, "panic");
    // The other worker shuts down gracefully: its client gets 1001.
    assert_eq!(read_close(&mut on_0).0, Some(1001));
    send_close(&mut on_0, 1001, "");
    expect_eof(&mut on_0);
    drop(on_0);
    // The panicking worker's sockets went with it.
    expect_eof(&mut on_1);
    let error = join_within(thread, WAIT).expect_err("a worker panicked");
    let message = error.to_string();
    assert!(message.contains("worker 1"), "{message}");
    assert!(
        message.contains("boom: the handler of worker 1 panics"),
        "{message}"
    );
    assert_eq!(handle.run_on(0, |_, _| {}), Err(Stopped));
}

// ---------------------------------------------------------------------------------
// 9. HTTP routes.
// ---------------------------------------------------------------------------------

#[test]
fn http_routes_answer_plain_requests_and_head_gets_the_headers_without_the_body() {
    let (tx, mut events) = Events::new();
    let server = Server::bind(config().build().expect("valid"), Probe::streamed(tx))
        .expect("bind")
        .http(|request| match request.resource_path() {
            "/hello" => HttpResponse::new(200)
                .header("X-Route", "hello")
                .text(format!("hello, {}\n", request.query().unwrap_or("world"))),
            "/agent" => HttpResponse::new(200).text(request.header("user-agent").unwrap_or("-")),
            _ => HttpResponse::not_found(),
        });
    let server = TestServer::run(server);
    let get = http_to_end(
        &server,
        "GET /hello?you HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    let (head, body) = split_response(&get);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nX-Route: hello"), "{head}");
    assert!(head.contains("\r\nContent-Length: 11"), "{head}");
    assert!(head.contains("\r\nConnection: close"), "{head}");
    assert_eq!(body, "hello, you\n");
    let head_only = http_to_end(
        &server,
        "HEAD /hello?you HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(
        head_only,
        format!("{head}\r\n\r\n"),
        "the GET head, no body"
    );
    let agent = http_to_end(
        &server,
        "GET /agent HTTP/1.1\r\nHost: localhost\r\nUser-Agent: probe/1\r\n\r\n",
    );
    assert_eq!(split_response(&agent).1, "probe/1");
    let missing = http_to_end(&server, "GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
    // Upgrades still go to the handler.
    let mut client = open(&server, "/hello?name=ws");
    let conn = events.opened("ws");
    close_from_client(&mut client, 1000, "");
    events.closed(conn);
}

#[test]
fn without_routes_a_plain_get_gets_404() {
    let (tx, _events) = Events::new();
    let server = TestServer::start(config(), Probe::streamed(tx));
    let get = http_to_end(&server, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (head, body) = split_response(&get);
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    assert_eq!(body, "not found\n");
    let head_only = http_to_end(&server, "HEAD /x HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(head_only, format!("{head}\r\n\r\n"));
}

// ---------------------------------------------------------------------------------
// 10. Whole-message delivery.
// ---------------------------------------------------------------------------------

#[test]
fn with_whole_delivery_a_message_in_five_fragments_arrives_as_one_on_message() {
    let (tx, mut events) = Events::new();
    let server = TestServer::start(config().max_message_size(1024), Probe::whole(tx));
    let mut client = open(&server, "/?name=w");
    let conn = events.opened("w");
    send_frame(&mut client, false, TEXT, b"one ");
    send_frame(&mut client, false, CONTINUATION, b"two ");
    send_frame(&mut client, true, PING, b"between");
    send_frame(&mut client, false, CONTINUATION, b"three ");
    send_frame(&mut client, false, CONTINUATION, b"four ");
    send_frame(&mut client, true, CONTINUATION, b"five");
    let pong = read_frame(&mut client).expect("pong");
    assert_eq!((pong.opcode, pong.payload), (PONG, b"between".to_vec()));
    // Exactly the limit is allowed, however it is cut.
    send_frame(&mut client, false, BINARY, &[7u8; 1000]);
    send_frame(&mut client, true, CONTINUATION, &[7u8; 24]);
    send_text(&mut client, "end");
    events.wait_for(
        "the last message",
        |e| matches!(e, Event::Message { data, .. } if data == b"end"),
    );
    let calls: Vec<Event> = events
        .of(conn)
        .into_iter()
        .filter(|e| !matches!(e, Event::Open { .. }))
        .collect();
    let message = |kind, data: &[u8]| Event::Message {
        conn,
        name: "w".into(),
        kind,
        data: data.to_vec(),
    };
    assert_eq!(
        calls,
        [
            message(MessageKind::Text, b"one two three four five"),
            message(MessageKind::Binary, &[7u8; 1024]),
            message(MessageKind::Text, b"end"),
        ]
    );
}

#[test]
fn with_whole_delivery_a_message_over_max_message_size_fails_with_1009_unseen() {
    let (tx, mut events) = Events::new();
    let server = TestServer::start(config().max_message_size(1024), Probe::whole(tx));
    // One frame that says it is too long: failed from its header, before its bytes.
    let mut one = open(&server, "/?name=one");
    let one_id = events.opened("one");
    let key = [1, 2, 3, 4];
    let mut frame = client_frame_header(true, BINARY, 1025, key);
    frame.extend_from_slice(&[0u8; 10]);
    one.write_all(&frame).expect("write");
    assert_eq!(read_close(&mut one).0, Some(1009));
    // Fragments that are each small but too long together.
    let mut many = open(&server, "/?name=many");
    let many_id = events.opened("many");
    send_frame(&mut many, false, TEXT, &[b'a'; 600]);
    send_frame(&mut many, true, CONTINUATION, &[b'b'; 600]);
    assert_eq!(read_close(&mut many).0, Some(1009));
    for conn in [one_id, many_id] {
        match events.closed(conn) {
            Event::Close { code, messages, .. } => assert_eq!((code, messages), (1009, 0)),
            other => panic!("{other:?}"),
        }
        let calls = events.of(conn);
        assert!(
            calls
                .iter()
                .all(|e| matches!(e, Event::Open { .. } | Event::Close { .. })),
            "{calls:?}"
        );
    }
}

#[test]
fn with_streamed_delivery_max_message_size_does_not_limit_messages() {
    let (tx, mut events) = Events::new();
    let server = TestServer::start(config().max_message_size(1024), Probe::streamed(tx));
    let mut client = open(&server, "/?name=s");
    let conn = events.opened("s");
    send_frame(&mut client, false, BINARY, &[1u8; 3000]);
    send_frame(&mut client, true, CONTINUATION, &[2u8; 3000]);
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < 6000 {
        assert!(Instant::now() < deadline, "only {} bytes", got.len());
        got = events
            .of(conn)
            .into_iter()
            .filter_map(|e| match e {
                Event::Data { data, .. } => Some(data),
                _ => None,
            })
            .flatten()
            .collect();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(got.len(), 6000);
    assert!(got[..3000].iter().all(|&b| b == 1) && got[3000..].iter().all(|&b| b == 2));
    close_from_client(&mut client, 1000, "");
    assert!(matches!(
        events.closed(conn),
        Event::Close { code: 1000, .. }
    ));
}

// ---------------------------------------------------------------------------------
// 11. Ctx::close from a handler.
// ---------------------------------------------------------------------------------

#[test]
fn ctx_close_sends_the_close_calls_on_close_once_and_drops_later_data() {
    let (tx, mut events) = Events::new();
    let server = TestServer::start(config(), Probe::streamed(tx));
    let mut client = open(&server, "/?name=c");
    let conn = events.opened("c");
    send_text(&mut client, "close me");
    let close = read_frame(&mut client).expect("the close frame");
    assert_eq!((close.fin, close.opcode), (true, CLOSE));
    assert_eq!(close.payload, close_body(4001, "as you wish"));
    // The client sends more before it answers the close: none of it is delivered.
    send_text(&mut client, "late text");
    send_frame(&mut client, false, BINARY, b"late ");
    send_frame(&mut client, true, CONTINUATION, b"binary");
    send_close(&mut client, 4001, "as you wish");
    expect_eof(&mut client);
    let calls = events.of(conn);
    assert_eq!(
        calls,
        [
            Event::Open {
                conn,
                name: "c".into()
            },
            Event::Data {
                conn,
                name: "c".into(),
                kind: MessageKind::Text,
                data: b"close me".to_vec(),
                end: true
            },
            Event::Closing {
                conn,
                close: Ok(()),
                close_again: Err(SendError::Closed),
                send_after: Err(SendError::Closed),
                ping_after: Err(SendError::Closed),
            },
            Event::Close {
                conn,
                name: "c".into(),
                messages: 1,
                code: 4001,
                reason: "as you wish".into()
            },
        ]
    );
    // The server stays healthy for others.
    let mut other = open(&server, "/?name=d");
    let other_id = events.opened("d");
    send_text(&mut other, "still here");
    events.wait_for("d's data", |e| {
        matches!(e, Event::Data { conn, data, .. } if *conn == other_id && data == b"still here")
    });
    assert_eq!(
        events.of(conn).len(),
        4,
        "nothing more for the closed connection"
    );
}
