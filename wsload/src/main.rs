//! `wsload`: a load generator for WebSocket echo servers, on loopback only.
//!
//! ```text
//! wsload [--url ws://127.0.0.1:9001/] [--json] [--timeout SECS] [--source-ips IP|A-B]
//!        [--no-progress] [--seed N] [--max-connecting N] [--raw-echo] <MODE>
//!   echo   --connections C --in-flight W --size BYTES [--text] (--messages N | --duration SECS)
//!   stream --size BYTES --count N [--text] [--in-flight W]
//!   huge   --size BYTES [--frame-size N]
//!   idle   --connections N --hold SECS [--server-pid PID] [--open-rate N/s]
//! ```
//!
//! Built on the crate's own sans-IO protocol code (frame headers, masking, the
//! client-side decoder, the accept key) and one single-threaded mio loop: see
//! [`client`] for the state machine, `docs/BENCHMARKS.md` ("Load generator") for what
//! each mode measures and example runs.

mod cli;
mod client;
mod gen;
mod modes;
// The deterministic payload stream shared with the tests and `huge_echo`.
use wsreactor_testkit::payload;
mod progress;
mod report;
mod sysinfo;

use clap::Parser;
use cli::{Cli, Mode};
use modes::Setup;

fn main() {
    let cli = Cli::parse();
    let setup = match Setup::from_cli(&cli) {
        Ok(setup) => setup,
        Err(e) => usage_error(&e),
    };
    let report = match &cli.mode {
        Mode::Echo(args) => modes::echo::echo(&setup, args),
        Mode::Stream(args) => modes::echo::stream(&setup, args),
        Mode::Huge(args) => modes::huge::huge(&setup, args),
        Mode::Idle(args) => modes::idle::idle(&setup, args),
    };
    let report = match report {
        Ok(report) => report,
        Err(e) => usage_error(&e),
    };
    report.print(cli.json);
    std::process::exit(if report.ok() { 0 } else { 1 });
}

fn usage_error(message: &str) -> ! {
    eprintln!("wsload: {message}");
    std::process::exit(2);
}
