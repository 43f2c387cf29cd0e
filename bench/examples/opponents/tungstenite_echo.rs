//! The echo of both tokio-tungstenite opponents; only their runtimes differ.

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Accepts connections forever, one task each.
pub async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(echo(stream));
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}

/// One connection: the handshake, then every text and binary message back, as in
/// tokio-tungstenite's own `echo-server` example (split + `forward`, which flushes
/// only when no further message is ready, so pipelined messages share writes).
/// Pings are answered by tungstenite itself, and a close is echoed by it too.
async fn echo(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // Caps raised to accept what wsreactor accepts: tungstenite's defaults are 64 MiB
    // per message and 16 MiB per frame; `None` removes both limits. Buffer sizes stay
    // at their defaults (128 KiB read buffer, 128 KiB write buffer target).
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let ws = match tokio_tungstenite::accept_async_with_config(stream, Some(config)).await {
        Ok(ws) => ws,
        Err(_) => return,
    };
    let (write, read) = ws.split();
    let _ = read
        .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await;
}
