//! `wsreactor`: the echo server. Every message comes back to its sender, streamed.

mod cli;

use clap::Parser;
use log::{info, warn};
use std::io::Write;
use wsreactor::app::echo::{Echo, EchoMessages};
use wsreactor::app::{Handler, Messages};
use wsreactor::{Config, Workers};

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
    let result = if cli.buffered {
        let limit = config.max_message_size;
        serve(config, |_| Messages::new(EchoMessages, limit))
    } else {
        serve(config, |_| Echo)
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
    let addr = config.addr;
    let workers = Workers::bind(config, handler_for)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
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
