//! `satcast-sim vopr`: the fault simulation, in the spirit of TigerBeetle's VOPR. Each seed
//! draws a scenario (counties, loss, objects) and a fault schedule (crashes with restarts,
//! lost indexes, full and slow disks, WAN outages), runs the daemons' own receiver nodes
//! over [`crate::disk::SimDisk`] in virtual time, and checks the invariants the disks check
//! at every request, then at the end: every targeted county delivered every object, the
//! uplink heard each completion (its ledger converges to the counties' durable state), and
//! every hook ran exactly once. A violation prints the seed and the one line that replays it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast_protocol::broadcast::{BroadcastConfig, Priority};
use satcast_protocol::reception::Fidelity;

use crate::divisions;
use crate::harness::{Harness, HarnessOptions, ObjectOptions, Outage, OutageKind};
use crate::loss::LossModel;

/// Virtual time a seed may take before a county that still lacks an object is a violation
/// (faults end by [`FAULTS_END`]; the rest is for repair to finish).
pub const VIRTUAL_LIMIT: Duration = Duration::from_secs(240);
/// Faults start before this virtual time.
pub const FAULTS_END: Duration = Duration::from_secs(40);
/// How often disk faults are switched on or off (the harness runs in slices this long).
const SLICE: Duration = Duration::from_millis(100);

/// What one seed runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoprOptions {
    /// The seed of the scenario and its faults.
    pub seed: u64,
    /// County receivers.
    pub receivers: usize,
}

impl VoprOptions {
    /// The command line that runs this seed again.
    pub fn replay_line(&self) -> String {
        format!("satcast-sim vopr --seed {} --receivers {}", self.seed, self.receivers)
    }
}

/// What one seed did.
#[derive(Debug, Clone, Default)]
pub struct VoprReport {
    /// Broken invariants, in words (empty: the seed passed).
    pub violations: Vec<String>,
    /// Objects aired.
    pub objects: usize,
    /// Crashes (each followed by a restart).
    pub crashes: u32,
    /// Counties whose disk filled up for a while.
    pub full_disks: usize,
    /// Counties with a slow disk.
    pub slow_disks: usize,
    /// Virtual time until every county had everything.
    pub virtual_secs: f64,
}

/// A disk-full window for one county.
struct FullWindow {
    receiver: usize,
    period: std::ops::Range<Duration>,
}

