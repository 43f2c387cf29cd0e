//! The broadcast chat example really broadcasts: what one client says, every client
//! hears, and a departure is announced.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;
use tungstenite::Message;

fn read_text(ws: &mut tungstenite::WebSocket<TcpStream>) -> String {
    loop {
        match ws.read().expect("read") {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_message_from_one_client_reaches_every_client() {
    // The example is built by `cargo test --all-targets`; run it from its target dir.
    let exe = common::launch::server_binary()
        .with_file_name("examples")
        .join("chat");
    if !exe.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "wsreactor", "--example", "chat"])
            .status()
            .expect("cargo build --example chat");
        assert!(status.success());
    }
    let mut child = Command::new(&exe)
        .arg("127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start chat example");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .trim_start_matches("chat on ws://")
        .trim_end_matches('/')
        .to_string();

    let connect = || {
        let stream = TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        tungstenite::client::client(format!("ws://{addr}/"), stream)
            .unwrap()
            .0
    };
    let mut alice = connect();
    assert!(read_text(&mut alice).ends_with("joined (1 here)"));
    let mut bob = connect();
    assert!(read_text(&mut alice).ends_with("joined (2 here)"));
    assert!(read_text(&mut bob).ends_with("joined (2 here)"));

    alice.send(Message::text("hello, room")).unwrap();
    let heard_by_alice = read_text(&mut alice);
    assert!(
        heard_by_alice.ends_with(": hello, room"),
        "{heard_by_alice}"
    );
    assert_eq!(read_text(&mut bob), heard_by_alice);

    alice.close(None).unwrap();
    assert!(read_text(&mut bob).ends_with(" left"));
    let _ = child.kill();
    let _ = child.wait();
}
