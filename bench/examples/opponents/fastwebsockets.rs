//! Opponent: fastwebsockets echo server on tokio's `current_thread` runtime, with the
//! opening handshake done by hyper through fastwebsockets' `upgrade` feature. It
//! follows fastwebsockets' own `echo_server` example: a `FragmentCollector` (fragmented
//! messages are reassembled, so each message is echoed as one frame), auto-close and
//! auto-pong on (their defaults, set again here to say so), and each connection's
//! task run `unconstrained` (no cooperative-budget yields).
//!
//! `cargo run --release --example opponent_fastwebsockets -- --addr 127.0.0.1:0`

mod common;

use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::net::TcpListener;

async fn echo(upgrade: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = upgrade.await?;
    // Cap raised to accept what wsreactor accepts: fastwebsockets refuses any frame of
    // 64 MiB or more by default (`max_message_size` is checked per frame; the
    // FragmentCollector adds no limit of its own). usize::MAX removes the limit.
    ws.set_max_message_size(usize::MAX);
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

async fn upgrade_request(
    mut request: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, upgrade) = upgrade::upgrade(&mut request)?;
    tokio::spawn(async move {
        if let Err(e) = tokio::task::unconstrained(echo(upgrade)).await {
            // A client that goes away without a close is routine in a benchmark.
            if !matches!(
                e,
                WebSocketError::UnexpectedEOF | WebSocketError::ConnectionClosed
            ) {
                eprintln!("connection: {e}");
            }
        }
    });
    Ok(response)
}

fn main() -> std::io::Result<()> {
    let args = common::init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(args.addr).await?;
        common::announce(listener.local_addr()?);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = http1::Builder::new()
                    .serve_connection(io, service_fn(upgrade_request))
                    .with_upgrades()
                    .await;
            });
        }
    })
}
