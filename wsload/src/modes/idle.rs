//! `idle`: how fast the server takes connections, and what an idle connection costs
//! it.
//!
//! Opens `--connections` WebSocket connections (at most `--max-connecting` in the TCP
//! or opening handshake at once, and at most `--open-rate` started per second), holds
//! them for `--hold` seconds answering the server's pings, then closes each with 1000
//! and counts the closes that come back. With `--server-pid`, the server's `VmRSS`
//! before the first connect and at the end of the hold gives its memory per
//! connection. `/proc/net/sockstat` gives the kernel's side: the pages charged to TCP
//! socket buffers, per socket (both ends of each loopback connection are sockets).

use super::{finish, Common, ServerMem, Setup, CLOSE_WAIT};
use crate::cli::IdleArgs;
use crate::client::{Engine, RunError, Workload};
use crate::progress::{Progress, Unit};
use crate::report::{latency_json, latency_text, per_second, round, secs, Report};
use crate::sysinfo::{self, SockStat};
use serde_json::Value;
use std::time::{Duration, Instant};

/// `wsload idle`.
pub fn idle(setup: &Setup, args: &IdleArgs) -> Result<Report, String> {
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if !(args.hold.is_finite() && args.hold >= 0.0) {
        return Err("--hold must be a number of seconds".into());
    }
    if args.hold >= setup.timeout.as_secs_f64() {
        return Err(format!(
            "--hold {} must be shorter than --timeout {}",
            args.hold,
            setup.timeout.as_secs_f64()
        ));
    }
    if let Some(rate) = args.open_rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err("--open-rate must be a positive number".into());
        }
    }
    setup.prepare(args.connections)?;
    let hold = Duration::from_secs_f64(args.hold);
    let report = Report::new("idle", &setup.target);
    let server = match args.server_pid.map(ServerMem::start).transpose() {
        Ok(server) => server,
        Err(e) => return Ok(report.fail(e)),
    };
    let mut engine = match Engine::new(
        &setup.target,
        setup.sources.clone(),
        args.connections,
        Workload::none(setup.seed, setup.raw_echo),
        setup.deadline,
    ) {
        Ok(engine) => engine,
        Err(e) => return Ok(report.fail(format!("cannot create the poll: {e}"))),
    };

    let run_start = Instant::now();
    let sock_before = sysinfo::sockstat();
    let mut m = Measured::default();
    let mut progress = Progress::new(setup.progress);
    let outcome = (|| -> Result<(), RunError> {
        let n = args.connections as u64;
        progress.phase("open", Some(n), Unit::Count);
        m.accept = Some(
            engine.open_all(args.open_rate, setup.max_connecting, &mut |e| {
                progress.update(e.stats.opened as u64, || {
                    format!("{} errors", e.stats.errors)
                })
            })?,
        );
        progress.phase("hold", Some(hold.as_millis() as u64), Unit::Millis);
        let hold_start = Instant::now();
        engine.hold(hold, &mut |e| {
            progress.update(hold_start.elapsed().as_millis() as u64, || {
                format!(
                    "{} open, {} errors",
                    e.stats.opened - e.stats.failed.min(e.stats.opened),
                    e.stats.errors
                )
            })
        })?;
        m.rss_after_kib = server.as_ref().and_then(ServerMem::now_kib);
        m.sock_after = sysinfo::sockstat();
        m.held = Some(engine.open_now());
        progress.phase("close", Some(n), Unit::Count);
        m.close = Some(engine.close_all(CLOSE_WAIT, &mut |e| {
            progress.update(e.settled() as u64, String::new)
        })?);
        Ok(())
    })();
    progress.finish();
    let total = run_start.elapsed();

    let mut report = report;
    let stats = &engine.stats;
    Common {
        connections: args.connections,
        in_flight: 0,
        size: 0,
        messages: 0,
        bytes: 0,
        elapsed: total,
        latency: None,
        cpu: Default::default(),
    }
    .write(&mut report, setup);
    let opened = stats.opened;
    report.set("opened", opened);
    report.set("accept_s", m.accept.map(secs));
    let conns_per_s = m.accept.map(|d| round(per_second(opened as f64, d), 1));
    report.set("conns_per_s", conns_per_s);
    report.set("open_rate", args.open_rate);
    report.set("upgrade_latency_us", latency_json(&stats.upgrade_latency));
    report.set("hold_s", args.hold);
    report.set("held", m.held);
    report.set("closed_ok", stats.closed_ok);
    report.set("close_s", m.close.map(secs));

    report.line(
        "opened",
        format!(
            "{opened} of {} in {} ({} conns/s{})",
            args.connections,
            m.accept
                .map_or("-".into(), |d| format!("{:.3} s", d.as_secs_f64())),
            conns_per_s.map_or("-".into(), |r| format!("{r:.0}")),
            args.open_rate
                .map_or(String::new(), |r| format!(", --open-rate {r}"))
        ),
    );
    report.line("upgrade", latency_text(&stats.upgrade_latency));
    report.line(
        "held",
        format!(
            "{} open after {} s",
            m.held.map_or("-".into(), |h| h.to_string()),
            args.hold
        ),
    );

    if let Some(server) = &server {
        server.report(&mut report, m.rss_after_kib);
        let per_conn = match (m.rss_after_kib, opened) {
            (Some(after), n) if n > 0 => {
                let delta = after as f64 - server.before_kib() as f64;
                Some(round(delta * 1024.0 / n as f64, 1))
            }
            _ => None,
        };
        report.set("server_rss_bytes_per_conn", per_conn);
        report.set("bytes_per_conn", per_conn);
        report.line(
            "server memory",
            per_conn.map_or("-".into(), |b| {
                format!("{b:.0} bytes per connection (VmRSS after - before, / {opened})")
            }),
        );
    }

    let page = sysinfo::page_size();
    let field = |s: Option<SockStat>, f: fn(&SockStat) -> u64| -> Value {
        s.as_ref().map(f).map_or(Value::Null, Value::from)
    };
    report.set("sockstat_tcp_inuse_before", field(sock_before, |s| s.inuse));
    report.set("sockstat_tcp_inuse_after", field(m.sock_after, |s| s.inuse));
    report.set(
        "sockstat_tcp_mem_pages_before",
        field(sock_before, |s| s.mem_pages),
    );
    report.set(
        "sockstat_tcp_mem_pages_after",
        field(m.sock_after, |s| s.mem_pages),
    );
    report.set(
        "sockstat_tcp_tw_before",
        field(sock_before, |s| s.time_wait),
    );
    report.set("page_size", page);
    let per_socket = match (sock_before, m.sock_after) {
        (Some(before), Some(after)) if after.inuse > before.inuse => {
            let sockets = (after.inuse - before.inuse) as f64;
            let bytes = (after.mem_pages as f64 - before.mem_pages as f64) * page as f64;
            Some((
                round(bytes / sockets, 1),
                after.inuse - before.inuse,
                before,
                after,
            ))
        }
        _ => None,
    };
    report.set(
        "sockstat_tcp_mem_bytes_per_socket",
        per_socket.map(|(b, ..)| b),
    );
    report.line(
        "kernel TCP mem",
        match per_socket {
            Some((bytes, sockets, before, after)) => format!(
                "{bytes:.0} bytes per socket (/proc/net/sockstat: mem {} -> {} pages of {page} B, inuse {} -> {}, {sockets} sockets)",
                before.mem_pages, after.mem_pages, before.inuse, after.inuse
            ),
            None => "- (/proc/net/sockstat unreadable or no new sockets)".into(),
        },
    );
    report.line(
        "closed",
        format!(
            "{} of {opened} got close 1000 back{}",
            stats.closed_ok,
            m.close
                .map_or(String::new(), |d| format!(" in {:.3} s", d.as_secs_f64()))
        ),
    );
    Ok(finish(report, &engine, outcome))
}

#[derive(Default)]
struct Measured {
    accept: Option<Duration>,
    held: Option<usize>,
    rss_after_kib: Option<u64>,
    sock_after: Option<SockStat>,
    close: Option<Duration>,
}
