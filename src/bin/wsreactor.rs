//! `wsreactor`: the echo server. Every message comes back to its sender, streamed.

use clap::Parser;
use log::{info, warn};
use std::io::Write;
use wsreactor::app::echo::{Echo, EchoMessages};
use wsreactor::app::{Handler, Messages};
use wsreactor::reactor::{Config, Workers};

/// An RFC 6455 WebSocket echo server on a single-threaded mio event loop.
///
/// Messages of any size are echoed as a stream: server memory stays bounded by the
/// read buffer and the write watermarks, whatever the message size. `GET /` serves a
/// demo page; `GET /healthz` answers 200; `GET /metrics` serves the counters in the
/// Prometheus text format. Logging: RUST_LOG (default info).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: Config,

    /// Echo through the message-level API: buffer each whole message (up to
    /// --max-message-size, close 1009 above it) and send it back in one piece.
    #[arg(long)]
    buffered: bool,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    raise_open_file_limit();
    let result = if cli.buffered {
        let limit = cli.config.max_message_size;
        serve(cli.config, |_| Messages::new(EchoMessages, limit))
    } else {
        serve(cli.config, |_| Echo)
    };
    if let Err(e) = result {
        eprintln!("wsreactor: {e}");
        std::process::exit(1);
    }
}

/// Serves with `--workers` reactors, each with the handler `handler_for(worker)` builds.
fn serve<H: Handler + Send + 'static>(
    config: Config,
    handler_for: impl FnMut(usize) -> H,
) -> std::io::Result<()> {
    let workers = Workers::bind(config, handler_for)?;
    // One line on stdout for scripts and tests that start the server on port 0 (one
    // address for every worker).
    println!("listening on ws://{}/", workers.local_addr()?);
    std::io::stdout().flush()?;
    workers.run()
}

/// Every connection is a file descriptor: raise the soft limit on open files to the
/// hard limit so the server can hold as many connections as the system allows.
fn raise_open_file_limit() {
    match wsreactor::sys::raise_open_file_limit() {
        Ok(limit) => info!(
            "open files: soft limit {}, hard limit {}",
            limit.soft, limit.hard
        ),
        Err(e) => warn!("open files: cannot read the limit: {e}"),
    }
}
