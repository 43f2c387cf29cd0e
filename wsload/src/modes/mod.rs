//! The modes, and what they share: the run's setup, the server's memory, the figures
//! every report carries.

pub mod echo;
pub mod huge;
pub mod idle;

use crate::cli::{self, Cli, Target};
use crate::client::{Engine, RunError};
use crate::report::{latency_json, per_second, round, secs, Report};
use crate::sysinfo;
use hdrhistogram::Histogram;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long to wait for closes to come back at the end of a run: the server's own
/// close timeout is 5 s by default.
pub const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Descriptors needed besides the connections: stdin, stdout, stderr, the epoll
/// instance, a /proc file being read, and a few to spare.
const SPARE_FDS: u64 = 10;

/// What every mode needs from the global options.
pub struct Setup {
    /// The server.
    pub target: Target,
    /// Source addresses to bind to, round-robin (empty: no bind).
    pub sources: Vec<IpAddr>,
    /// `--timeout`.
    pub timeout: Duration,
    /// When the run must be over.
    pub deadline: Instant,
    /// Show a progress bar.
    pub progress: bool,
    /// `--seed`.
    pub seed: u64,
    /// `--max-connecting`.
    pub max_connecting: usize,
    /// `--raw-echo`: the server sends our own frames back.
    pub raw_echo: bool,
}

impl Setup {
    /// Checks the global options.
    pub fn from_cli(cli: &Cli) -> Result<Self, String> {
        let target = cli::parse_url(&cli.url)?;
        let sources = match &cli.source_ips {
            Some(spec) => cli::parse_source_ips(spec, target.addr.ip())?,
            None => Vec::new(),
        };
        if !(cli.timeout.is_finite() && cli.timeout > 0.0) {
            return Err("--timeout must be a positive number of seconds".into());
        }
        let timeout = Duration::from_secs_f64(cli.timeout);
        Ok(Setup {
            target,
            sources,
            timeout,
            deadline: Instant::now() + timeout,
            progress: !cli.json && !cli.no_progress,
            seed: cli.seed,
            max_connecting: cli.max_connecting.max(1),
            raw_echo: cli.raw_echo,
        })
    }

    /// Makes room for `connections` sockets: raises the open-file limit (refusing to
    /// run if it stays too low), and warns if there are not enough ephemeral ports.
    pub fn prepare(&self, connections: usize) -> Result<(), String> {
        let needed = connections as u64 + SPARE_FDS;
        let limit = wsreactor_testkit::sys::raise_open_file_limit_to(needed)
            .map_err(|e| format!("cannot read the open-file limit: {e}"))?;
        if limit.soft < needed {
            return Err(format!(
                "{connections} connections need about {needed} open files, but the limit is {} \
                 (hard limit {}): raise it (ulimit -Hn, or run as root) or open fewer",
                limit.soft, limit.hard
            ));
        }
        if let Some(ports) = sysinfo::ephemeral_ports() {
            let addresses = self.sources.len().max(1) as u64;
            let per_address = (connections as u64).div_ceil(addresses);
            if per_address > ports {
                eprintln!(
                    "wsload: warning: {per_address} connections per source address, but only \
                     {ports} ephemeral ports: use --source-ips A-B to spread them over more addresses"
                );
            } else if per_address > ports / 2 {
                eprintln!(
                    "wsload: warning: {per_address} connections per source address use more than \
                     half of its {ports} ephemeral ports: connect() gets slow; \
                     --source-ips A-B spreads them over more addresses"
                );
            }
        }
        Ok(())
    }
}

/// The server's memory, read from `/proc/PID/status` around a run.
pub struct ServerMem {
    pid: u32,
    rss_before_kib: u64,
    peak_reset: bool,
}

impl ServerMem {
    /// Reads the RSS before the run and resets the peak (VmHWM) to it.
    pub fn start(pid: u32) -> Result<Self, String> {
        let rss_before_kib = sysinfo::proc_status_kib(pid, "VmRSS")
            .ok_or_else(|| format!("--server-pid {pid}: no such process (or no VmRSS)"))?;
        Ok(ServerMem {
            pid,
            rss_before_kib,
            peak_reset: sysinfo::reset_peak(pid),
        })
    }

    /// RSS before the run, KiB.
    pub fn before_kib(&self) -> u64 {
        self.rss_before_kib
    }

    /// RSS now, KiB.
    pub fn now_kib(&self) -> Option<u64> {
        sysinfo::proc_status_kib(self.pid, "VmRSS")
    }

