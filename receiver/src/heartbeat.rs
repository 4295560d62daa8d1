//! Heartbeat watch: the uplink signs a heartbeat every few seconds, so a silent downlink
//! (dish, cable, a stopped uplink, jamming) shows as a growing heartbeat age. This turns the
//! age into one warning when it passes the configured bound and one info line when
//! heartbeats return, instead of a line per second.

use std::time::{Duration, Instant};

use tracing::{info, warn};

/// A change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatChange {
    /// None has arrived since start, for longer than the bound.
    NeverArrived {
        /// Time since start.
        waited: Duration,
    },
    /// They stopped: the last one is older than the bound.
    Stale {
        /// Age of the last one.
        age: Duration,
    },
    /// One arrived after a warning.
    Back {
        /// How long they were missing, roughly (from the last before the gap, or from start).
        missing_for: Duration,
    },
}

/// Tracks heartbeat staleness; feed it the reception machine's heartbeat age once a second.
#[derive(Debug)]
pub struct HeartbeatWatch {
    warn_after: Duration,
    started: Instant,
    /// Since when they have been missing, once warned about.
    stale_since: Option<Instant>,
}

impl HeartbeatWatch {
    /// A watch that warns after `warn_after` without a heartbeat, counting from `started`.
    pub fn new(warn_after: Duration, started: Instant) -> Self {
        HeartbeatWatch { warn_after, started, stale_since: None }
    }

    /// Whether a warning is standing (no heartbeat within the bound).
    pub fn is_stale(&self) -> bool {
        self.stale_since.is_some()
    }

    /// The configured bound.
    pub fn warn_after(&self) -> Duration {
        self.warn_after
    }

    /// Looks at the current age (`None`: none arrived since start); returns what changed.
    pub fn observe(&mut self, now: Instant, age: Option<Duration>) -> Option<HeartbeatChange> {
        match (age, self.stale_since) {
            (None, None) => {
                let waited = now.saturating_duration_since(self.started);
                (waited > self.warn_after).then(|| {
                    self.stale_since = Some(self.started);
                    HeartbeatChange::NeverArrived { waited }
                })
            }
            (Some(age), None) => (age > self.warn_after).then(|| {
                self.stale_since = Some(now.checked_sub(age).unwrap_or(now));
                HeartbeatChange::Stale { age }
            }),
            (Some(age), Some(since)) if age <= self.warn_after => {
                self.stale_since = None;
                Some(HeartbeatChange::Back { missing_for: now.saturating_duration_since(since).saturating_sub(age) })
            }
            _ => None,
        }
    }

    /// [`HeartbeatWatch::observe`], logging the change.
    pub fn observe_and_log(&mut self, now: Instant, age: Option<Duration>) {
        let warn_after_secs = self.warn_after.as_secs();
        match self.observe(now, age) {
            Some(HeartbeatChange::NeverArrived { waited }) => warn!(
                waited_secs = waited.as_secs(),
                warn_after_secs,
                "no uplink heartbeat since start: the downlink is silent (uplink stopped, dish or cable, wrong group or interface, or jamming)"
            ),
            Some(HeartbeatChange::Stale { age }) => warn!(
                age_secs = age.as_secs(),
                warn_after_secs, "uplink heartbeats stopped: the downlink is silent (uplink stopped, dish or cable, rain fade, or jamming)"
            ),
            Some(HeartbeatChange::Back { missing_for }) => info!(missing_for_secs = missing_for.as_secs(), "uplink heartbeats are back"),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_and_reports_the_return() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut watch = HeartbeatWatch::new(s(60), t0);
        assert_eq!(watch.observe(t0 + s(30), None), None);
        assert_eq!(watch.observe(t0 + s(61), None), Some(HeartbeatChange::NeverArrived { waited: s(61) }));
        assert_eq!(watch.observe(t0 + s(120), None), None, "once, not every second");
        assert!(matches!(watch.observe(t0 + s(121), Some(s(0))), Some(HeartbeatChange::Back { .. })));
        assert_eq!(watch.observe(t0 + s(150), Some(s(29))), None);
        assert_eq!(watch.observe(t0 + s(182), Some(s(61))), Some(HeartbeatChange::Stale { age: s(61) }));
        assert_eq!(watch.observe(t0 + s(200), Some(s(79))), None);
        assert_eq!(watch.observe(t0 + s(201), Some(s(1))), Some(HeartbeatChange::Back { missing_for: s(79) }));
        assert!(!watch.is_stale());
    }
}
