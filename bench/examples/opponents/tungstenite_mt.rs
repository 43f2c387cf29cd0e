//! Opponent: tokio-tungstenite echo server on tokio's multi-thread runtime (one worker
//! per CPU the process may run on; pinned to one CPU with `taskset -c 0`, that is one
//! worker plus the runtime's blocking pool).
//!
//! `cargo run --release --example opponent_tungstenite_mt -- --addr 127.0.0.1:0`

mod common;
mod tungstenite_echo;

fn main() -> std::io::Result<()> {
    let args = common::init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.addr).await?;
        common::announce(listener.local_addr()?);
        tungstenite_echo::serve(listener).await;
        Ok(())
    })
}
