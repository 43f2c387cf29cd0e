//! [`Handle`]: reaching a running server from other threads.
//!
//! Each worker has a mailbox: a list of commands behind a mutex and a
//! [`mio::Waker`] registered with the worker's poll. A command is pushed onto the
//! list, and the first command into an empty list wakes the loop, which takes the
//! whole list at once and carries the commands out in order on its own thread. So a
//! burst of commands costs one wake-up, and nothing of the loop is shared but the
//! list.

use super::Ctx;
use crate::handler::ConnId;
use crate::protocol::{CloseCode, MessageKind};
use mio::Waker;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A closure to run on a worker's thread, with its handler and a [`Ctx`].
type Job<H> = Box<dyn FnOnce(&mut H, &mut Ctx<'_>) + Send>;

/// What a [`Handle`] asks of a worker.
pub(crate) enum Command<H> {
    Send {
        conn: ConnId,
        kind: MessageKind,
        data: Vec<u8>,
    },
    Close {
        conn: ConnId,
        code: CloseCode,
        reason: String,
    },
    Run(Job<H>),
    Shutdown,
}

/// One worker's commands and the waker of its loop.
pub(crate) struct Mailbox<H> {
    waker: Waker,
    commands: Mutex<Vec<Command<H>>>,
    /// Cleared when the worker's loop has ended: commands would never be carried out.
    running: AtomicBool,
}

impl<H> Mailbox<H> {
    pub(crate) fn new(waker: Waker) -> Self {
        Mailbox {
            waker,
            commands: Mutex::new(Vec::new()),
            running: AtomicBool::new(true),
        }
    }

    /// Posts `command`. `Ok` means the loop was running when it was posted; one that
    /// stops before its next turn (a shutdown already under way) drops it.
    fn post(&self, command: Command<H>) -> Result<(), Stopped> {
        let mut commands = self.commands.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock that `close` takes too: no command is posted after it.
        if !self.running.load(Ordering::Acquire) {
            return Err(Stopped);
        }
        let was_empty = commands.is_empty();
        commands.push(command);
        drop(commands);
        if was_empty {
            // A failed wake-up leaves the command for the next loop turn that some
            // other event causes; there is nothing better to do with the error here.
            let _ = self.waker.wake();
        }
        Ok(())
    }

    /// Every command posted so far, oldest first (called by the worker).
    pub(crate) fn take(&self) -> Vec<Command<H>> {
        std::mem::take(&mut *self.commands.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Marks the worker's loop as ended (called by the worker, also when it panics),
    /// and drops what was posted but not carried out.
    pub(crate) fn close(&self) {
        let mut commands = self.commands.lock().unwrap_or_else(PoisonError::into_inner);
        self.running.store(false, Ordering::Release);
        commands.clear();
    }
}

/// A cloneable, `Send` way to act on a running [`crate::Server`] or
/// [`crate::Workers`] group from any thread: send to and close connections, run a
/// closure on a worker's thread, and shut down. Each method posts a command that
/// the worker carries out on its next loop turn (it is woken for it); the result
/// says only whether the server is still running to receive it.
///
/// ```no_run
/// use wsreactor::{Config, Echo, Server};
///
/// let server = Server::bind(Config::default(), Echo::new())?;
/// let handle = server.handle();
/// std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_secs(60));
///     handle.shutdown(); // close 1001 to every client, then `run` returns
/// });
/// server.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Handle<H> {
    workers: Arc<[Arc<Mailbox<H>>]>,
}

impl<H> Clone for Handle<H> {
    fn clone(&self) -> Self {
        Handle {
            workers: self.workers.clone(),
        }
    }
}

impl<H> fmt::Debug for Handle<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("workers", &self.workers.len())
            .finish()
    }
}

/// The server is no longer running: its loop has ended, so the command was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the server is no longer running")
    }
}

impl std::error::Error for Stopped {}

impl<H> Handle<H> {
    pub(crate) fn new(workers: Vec<Arc<Mailbox<H>>>) -> Self {
        Handle {
            workers: workers.into(),
        }
    }

    /// How many workers the handle reaches (1 for a lone server).
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    fn mailbox(&self, worker: usize) -> Result<&Mailbox<H>, Stopped> {
        self.workers.get(worker).map(|m| &**m).ok_or(Stopped)
    }

    /// Sends `data` to `conn` as one whole message, as [`Ctx::send`] does (and with
    /// its refusals, which are not reported back: use [`Handle::run_on`] to see
    /// them).
    pub fn send(
        &self,
        conn: ConnId,
        kind: MessageKind,
        data: impl Into<Vec<u8>>,
    ) -> Result<(), Stopped> {
        self.mailbox(conn.worker())?.post(Command::Send {
            conn,
            kind,
            data: data.into(),
        })
    }

    /// Closes `conn` with `code` and `reason`, as [`Ctx::close`] does.
    pub fn close(
        &self,
        conn: ConnId,
        code: CloseCode,
        reason: impl Into<String>,
    ) -> Result<(), Stopped> {
        self.mailbox(conn.worker())?.post(Command::Close {
            conn,
            code,
            reason: reason.into(),
        })
    }

    /// Runs `job` on the thread of worker `worker` (0 for a lone server), with the
    /// worker's handler and a [`Ctx`].
    pub fn run_on(
        &self,
        worker: usize,
        job: impl FnOnce(&mut H, &mut Ctx<'_>) + Send + 'static,
    ) -> Result<(), Stopped> {
        self.mailbox(worker)?.post(Command::Run(Box::new(job)))
    }

    /// Runs `job` on every worker's thread, once each.
    pub fn run_on_each(
        &self,
        job: impl Fn(&mut H, &mut Ctx<'_>) + Send + Sync + 'static,
    ) -> Result<(), Stopped> {
        let job = Arc::new(job);
        let mut result = Ok(());
        for mailbox in self.workers.iter() {
            let job = job.clone();
            let posted = mailbox.post(Command::Run(Box::new(
                move |h: &mut H, ctx: &mut Ctx<'_>| job(h, ctx),
            )));
            result = result.and(posted);
        }
        result
    }

    /// Shuts every worker down gracefully: the listeners close, every client gets
    /// close 1001, and `run` returns once all have answered or
    /// [`crate::Config::shutdown_timeout`] has passed. A second call stops at once.
    pub fn shutdown(&self) {
        for mailbox in self.workers.iter() {
            // A worker that has stopped already needs no telling.
            let _ = mailbox.post(Command::Shutdown);
        }
    }
}
