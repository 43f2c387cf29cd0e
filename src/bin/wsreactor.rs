//! `wsreactor`: the echo server. Every message comes back to its sender, streamed.

use clap::Parser;
use log::info;
use std::io::Write;
use wsreactor::app::echo::{Echo, EchoMessages};
use wsreactor::app::{Handler, Messages};
use wsreactor::reactor::{Config, Server};

/// An RFC 6455 WebSocket echo server on a single-threaded mio event loop.
///
/// Messages of any size are echoed as a stream: server memory stays bounded by the
/// read buffer and the write watermarks, whatever the message size. `GET /` serves a
/// demo page; `GET /healthz` answers 200. Logging: RUST_LOG (default info).
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
        serve(cli.config, Messages::new(EchoMessages, limit))
    } else {
        serve(cli.config, Echo)
    };
    if let Err(e) = result {
        eprintln!("wsreactor: {e}");
        std::process::exit(1);
    }
}

fn serve<H: Handler>(config: Config, handler: H) -> std::io::Result<()> {
    let server = Server::bind(config, handler)?;
    // One line on stdout for scripts and tests that start the server on port 0.
    println!("listening on ws://{}/", server.local_addr()?);
    std::io::stdout().flush()?;
    server.run()
}

/// Every connection is a file descriptor: raise the soft limit on open files to the
/// hard limit so the server can hold as many connections as the system allows.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            limit.rlim_cur = soft;
        }
    }
    info!(
        "open files: soft limit {}, hard limit {}",
        limit.rlim_cur, limit.rlim_max
    );
}
