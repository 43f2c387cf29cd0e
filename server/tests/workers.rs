//! `--workers N`: N reactors on N threads, each with its own SO_REUSEPORT listener on
//! the same address, sharing nothing but the counters. Clients echo through any of
//! them, the counters cover all of them, and a signal shuts every one down gracefully.

mod common;

use common::{
    expect_eof, http_exchange, masked_frame, metrics, metrics_when, raw_connect, raw_upgrade,
    read_close, read_message, ServerProcess, UPGRADE_REQUEST,
};
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn two_workers_echo_for_fifty_clients_share_the_connections_and_all_shut_down_on_sigterm() {
    let (server, log) = ServerProcess::start_with_log(
        "info",
        &[
            "--workers",
            "2",
            "--shutdown-timeout",
            "15",
            "--close-timeout",
            "15",
        ],
    );
    let started = log
        .wait_for("listening on", Duration::from_secs(5))
        .expect("start line");
    assert!(started.contains("with 2 workers"), "{started}");

    // Fifty clients, all open at once, each echoing a few messages.
    let mut clients: Vec<_> = (0..50).map(|_| raw_upgrade(&server)).collect();
    for round in 0..3 {
        for (i, client) in clients.iter_mut().enumerate() {
            let text = format!("round {round} client {i}");
            client
                .write_all(&masked_frame(true, 0x1, text.as_bytes()))
                .unwrap();
        }
        for (i, client) in clients.iter_mut().enumerate() {
            let expected = format!("round {round} client {i}");
            assert_eq!(
                read_message(client, &mut Vec::new()),
                (0x1, expected.into_bytes())
            );
        }
    }

    let m = metrics(&server);
    assert_eq!(m["wsreactor_workers"], 2);
    assert_eq!(m["wsreactor_connections_open"], 50);
    assert_eq!(m["wsreactor_messages_total{direction=\"in\"}"], 150);
    assert_eq!(m["wsreactor_messages_total{direction=\"out\"}"], 150);
    let per_worker = [
        m["wsreactor_worker_connections_total{worker=\"0\"}"],
        m["wsreactor_worker_connections_total{worker=\"1\"}"],
    ];
    // The kernel hashes each connection to one listener: with 51 connections, both
    // get some (all on one would have a chance of 2^-50).
    assert!(per_worker.iter().all(|&n| n > 0), "{per_worker:?}");
    assert_eq!(
        per_worker.iter().sum::<u64>(),
        m["wsreactor_connections_total"]
    );

    // SIGTERM: every client, whichever worker holds it, gets close 1001 and answers.
    let watchers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            std::thread::spawn(move || {
                client
                    .set_read_timeout(Some(Duration::from_secs(15)))
                    .unwrap();
                let (code, reason) = read_close(&mut client);
                assert_eq!(code, Some(1001));
                assert_eq!(reason, "server shutting down");
                client
                    .write_all(&masked_frame(true, 0x8, &1001u16.to_be_bytes()))
                    .unwrap();
                expect_eof(&mut client);
            })
        })
        .collect();
    let start = Instant::now();
    let status = server.terminate(Duration::from_secs(15));
    let took = start.elapsed();
    assert!(status.success(), "exit status {status:?}");
    for watcher in watchers {
        watcher.join().expect("client saw a graceful close");
    }
    // Long timeouts: a prompt exit can only come from every worker finishing early.
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    let mut finished: Vec<String> = (0..2)
        .map(|_| {
            let line = log
                .wait_for(" shut down (0 connections left)", Duration::from_secs(5))
                .expect("a worker's last line");
            // Without the log line's prefix (timestamp, level, module).
            line.rsplit("] ").next().unwrap_or_default().to_string()
        })
        .collect();
    finished.sort();
    assert_eq!(
        finished,
        [
            "worker 0 shut down (0 connections left)",
            "worker 1 shut down (0 connections left)"
        ]
    );
}

#[test]
fn max_connections_is_for_all_workers_together_and_sigint_stops_them_all() {
    let server = ServerProcess::start(&[
        "--workers",
        "3",
        "--max-connections",
        "5",
        "--shutdown-timeout",
        "1",
    ]);
    let mut open: Vec<_> = (0..5).map(|_| raw_upgrade(&server)).collect();
    let head = http_exchange(&mut raw_connect(&server), UPGRADE_REQUEST.as_bytes());
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    let m = metrics(&server);
    assert_eq!(m["wsreactor_connections_open"], 5);
    assert_eq!(m["wsreactor_refused_total"], 1);
    assert_eq!(m["wsreactor_workers"], 3);

    // One closes: a new upgrade fits again, whichever worker gets it.
    let mut leaving = open.remove(0);
    leaving
        .write_all(&masked_frame(true, 0x8, &1000u16.to_be_bytes()))
        .unwrap();
    assert_eq!(read_close(&mut leaving).0, Some(1000));
    metrics_when(&server, Duration::from_secs(5), |m| {
        m["wsreactor_connections_open"] == 4
    });
    let _again = raw_upgrade(&server);

    let status = server.stop_with(libc::SIGINT, Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn workers_share_port_zero_and_each_listener_is_closed_at_shutdown() {
    let server = ServerProcess::start(&["--workers", "4", "--shutdown-timeout", "1"]);
    let addr = server.addr;
    // Connections to the one printed address reach the workers, and echo.
    let mut clients: Vec<_> = (0..20).map(|_| raw_upgrade(&server)).collect();
    for client in &mut clients {
        client
            .write_all(&masked_frame(true, 0x2, &[7; 300]))
            .unwrap();
        assert_eq!(read_message(client, &mut Vec::new()), (0x2, vec![7; 300]));
    }
    assert!(server.terminate(Duration::from_secs(10)).success());
    // No worker's listener outlives the process.
    assert!(std::net::TcpStream::connect(addr).is_err());
}
