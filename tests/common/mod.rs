//! The library's integration tests run servers in this process, on a free loopback
//! port, and talk to them through real sockets with the shared helpers of
//! `wsreactor-testkit` (hand-built frames, raw TCP, `tungstenite`).
#![allow(dead_code, unused_imports)] // each test file uses a different part

pub use wsreactor_testkit::raw::*;
pub use wsreactor_testkit::{payload, Listening};

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;
use wsreactor::{Config, ConfigBuilder, Echo, Handle, Handler, Metrics, Server};

/// A server running on a thread of the test; shut down (and joined) when dropped.
pub struct TestServer<H: Handler> {
    pub addr: SocketAddr,
    pub handle: Handle<H>,
    pub metrics: std::sync::Arc<Metrics>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

/// A config on `127.0.0.1:0` with everything else at its default, to adjust.
pub fn config() -> ConfigBuilder {
    Config::builder().addr(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Small write watermarks (1 MiB high, 256 KiB low), for the tests that make
/// back-pressure set in early.
pub fn small_watermarks() -> ConfigBuilder {
    config()
        .write_high_watermark(1 << 20)
        .write_low_watermark(256 << 10)
}

impl TestServer<Echo> {
    /// The streaming echo with the default configuration.
    pub fn echo() -> Self {
        Self::start(config(), Echo::new())
    }

    /// The streaming echo with `config`.
    pub fn echo_with(config: ConfigBuilder) -> Self {
        Self::start(config, Echo::new())
    }
}

impl<H: Handler + Send + 'static> TestServer<H>
where
    H::State: Send,
{
    /// `handler` served with `config` (bound before this returns).
    pub fn start(config: ConfigBuilder, handler: H) -> Self {
        let config = config.build().expect("a valid test config");
        let server = Server::bind(config, handler).expect("bind the test server");
        Self::run(server)
    }

    /// Runs `server` (already bound, with its routes set) on a thread.
    pub fn run(server: Server<H>) -> Self {
        let addr = server.local_addr().expect("local address");
        let handle = server.handle();
        let metrics = server.metrics().clone();
        let thread = std::thread::Builder::new()
            .name("test-server".into())
            .spawn(move || server.run())
            .expect("spawn the server thread");
        TestServer {
            addr,
            handle,
            metrics,
            thread: Some(thread),
        }
    }

    /// Shuts the server down gracefully and waits up to `within` for `run` to return
    /// (it must, and with `Ok`).
    pub fn shutdown(mut self, within: Duration) {
        self.handle.shutdown();
        self.join(within);
    }

    fn join(&mut self, within: Duration) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = std::time::Instant::now() + within;
        while !thread.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not stop within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        thread
            .join()
            .expect("the server thread panicked")
            .expect("the server loop failed");
    }
}

impl<H: Handler> Listening for TestServer<H> {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl<H: Handler> Drop for TestServer<H> {
    fn drop(&mut self) {
        // Twice: the second stops at once, without waiting for clients to answer.
        self.handle.shutdown();
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            if !std::thread::panicking() {
                let _ = thread.join();
            }
        }
    }
}

/// Raises this process's soft limit on open files to the hard limit (once), for the
/// tests that hold hundreds of connections: in process, both ends of each one are
/// file descriptors of the test (the server binary raises its own limit).
pub fn raise_open_file_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = wsreactor_testkit::sys::raise_open_file_limit();
    });
}