    /// Adds the before/after/peak fields to `report`.
    pub fn report(&self, report: &mut Report, after_kib: Option<u64>) {
        let peak = sysinfo::proc_status_kib(self.pid, "VmHWM");
        report.set("server_pid", self.pid);
        report.set("server_rss_before_kib", self.rss_before_kib);
        report.set("server_rss_after_kib", after_kib);
        report.set("server_hwm_kib", peak);
        report.set("server_hwm_reset", self.peak_reset);
        report.line(
            "server RSS",
            format!(
                "{} KiB before, {} KiB after, peak {} KiB{}",
                self.rss_before_kib,
                after_kib.map_or("?".into(), |k| k.to_string()),
                peak.map_or("?".into(), |k| k.to_string()),
                if self.peak_reset {
                    ""
                } else {
                    " (peak not reset: may predate the run)"
                }
            ),
        );
    }
}

/// The CPU time wsload and the server (with `--server-pid`) use over a phase, to tell
/// which side limits a run: a process near 1.0 CPUs is saturated.
pub struct CpuMeter {
    server_pid: Option<u32>,
    client_start: Option<f64>,
    server_start: Option<f64>,
}

/// What a [`CpuMeter`] measured: CPU-seconds per second of the phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    /// wsload's own (all of it is the one loop thread).
    pub client: Option<f64>,
    /// The server's (all its threads), to the 10 ms tick of `/proc/PID/stat`.
    pub server: Option<f64>,
}

impl CpuUse {
    /// The report's `cpu` line.
    pub fn text(&self) -> String {
        format!(
            "wsload {}, server {} (CPU-seconds per second of the run; 1.00 is a whole CPU)",
            self.client.map_or("?".into(), |c| format!("{c:.2}")),
            self.server
                .map_or("? (give --server-pid)".into(), |c| format!("{c:.2}")),
        )
    }
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn start(server_pid: Option<u32>) -> Self {
        CpuMeter {
            server_pid,
            client_start: sysinfo::own_cpu_seconds(),
            server_start: server_pid.and_then(sysinfo::process_cpu_seconds),
        }
    }

    /// The CPU used since `start`, divided by `elapsed`.
    pub fn stop(&self, elapsed: Duration) -> CpuUse {
        let secs = elapsed.as_secs_f64();
        let rate = |start: Option<f64>, now: Option<f64>| match (start, now) {
            (Some(start), Some(now)) if secs > 0.0 => Some(round((now - start) / secs, 3)),
            _ => None,
        };
        CpuUse {
            client: rate(self.client_start, sysinfo::own_cpu_seconds()),
            server: rate(
                self.server_start,
                self.server_pid.and_then(sysinfo::process_cpu_seconds),
            ),
        }
    }
}

/// The fields every report has: sizes, counts, rates, latency, CPU.
pub struct Common<'a> {
    pub connections: usize,
    pub in_flight: usize,
    pub size: u64,
    pub messages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub latency: Option<&'a Histogram<u64>>,
    /// CPU use over `elapsed`.
    pub cpu: CpuUse,
}

impl Common<'_> {
    /// Writes them into `report` (JSON only; the modes write their own lines).
    pub fn write(&self, report: &mut Report, setup: &Setup) {
        report.set("connections", self.connections);
        report.set("in_flight", self.in_flight);
        report.set("size", self.size);
        report.set("messages", self.messages);
        report.set("bytes", self.bytes);
        report.set("elapsed_s", secs(self.elapsed));
        report.set(
            "msgs_per_s",
            round(per_second(self.messages as f64, self.elapsed), 1),
        );
        report.set("mib_per_s", round(self.mib_per_s(), 3));
        report.set(
            "latency_us",
            self.latency.map_or(serde_json::Value::Null, latency_json),
        );
        report.set("client_cpu", self.cpu.client);
        report.set("server_cpu", self.cpu.server);
        report.set("timeout_s", setup.timeout.as_secs_f64());
        report.set("source_ips", setup.sources.len());
    }

    /// Payload MiB/s, each echoed byte counted once.
    pub fn mib_per_s(&self) -> f64 {
        per_second(self.bytes as f64, self.elapsed) / (1024.0 * 1024.0)
    }
}

/// Copies the engine's error count and samples into the report, and a run-level
/// error if a phase did not finish.
pub fn finish(mut report: Report, engine: &Engine, outcome: Result<(), RunError>) -> Report {
    report.errors = engine.stats.errors;
    report.error_samples = engine.stats.error_samples.clone();
    if let Err(e) = outcome {
        report.error = Some(match e {
            RunError::TimedOut => {
                let settled = engine.settled();
                format!(
                    "timed out (--timeout): {} messages echoed, {settled} of {} connections done with the last phase",
                    engine.stats.messages,
                    engine.len()
                )
            }
            other => other.to_string(),
        });
    }
    report
}