/// Runs one seed.
pub fn run_seed(options: VoprOptions) -> VoprReport {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let all = divisions::counties();
    let receivers = options.receivers.clamp(1, all.len());
    let counties: Vec<(String, LossModel)> = sample(&mut rng, all.len(), receivers)
        .into_iter()
        .map(|i| (all[i].code.clone(), LossModel::Bernoulli(rng.random_range(0.0..0.1))))
        .collect();
    let mut outages = Vec::new();
    let mut full = Vec::new();
    let mut report = VoprReport::default();
    let mut slow = Vec::new();
    let mut lose_index = Vec::new();
    for receiver in 0..receivers {
        if rng.random_bool(0.3) {
            for _ in 0..rng.random_range(1..=2) {
                let start = Duration::from_millis(rng.random_range(0..FAULTS_END.as_millis() as u64));
                let period = start..start + Duration::from_millis(rng.random_range(100..6_000));
                outages.push(Outage { receiver: Some(receiver), kind: OutageKind::Power, period });
            }
            if rng.random_bool(0.3) {
                lose_index.push(receiver);
            }
        }
        if rng.random_bool(0.1) {
            let start = Duration::from_millis(rng.random_range(0..FAULTS_END.as_millis() as u64));
            outages.push(Outage { receiver: Some(receiver), kind: OutageKind::Wan, period: start..start + Duration::from_secs(5) });
        }
        if rng.random_bool(0.15) {
            let start = Duration::from_millis(rng.random_range(0..FAULTS_END.as_millis() as u64));
            full.push(FullWindow { receiver, period: start..start + Duration::from_millis(rng.random_range(200..8_000)) });
        }
        if rng.random_bool(0.2) {
            slow.push((receiver, Duration::from_millis(rng.random_range(1..400))));
        }
    }
    report.full_disks = full.iter().map(|w| w.receiver).collect::<BTreeSet<_>>().len();
    report.slow_disks = slow.len();
    let mut harness_options = HarnessOptions::new(rng.random(), counties);
    harness_options.fidelity = Fidelity::Counting;
    harness_options.disks = true;
    harness_options.outages = outages;
    harness_options.symbol_size = 1024;
    harness_options.block_bytes_max = 64 * 1024;
    harness_options.broadcast = BroadcastConfig { link_rate_bits_per_sec: 20_000_000, ..BroadcastConfig::default() };
    let mut harness = Harness::new(harness_options);
    for (receiver, delay) in slow {
        if let Some(disk) = harness.receivers[receiver].disk_mut() {
            disk.delay = delay;
        }
    }
    for receiver in lose_index {
        harness.receivers[receiver].lose_index_on_crash = true;
    }
    let objects: Vec<u64> = (0..rng.random_range(1..=3))
        .filter_map(|_| {
            let payload = harness.random_payload(rng.random_range(2_000..300_000));
            let options = ObjectOptions { prefixes: vec![String::new()], priority: Priority::Normal, deadline: None, carousel: None };
            harness.try_add_object(payload, &options).map_err(|e| report.violations.push(format!("cannot add an object: {e}"))).ok()
        })
        .collect();
    report.objects = objects.len();
    let done = |h: &Harness| {
        h.elapsed() >= FAULTS_END
            && objects.iter().all(|id| {
                h.receivers.iter().all(|r| r.disk().is_some_and(|d| d.delivered(*id)) && h.acked.contains(&(r.code.clone(), *id)))
            })
    };
    let started = harness.now;
    while harness.elapsed() < VIRTUAL_LIMIT && !done(&harness) {
        let at = harness.elapsed();
        for window in &full {
            if let Some(disk) = harness.receivers[window.receiver].disk_mut() {
                disk.full = window.period.contains(&at);
            }
        }
        harness.run_until(SLICE, u64::MAX, |_| false);
        if harness.receivers.iter().any(|r| r.disk().is_some_and(|d| !d.violations.is_empty())) {
            break;
        }
    }
    report.virtual_secs = harness.now.saturating_duration_since(started).as_secs_f64();
    report.crashes = harness.receivers.iter().map(|r| r.crashes).sum();
    for receiver in &harness.receivers {
        let Some(disk) = receiver.disk() else { continue };
        report.violations.extend(disk.violations.iter().map(|v| format!("county {}: {v}", receiver.code)));
    }
    if !report.violations.is_empty() {
        // The run stopped at the first broken promise: whether the rest settled says nothing.
        return report;
    }
    for receiver in &harness.receivers {
        let Some(disk) = receiver.disk() else { continue };
        for object_id in &objects {
            let delivered = disk.delivered(*object_id);
            let acked = harness.acked.contains(&(receiver.code.clone(), *object_id));
            if !delivered || !acked {
                report.violations.push(format!(
                    "county {}: object {object_id} not settled after {:.1} s virtual (delivered {delivered}, uplink heard it {acked}; \
                     {} crashes, node {:?}, progress {:?}, waiting deliveries {}, disk {})",
                    receiver.code,
                    report.virtual_secs,
                    receiver.crashes,
                    receiver.node.stats(),
                    receiver.node.progress(),
                    receiver.node.deliveries_waiting(),
                    disk.summary(),
                ));
            }
            let runs = disk.hook_runs.get(object_id).copied().unwrap_or(0);
            if delivered && runs != 1 {
                report.violations.push(format!("county {}: object {object_id}'s hook ran {runs} times", receiver.code));
            }
        }
        if report.violations.len() > 20 {
            break;
        }
    }
    report
}

/// Runs seeds from `first_seed` on until `budget` of wall time has passed or a seed breaks
/// an invariant; returns the seeds run and the failing one, if any. `progress` sees each.
pub fn run_for(
    budget: Duration,
    receivers: usize,
    first_seed: u64,
    mut progress: impl FnMut(&VoprOptions, &VoprReport),
) -> (u64, Option<(VoprOptions, VoprReport)>) {
    let started = Instant::now();
    let mut seeds = 0;
    while started.elapsed() < budget {
        let options = VoprOptions { seed: first_seed.wrapping_add(seeds), receivers };
        let report = run_seed(options);
        seeds += 1;
        progress(&options, &report);
        if !report.violations.is_empty() {
            return (seeds, Some((options, report)));
        }
    }
    (seeds, None)
}
