//! `wsreactor`: the echo server. Every message comes back to its sender, streamed.
//!
//! The binary is the library's [`Echo`] behind a command line ([`cli`]), with the
//! demo page, `/healthz` and `/metrics` as its HTTP routes ([`routes`]). What a
//! library must leave to the program is done here: logging, the open-file limit, and
//! the signals — SIGINT or SIGTERM shuts the server down gracefully through its
//! [`wsreactor::Handle`], a second one stops it at once.

mod cli;
mod routes;

use clap::Parser;
use log::{info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io::Write;
use wsreactor::echo::Subprotocols;
use wsreactor::{Echo, Workers};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = cli::Cli::parse();
    let config = match cli.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("wsreactor: {e}");
            std::process::exit(2);
        }
    };
    raise_open_file_limit();
    let echo = Echo::new().subprotocols(subprotocols(&cli.subprotocols));
    let echo = if cli.buffered {
        echo.whole_messages()
    } else {
        echo
    };
    if let Err(e) = serve(config, echo) {
        eprintln!("wsreactor: {e}");
        std::process::exit(1);
    }
}

/// `--subprotocols`: none, `*` (any), or a list.
fn subprotocols(flag: &[String]) -> Subprotocols {
    match flag {
        [] => Subprotocols::None,
        [any] if any == "*" => Subprotocols::Any,
        list => Subprotocols::OneOf(list.to_vec()),
    }
}

/// Serves with `--workers` reactors until a signal has shut them down.
fn serve(config: wsreactor::Config, echo: Echo) -> std::io::Result<()> {
    let addr = config.addr;
    let workers = Workers::bind(config, |_| echo.clone())
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let metrics = workers.metrics().clone();
    let workers = workers.http(move |request| routes::respond(request, &metrics));
    let handle = workers.handle();
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                info!("signal {signal}: shutting down");
                handle.shutdown();
            }
        })?;
    // One line on stdout for scripts and tests that start the server on port 0 (one
    // address for every worker).
    println!("listening on ws://{}/", workers.local_addr()?);
    std::io::stdout().flush()?;
    workers.run()
}

/// Every connection is a file descriptor: raise the soft limit on open files to the
/// hard limit so the server can hold as many connections as the system allows.
fn raise_open_file_limit() {
    let raised =
        rlimit::increase_nofile_limit(u64::MAX).and_then(|_| rlimit::Resource::NOFILE.get());
    match raised {
        Ok((soft, hard)) => info!("open files: soft limit {soft}, hard limit {hard}"),
        Err(e) => warn!("open files: cannot raise the limit: {e}"),
    }
}
