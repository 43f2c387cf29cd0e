//! The counters: `GET /metrics` (Prometheus text format) after known traffic, and the
//! `--stats-interval` log line.

mod common;

use common::{
    expect_eof, http_exchange, masked_frame, metrics, metrics_when, raw_connect, raw_upgrade,
    read_close, read_message, ServerProcess, UPGRADE_REQUEST,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

/// The sample `key` (name with labels); absent counts as a test failure.
fn get(metrics: &BTreeMap<String, u64>, key: &str) -> u64 {
    *metrics
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {metrics:#?}"))
}

#[test]
fn metrics_count_connections_messages_bytes_protocol_errors_and_closes() {
    let server = ServerProcess::start(&["--max-frame-size", "1000"]);

    // Three clients echo five messages each and stay open.
    let mut echoing: Vec<_> = (0..3).map(|_| raw_upgrade(&server)).collect();
    let mut payload_bytes = 0;
    for (i, client) in echoing.iter_mut().enumerate() {
        for j in 0..5 {
            let text = format!("message {j} from client {i}");
            payload_bytes += text.len() as u64;
            client
                .write_all(&masked_frame(true, 0x1, text.as_bytes()))
                .unwrap();
            assert_eq!(
                read_message(client, &mut Vec::new()),
                (0x1, text.into_bytes())
            );
        }
    }
    // One breaks the protocol (an unmasked frame: 1002), one sends invalid UTF-8 (1007),
    // one a frame over --max-frame-size (1009).
    for (frame, code) in [
        (vec![0x81, 0x01, b'a'], 1002),
        (masked_frame(true, 0x1, &[0xFF]), 1007),
        (masked_frame(true, 0x2, &[0; 1001]), 1009),
    ] {
        let mut client = raw_upgrade(&server);
        client.write_all(&frame).unwrap();
        assert_eq!(read_close(&mut client).0, Some(code));
    }
    // One closes normally (1000), one drops its TCP connection without a close (1006).
    let mut polite = raw_upgrade(&server);
    polite
        .write_all(&masked_frame(true, 0x8, &1000u16.to_be_bytes()))
        .unwrap();
    assert_eq!(read_close(&mut polite).0, Some(1000));
    expect_eof(&mut polite);
    drop(polite);
    drop(raw_upgrade(&server));

    let m = metrics_when(&server, Duration::from_secs(10), |m| {
        m.get("wsreactor_closes_total{code=\"1006\"}") == Some(&1)
            // the three echoing clients and this request's own connection
            && m.get("wsreactor_sockets_open") == Some(&4)
    });
    assert_eq!(get(&m, "wsreactor_connections_open"), 3);
    assert_eq!(get(&m, "wsreactor_upgrades_total"), 8);
    // Every accepted connection was an upgrade or a plain request (these /metrics).
    assert_eq!(
        get(&m, "wsreactor_connections_total"),
        8 + get(&m, "wsreactor_http_requests_total")
    );
    assert_eq!(get(&m, "wsreactor_refused_total"), 0);
    assert_eq!(get(&m, "wsreactor_messages_total{direction=\"in\"}"), 15);
    assert_eq!(get(&m, "wsreactor_messages_total{direction=\"out\"}"), 15);
    // Payloads plus frame headers and the handshakes (~150 bytes in, ~130 out each).
    assert!(get(&m, "wsreactor_bytes_total{direction=\"in\"}") > payload_bytes + 8 * 140);
    assert!(get(&m, "wsreactor_bytes_total{direction=\"out\"}") > payload_bytes + 8 * 120);
    for code in ["1002", "1007", "1009"] {
        let key = format!("wsreactor_protocol_errors_total{{code=\"{code}\"}}");
        assert_eq!(get(&m, &key), 1, "{key}");
    }
    for code in ["1000", "1002", "1006", "1007", "1009"] {
        let key = format!("wsreactor_closes_total{{code=\"{code}\"}}");
        assert_eq!(get(&m, &key), 1, "{key}");
    }
    assert_eq!(get(&m, "wsreactor_closes_total{code=\"1001\"}"), 0);
    assert_eq!(get(&m, "wsreactor_workers"), 1);
    assert_eq!(
        get(&m, "wsreactor_worker_connections_total{worker=\"0\"}"),
        get(&m, "wsreactor_connections_total")
    );
}

#[test]
fn metrics_count_refusals_bad_handshakes_and_handshake_timeouts() {
    let server = ServerProcess::start(&["--max-connections", "1", "--handshake-timeout", "1"]);
    let _open = raw_upgrade(&server);
    let head = http_exchange(&mut raw_connect(&server), UPGRADE_REQUEST.as_bytes());
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    let bad_version = UPGRADE_REQUEST.replace("Version: 13", "Version: 12");
    let head = http_exchange(&mut raw_connect(&server), bad_version.as_bytes());
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    let mut silent = raw_connect(&server);
    expect_eof(&mut silent); // dropped at the 1-second handshake timeout

    let m = metrics(&server);
    assert_eq!(get(&m, "wsreactor_refused_total"), 1);
    assert_eq!(
        get(&m, "wsreactor_handshake_failures_total{reason=\"invalid\"}"),
        1
    );
    assert_eq!(
        get(&m, "wsreactor_handshake_failures_total{reason=\"timeout\"}"),
        1
    );
    assert_eq!(get(&m, "wsreactor_connections_open"), 1);
    assert_eq!(get(&m, "wsreactor_upgrades_total"), 1);
}

#[test]
fn metrics_page_is_prometheus_text_with_help_and_type_for_every_family() {
    let server = ServerProcess::start(&[]);
    let mut stream = raw_connect(&server);
    let head = http_exchange(
        &mut stream,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let mut body = String::new();
    std::io::Read::read_to_string(&mut stream, &mut body).unwrap();
    let mut typed = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(kind == "counter" || kind == "gauge", "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            typed.push(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(rest
                .split_once(' ')
                .is_some_and(|(_, help)| !help.is_empty()));
        } else {
            let name = line.split(['{', ' ']).next().unwrap();
            assert_eq!(typed.last().map(String::as_str), Some(name), "{line}");
        }
    }
    for family in [
        "wsreactor_connections_open",
        "wsreactor_connections_total",
        "wsreactor_messages_total",
        "wsreactor_bytes_total",
        "wsreactor_protocol_errors_total",
        "wsreactor_closes_total",
        "wsreactor_worker_connections_total",
    ] {
        assert!(
            typed.iter().any(|t| t == family),
            "{family} missing:\n{body}"
        );
    }
}

#[test]
fn stats_interval_logs_the_counters_periodically() {
    let (server, log) = ServerProcess::start_with_log("info", &["--stats-interval", "1"]);
    let started = log
        .wait_for("listening on", Duration::from_secs(5))
        .expect("start line");
    assert!(started.contains("with 1 worker ("), "{started}");
    assert!(started.contains("stats every 1 s"), "{started}");
    let mut client = raw_upgrade(&server);
    client.write_all(&masked_frame(true, 0x1, b"hi")).unwrap();
    read_message(&mut client, &mut Vec::new());
    let line = log
        .wait_for("messages in 1 out 1", Duration::from_secs(5))
        .expect("a stats line counting the echo");
    assert!(line.contains(" INFO "), "{line}");
    assert!(
        line.contains("stats: open 1, sockets 1, accepted 1, upgrades 1,"),
        "{line}"
    );
}

#[test]
fn no_stats_lines_by_default() {
    let (server, log) = ServerProcess::start_with_log("info", &[]);
    drop(raw_upgrade(&server));
    assert_eq!(log.wait_for("stats:", Duration::from_millis(1500)), None);
}
