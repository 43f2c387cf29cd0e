//! The smallest end-to-end check: the real binary echoes text and binary to a real
//! client, and answers a close.

mod common;

use common::{connect, ServerProcess};
use tungstenite::Message;

#[test]
fn text_and_binary_come_back_unchanged() {
    let server = ServerProcess::start(&[]);
    let mut ws = connect(&server);
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
}
