//! Graceful shutdown: on SIGTERM the server stops accepting, sends every open
//! connection a close 1001 "server shutting down" (RFC 6455 §7.4.1: "going away"),
//! waits for the clients' answers up to `--shutdown-timeout`, and exits with status 0.

mod common;

use common::{
    masked_frame, raw_upgrade, raw_upgrade_with_read_timeout, read_close, read_frame, ServerProcess,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Three open connections: two idle, one in the middle of a fragmented message whose
/// first fragment the server has already echoed.
fn three_clients(server: &ServerProcess) -> Vec<TcpStream> {
    let idle_a = raw_upgrade(server);
    let idle_b = raw_upgrade(server);
    let mut mid_message = raw_upgrade(server);
    mid_message
        .write_all(&masked_frame(false, 0x1, b"the first half of a message"))
        .unwrap();
    let echoed = read_frame(&mut mid_message).expect("echo of the first fragment");
    assert_eq!((echoed.opcode, echoed.fin), (0x1, false));
    let mut clients = vec![idle_a, idle_b, mid_message];
    for client in &mut clients {
        client
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
    }
    clients
}

/// Each client waits for the server's close and checks it; if `answer`, it answers
/// with its own close (the closing handshake, §7.1.2) and waits for the server to end
/// the TCP connection. Without `answer` it waits for EOF without a word.
fn watch(clients: Vec<TcpStream>, answer: bool) -> Vec<JoinHandle<()>> {
    clients
        .into_iter()
        .map(|mut client| {
            std::thread::spawn(move || {
                let (code, reason) = read_close(&mut client);
                assert_eq!(code, Some(1001));
                assert_eq!(reason, "server shutting down");
                if answer {
                    client
                        .write_all(&masked_frame(true, 0x8, &1001u16.to_be_bytes()))
                        .unwrap();
                }
                // Nothing but EOF (or a reset once the process is gone) follows.
                let mut rest = Vec::new();
                match client.read_to_end(&mut rest) {
                    Ok(_) => assert!(rest.is_empty(), "{} bytes after the close", rest.len()),
                    Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
                }
            })
        })
        .collect()
}

/// Starts the server with `args`, opens [`three_clients`] that [`watch`] for its close
/// (answering it if `answer`), sends SIGTERM and asserts a successful exit (within
/// `within`), then that every client saw the shutdown as it should. Returns how long
/// the server took to exit.
fn terminate_with_three_clients(args: &[&str], answer: bool, within: Duration) -> Duration {
    let server = ServerProcess::start(args);
    let watchers = watch(three_clients(&server), answer);
    let start = Instant::now();
    let status = server.terminate(within);
    let exited_after = start.elapsed();
    assert!(status.success(), "exit status {status:?}");
    for watcher in watchers {
        watcher.join().expect("client");
    }
    exited_after
}

#[test]
fn on_sigterm_every_client_gets_close_1001_and_the_server_exits_promptly_once_they_answer() {
    // Long timeouts: a prompt exit can only come from the clients' answers.
    let exited_after = terminate_with_three_clients(
        &["--shutdown-timeout", "15", "--close-timeout", "15"],
        true,
        Duration::from_secs(15),
    );
    assert!(
        exited_after < Duration::from_secs(5),
        "exit took {exited_after:?} although every client answered"
    );
}

#[test]
fn on_sigterm_clients_that_never_answer_are_waited_for_only_until_the_shutdown_timeout() {
    let exited_after = terminate_with_three_clients(
        &["--shutdown-timeout", "1", "--close-timeout", "15"],
        false,
        Duration::from_secs(10),
    );
    assert!(
        exited_after >= Duration::from_millis(900),
        "the server did not wait for the clients' answers: {exited_after:?}"
    );
    assert!(exited_after < Duration::from_secs(5), "{exited_after:?}");
}

#[test]
fn after_sigterm_new_connections_are_refused_at_once() {
    let server = ServerProcess::start(&["--shutdown-timeout", "2", "--close-timeout", "15"]);
    let mut client = raw_upgrade_with_read_timeout(&server, Duration::from_secs(10));
    let addr = server.addr;
    let terminator = std::thread::spawn(move || server.terminate(Duration::from_secs(10)));
    // Once the close arrives the signal has been handled and the listener closed.
    assert_eq!(read_close(&mut client).0, Some(1001));
    // The listener is closed, not merely ignored: a new connection is refused at once
    // instead of waiting unanswered in the backlog until the process exits.
    let late = TcpStream::connect(addr);
    assert_eq!(
        late.as_ref().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "{late:?}"
    );
    client
        .write_all(&masked_frame(true, 0x8, &1001u16.to_be_bytes()))
        .unwrap();
    common::expect_eof(&mut client);
    drop(client);
    assert!(terminator.join().unwrap().success());
}
