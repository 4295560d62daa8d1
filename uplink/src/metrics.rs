//! The uplink's Prometheus metrics (`GET /metrics`), named by the Prometheus conventions:
//! `satcast_uplink_` prefix, units in the name, `_total` on counters. Counters are counted
//! where things happen (the pacing loop, the storage worker, the feedback intake); gauges
//! about the queue and the registry are read when scraped. docs/operations.md lists them.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use satcast_protocol::broadcast::Priority;

/// One label: name and value.
pub type Labels = Vec<(&'static str, String)>;

/// The priority classes on the carrier, in the dashboard's order; `control` is what belongs
/// to no broadcast (heartbeats, revocation lists).
pub const CLASSES: [&str; 5] = ["emergency", "high", "normal", "bulk", "control"];
/// Datagram types by their wire code (1..=7, see `satcast_protocol::wire::PacketType`);
/// `other` for anything else.
pub const DATAGRAM_TYPES: [&str; 8] = ["other", "data", "manifest", "heartbeat", "round", "revocation", "key_wrap", "symbol_list"];

/// The class index of a priority in [`CLASSES`].
pub fn class_of(priority: Priority) -> usize {
    match priority {
        Priority::Emergency => 0,
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Bulk => 3,
    }
}

/// Every metric of the uplink. Clones of a counter share its value, so the pacing loop
/// keeps its own handles and counts without a lock or a label lookup per datagram.
#[derive(Debug)]
pub struct UplinkMetrics {
    registry: Registry,
    /// Datagrams aired, per type ([`DATAGRAM_TYPES`]).
    pub datagrams: [Counter; 8],
    /// Bytes on the carrier (IP and UDP headers included), per class ([`CLASSES`]).
    pub air_bytes: [Counter; 5],
    /// DATA symbols aired (source and repair).
    pub symbols: Counter,
    /// Rounds started (the first pass counts as one).
    pub rounds: Counter,
    /// Broadcasts that ended, per outcome.
    pub broadcasts_finished: Family<Labels, Counter>,
    /// Authenticated feedback messages taken, per type.
    pub feedback: Family<Labels, Counter>,
    /// Feedback the node did not record, per verdict (unknown broadcast, wrong hash, busy).
    pub feedback_refused: Family<Labels, Counter>,
    /// Counties newly recorded as having a broadcast.
    pub deliveries: Counter,
    /// Counties newly recorded as refusing a broadcast.
    pub refusals: Counter,
    /// Post-receive hook results reported by counties, per outcome.
    pub hooks: Family<Labels, Counter>,
    /// Jobs in the queue folder (queued, scheduled or airing).
    pub queue_jobs: Gauge,
    /// Bytes of the queued payloads.
    pub queue_bytes: Gauge,
    /// Counties in the registry, by whether they were heard from within the silence
    /// threshold.
    pub receivers: Family<Labels, Gauge>,
    /// The oldest heartbeat age a heard county reported in its last hello.
    pub heartbeat_age_max: Gauge,
    /// Alarms standing now.
    pub alarms: Gauge,
    /// Alarms raised since start, per kind.
    pub alarms_raised: Family<Labels, Counter>,
    /// When the pacing loop last went round, unix milliseconds: what `/health` looks at.
    pub loop_unix_ms: AtomicU64,
}

impl Default for UplinkMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl UplinkMetrics {
    /// Every metric, registered.
    pub fn new() -> UplinkMetrics {
        let mut registry = Registry::with_prefix("satcast_uplink");
        let datagram_family = Family::<Labels, Counter>::default();
        // The family hands out the counter it holds; the loop keeps a clone of each.
        let datagrams = DATAGRAM_TYPES.map(|kind| datagram_family.get_or_create(&vec![("type", kind.to_owned())]).clone());
        registry.register("datagrams_aired", "Datagrams put on the carrier, by type", datagram_family);
        let air_family = Family::<Labels, Counter>::default();
        let air_bytes = CLASSES.map(|class| air_family.get_or_create(&vec![("priority", class.to_owned())]).clone());
        registry.register_with_unit(
            "air",
            "Bytes put on the carrier (IP and UDP headers included), by priority class",
            Unit::Bytes,
            air_family,
        );
        let symbols = Counter::default();
        registry.register("symbols_aired", "DATA symbols aired, source and repair", symbols.clone());
        let rounds = Counter::default();
        registry.register("rounds_started", "Rounds of symbols started, first passes included", rounds.clone());
        let broadcasts_finished = Family::<Labels, Counter>::default();
        registry.register("broadcasts_finished", "Broadcasts that ended, by outcome", broadcasts_finished.clone());
        let feedback = Family::<Labels, Counter>::default();
        registry.register("feedback_messages", "Authenticated feedback messages taken from counties, by type", feedback.clone());
        let feedback_refused = Family::<Labels, Counter>::default();
        registry.register("feedback_refused", "Feedback messages not recorded, by verdict", feedback_refused.clone());
        let deliveries = Counter::default();
        registry.register("deliveries", "Counties newly recorded as having a broadcast", deliveries.clone());
        let refusals = Counter::default();
        registry.register("refusals", "Counties newly recorded as refusing a broadcast", refusals.clone());
        let hooks = Family::<Labels, Counter>::default();
        registry.register("hook_results", "Post-receive hook results counties reported, by outcome", hooks.clone());
        let queue_jobs = Gauge::default();
        registry.register("queue_jobs", "Jobs in the queue folder", queue_jobs.clone());
        let queue_bytes = Gauge::default();
        registry.register_with_unit("queue", "Bytes of queued payloads", Unit::Bytes, queue_bytes.clone());
        let receivers = Family::<Labels, Gauge>::default();
        registry.register("receivers", "Enrolled counties, by whether they were heard from recently", receivers.clone());
        let heartbeat_age_max = Gauge::default();
        registry.register_with_unit(
            "receiver_heartbeat_age_max",
            "The oldest heartbeat age a recently heard county reported",
            Unit::Seconds,
            heartbeat_age_max.clone(),
        );
        let alarms = Gauge::default();
        registry.register("alarms_active", "Alarms standing now", alarms.clone());
        let alarms_raised = Family::<Labels, Counter>::default();
        registry.register("alarms_raised", "Alarms raised since the daemon started, by kind", alarms_raised.clone());
        UplinkMetrics {
            registry,
            datagrams,
            air_bytes,
            symbols,
            rounds,
            broadcasts_finished,
            feedback,
            feedback_refused,
            deliveries,
            refusals,
            hooks,
            queue_jobs,
            queue_bytes,
            receivers,
            heartbeat_age_max,
            alarms,
            alarms_raised,
            loop_unix_ms: AtomicU64::new(0),
        }
    }

    /// Counts one label of a family.
    pub fn count(family: &Family<Labels, Counter>, name: &'static str, value: &str) {
        family.get_or_create(&vec![(name, value.to_owned())]).inc();
    }

    /// The air bytes per class so far, in [`CLASSES`] order.
    pub fn air_bytes_by_class(&self) -> [u64; 5] {
        [0, 1, 2, 3, 4].map(|i| self.air_bytes[i].get())
    }

    /// Notes that the pacing loop went round.
    pub fn loop_alive(&self, now_unix_ms: u64) {
        self.loop_unix_ms.store(now_unix_ms, Ordering::Relaxed);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions_and_the_loops_handles_count_into_the_registry() {
        let metrics = UplinkMetrics::new();
        metrics.datagrams[1].inc_by(3);
        metrics.air_bytes[0].inc_by(1500);
        UplinkMetrics::count(&metrics.hooks, "outcome", "failed");
        let text = metrics.render();
        assert!(text.contains("satcast_uplink_datagrams_aired_total{type=\"data\"} 3"), "{text}");
        assert!(text.contains("satcast_uplink_air_bytes_total{priority=\"emergency\"} 1500"), "{text}");
        assert!(text.contains("satcast_uplink_hook_results_total{outcome=\"failed\"} 1"), "{text}");
        assert!(text.contains("# UNIT satcast_uplink_air_bytes bytes"), "{text}");
    }
}
