//! `echo` and `stream`: connections that keep messages in flight, every echo verified.
//!
//! The run has three phases: open every connection (`connect_s`), send and verify
//! (`elapsed_s`: from the first message to the last echo; the rates are over this
//! phase), close every connection with 1000 (`closed_ok`). `stream` is the same with
//! one connection and large messages.

use super::{finish, Common, CpuMeter, CpuUse, ServerMem, Setup, CLOSE_WAIT};
use crate::cli::{EchoArgs, StreamArgs};
use crate::client::{Engine, RunError, Workload};
use crate::progress::{Progress, Unit};
use crate::report::{latency_json, latency_text, per_second, round, secs, size_text, Report};
use std::time::{Duration, Instant};
use wsreactor::protocol::MessageKind;

/// What one `echo` or `stream` run does.
struct Plan {
    mode: &'static str,
    connections: usize,
    in_flight: usize,
    size: u64,
    text: bool,
    per_conn: Option<u64>,
    duration: Option<Duration>,
    server_pid: Option<u32>,
    max_connecting: usize,
}

/// `wsload echo`.
pub fn echo(setup: &Setup, args: &EchoArgs) -> Result<Report, String> {
    if args.connections == 0 || args.in_flight == 0 {
        return Err("--connections and --in-flight must be at least 1".into());
    }
    let duration = match (args.messages, args.duration) {
        (Some(0), _) => return Err("--messages must be at least 1".into()),
        (Some(_), _) => None,
        (None, d) => {
            let d = d.unwrap_or(10.0);
            if !(d.is_finite() && d > 0.0) {
                return Err("--duration must be a positive number of seconds".into());
            }
            if d >= setup.timeout.as_secs_f64() {
                return Err(format!(
                    "--duration {d} must be shorter than --timeout {}",
                    setup.timeout.as_secs_f64()
                ));
            }
            Some(Duration::from_secs_f64(d))
        }
    };
    setup.prepare(args.connections)?;
    Ok(run(
        setup,
        Plan {
            mode: "echo",
            connections: args.connections,
            in_flight: args.in_flight,
            size: args.size,
            text: args.text,
            per_conn: args.messages,
            duration,
            server_pid: args.server_pid,
            max_connecting: setup.max_connecting,
        },
    ))
}

/// `wsload stream`.
pub fn stream(setup: &Setup, args: &StreamArgs) -> Result<Report, String> {
    if args.count == 0 || args.in_flight == 0 {
        return Err("--count and --in-flight must be at least 1".into());
    }
    setup.prepare(1)?;
    Ok(run(
        setup,
        Plan {
            mode: "stream",
            connections: 1,
            in_flight: args.in_flight.min(args.count as usize),
            size: args.size,
            text: args.text,
            per_conn: Some(args.count),
            duration: None,
            server_pid: args.server_pid,
            max_connecting: setup.max_connecting,
        },
    ))
}

fn run(setup: &Setup, plan: Plan) -> Report {
    let report = Report::new(plan.mode, &setup.target);
    let server = match plan.server_pid.map(ServerMem::start).transpose() {
        Ok(server) => server,
        Err(e) => return report.fail(e),
    };
    let workload = Workload {
        kind: if plan.text {
            MessageKind::Text
        } else {
            MessageKind::Binary
        },
        size: plan.size,
        frame_size: plan.size.max(1),
        in_flight: plan.in_flight,
        per_conn: plan.per_conn,
        seed: setup.seed,
        checksum: false,
        raw_echo: setup.raw_echo,
    };
    let mut engine = match Engine::new(
        &setup.target,
        setup.sources.clone(),
        plan.connections,
        workload,
        setup.deadline,
    ) {
        Ok(engine) => engine,
        Err(e) => return report.fail(format!("cannot create the poll: {e}")),
    };
    let mut progress = Progress::new(setup.progress);
    let mut times = Times::default();
    let outcome = drive(
        &mut engine,
        &mut progress,
        &plan,
        server.as_ref(),
        &mut times,
    );
    progress.finish();
    if outcome.is_err() {
        // The traffic phase was cut short: its time so far.
        if let (None, Some(start)) = (times.elapsed, engine.traffic_started()) {
            times.elapsed = Some(start.elapsed());
        }
    }
    let mut report = report;
    write_report(&mut report, setup, &plan, &engine, server.as_ref(), &times);
    finish(report, &engine, outcome)
}

#[derive(Default)]
struct Times {
    connect: Option<Duration>,
    elapsed: Option<Duration>,
    close: Option<Duration>,
    rss_after_kib: Option<u64>,
    cpu: CpuUse,
}

