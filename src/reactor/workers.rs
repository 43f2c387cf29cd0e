//! Several reactors in one process: `--workers N`.
//!
//! Each worker is a whole [`Server`]: its own poll, listener, connections, timers, read
//! buffer and handler, on its own thread. Workers share nothing but their counters
//! ([`Metrics`]), so no lock is taken and no message passed while serving. The
//! listeners are bound to one address with SO_REUSEPORT, and the kernel hands each
//! new connection to one of them (by a hash of the addresses and ports): the
//! connection then lives on that worker's thread until it closes.
//!
//! Shutdown needs no coordination either: every worker registers its own
//! `signal-hook` handler for SIGINT and SIGTERM, and signal-hook runs every
//! registration, so one signal wakes every worker's poll through its own self-pipe.
//! Each closes its listener, sends close 1001 to its connections and returns within
//! the shutdown timeout; [`Workers::run`] returns when all have.

use super::{Config, Metrics, Server};
use crate::app::Handler;
use log::error;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

/// `config.workers` reactors on as many threads, listening on one address.
///
/// ```no_run
/// use wsreactor::app::echo::Echo;
/// use wsreactor::reactor::{Config, Workers};
///
/// let config = Config { workers: 4, ..Config::default() };
/// let workers = Workers::bind(config, |_worker| Echo)?;
/// println!("listening on ws://{}/", workers.local_addr()?);
/// workers.run()?; // until SIGINT/SIGTERM
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Workers<H> {
    servers: Vec<Server<H>>,
    metrics: Arc<Metrics>,
}

impl<H: Handler + Send + 'static> Workers<H> {
    /// Binds `config.workers` listeners (at least one) to `config.addr`, and builds
    /// each worker's handler with `handler_for(worker)`, `worker` counting from 0.
    /// With port 0 the first listener's port is used for the others. All listeners are
    /// bound before this returns, so an address in use is reported here.
    pub fn bind(mut config: Config, mut handler_for: impl FnMut(usize) -> H) -> io::Result<Self> {
        let count = config.workers.max(1);
        let metrics = Arc::new(Metrics::new(count));
        let mut servers = Vec::with_capacity(count);
        for worker in 0..count {
            let handler = handler_for(worker);
            let server =
                Server::bind_worker(config.clone(), handler, metrics.clone(), worker, count > 1)?;
            if worker == 0 {
                config.addr = server.local_addr()?;
            }
            servers.push(server);
        }
        Ok(Workers { servers, metrics })
    }

    /// The address every worker listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.servers.first() {
            Some(server) => server.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The counters of all workers.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs every worker until a shutdown signal has been handled by all of them. One
    /// worker runs on the calling thread; with more, each runs on a thread of its own
    /// (`wsreactor-N`) and the calling thread waits for them.
    ///
    /// A worker that fails (an error from `poll`, which should not happen) or panics
    /// raises SIGTERM, so that the others shut down gracefully instead of serving on
    /// without it; then this returns its error, or resumes its panic.
    pub fn run(self) -> io::Result<()> {
        let Workers { mut servers, .. } = self;
        let Some(first) = servers.first() else {
            return Ok(());
        };
        first.log_start(servers.len())?;
        if servers.len() == 1 {
            return servers.remove(0).run_loop();
        }
        let mut threads = Vec::with_capacity(servers.len());
        let mut spawn_error = None;
        for server in servers {
            let name = format!("wsreactor-{}", server.worker);
            match thread::Builder::new()
                .name(name)
                .spawn(move || run_worker(server))
            {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    error!("cannot start a worker thread: {e}; stopping the others");
                    raise_sigterm();
                    spawn_error = Some(e);
                    break;
                }
            }
        }
        let mut result = spawn_error.map_or(Ok(()), Err);
        let mut panic = None;
        for thread in threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
                Err(payload) => panic = panic.or(Some(payload)),
            }
        }
        if let Some(payload) = panic {
            std::panic::resume_unwind(payload);
        }
        result
    }
}

/// Runs one worker of several; if it ends other than by a graceful shutdown (an error
/// or a panic), asks the others to stop.
fn run_worker<H: Handler>(server: Server<H>) -> io::Result<()> {
    let worker = server.worker;
    let mut guard = StopOthers {
        worker,
        armed: true,
    };
    let result = server.run_loop();
    if let Err(e) = &result {
        error!("worker {worker} failed: {e}");
    } else {
        guard.armed = false;
    }
    result
}

/// Raises SIGTERM when dropped while armed: on a worker's error, and while unwinding
/// from its panic.
struct StopOthers {
    worker: usize,
    armed: bool,
}

impl Drop for StopOthers {
    fn drop(&mut self) {
        if self.armed {
            error!(
                "worker {} ended abnormally: stopping the others",
                self.worker
            );
            raise_sigterm();
        }
    }
}

/// Sends SIGTERM to this process: every worker's signal handler sees it.
fn raise_sigterm() {
    let _ = signal_hook::low_level::raise(signal_hook::consts::SIGTERM);
}
