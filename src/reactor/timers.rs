//! Deadlines for all connections in one min-heap, checked once per loop turn.
//!
//! Each connection has at most one deadline that matters (`Connection::deadline`):
//! the handshake timeout, the keepalive check or the close timeout, depending on its
//! phase. Setting a new deadline pushes an entry; entries that no longer match their
//! connection's current deadline, or whose slot now holds another connection, are
//! skipped when they come up. So no entry is ever searched for or removed early, and
//! an idle connection costs the loop nothing until its deadline.

use crate::app::ConnId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Pending deadlines, earliest first.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl Timers {
    /// Remembers that `conn` must be looked at when `at` has passed.
    pub fn schedule(&mut self, at: Instant, conn: ConnId) {
        self.heap.push(Reverse((at, conn)));
    }

    /// How long the loop may sleep before the earliest deadline.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(now))
    }

    /// Takes the next entry whose time has come, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, ConnId)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(entry)| entry),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_due_in_time_order() {
        let mut timers = Timers::default();
        let now = Instant::now();
        let a = ConnId { slot: 0, serial: 1 };
        let b = ConnId { slot: 1, serial: 2 };
        timers.schedule(now + Duration::from_secs(2), a);
        timers.schedule(now + Duration::from_secs(1), b);
        assert_eq!(timers.next_timeout(now), Some(Duration::from_secs(1)));
        assert_eq!(timers.pop_due(now), None);
        let later = now + Duration::from_secs(3);
        assert_eq!(timers.pop_due(later).map(|e| e.1), Some(b));
        assert_eq!(timers.pop_due(later).map(|e| e.1), Some(a));
        assert_eq!(timers.pop_due(later), None);
    }
}
