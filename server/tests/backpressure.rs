//! The slow reader: a client that sends far more than it reads must meet TCP
//! back-pressure instead of growing the server's memory. The server stops reading a
//! connection whose write queue is above the high watermark, so its peak memory is
//! bounded by its configuration, not by what the client sends.
//!
//! Each test sends 256 MiB as 256 messages of 1 MiB from a writer thread while the
//! main thread reads nothing for 3 s, then reads every echo and checks every byte,
//! while a sampler thread watches the server's VmRSS; the peak (VmHWM) is checked
//! against a bound derived from the watermarks.

mod common;

use common::{masked_frame, raw_upgrade, read_message, ServerProcess, SMALL_WRITE_WATERMARKS};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MESSAGES: usize = 256;
const MESSAGE_SIZE: usize = 1 << 20;
const MIB: u64 = 1024;

/// Peak RSS bound with the default watermarks, in KiB: the write queue may hold up to
/// the 16 MiB high watermark plus one 64 KiB read's echo before reading pauses, in
/// fixed 64 KiB blocks (no doubling, no copies); plus the 64 KiB read buffer and the
/// binary's own ~4 MiB (code, allocator, logger). 24 MiB leaves a margin, and is an
/// order of magnitude below the 256 MiB sent.
const DEFAULT_BOUND_KIB: u64 = 24 * MIB;

/// Peak RSS bound with `--write-high-watermark 1048576 --write-low-watermark 262144`,
/// in KiB: a queue of at most ~1.1 MiB, the read buffer, and the binary's own ~4 MiB.
/// 8 MiB is tight enough that ignoring the flag (and queueing up to the 16 MiB
/// default, about 20 MiB of RSS) would fail the test.
const SMALL_WATERMARK_BOUND_KIB: u64 = 8 * MIB;

/// How long the client reads nothing while its writer thread sends.
const STALL: Duration = Duration::from_secs(3);
/// Bound on any single blocking read or write: the test fails instead of hanging.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// The payload of message `n`: 8-byte words that encode the message and word index,
/// so a lost, repeated or misplaced chunk anywhere is detected.
fn message(n: usize) -> Vec<u8> {
    (0..MESSAGE_SIZE / 8)
        .flat_map(|w| {
            (((n as u64) << 40) ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes()
        })
        .collect()
}

struct Observed {
    max_rss_kib: u64,
    hwm_kib: u64,
    stalled_rss_kib: u64,
}

impl Observed {
    /// The peak resident memory seen: the kernel's high-water mark, or a sampled
    /// VmRSS if that was higher (the kernel's RSS counters are updated lazily, so the
    /// two can disagree by a few pages).
    fn peak_kib(&self) -> u64 {
        self.hwm_kib.max(self.max_rss_kib)
    }
}

fn slow_reader_gets_every_byte_back(args: &[&str]) -> Observed {
    let server = Arc::new(ServerProcess::start(args));
    let mut stream = raw_upgrade(&*server);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();

    // Samples the server's resident memory until told to stop.
    let done = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (server, done, max_rss) = (server.clone(), done.clone(), max_rss.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                max_rss.fetch_max(server.status_kib("VmRSS"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Sends everything; it blocks on TCP back-pressure while nobody reads.
    let mut write_half = stream.try_clone().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let writer = {
        let sent = sent.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
            for n in 0..MESSAGES {
                write_half.write_all(&masked_frame(true, 0x2, &message(n)))?;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };

    std::thread::sleep(STALL);
    let stalled_rss_kib = server.status_kib("VmRSS");
    let sent_while_stalled = sent.load(Ordering::Relaxed);
    // Back-pressure reached the writer: far from all of it could be sent.
    assert!(
        (sent_while_stalled as usize) < MESSAGES / 2,
        "{sent_while_stalled} MiB went out while nothing was read"
    );

    let start = Instant::now();
    let mut controls = Vec::new();
    for n in 0..MESSAGES {
        let (opcode, payload) = read_message(&mut stream, &mut controls);
        assert_eq!(opcode, 0x2, "message {n}");
        assert!(payload == message(n), "message {n} came back corrupted");
    }
    assert!(controls.is_empty(), "no control frames expected");
    writer.join().unwrap().expect("writer");
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let observed = Observed {
        max_rss_kib: max_rss.load(Ordering::Relaxed),
        hwm_kib: server.status_kib("VmHWM"),
        stalled_rss_kib,
    };
    eprintln!(
        "server {args:?}: VmRSS while stalled {} KiB, max sampled VmRSS {} KiB, VmHWM {} KiB; {} MiB sent while stalled; drained in {:?}",
        observed.stalled_rss_kib,
        observed.max_rss_kib,
        observed.hwm_kib,
        sent_while_stalled,
        start.elapsed()
    );
    observed
}

#[test]
fn a_slow_reader_gets_every_byte_back_while_server_memory_stays_under_24_mib() {
    let observed = slow_reader_gets_every_byte_back(&[]);
    assert!(
        observed.peak_kib() < DEFAULT_BOUND_KIB,
        "peak RSS {} KiB is over {DEFAULT_BOUND_KIB} KiB",
        observed.peak_kib()
    );
}

#[test]
fn with_a_1_mib_high_watermark_server_memory_stays_under_8_mib() {
    let observed = slow_reader_gets_every_byte_back(&SMALL_WRITE_WATERMARKS);
    assert!(
        observed.peak_kib() < SMALL_WATERMARK_BOUND_KIB,
        "peak RSS {} KiB is over {SMALL_WATERMARK_BOUND_KIB} KiB",
        observed.peak_kib()
    );
}
