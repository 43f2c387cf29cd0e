//! The result of a run: one JSON object line (`--json`) or a human-readable summary,
//! built from the same figures.

use crate::cli::Target;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// A run's figures, in JSON and as lines of text.
pub struct Report {
    title: String,
    json: Map<String, Value>,
    lines: Vec<(&'static str, String)>,
    /// The reason the run failed as a whole (timeout, bad setup), if it did.
    pub error: Option<String>,
    /// Errors counted on connections.
    pub errors: u64,
    /// The first few of those errors.
    pub error_samples: Vec<String>,
}

impl Report {
    /// An empty report of `mode` against `target`.
    pub fn new(mode: &'static str, target: &Target) -> Self {
        let mut report = Report {
            title: format!("wsload {mode}: {}", target.url),
            json: Map::new(),
            lines: Vec::new(),
            error: None,
            errors: 0,
            error_samples: Vec::new(),
        };
        report.set("mode", mode);
        report.set("url", target.url.as_str());
        report
    }

    /// Sets a JSON field.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.json.insert(key.to_string(), value.into());
    }

    /// Adds a line of the summary.
    pub fn line(&mut self, label: &'static str, text: String) {
        self.lines.push((label, text));
    }

    /// The run failed as a whole.
    pub fn fail(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// Success: no run-level error and no connection error.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.errors == 0
    }

    /// The JSON object, with `errors`, `ok`, `error` and `error_samples` filled in.
    pub fn to_json(&self) -> Value {
        let mut json = self.json.clone();
        json.insert("errors".into(), self.errors.into());
        json.insert("ok".into(), self.ok().into());
        json.insert(
            "error".into(),
            self.error.clone().map_or(Value::Null, Value::from),
        );
        json.insert("error_samples".into(), self.error_samples.clone().into());
        Value::Object(json)
    }

    /// Prints the report on stdout (the JSON line, or the summary), and the errors on
    /// stderr after the summary.
    pub fn print(&self, as_json: bool) {
        if as_json {
            println!("{}", self.to_json());
            return;
        }
        println!("{}", self.title);
        for (label, text) in &self.lines {
            println!("  {label:<14} {text}");
        }
        println!("  {:<14} {}", "errors", self.errors);
        for sample in &self.error_samples {
            eprintln!("wsload: {sample}");
        }
        if self.errors > self.error_samples.len() as u64 {
            eprintln!(
                "wsload: ... and {} more errors",
                self.errors - self.error_samples.len() as u64
            );
        }
        match (&self.error, self.errors) {
            (Some(error), _) => println!("FAILED: {error}"),
            (None, 0) => println!("OK"),
            (None, n) => println!("FAILED: {n} errors"),
        }
    }
}

/// Rounds to `digits` decimals (for readable JSON).
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Seconds with microsecond precision.
pub fn secs(d: Duration) -> f64 {
    round(d.as_secs_f64(), 6)
}

/// `count / elapsed`, 0 for an empty interval.
pub fn per_second(count: f64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        count / s
    } else {
        0.0
    }
}

/// `{p50, p90, p99, max}` in µs, or null if nothing was recorded.
pub fn latency_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "max": h.max(),
    })
}

/// The same as text.
pub fn latency_text(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "-".into();
    }
    format!(
        "p50 {} µs, p90 {} µs, p99 {} µs, max {} µs",
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.90),
        h.value_at_quantile(0.99),
        h.max()
    )
}

/// Bytes as a readable size.
pub fn size_text(bytes: u64) -> String {
    const KIB: u64 = 1024;
    match bytes {
        b if b >= KIB * KIB * KIB && b % (KIB * KIB * KIB) == 0 => {
            format!("{b} bytes ({} GiB)", b / (KIB * KIB * KIB))
        }
        b if b >= KIB * KIB => format!("{b} bytes ({:.1} MiB)", b as f64 / (KIB * KIB) as f64),
        b if b >= KIB => format!("{b} bytes ({:.1} KiB)", b as f64 / KIB as f64),
        b => format!("{b} bytes"),
    }
}
