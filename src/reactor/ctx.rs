//! [`Ctx`]: what a handler acts through during a call — send to, ping and close
//! connections, set timers, read the counters, stop the server.

use super::connection::Connection;
use super::Shared;
use crate::handler::{ConnId, Sent, TimerId};
use crate::protocol::{CloseCode, CloseFrame, MessageKind, SendError};
use crate::Metrics;
use std::time::{Duration, Instant};

/// What a [`crate::Handler`] acts through. Every method works on any connection of
/// this worker, not only the one the call is about; an id of a connection that is
/// closing or gone gets [`SendError::Closed`].
pub struct Ctx<'a> {
    pub(crate) shared: &'a mut Shared,
    pub(crate) now: Instant,
}

impl Ctx<'_> {
    /// Sends a whole `kind` message to `conn` (cut into frames of at most
    /// [`crate::Config::max_frame_out`] bytes). Refused with
    /// [`SendError::MessageOpen`] while a message streamed with [`Ctx::send_part`] to
    /// `conn` is unfinished: messages do not interleave (RFC 6455 §5.4).
    #[inline]
    pub fn send(
        &mut self,
        conn: ConnId,
        kind: MessageKind,
        message: &[u8],
    ) -> Result<Sent, SendError> {
        self.send_data(conn, kind, message, true, true)
    }

    /// Sends `data` as the next part of a streamed `kind` message to `conn`;
    /// `end_of_message` finishes it. The first part starts the message; later parts
    /// must be of the same kind (else [`SendError::MessageOpen`]), and no whole
    /// message may be sent to `conn` until this one is finished.
    #[inline]
    pub fn send_part(
        &mut self,
        conn: ConnId,
        kind: MessageKind,
        data: &[u8],
        end_of_message: bool,
    ) -> Result<Sent, SendError> {
        self.send_data(conn, kind, data, end_of_message, false)
    }

    #[inline]
    fn send_data(
        &mut self,
        conn: ConnId,
        kind: MessageKind,
        data: &[u8],
        end_of_message: bool,
        whole: bool,
    ) -> Result<Sent, SendError> {
        let shared = &mut *self.shared;
        let high = shared.config.write_high_watermark;
        // One look-up of the connection for all of it: this is every echo's path.
        let c = shared.open_conn(conn).ok_or(SendError::Closed)?;
        let written = c.send_data(kind, data, end_of_message, whole)?;
        let listed = c.mark_touched();
        let sent = backpressure(c, high);
        match written {
            Ok(0) => {}
            Ok(n) => shared.counters.bytes_out(n),
            Err(e) => shared.write_failed(conn, e),
        }
        if end_of_message {
            shared.counters.message_out();
        }
        if listed {
            shared.touched.push(conn);
        }
        Ok(sent)
    }

    /// Sends a ping with `payload` (at most 125 bytes, RFC 6455 §5.5) to `conn`; its
    /// pong comes back through [`crate::Handler::on_pong`]. Pings go out between the
    /// frames of a message, not behind it.
    pub fn ping(&mut self, conn: ConnId, payload: &[u8]) -> Result<Sent, SendError> {
        let shared = &mut *self.shared;
        let high = shared.config.write_high_watermark;
        let c = shared.open_conn(conn).ok_or(SendError::Closed)?;
        c.session.ping(payload, &mut c.queue)?;
        let sent = backpressure(c, high);
        shared.touch(conn);
        Ok(sent)
    }

    /// Starts the closing handshake on `conn` with `code` and `reason` (RFC 6455
    /// §7.1.2; a code that may not appear on the wire, §7.4, is sent as an empty close
    /// body, and a reason is cut to 123 bytes). Nothing more can be sent to `conn`;
    /// the handler's `on_close` for it follows once the current handler call returns.
    pub fn close(&mut self, conn: ConnId, code: CloseCode, reason: &str) -> Result<(), SendError> {
        let now = self.shared.clock.tick_ceil(self.now);
        let shared = &mut *self.shared;
        let c = shared.open_conn(conn).ok_or(SendError::Closed)?;
        c.session.close(code, reason, now, &mut c.queue)?;
        c.app_open = false;
        let deadline = c.session.deadline();
        shared.counters.closed(code);
        shared
            .app_closes
            .push((conn, CloseFrame::new(code, reason)));
        if let Some(at) = deadline {
            shared.set_deadline(conn.slot, at);
        }
        shared.touch(conn);
        Ok(())
    }

    /// Bytes queued for `conn` that its socket has not taken yet, if it is open.
    pub fn queued_bytes(&self, conn: ConnId) -> Option<usize> {
        self.shared
            .conns
            .get(conn.slot as usize)
            .filter(|c| conn.worker == self.shared.worker && c.is(conn) && c.app_open)
            .map(|c| c.queue.len())
    }

    /// Calls [`crate::Handler::on_timer`] with `key` after `after` (at the first loop
    /// turn after it; timers are not repeated — set the next one from the call).
    pub fn set_timer(&mut self, after: Duration, key: u64) -> TimerId {
        self.shared.app_timers.set(self.now + after, None, key)
    }

    /// Calls [`crate::Handler::on_conn_timer`] for `conn` with `key` after `after`,
    /// if `conn` is still open then.
    pub fn set_conn_timer(&mut self, conn: ConnId, after: Duration, key: u64) -> TimerId {
        self.shared
            .app_timers
            .set(self.now + after, Some(conn), key)
    }

    /// Cancels a timer that has not fired yet (a timer that fired or was cancelled
    /// already is ignored).
    pub fn cancel_timer(&mut self, timer: TimerId) {
        self.shared.app_timers.cancel(timer);
    }

    /// The time this batch of events is handled at.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The counters of the server (of every worker of a group).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Starts a graceful shutdown of this worker, as [`crate::Handle::shutdown`] does
    /// for all of them, once the current handler call returns.
    pub fn shutdown(&mut self) {
        self.shared.shutdown_requested = true;
    }
}

/// What a send that just queued to `c` reports. Above the high watermark the
/// connection is marked paused at once, so that `on_drain` follows when it drains
/// below the low one, however fast that happens.
#[inline]
fn backpressure(c: &mut Connection, high_watermark: usize) -> Sent {
    if c.queue.len() > high_watermark {
        c.paused = true;
        Sent::Backpressure
    } else {
        Sent::Queued
    }
}
