//! Rate-limited logging of what the receiver refuses (datagrams, manifests, heartbeats,
//! revocation lists): the first of each reason in a window is logged at once, the rest are
//! counted and summarised when the window closes, so garbage or forgeries at full link
//! rate cannot flood the log or the disk.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use satcast_protocol::wire::WireError;
use tracing::warn;

/// Distinct reasons counted per window; beyond it, further reasons share one entry.
/// Reasons are grouped with their numbers masked, so a handful is the usual count.
pub const REASONS_MAX: usize = 64;
/// The key reasons share beyond [`REASONS_MAX`].
const OTHER_REASONS: &str = "other reasons";

/// What was refused: says which message a summary line carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refused {
    /// A datagram the wire parser refused.
    Datagram,
    /// A manifest refused without telling the uplink (a forgery, a splice...).
    Manifest,
    /// A heartbeat.
    Heartbeat,
    /// A revocation list.
    Revocation,
}

/// Counts refusals per (kind, reason) over a window.
#[derive(Debug)]
pub struct DropLog {
    window: Duration,
    started: Instant,
    counts: BTreeMap<(Refused, String), u64>,
}

fn wire_reason_key(reason: &WireError) -> String {
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

/// A reason text with its numbers (decimal, or hex such as object ids) masked as `#`, so
/// refusals that differ only in a time, a sequence or an id are one reason.
pub fn reason_key(text: &str) -> String {
    let mut key = String::with_capacity(text.len());
    let mut word = String::new();
    let push_word = |word: &mut String, key: &mut String| {
        let numeric = word.chars().any(|c| c.is_ascii_digit()) && word.chars().all(|c| c.is_ascii_hexdigit());
        key.push_str(if numeric { "#" } else { word });
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            push_word(&mut word, &mut key);
            key.push(c);
        }
    }
    push_word(&mut word, &mut key);
    key
}

impl DropLog {
    /// A log that summarises every `window`.
    pub fn new(window: Duration) -> Self {
        DropLog { window, started: Instant::now(), counts: BTreeMap::new() }
    }

    /// Records one refused datagram, logging it if it is the first of its kind this window.
    pub fn record(&mut self, reason: &WireError) {
        if self.first(Refused::Datagram, wire_reason_key(reason)) {
            warn!(reason = %reason, error = ?reason, "datagram dropped");
        }
    }

    /// Counts one refusal of `kind` for the reason `key` (see [`reason_key`]); true if it is
    /// the first of its (kind, reason) this window: the caller logs that one in full.
    pub fn first(&mut self, kind: Refused, key: String) -> bool {
        let key = if self.counts.len() >= REASONS_MAX && !self.counts.contains_key(&(kind, key.clone())) {
            OTHER_REASONS.to_owned()
        } else {
            key
        };
        let count = self.counts.entry((kind, key)).or_insert(0);
        *count += 1;
        *count == 1
    }

    /// Logs the window's totals once it has closed.
    pub fn flush(&mut self) {
        self.flush_at(Instant::now());
    }

    /// Logs the totals of a window closed at `now`: one line per (kind, reason) seen more
    /// than once. Returns what it logged.
    fn flush_at(&mut self, now: Instant) -> Vec<(Refused, String, u64)> {
        if now.saturating_duration_since(self.started) < self.window {
            return Vec::new();
        }
        let window_secs = self.window.as_secs();
        let mut logged = Vec::new();
        for ((kind, reason), count) in std::mem::take(&mut self.counts) {
            if count <= 1 {
                continue;
            }
            match kind {
                Refused::Datagram => warn!(reason = %reason, count, window_secs, "datagrams dropped"),
                Refused::Manifest => warn!(reason = %reason, count, window_secs, "manifests rejected"),
                Refused::Heartbeat => warn!(reason = %reason, count, window_secs, "heartbeats rejected"),
                Refused::Revocation => warn!(reason = %reason, count, window_secs, "revocation lists rejected"),
            }
            logged.push((kind, reason, count));
        }
        self.started = now;
        logged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_ids_are_masked_so_a_reason_repeats() {
        assert_eq!(
            reason_key("heartbeat sent at 1795000000000 ms, in the future of now 1795000000 s"),
            "heartbeat sent at # ms, in the future of now # s"
        );
        assert_eq!(
            reason_key("manifest for object 00ab3f0000000001 arrived as object 1f00000000000000"),
            "manifest for object # arrived as object #"
        );
        assert_eq!(reason_key("signing key serial 7 is revoked"), "signing key serial # is revoked");
        assert_eq!(reason_key("bad decade"), "bad decade", "words made of hex letters are words");
    }

    /// A thousand refusals of one reason (with different numbers) are one line at once and
    /// one summary with their count; the next window starts again.
    #[test]
    fn a_repeated_refusal_is_logged_once_and_summarised() {
        let mut log = DropLog::new(Duration::ZERO);
        let logged_at_once =
            (0..1000u64).filter(|i| log.first(Refused::Heartbeat, reason_key(&format!("signing key is valid from {i}, now is 5")))).count();
        assert_eq!(logged_at_once, 1);
        assert!(log.first(Refused::Revocation, reason_key("malformed signed message: x")), "another kind is news");
        let summaries = log.flush_at(Instant::now());
        assert_eq!(summaries, vec![(Refused::Heartbeat, "signing key is valid from #, now is #".to_owned(), 1000)]);
        assert!(log.first(Refused::Heartbeat, "signing key is valid from #, now is #".into()), "a new window");
    }

    #[test]
    fn distinct_reasons_are_bounded() {
        let mut log = DropLog::new(Duration::from_secs(10));
        for i in 0..REASONS_MAX + 100 {
            log.first(Refused::Manifest, format!("reason {}", "x".repeat(i)));
        }
        assert_eq!(log.counts.len(), REASONS_MAX + 1);
    }
}
