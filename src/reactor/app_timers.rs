//! The application's timers ([`super::Ctx::set_timer`]): a min-heap of deadlines and
//! the set of timers still live, so cancelling is a removal from the set and a
//! cancelled entry is skipped when it comes up.

use crate::handler::{ConnId, TimerId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

/// Every timer the application set on one worker.
#[derive(Debug, Default)]
pub(crate) struct AppTimers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Live timers: their connection (for a connection timer) and key.
    live: HashMap<u64, (Option<ConnId>, u64)>,
    next_id: u64,
}

impl AppTimers {
    /// A timer due at `at`, for `conn` (or the server) with `key`.
    pub(crate) fn set(&mut self, at: Instant, conn: Option<ConnId>, key: u64) -> TimerId {
        self.next_id += 1;
        let id = self.next_id;
        self.heap.push(Reverse((at, id)));
        self.live.insert(id, (conn, key));
        TimerId(id)
    }

    /// Forgets `timer` if it has not fired.
    pub(crate) fn cancel(&mut self, timer: TimerId) {
        self.live.remove(&timer.0);
    }

    /// The earliest deadline still in the heap (possibly of a cancelled timer, which
    /// only wakes the loop once for nothing).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Every live timer due at `now`, removed, in deadline order: its connection and
    /// key. Timers set while the caller handles them wait for the next call.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<(Option<ConnId>, u64)> {
        let mut due = Vec::new();
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            if let Some(timer) = self.live.remove(&id) {
                due.push(timer);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timers_fire_in_deadline_order_and_cancelled_ones_never() {
        let start = Instant::now();
        let mut timers = AppTimers::default();
        timers.set(start + Duration::from_millis(30), None, 3);
        let cancelled = timers.set(start + Duration::from_millis(10), None, 1);
        timers.set(start + Duration::from_millis(20), None, 2);
        timers.cancel(cancelled);
        assert_eq!(timers.take_due(start + Duration::from_millis(5)), []);
        assert_eq!(
            timers.take_due(start + Duration::from_millis(25)),
            [(None, 2)]
        );
        assert_eq!(timers.take_due(start + Duration::from_millis(25)), []);
        timers.set(start + Duration::from_millis(29), None, 4);
        assert_eq!(
            timers.take_due(start + Duration::from_millis(30)),
            [(None, 4), (None, 3)]
        );
        assert_eq!(timers.next(), None);
    }
}
