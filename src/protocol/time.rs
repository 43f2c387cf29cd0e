//! Time as the session sees it: milliseconds passed in by the caller.
//!
//! The protocol half reads no clock. Whoever drives a [`super::session::Session`] says
//! what time it is, as a [`Tick`]: whole milliseconds since an origin of its choosing
//! (the reactor counts from its start), in 32 bits, so that a connection keeps each of
//! its times in 4 bytes. The count wraps after 49.7 days; ticks are compared by their
//! wrapping difference ([`is_before`]), which is right as long as the times compared
//! are less than 24.8 days apart. Every span added to a tick is cut to [`MAX_SPAN`]
//! (12.4 days), so a deadline and the present it is compared with always are.

use std::time::Duration;

/// A point in time: milliseconds since the caller's origin, wrapping at 2^32.
pub type Tick = u32;

/// The longest timeout ticks represent: 2^30 ms, 12.4 days. A longer one is cut to
/// this (a close timeout of weeks is not a timeout).
pub const MAX_SPAN: Duration = Duration::from_millis(1 << 30);

/// `tick` plus `after` (cut to [`MAX_SPAN`]), rounded up to whole ticks.
pub fn after_ticks(tick: Tick, after: Duration) -> Tick {
    let after = after.min(MAX_SPAN);
    let ms = after.as_millis() + u128::from(!after.subsec_nanos().is_multiple_of(1_000_000));
    // At most 2^30: the cast is lossless.
    tick.wrapping_add(ms as Tick)
}

/// Whether tick `a` is before tick `b` (by their wrapping difference).
pub fn is_before(a: Tick, b: Tick) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_round_up_to_whole_ticks_and_are_cut_to_the_max_span() {
        assert_eq!(after_ticks(10, Duration::from_millis(5)), 15);
        assert_eq!(after_ticks(10, Duration::from_micros(5_001)), 16);
        assert_eq!(after_ticks(10, Duration::ZERO), 10);
        assert_eq!(after_ticks(0, Duration::from_secs(365 * 86_400)), 1 << 30);
    }

    #[test]
    fn order_survives_the_wrap_of_the_tick_count() {
        let before_wrap = u32::MAX - 10;
        assert_eq!(after_ticks(before_wrap, Duration::from_millis(16)), 5);
        assert!(is_before(before_wrap, 5) && !is_before(5, before_wrap));
        assert!(!is_before(5, 5));
        assert!(is_before(u32::MAX, 0));
    }
}
