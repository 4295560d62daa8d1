//! Repeated warnings, summarised: the first of each (kind, reason) in a window is logged at
//! once, the rest are counted and logged as one line per (kind, reason) when the window
//! closes. Whatever an attacker can make a daemon refuse at full rate (datagrams, signed
//! messages, connection attempts) then costs a counter, not a log line and disk.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::warn;

/// Distinct reasons counted per window; beyond it, further reasons share one entry.
/// Reasons are grouped with their numbers masked, so a handful is the usual count.
pub const REASONS_MAX: usize = 64;
/// The key reasons share beyond [`REASONS_MAX`].
const OTHER_REASONS: &str = "other reasons";

/// What kind of thing was refused, and how its summary line reads.
pub trait Repeated: Copy + Ord {
    /// The summary line's message, plural: "datagrams dropped".
    fn summary(self) -> &'static str;
}

/// Counts refusals per (kind, reason) over a window.
#[derive(Debug)]
pub struct Summarised<K> {
    window: Duration,
    started: Instant,
    counts: BTreeMap<(K, String), u64>,
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

impl<K: Repeated> Summarised<K> {
    /// A log that summarises every `window`.
    pub fn new(window: Duration) -> Self {
        Summarised { window, started: Instant::now(), counts: BTreeMap::new() }
    }

    /// Counts one refusal of `kind` for the reason `key` (see [`reason_key`]); true if it is
    /// the first of its (kind, reason) this window: the caller logs that one in full.
    pub fn first(&mut self, kind: K, key: String) -> bool {
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
    pub fn flush_at(&mut self, now: Instant) -> Vec<(K, String, u64)> {
        if now.saturating_duration_since(self.started) < self.window {
            return Vec::new();
        }
        let window_secs = self.window.as_secs();
        let mut logged = Vec::new();
        for ((kind, reason), count) in std::mem::take(&mut self.counts) {
            if count <= 1 {
                continue;
            }
            warn!(reason = %reason, count, window_secs, "{}", kind.summary());
            logged.push((kind, reason, count));
        }
        self.started = now;
        logged
    }

    /// Distinct (kind, reason) entries counted this window.
    pub fn reasons(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Kind {
        Heartbeat,
        Revocation,
    }

    impl Repeated for Kind {
        fn summary(self) -> &'static str {
            match self {
                Kind::Heartbeat => "heartbeats rejected",
                Kind::Revocation => "revocation lists rejected",
            }
        }
    }

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
        let mut log = Summarised::new(Duration::ZERO);
        let logged_at_once =
            (0..1000u64).filter(|i| log.first(Kind::Heartbeat, reason_key(&format!("signing key is valid from {i}, now is 5")))).count();
        assert_eq!(logged_at_once, 1);
        assert!(log.first(Kind::Revocation, reason_key("malformed signed message: x")), "another kind is news");
        let summaries = log.flush_at(Instant::now());
        assert_eq!(summaries, vec![(Kind::Heartbeat, "signing key is valid from #, now is #".to_owned(), 1000)]);
        assert!(log.first(Kind::Heartbeat, "signing key is valid from #, now is #".into()), "a new window");
    }

    #[test]
    fn distinct_reasons_are_bounded() {
        let mut log = Summarised::new(Duration::from_secs(10));
        for i in 0..REASONS_MAX + 100 {
            log.first(Kind::Heartbeat, format!("reason {}", "x".repeat(i)));
        }
        assert_eq!(log.reasons(), REASONS_MAX + 1);
    }
}
