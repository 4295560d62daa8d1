//! Rate-limited logging of refused datagrams: the first of each reason in a window is logged
//! at once, the rest are counted and summarised when the window closes, so garbage at full
//! link rate cannot flood the log or the disk.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use satcast_protocol::wire::WireError;
use tracing::warn;

/// Counts refused datagrams per reason over a window.
#[derive(Debug)]
pub struct DropLog {
    window: Duration,
    started: Instant,
    counts: BTreeMap<String, u64>,
}

fn reason_key(reason: &WireError) -> String {
    match reason {
        // Group by variant, not by value: lengths and versions vary per datagram.
        WireError::Length(_) => "bad length".into(),
        WireError::Version(_) => "unsupported version".into(),
        WireError::Type(_) => "unknown type".into(),
        WireError::Body { kind, .. } => format!("malformed {kind} body"),
        WireError::Fragment { .. } => "bad manifest fragment".into(),
        other => other.to_string(),
    }
}

impl DropLog {
    /// A log that summarises every `window`.
    pub fn new(window: Duration) -> Self {
        DropLog { window, started: Instant::now(), counts: BTreeMap::new() }
    }

    /// Records one refused datagram, logging it if it is the first of its kind this window.
    pub fn record(&mut self, reason: &WireError) {
        let key = reason_key(reason);
        let count = self.counts.entry(key).or_insert(0);
        *count += 1;
        if *count == 1 {
            warn!(reason = %reason, error = ?reason, "datagram dropped");
        }
    }

    /// Logs the window's totals once it has closed.
    pub fn flush(&mut self) {
        if self.started.elapsed() < self.window {
            return;
        }
        for (reason, count) in std::mem::take(&mut self.counts) {
            if count > 1 {
                warn!(reason = %reason, count, window_secs = self.window.as_secs(), "datagrams dropped");
            }
        }
        self.started = Instant::now();
    }
}
