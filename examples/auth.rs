//! An authenticated upgrade: the handler decides in `on_upgrade`, before the 101, with
//! every header of the request at hand.
//!
//! * The client proves who it is with a token: `Authorization: Bearer TOKEN` (what
//!   programs send), or `?token=TOKEN` in the URL (browsers cannot set headers on a
//!   WebSocket). Without a known token the answer is 401 with `WWW-Authenticate:
//!   Bearer` (RFC 6750 §3).
//! * A browser names the page that opens the connection in `Origin`, and sends the
//!   user's cookies along whatever page it is: a server that browsers reach must check
//!   it (RFC 6455 §10.2). Origins off the allow-list get 403; requests without
//!   `Origin` come from programs, not browsers, and are let through to the token check.
//! * The user the token names becomes the connection's state: it is greeted on open,
//!   and every line it sends comes back signed with its name.
//!
//! ```text
//! cargo run --example auth -- 127.0.0.1:9004
//! python3 -m websockets 'ws://127.0.0.1:9004/?token=ada-secret'
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use wsreactor::{
    Accept, Config, ConnId, Ctx, Delivery, Handler, HttpResponse, MessageKind, Server,
    UpgradeRequest,
};

/// Who may connect, and from which pages.
pub struct Auth {
    /// Token → user name. A real server would look the token up in its session store,
    /// or check a signed token (a JWT) here.
    tokens: HashMap<String, String>,
    /// The origins (`scheme://host[:port]`, as browsers send them) whose pages may
    /// connect.
    origins: Vec<String>,
}

/// What is kept per connection: who it is.
pub struct User {
    name: String,
}

impl Auth {
    /// Lets in the holders of `tokens` (token, user) from pages of `origins`.
    pub fn new<'a>(
        tokens: impl IntoIterator<Item = (&'a str, &'a str)>,
        origins: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Auth {
            tokens: tokens
                .into_iter()
                .map(|(token, user)| (token.to_string(), user.to_string()))
                .collect(),
            origins: origins.into_iter().map(str::to_string).collect(),
        }
    }
}

