//! The echo itself, served in this process through real sockets: messages of every
//! size class come back byte for byte, fragmented messages come back as one message,
//! pings are answered (even in the middle of a message), and many clients are served
//! at once.

mod common;

use common::payload::{patterned_bytes, patterned_text};
use common::Listening;
use common::{
    connect, expect_eof, masked_frame, raw_upgrade, read_close, read_frame, read_message,
    ServerFrame, TestServer,
};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Sizes that sit on every boundary of the frame length encoding (RFC 6455 §5.2: 7-bit,
/// 16-bit and 64-bit lengths) and a few large ones.
const SIZES: [usize; 8] = [0, 1, 125, 126, 65_535, 65_536, 1 << 20, 16 << 20];

/// Asserts equality without printing megabytes: reports the first differing offset.
fn assert_same(got: &[u8], expected: &[u8], what: &str) {
    if got != expected {
        let at = got.iter().zip(expected).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, expected {}; first difference at {at:?}",
            got.len(),
            expected.len()
        );
    }
}

fn read_data(ws: &mut tungstenite::WebSocket<std::net::TcpStream>) -> Message {
    loop {
        match ws.read().expect("read echo") {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

#[test]
fn text_messages_of_every_length_class_come_back_unchanged() {
    let server = TestServer::echo();
    let mut ws = connect(&server);
    for size in SIZES {
        let text = patterned_text(size);
        ws.send(Message::text(text.clone())).unwrap();
        match read_data(&mut ws) {
            Message::Text(got) => {
                assert_same(got.as_bytes(), text.as_bytes(), &format!("text of {size}"))
            }
            other => panic!("text of {size} came back as {:?}", other.len()),
        }
    }
    ws.close(None).unwrap();
}

#[test]
fn binary_messages_of_every_length_class_come_back_unchanged() {
    let server = TestServer::echo();
    let mut ws = connect(&server);
    for (n, size) in SIZES.into_iter().enumerate() {
        let data = patterned_bytes(size, n as u64);
        ws.send(Message::binary(data.clone())).unwrap();
        match read_data(&mut ws) {
            Message::Binary(got) => assert_same(&got, &data, &format!("binary of {size}")),
            other => panic!("binary of {size} came back as {:?}", other.len()),
        }
    }
    ws.close(None).unwrap();
}

#[test]
fn a_text_message_split_inside_a_character_comes_back_as_one_message() {
    let server = TestServer::echo();
    let mut stream = raw_upgrade(&server);
    let text = "héllo €uro 😀 wörld";
    let bytes = text.as_bytes();
    // Cut inside 'é' (2 bytes), inside '€' (3 bytes) and inside '😀' (4 bytes).
    let e = text.find('é').unwrap() + 1;
    let euro = text.find('€').unwrap() + 2;
    let smiley = text.find('😀').unwrap() + 1;
    assert!(!text.is_char_boundary(e) && !text.is_char_boundary(euro));
    let mut wire = masked_frame(false, 0x1, &bytes[..e]);
    wire.extend(masked_frame(false, 0x0, &bytes[e..euro]));
    wire.extend(masked_frame(false, 0x0, &bytes[euro..smiley]));
    wire.extend(masked_frame(true, 0x0, &bytes[smiley..]));
    stream.write_all(&wire).unwrap();
    let mut controls = Vec::new();
    let (opcode, payload) = read_message(&mut stream, &mut controls);
    assert_eq!(opcode, 0x1);
    assert_eq!(String::from_utf8(payload).unwrap(), text);
    assert!(controls.is_empty(), "{controls:?}");
}

#[test]
fn a_binary_message_in_five_fragments_comes_back_as_one_message() {
    let server = TestServer::echo();
    let mut stream = raw_upgrade(&server);
    let data = patterned_bytes(70_000, 7);
    // Fragments of 16-bit, 7-bit, empty and 16-bit lengths (§5.4 allows empty ones).
    let cuts = [0, 1000, 1100, 1100, 66_000, 70_000];
    for (i, pair) in cuts.windows(2).enumerate() {
        let opcode = if i == 0 { 0x2 } else { 0x0 };
        let fin = i == cuts.len() - 2;
        stream
            .write_all(&masked_frame(fin, opcode, &data[pair[0]..pair[1]]))
            .unwrap();
    }
    let mut controls = Vec::new();
    let (opcode, payload) = read_message(&mut stream, &mut controls);
    assert_eq!(opcode, 0x2);
    assert_same(&payload, &data, "fragmented binary");
}

#[test]
fn a_ping_is_answered_with_a_pong_carrying_the_same_payload() {
    let server = TestServer::echo();
    let mut stream = raw_upgrade(&server);
    for payload in [&b""[..], b"x", &[0xAB; 125]] {
        stream.write_all(&masked_frame(true, 0x9, payload)).unwrap();
        let pong = read_frame(&mut stream).expect("pong");
        assert_eq!(
            pong,
            ServerFrame {
                fin: true,
                opcode: 0xA,
                payload: payload.to_vec()
            }
        );
    }
}

#[test]
fn a_ping_between_fragments_is_answered_before_the_message_is_finished() {
    let server = TestServer::echo();
    let mut stream = raw_upgrade(&server);
    stream
        .write_all(&masked_frame(false, 0x1, b"first half, "))
        .unwrap();
    stream
        .write_all(&masked_frame(true, 0x9, b"are you there?"))
        .unwrap();
    // The message is still open (its last fragment is not sent): the pong must come
    // anyway, possibly after the echo of the first fragment (§5.4, §5.5.2).
    let mut echoed = Vec::new();
    loop {
        let frame = read_frame(&mut stream).expect("frame before the pong");
        match frame.opcode {
            0xA => {
                assert_eq!(frame.payload, b"are you there?");
                break;
            }
            0x1 | 0x0 => {
                assert!(
                    !frame.fin,
                    "the echo cannot be finished before its last fragment"
                );
                echoed.extend(frame.payload);
            }
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
    stream
        .write_all(&masked_frame(true, 0x0, b"second half"))
        .unwrap();
    loop {
        let frame = read_frame(&mut stream).expect("rest of the echo");
        assert!(frame.opcode == 0x0 || (echoed.is_empty() && frame.opcode == 0x1));
        echoed.extend(frame.payload);
        if frame.fin {
            break;
        }
    }
    assert_eq!(echoed, b"first half, second half");
}

#[test]
fn an_unsolicited_pong_is_ignored_and_the_connection_keeps_working() {
    let server = TestServer::echo();
    let mut stream = raw_upgrade(&server);
    let mut wire = masked_frame(true, 0xA, b"unsolicited");
    wire.extend(masked_frame(true, 0x1, b"still here"));
    stream.write_all(&wire).unwrap();
    let mut controls = Vec::new();
    let (opcode, payload) = read_message(&mut stream, &mut controls);
    assert_eq!((opcode, &payload[..]), (0x1, &b"still here"[..]));
    assert!(controls.is_empty(), "a pong is not answered: {controls:?}");
}

#[test]
fn a_close_with_code_4000_is_echoed_and_the_server_closes_the_tcp_connection() {
    let server = TestServer::echo();
    let mut stream = raw_upgrade(&server);
    let mut body = 4000u16.to_be_bytes().to_vec();
    body.extend_from_slice("done for today ✓".as_bytes());
    stream.write_all(&masked_frame(true, 0x8, &body)).unwrap();
    let (code, _reason) = read_close(&mut stream);
    assert_eq!(code, Some(4000));
    expect_eof(&mut stream);
}

#[test]
fn two_hundred_clients_at_once_each_get_their_own_hundred_echoes() {
    const CLIENTS: usize = 200;
    const MESSAGES: usize = 100;
    common::raise_open_file_limit(); // both ends of 200 connections
    let server = TestServer::echo();
    let url = server.url();
    let addr = server.addr;
    // Counts connected clients; a barrier could hang the test if one client failed.
    let connected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let url = url.clone();
            let connected = connected.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let stream = std::net::TcpStream::connect(addr).expect("connect");
                    stream.set_nodelay(true).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    let (mut ws, _) = tungstenite::client(url, stream).expect("handshake");
                    // Everyone is connected before anyone sends (bounded wait).
                    connected.fetch_add(1, Ordering::SeqCst);
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while connected.load(Ordering::SeqCst) < CLIENTS {
                        assert!(Instant::now() < deadline, "not all clients connected");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    for n in 0..MESSAGES {
                        let sent = if n % 2 == 0 {
                            Message::text(format!("client {client} message {n} ✓"))
                        } else {
                            Message::binary(patterned_bytes(n * 10, client as u64))
                        };
                        ws.send(sent.clone()).expect("send");
                        assert_eq!(read_data(&mut ws), sent, "client {client} message {n}");
                    }
                    ws.close(None).expect("close");
                    loop {
                        match ws.read() {
                            Ok(_) => continue,
                            Err(tungstenite::Error::ConnectionClosed) => break,
                            Err(e) => panic!("client {client} closing: {e}"),
                        }
                    }
                })
                .expect("spawn client")
        })
        .collect();
    for thread in threads {
        thread.join().expect("client thread");
    }
}
