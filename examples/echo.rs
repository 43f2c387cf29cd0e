//! The streaming echo server in a few dozen lines of the public API: every message
//! goes back to its sender, text as text and binary as binary, chunk by chunk as it
//! arrives — so a message of any size costs no more memory than the server's
//! buffers. (`wsreactor::Echo` is the same handler, with options.)
//!
//! ```text
//! cargo run --release --example echo -- 127.0.0.1:9002
//! python3 -m websockets ws://127.0.0.1:9002/
//! curl http://127.0.0.1:9002/healthz
//! ```

use std::io;
use std::net::SocketAddr;
use wsreactor::{
    Accept, Config, ConnId, Ctx, Handler, HttpResponse, MessageKind, Server, UpgradeRequest,
};

/// The echo: no state of its own, none per connection (`State = ()`).
pub struct StreamingEcho;

impl Handler for StreamingEcho {
    type State = ();

    // `delivery` is left at its default, `Delivery::Streamed`: data arrives through
    // `on_data`, in the chunks the socket reads produce.

    /// Every upgrade is accepted (the server has checked it against RFC 6455 already).
    fn on_upgrade(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _request: &UpgradeRequest,
        _peer: SocketAddr,
    ) -> Result<Accept<()>, HttpResponse> {
        Ok(Accept::new(()))
    }

    /// Each chunk goes straight back as the next part of the same message; the last
    /// chunk (`end_of_message`) finishes it.
    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        _state: &mut (),
        kind: MessageKind,
        data: &[u8],
        end_of_message: bool,
    ) {
        // An error means the connection is closing: there is no one to echo to.
        // `Sent::Backpressure` needs no answer here: over the high watermark the
        // server stops reading this connection until its queue drains, so a client
        // that sends without reading slows down instead of growing our memory.
        let _ = ctx.send_part(conn, kind, data, end_of_message);
    }
}

/// Binds the echo server (what `main` and the tests share). Plain HTTP requests (no
/// upgrade) get the routes: a health check for load balancers, 404 for the rest.
pub fn serve(config: Config) -> io::Result<Server<StreamingEcho>> {
    let server = Server::bind(config, StreamingEcho)?;
    Ok(server.http(|request| match request.resource_path() {
        "/healthz" => HttpResponse::new(200).text("ok\n"),
        _ => HttpResponse::not_found(),
    }))
}

fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into());
    let config = Config::builder()
        .addr(addr.parse().map_err(io::Error::other)?)
        .build()
        .map_err(io::Error::other)?;
    let server = serve(config)?;
    println!("listening on ws://{}/", server.local_addr()?);
    // Runs until a `Handle` shuts it down; this program never does, so stop it with
    // Ctrl-C (signal handling belongs to the program: see server/src/main.rs).
    server.run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tungstenite::Message;
    use wsreactor_testkit::{payload, raw};

    #[test]
    fn a_mebibyte_binary_message_and_a_text_message_come_back_intact_and_routes_answer_http() {
        let config = Config::builder()
            .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
            .build()
            .unwrap();
        let server = serve(config).unwrap();
        let addr = server.local_addr().unwrap();
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.run());

        let mut client = raw::connect(&addr);
        // 1 MiB: read in many chunks, each sent back as it comes (in frames of at
        // most 64 KiB), and reassembled by the client.
        let binary = payload::patterned_bytes(1 << 20, 7);
        client.send(Message::Binary(binary.clone())).unwrap();
        assert_eq!(client.read().unwrap(), Message::Binary(binary));
        let text = payload::patterned_text(100_000);
        client.send(Message::Text(text.clone())).unwrap();
        assert_eq!(client.read().unwrap(), Message::Text(text));

        // Plain HTTP on the same port: the routes answer, and close the connection.
        let mut http = raw::raw_connect(&addr);
        http.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        http.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nok\n"), "{response}");
        // Our FIN: after its answer the server waits for it (or for its close
        // timeout) before it lets the connection go, and a shutdown waits for that.
        drop(http);
        let mut http = raw::raw_connect(&addr);
        let head = raw::http_exchange(&mut http, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        raw::expect_eof(&mut http);
        drop(http);

        handle.shutdown();
        // The close 1001 of the shutdown, then the end of the connection.
        assert!(matches!(client.read(), Ok(Message::Close(Some(f))) if f.code == 1001.into()));
        while client.read().is_ok() {}
        drop(client); // our FIN, as above
        thread.join().unwrap().unwrap();
    }
}
