//! One client cannot take the loop from the others: a connection gets at most 16
//! reads a loop turn however much it sends, and a turn accepts at most 64
//! connections however full the backlog. Asserted by the counts the server keeps
//! (`Snapshot::turn_reads_max`, `turn_accepts_max`), not by time.

mod common;

use common::{config, masked_frame, raw_connect, raw_upgrade, read_frame, TestServer, TEXT};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

#[test]
fn a_flooding_client_gets_at_most_16_reads_a_turn_and_a_polite_one_is_served() {
    // 1 KiB reads: every read of the flood fills the buffer, so the server keeps
    // reading that connection until the per-turn limit stops it.
    let server = TestServer::echo_with(config().read_buffer_size(1024));
    let mut flood = raw_upgrade(&server);
    let mut sink = flood.try_clone().expect("clone");
    let drain = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        while let Ok(n) = sink.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let frame = masked_frame(true, TEXT, &[b'x'; 32]);
    let burst: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 2048)
        .collect();
    let mut polite = raw_upgrade(&server);
    for round in 0..40u8 {
        flood.write_all(&burst).expect("flood");
        polite
            .write_all(&masked_frame(true, TEXT, &[round]))
            .expect("polite send");
        assert_eq!(read_frame(&mut polite).expect("echo").payload, [round]);
    }
    flood.shutdown(Shutdown::Write).expect("end the flood");
    let echoed = drain.join().expect("drain");
    assert!(echoed > 0, "the flood was echoed");
    let snapshot = server.metrics.snapshot();
    assert!(
        snapshot.turn_reads_max <= 16 + 2,
        "{} reads in one turn",
        snapshot.turn_reads_max
    );
    assert!(snapshot.turn_reads_max >= 8, "the flood did fill the turns");
}

#[test]
fn a_full_backlog_is_accepted_64_connections_a_turn_and_every_one_is_served() {
    let server = TestServer::echo();
    // Park the server's loop on a job so that the connections pile up in the
    // backlog (the kernel completes TCP handshakes without the server).
    let (parked, release) = std::sync::mpsc::channel::<()>();
    let (entered, is_parked) = std::sync::mpsc::channel::<()>();
    server
        .handle
        .run_on(0, move |_, _| {
            let _ = entered.send(());
            let _ = release.recv_timeout(Duration::from_secs(20));
        })
        .expect("running");
    is_parked
        .recv_timeout(Duration::from_secs(20))
        .expect("the loop is parked");
    let mut clients: Vec<_> = (0..300).map(|_| raw_connect(&server)).collect();
    drop(parked);
    for client in &mut clients {
        client
            .write_all(common::UPGRADE_REQUEST.as_bytes())
            .expect("request");
    }
    for client in &mut clients {
        let head = common::read_http_head(client);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    }
    let snapshot = server.metrics.snapshot();
    assert!(
        snapshot.turn_accepts_max <= 64,
        "{} accepts in one turn",
        snapshot.turn_accepts_max
    );
    assert_eq!(snapshot.accepted, 300);
}
