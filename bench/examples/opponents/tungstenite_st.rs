//! Opponent: tokio-tungstenite echo server on tokio's `current_thread` runtime: every
//! connection on one thread, like wsreactor's event loop. The fair single-core
//! comparison.
//!
//! `cargo run --release --example opponent_tungstenite_st -- --addr 127.0.0.1:0`

mod common;
mod tungstenite_echo;

fn main() -> std::io::Result<()> {
    let args = common::init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.addr).await?;
        common::announce(listener.local_addr()?);
        tungstenite_echo::serve(listener).await;
        Ok(())
    })
}
