//! The progress bar on stderr: hidden for the first ~2 s (short runs print nothing
//! but their summary), never with `--json` or `--no-progress`, and only on a terminal
//! (indicatif hides itself otherwise).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

/// Runs shorter than this show no bar.
const SHOW_AFTER: Duration = Duration::from_secs(2);
/// Updates per second at most.
const EVERY: Duration = Duration::from_millis(100);

/// How a phase's position reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Connections, messages.
    Count,
    /// Payload bytes.
    Bytes,
    /// Elapsed time in milliseconds (duration-bounded runs).
    Millis,
}

/// A delayed progress bar.
pub struct Progress {
    bar: Option<ProgressBar>,
    created: Instant,
    shown: bool,
    last: Option<Instant>,
}

impl Progress {
    /// A bar that will appear after ~2 s if `enabled`.
    pub fn new(enabled: bool) -> Self {
        Progress {
            bar: enabled.then(ProgressBar::hidden),
            created: Instant::now(),
            shown: false,
            last: None,
        }
    }

    /// Starts a phase: its name, its length (if known) and unit.
    pub fn phase(&mut self, name: &'static str, len: Option<u64>, unit: Unit) {
        let Some(bar) = &self.bar else { return };
        let counter = match (unit, len.is_some()) {
            (Unit::Bytes, true) => "{bytes}/{total_bytes} ({binary_bytes_per_sec})",
            (Unit::Bytes, false) => "{bytes} ({binary_bytes_per_sec})",
            (Unit::Count | Unit::Millis, true) => "{pos}/{len}",
            (Unit::Count | Unit::Millis, false) => "{pos}",
        };
        let counter = if unit == Unit::Millis { "" } else { counter };
        let template = if len.is_some() {
            format!("{{prefix:>10}} [{{elapsed_precise}}] {{wide_bar}} {counter} {{msg}}")
        } else {
            format!("{{prefix:>10}} [{{elapsed_precise}}] {{spinner}} {counter} {{msg}}")
        };
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        bar.reset();
        match len {
            Some(len) => bar.set_length(len),
            None => bar.unset_length(),
        }
        bar.set_prefix(name);
        bar.set_message("");
        self.last = None;
    }

    /// Moves the bar (at most every 100 ms); `msg` is only called when it is drawn.
    pub fn update(&mut self, pos: u64, msg: impl FnOnce() -> String) {
        let Some(bar) = &self.bar else { return };
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < EVERY) {
            return;
        }
        self.last = Some(now);
        if !self.shown && now - self.created >= SHOW_AFTER {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
        bar.set_position(pos);
        bar.set_message(msg());
    }

    /// Removes the bar before the summary is printed.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
