//! `huge`: one message of any size (a 64-bit length), generated while it is written
//! and verified while the echo is read, byte by byte and with a running checksum on
//! each side. Neither side of the tool ever holds the message.

use super::{finish, Common, CpuMeter, CpuUse, ServerMem, Setup, CLOSE_WAIT};
use crate::cli::HugeArgs;
use crate::client::{Engine, RunError, Workload};
use crate::progress::{Progress, Unit};
use crate::report::{latency_text, size_text, Report};
use std::time::{Duration, Instant};
use wsreactor::protocol::MessageKind;

/// `wsload huge`.
pub fn huge(setup: &Setup, args: &HugeArgs) -> Result<Report, String> {
    if args.frame_size == Some(0) {
        return Err("--frame-size must be at least 1".into());
    }
    if args.size > wsreactor::protocol::header::MAX_PAYLOAD_LEN {
        return Err("--size is above the protocol's limit of 2^63-1 bytes".into());
    }
    setup.prepare(1)?;
    let report = Report::new("huge", &setup.target);
    let server = match args.server_pid.map(ServerMem::start).transpose() {
        Ok(server) => server,
        Err(e) => return Ok(report.fail(e)),
    };
    let workload = Workload {
        kind: MessageKind::Binary,
        size: args.size,
        frame_size: args.frame_size.unwrap_or(args.size).max(1),
        in_flight: 1,
        per_conn: Some(1),
        seed: setup.seed,
        checksum: true,
        raw_echo: setup.raw_echo,
    };
    let mut engine = match Engine::new(
        &setup.target,
        setup.sources.clone(),
        1,
        workload,
        setup.deadline,
    ) {
        Ok(engine) => engine,
        Err(e) => return Ok(report.fail(format!("cannot create the poll: {e}"))),
    };
    let mut progress = Progress::new(setup.progress);
    let mut elapsed = None;
    let mut rss_after = None;
    let mut cpu = CpuUse::default();
    let outcome = (|| -> Result<(), RunError> {
        engine.open_all(None, 1, &mut |_| {})?;
        progress.phase("huge", Some(args.size), Unit::Bytes);
        let started = Instant::now();
        let meter = CpuMeter::start(args.server_pid);
        elapsed = Some(engine.run_traffic(None, &mut |e| {
            progress.update(e.stats.bytes_echoed, String::new)
        })?);
        cpu = meter.stop(started.elapsed());
        rss_after = server.as_ref().and_then(ServerMem::now_kib);
        engine.close_all(CLOSE_WAIT, &mut |_| {})?;
        Ok(())
    })();
    progress.finish();
    let elapsed = elapsed.unwrap_or_else(|| {
        engine
            .traffic_started()
            .map_or(Duration::ZERO, |t| t.elapsed())
    });

    let mut report = report;
    let stats = &engine.stats;
    let common = Common {
        connections: 1,
        in_flight: 1,
        size: args.size,
        messages: stats.messages,
        bytes: stats.bytes,
        elapsed,
        latency: Some(&stats.latency),
        cpu,
    };
    common.write(&mut report, setup);
    report.set("frame_size", args.frame_size);
    report.set("frames_sent", stats.frames_sent);
    report.set("frames_received", stats.frames_received);
    report.set("max_frame_received", stats.max_frame_received);
    report.set("bytes_verified", stats.bytes_echoed);
    report.set("checksum", stats.checksum.map(|c| format!("{c:016x}")));
    report.set("closed_ok", stats.closed_ok);

    report.line(
        "message",
        format!(
            "{}, {}",
            size_text(args.size),
            match args.frame_size {
                Some(f) => format!("{} frames of {f} bytes", stats.frames_sent),
                None => "one frame".into(),
            }
        ),
    );
    report.line(
        "echo",
        format!(
            "{} bytes verified in {} frames (largest {} bytes), checksum {}",
            stats.bytes_echoed,
            stats.frames_received,
            stats.max_frame_received,
            stats
                .checksum
                .map_or("-".into(), |c| format!("{c:016x} (matches)"))
        ),
    );
    report.line(
        "elapsed",
        format!(
            "{:.3} s (first byte written to last echoed byte read)",
            elapsed.as_secs_f64()
        ),
    );
    report.line(
        "throughput",
        format!(
            "{:.1} MiB/s (message bytes / elapsed; each byte crosses loopback twice)",
            common.mib_per_s()
        ),
    );
    report.line("latency", latency_text(&stats.latency));
    report.line("cpu", cpu.text());
    report.line(
        "closed",
        format!("{} of 1 got close 1000 back", stats.closed_ok),
    );
    if let Some(server) = &server {
        server.report(&mut report, rss_after);
    }
    Ok(finish(report, &engine, outcome))
}
