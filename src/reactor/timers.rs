//! Deadlines for all connections in one min-heap, checked once per loop turn.
//!
//! Each connection has at most one deadline that matters (`Connection::deadline`):
//! the handshake timeout, the keepalive check or the close timeout, depending on its
//! phase. Setting a new deadline pushes an entry; entries that no longer match their
//! slot's current deadline are skipped when they come up. So no entry is ever searched
//! for or removed early, and an idle connection costs the loop nothing until its
//! deadline.
//!
//! Time is counted in [`Tick`]s (see [`crate::protocol::time`]): whole milliseconds
//! since the reactor started, in 32 bits, so that a connection keeps its two times in
//! 8 bytes and a heap entry is 8 bytes (a tick and a slot) instead of 32 (an `Instant`
//! and a `ConnId`). The count wraps after 49.7 days; ticks are compared by their
//! wrapping difference, which is right as long as the times compared are less than
//! 24.8 days apart. Every deadline is less than [`MAX_SPAN`] ahead of the present, and
//! due entries leave the heap on the loop turn they come due, so that always holds.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

pub use crate::protocol::time::{is_before, Tick, MAX_SPAN};

/// Converts `Instant`s into [`Tick`]s.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock whose tick 0 is `start`.
    pub fn new(start: Instant) -> Self {
        Clock { start }
    }

    /// The tick at or after `at`: rounded up, so that a deadline computed from it is
    /// never earlier than the exact one (timers may fire up to 1 ms late, never early).
    pub fn tick_ceil(&self, at: Instant) -> Tick {
        let since = at.saturating_duration_since(self.start);
        let ms = since.as_millis() + u128::from(!since.subsec_nanos().is_multiple_of(1_000_000));
        // Wrapping at 2^32 is the point (see the module docs).
        ms as Tick
    }

    /// The tick `at` falls in (rounded down): the deadlines of this tick and earlier
    /// are due at `at`.
    pub fn tick_floor(&self, at: Instant) -> Tick {
        at.saturating_duration_since(self.start).as_millis() as Tick
    }

    /// The tick of `from + after` (rounded up), with `after` cut to [`MAX_SPAN`].
    pub fn deadline(&self, from: Instant, after: Duration) -> Tick {
        self.tick_ceil(from + after.min(MAX_SPAN))
    }

    /// How long from `now` until the start of tick `at` (zero if that has passed).
    pub fn until(&self, now: Instant, at: Tick) -> Duration {
        let since = now.saturating_duration_since(self.start);
        let floor = since.as_millis() as Tick;
        let ahead = at.wrapping_sub(floor) as i32;
        if ahead <= 0 {
            return Duration::ZERO;
        }
        let into_tick = Duration::from_nanos(u64::from(since.subsec_nanos() % 1_000_000));
        Duration::from_millis(ahead as u64).saturating_sub(into_tick)
    }
}

/// One heap entry: slot `slot`'s deadline was `at` when it was pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    at: Tick,
    slot: u32,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at.wrapping_sub(other.at) as i32)
            .cmp(&0)
            .then(self.slot.cmp(&other.slot))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Pending deadlines, earliest first.
///
/// An entry names a slot, not a connection: it is acted on if the slot's connection has
/// this very deadline now, whichever connection pushed it. That is always right: a
/// connection whose deadline is `at` pushed an entry for `at` itself, so its deadline
/// is due when any entry for (`at`, slot) is; the other entry then finds the deadline
/// cleared or moved, and is skipped.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Timers {
    /// Remembers that `slot` must be looked at when tick `at` has come.
    pub fn schedule(&mut self, at: Tick, slot: u32) {
        self.heap.push(Reverse(Entry { at, slot }));
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Tick> {
        self.heap.peek().map(|Reverse(entry)| entry.at)
    }

    /// Takes the next entry whose tick has come at tick `now`, if any: its tick and
    /// slot.
    pub fn pop_due(&mut self, now: Tick) -> Option<(Tick, u32)> {
        match self.heap.peek() {
            Some(Reverse(entry)) if !is_before(now, entry.at) => {
                self.heap.pop().map(|Reverse(e)| (e.at, e.slot))
            }
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
        timers.schedule(2000, 0);
        timers.schedule(1000, 1);
        assert_eq!(timers.next(), Some(1000));
        assert_eq!(timers.pop_due(999), None);
        assert_eq!(timers.pop_due(3000), Some((1000, 1)));
        assert_eq!(timers.pop_due(3000), Some((2000, 0)));
        assert_eq!(timers.pop_due(3000), None);
        assert!(timers.heap.is_empty());
    }

    #[test]
    fn order_survives_the_wrap_of_the_tick_count() {
        let mut timers = Timers::default();
        let before_wrap = u32::MAX - 10;
        timers.schedule(5, 1); // 16 ms after `before_wrap`, past the wrap
        timers.schedule(before_wrap, 0);
        assert_eq!(timers.pop_due(before_wrap - 1), None);
        assert_eq!(timers.pop_due(before_wrap), Some((before_wrap, 0)));
        assert_eq!(timers.pop_due(u32::MAX), None);
        assert_eq!(timers.pop_due(4), None);
        assert_eq!(timers.pop_due(5), Some((5, 1)));
    }

    #[test]
    fn ticks_round_so_that_deadlines_are_never_early() {
        let start = Instant::now();
        let clock = Clock::new(start);
        let at = start + Duration::from_micros(2_500);
        assert_eq!(clock.tick_floor(at), 2);
        assert_eq!(clock.tick_ceil(at), 3);
        assert_eq!(clock.tick_ceil(start + Duration::from_millis(2)), 2);
        // 1.5 s after 2.5 ms: 1502.5 ms, tick 1503.
        assert_eq!(clock.deadline(at, Duration::from_millis(1500)), 1503);
        assert_eq!(clock.until(at, 3), Duration::from_micros(500));
        assert_eq!(clock.until(at, 2), Duration::ZERO);
        assert_eq!(
            clock.deadline(start, Duration::from_secs(365 * 86_400)),
            1 << 30
        );
    }
}