fn drive(
    engine: &mut Engine,
    progress: &mut Progress,
    plan: &Plan,
    server: Option<&ServerMem>,
    times: &mut Times,
) -> Result<(), RunError> {
    let n = plan.connections as u64;
    progress.phase("connect", Some(n), Unit::Count);
    times.connect = Some(engine.open_all(None, plan.max_connecting, &mut |e| {
        progress.update(e.stats.opened as u64, String::new)
    })?);

    let total_messages = plan.per_conn.map(|m| m * n);
    let big = plan.size >= 64 * 1024;
    match (plan.duration, big) {
        (Some(d), _) => progress.phase("echo", Some(d.as_millis() as u64), Unit::Millis),
        (None, true) => progress.phase(
            plan.mode,
            total_messages.map(|m| m * plan.size),
            Unit::Bytes,
        ),
        (None, false) => progress.phase(plan.mode, total_messages, Unit::Count),
    }
    let started = Instant::now();
    let cpu = CpuMeter::start(plan.server_pid);
    times.elapsed = Some(engine.run_traffic(plan.duration, &mut |e| {
        let elapsed = started.elapsed();
        let pos = match (plan.duration, big) {
            (Some(_), _) => elapsed.as_millis() as u64,
            (None, true) => e.stats.bytes_echoed,
            (None, false) => e.stats.messages,
        };
        progress.update(pos, || {
            format!(
                "{} msgs, {:.0} msgs/s, {} errors",
                e.stats.messages,
                per_second(e.stats.messages as f64, elapsed),
                e.stats.errors
            )
        })
    })?);
    times.cpu = cpu.stop(started.elapsed());
    times.rss_after_kib = server.and_then(ServerMem::now_kib);

    progress.phase("close", Some(n), Unit::Count);
    times.close = Some(engine.close_all(CLOSE_WAIT, &mut |e| {
        progress.update(e.settled() as u64, String::new)
    })?);
    Ok(())
}

fn write_report(
    report: &mut Report,
    setup: &Setup,
    plan: &Plan,
    engine: &Engine,
    server: Option<&ServerMem>,
    times: &Times,
) {
    let stats = &engine.stats;
    let elapsed = times.elapsed.unwrap_or_default();
    let common = Common {
        connections: plan.connections,
        in_flight: plan.in_flight,
        size: plan.size,
        messages: stats.messages,
        bytes: stats.bytes,
        elapsed,
        latency: Some(&stats.latency),
        cpu: times.cpu,
    };
    common.write(report, setup);
    report.set("text", plan.text);
    report.set("opened", stats.opened);
    report.set("connect_s", times.connect.map(secs));
    report.set("upgrade_latency_us", latency_json(&stats.upgrade_latency));
    report.set("close_s", times.close.map(secs));
    report.set("closed_ok", stats.closed_ok);
    report.set("frames_sent", stats.frames_sent);
    report.set("frames_received", stats.frames_received);
    match plan.mode {
        "stream" => report.set("count", plan.per_conn),
        _ => {
            report.set("messages_per_conn", plan.per_conn);
            report.set("duration_s", plan.duration.map(|d| d.as_secs_f64()));
        }
    }

    report.line(
        "connections",
        format!(
            "{} ({} opened in {}; upgrade {})",
            plan.connections,
            stats.opened,
            times
                .connect
                .map_or("-".into(), |d| format!("{:.3} s", d.as_secs_f64())),
            latency_text(&stats.upgrade_latency)
        ),
    );
    report.line("in flight", format!("{} per connection", plan.in_flight));
    report.line(
        "message",
        format!(
            "{}, {}",
            size_text(plan.size),
            if plan.text { "text" } else { "binary" }
        ),
    );
    let bound = match (plan.per_conn, plan.duration) {
        (Some(m), _) => format!(" (of {})", m * plan.connections as u64),
        (None, Some(d)) => format!(" (sent for {} s)", d.as_secs_f64()),
        (None, None) => String::new(),
    };
    report.line(
        "messages",
        format!("{} echoed and verified{bound}", stats.messages),
    );
    report.line(
        "elapsed",
        format!(
            "{:.3} s (first message to last echo)",
            elapsed.as_secs_f64()
        ),
    );
    report.line(
        "rate",
        format!(
            "{:.0} msgs/s, {:.2} MiB/s (payload, each byte counted once)",
            round(per_second(stats.messages as f64, elapsed), 1),
            common.mib_per_s()
        ),
    );
    report.line("latency", latency_text(&stats.latency));
    report.line("cpu", times.cpu.text());
    report.line(
        "closed",
        format!(
            "{} of {} got close 1000 back{}",
            stats.closed_ok,
            stats.opened,
            times
                .close
                .map_or(String::new(), |d| format!(" in {:.3} s", d.as_secs_f64()))
        ),
    );
    if let Some(server) = server {
        server.report(report, times.rss_after_kib);
    }
}
