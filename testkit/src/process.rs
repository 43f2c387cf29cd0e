//! The `wsreactor` binary as a child process: started on an ephemeral port, stopped
//! with a signal, its memory read from `/proc`, its log captured.

use crate::{launch, Listening};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Server arguments for small write watermarks (1 MiB high, 256 KiB low), for the tests
/// that bound the server's memory or make back-pressure set in early.
pub const SMALL_WRITE_WATERMARKS: [&str; 4] = [
    "--write-high-watermark",
    "1048576",
    "--write-low-watermark",
    "262144",
];

/// Reads the server's first stdout line, `listening on ws://ADDR/`, and returns ADDR.
fn read_listening_addr(child: &mut Child) -> SocketAddr {
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read listening line");
    launch::listening_addr(&line).unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
}

/// The server binary running as a child process; killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `wsreactor --addr 127.0.0.1:0 ARGS…` and waits for its "listening on" line.
    /// Its log goes to stderr at `RUST_LOG` (default `warn`).
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_prefix(&[], args)
    }

    /// Like [`ServerProcess::start`], run through a wrapper command (e.g.
    /// `["prlimit", "--nofile=64:64", "--"]`), which must `exec` the server so that
    /// the child's pid is the server's.
    pub fn start_with_prefix(prefix: &[&str], args: &[&str]) -> Self {
        let binary = launch::server_binary();
        let mut command = match prefix {
            [] => Command::new(&binary),
            [wrapper, rest @ ..] => {
                let mut command = Command::new(wrapper);
                command.args(rest).arg(&binary);
                command
            }
        };
        let mut child = launch::configure_server(&mut command, args)
            .spawn()
            .expect("start wsreactor");
        let addr = read_listening_addr(&mut child);
        ServerProcess { child, addr }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of `/proc/PID/status` in KiB (e.g. "VmRSS", "VmHWM").
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Sends SIGTERM and waits (up to `within`) for the process to exit.
    pub fn terminate(self, within: Duration) -> ExitStatus {
        self.stop_with(libc::SIGTERM, within)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Listening for ServerProcess {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The server's log lines (stderr), read by a thread as they come.
pub struct LogLines(std::sync::mpsc::Receiver<String>);

impl LogLines {
    /// Waits up to `within` for a log line containing `needle`, skipping the others;
    /// returns it, or `None` if none came in time (or the server's stderr closed).
    pub fn wait_for(&self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.0.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

impl ServerProcess {
    /// Like [`ServerProcess::start`], with the log at `level` (`RUST_LOG`) captured
    /// instead of inherited: its lines arrive through the returned [`LogLines`].
    pub fn start_with_log(level: &str, args: &[&str]) -> (Self, LogLines) {
        let mut command = Command::new(launch::server_binary());
        launch::configure_server(&mut command, args)
            .env("RUST_LOG", level)
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("start wsreactor");
        let stderr = child.stderr.take().expect("stderr");
        let (lines, receiver) = std::sync::mpsc::channel();
        // Draining stderr all along also keeps the server from blocking on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let _ = lines.send(line);
            }
        });
        let addr = read_listening_addr(&mut child);
        (ServerProcess { child, addr }, LogLines(receiver))
    }

    /// Like [`ServerProcess::terminate`], with `signal` (e.g. `libc::SIGINT`).
    pub fn stop_with(mut self, signal: i32, within: Duration) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