/// The token of the request: from `Authorization: Bearer TOKEN` (the scheme is
/// case-insensitive, RFC 9110 §11.1), else from `?token=TOKEN` (taken as written:
/// tokens are URL-safe, so no percent-decoding). Mind that URLs end up in logs:
/// proxies', and the library's own `open:` lines at debug level.
fn token(request: &UpgradeRequest) -> Option<&str> {
    let bearer = request.header("authorization").and_then(|value| {
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    bearer.or_else(|| {
        request
            .query()?
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
    })
}

impl Handler for Auth {
    type State = User;

    fn delivery(&self) -> Delivery {
        Delivery::Whole
    }

    fn on_upgrade(
        &mut self,
        _ctx: &mut Ctx<'_>,
        request: &UpgradeRequest,
        _peer: SocketAddr, // the place for a per-address limit (429), if one is wanted
    ) -> Result<Accept<User>, HttpResponse> {
        if let Some(origin) = &request.origin {
            if !self.origins.contains(origin) {
                return Err(HttpResponse::new(403).text("this origin may not connect\n"));
            }
        }
        let Some(token) = token(request) else {
            return Err(HttpResponse::new(401)
                .header("WWW-Authenticate", "Bearer")
                .text("a token is required\n"));
        };
        match self.tokens.get(token) {
            Some(name) => Ok(Accept::new(User { name: name.clone() })),
            None => Err(HttpResponse::new(401)
                .header("WWW-Authenticate", "Bearer error=\"invalid_token\"")
                .text("unknown token\n")),
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, user: &mut User) {
        let _ = ctx.send(
            conn,
            MessageKind::Text,
            format!("hello, {}", user.name).as_bytes(),
        );
    }

    fn on_message(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        user: &mut User,
        kind: MessageKind,
        message: &[u8],
    ) {
        // Text is valid UTF-8 by now; binary is shown as such.
        let text = match kind {
            MessageKind::Text => String::from_utf8_lossy(message),
            MessageKind::Binary => format!("({} bytes of binary)", message.len()).into(),
        };
        let _ = ctx.send(
            conn,
            MessageKind::Text,
            format!("{}: {text}", user.name).as_bytes(),
        );
    }
}

/// Binds the server with two demo users, reachable from pages of `origins`.
pub fn serve(config: Config, origins: &[&str]) -> io::Result<Server<Auth>> {
    let users = [("ada-secret", "ada"), ("bob-secret", "bob")];
    Server::bind(config, Auth::new(users, origins.iter().copied()))
}

fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9004".into());
    let config = Config::builder()
        .addr(addr.parse().map_err(io::Error::other)?)
        .max_message_size(64 * 1024)
        .build()
        .map_err(io::Error::other)?;
    // Pages served from this host and port may connect (a real deployment lists
    // its site, e.g. https://chat.example.com).
    let port = config.addr.port();
    let pages = [
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
    ];
    let server = serve(config, &[&pages[0], &pages[1]])?;
    println!("listening on ws://{}/", server.local_addr()?);
    server.run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpStream;
    use wsreactor_testkit::raw;

    /// An upgrade request for `path` with `headers` (each `Name: value`): the response
    /// head, and the connection (after a 101, the frames follow on it).
    fn upgrade(addr: SocketAddr, path: &str, headers: &[&str]) -> (String, TcpStream) {
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n"
        );
        for header in headers {
            request += &format!("{header}\r\n");
        }
        request += "\r\n";
        let mut stream = raw::raw_connect(&addr);
        let head = raw::http_exchange(&mut stream, request.as_bytes());
        (head, stream)
    }

    /// The next text message on `stream`.
    fn text(stream: &mut TcpStream) -> String {
        let (opcode, payload) = raw::read_message(stream, &mut Vec::new());
        assert_eq!(opcode, raw::TEXT);
        String::from_utf8(payload).unwrap()
    }

    /// Whether the response `head` has the header line `line` (names are
    /// case-insensitive).
    fn has_header(head: &str, line: &str) -> bool {
        head.lines().any(|l| l.eq_ignore_ascii_case(line))
    }

    #[test]
    fn the_upgrade_is_decided_by_the_token_and_the_origin() {
        let config = Config::builder()
            .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
            .build()
            .unwrap();
        let server = serve(config, &["https://app.example"]).unwrap();
        let addr = server.local_addr().unwrap();
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.run());
        let page = "Origin: https://app.example";

        // No token: 401, and how to authenticate.
        let (head, _) = upgrade(addr, "/", &[]);
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
        assert!(has_header(&head, "WWW-Authenticate: Bearer"), "{head}");
        // A token nobody has.
        let (head, _) = upgrade(addr, "/?token=guess", &[page]);
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
        assert!(has_header(
            &head,
            "WWW-Authenticate: Bearer error=\"invalid_token\""
        ));
        // A good token, from another site's page: 403.
        let evil = "Origin: https://evil.example";
        let (head, _) = upgrade(addr, "/?token=ada-secret", &[evil]);
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        let (head, _) = upgrade(addr, "/", &[evil, "Authorization: Bearer ada-secret"]);
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");

        // A good token in the query, no Origin (not a browser): in, and greeted.
        let (head, mut ada) = upgrade(addr, "/?room=1&token=ada-secret", &[]);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(text(&mut ada), "hello, ada");
        // A good token in the header, from an allowed page: the state is the user.
        let (head, mut bob) = upgrade(addr, "/", &[page, "authorization: bearer bob-secret"]);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(text(&mut bob), "hello, bob");
        bob.write_all(&raw::masked_frame(true, raw::TEXT, b"hi"))
            .unwrap();
        assert_eq!(text(&mut bob), "bob: hi");

        handle.shutdown();
        for mut client in [ada, bob] {
            assert_eq!(raw::read_close(&mut client).0, Some(1001));
            let answer = raw::masked_frame(true, raw::CLOSE, &1001u16.to_be_bytes());
            client.write_all(&answer).unwrap();
            raw::expect_eof(&mut client);
        }
        thread.join().unwrap().unwrap();
    }
}
