//! Several reactors in one process.
//!
//! Each worker is a whole [`Server`]: its own poll, listener, connections, timers, read
//! buffer and handler, on its own thread. Workers share nothing but their counters
//! ([`Metrics`]), so no lock is taken and no message passed while serving. The
//! listeners are bound to one address with SO_REUSEPORT, and the kernel hands each
//! new connection to one of them (by a hash of the addresses and ports): the
//! connection then lives on that worker's thread until it closes.
//!
//! One [`Handle`] reaches every worker: it posts commands to each one's mailbox
//! (a send or close goes to the worker named in the [`crate::ConnId`]). A worker that
//! fails or panics shuts the others down through it, and [`Workers::run`] reports
//! that worker's error or panic to its caller.

use super::{Config, Handle, Metrics, Routes, Server};
use crate::handler::Handler;
use crate::http::{HttpRequest, HttpResponse};
use log::error;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

/// `config.workers` reactors on as many threads, listening on one address.
///
/// ```no_run
/// use wsreactor::{Config, Echo, Workers};
///
/// let config = Config::builder().workers(4).build().expect("valid");
/// let workers = Workers::bind(config, |_worker| Echo::new())?;
/// println!("listening on ws://{}/", workers.local_addr()?);
/// let handle = workers.handle(); // to shut them down from another thread
/// workers.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Workers<H: Handler> {
    servers: Vec<Server<H>>,
    metrics: Arc<Metrics>,
}

impl<H> Workers<H>
where
    H: Handler + Send + 'static,
    H::State: Send,
{
    /// Binds `config.workers` listeners to `config.addr`, and builds each worker's
    /// handler with `handler_for(worker)`, `worker` counting from 0. With port 0 the
    /// first listener's port is used for the others. All listeners are bound before
    /// this returns, so an address in use is reported here.
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

    /// Answers plain HTTP requests on every worker with `routes` (see
    /// [`Server::http`]).
    pub fn http(
        mut self,
        routes: impl Fn(&HttpRequest) -> HttpResponse + Send + Sync + 'static,
    ) -> Self {
        let routes: Routes = Arc::new(routes);
        self.servers = self
            .servers
            .into_iter()
            .map(|server| server.with_routes(routes.clone()))
            .collect();
        self
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

    /// A handle that reaches every worker.
    pub fn handle(&self) -> Handle<H> {
        Handle::new(self.servers.iter().map(|s| s.mailbox.clone()).collect())
    }

    /// Runs every worker until a graceful shutdown (see [`Handle::shutdown`]) has
    /// finished on all of them. One worker runs on the calling thread; with more, each
    /// runs on a thread of its own (`wsreactor-N`) and the calling thread waits.
    ///
    /// A worker that fails (an error from `poll`, which should not happen) or panics
    /// shuts the others down gracefully; then this returns its error, or an error
    /// that says which worker panicked and with what message.
    pub fn run(self) -> io::Result<()> {
        let handle = self.handle();
        let Workers { mut servers, .. } = self;
        let Some(first) = servers.first() else {
            return Ok(());
        };
        first.log_start(servers.len())?;
        if servers.len() == 1 {
            return servers.remove(0).run_loop();
        }
        let mut threads = Vec::with_capacity(servers.len());
        let mut result = Ok(());
        for server in servers {
            let worker = server.worker;
            let group = handle.clone();
            match thread::Builder::new()
                .name(format!("wsreactor-{worker}"))
                .spawn(move || run_worker(server, group))
            {
                Ok(thread) => threads.push((worker, thread)),
                Err(e) => {
                    error!("cannot start a worker thread: {e}; stopping the others");
                    handle.shutdown();
                    result = Err(e);
                    break;
                }
            }
        }
        for (worker, thread) in threads {
            let outcome = thread.join().unwrap_or_else(|panic| {
                Err(io::Error::other(format!(
                    "worker {worker} panicked: {}",
                    panic_message(&*panic)
                )))
            });
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }
}

/// Runs one worker of several; if it ends other than by a graceful shutdown (an error
/// or a panic), stops the others.
fn run_worker<H: Handler>(server: Server<H>, handle: Handle<H>) -> io::Result<()> {
    let worker = server.worker;
    let mut guard = StopOthers {
        worker,
        handle: Some(handle),
    };
    let result = server.run_loop();
    if let Err(e) = &result {
        error!("worker {worker} failed: {e}");
    } else {
        guard.handle = None;
    }
    result
}

/// Shuts the group down when dropped while it holds the handle: on a worker's error,
/// and while unwinding from its panic.
struct StopOthers<H> {
    worker: usize,
    handle: Option<Handle<H>>,
}

impl<H> Drop for StopOthers<H> {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            error!(
                "worker {} ended abnormally: stopping the others",
                self.worker
            );
            handle.shutdown();
        }
    }
}

/// The message of a panic payload (a `&str` or a `String`, as `panic!` makes them).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}
