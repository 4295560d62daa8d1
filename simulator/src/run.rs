//! `satcast-sim run`: one broadcast machine and N reception machines in virtual time, with
//! the loss, fade, outage and link models of docs/simulator.md; measures delivery
//! efficiency against the lower bound of [`crate::bound`] and completion times.
//!
//! This module owns the scenario (which counties, which models, which object), the run
//! loop with its sampling for the plot, and the report. The machines and the virtual-time
//! plumbing are [`crate::harness`]'s.

use std::fmt::Write as _;
use std::ops::Range;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast_protocol::broadcast::{AirPlan, BroadcastConfig, BroadcastEvent, Priority};
use satcast_protocol::fec::{self, Oti};
use satcast_protocol::reception::Fidelity;
use satcast_protocol::wire;
use serde::Serialize;
use thiserror::Error;

use crate::bound::lower_bound_symbols;
use crate::divisions;
use crate::harness::{Harness, HarnessError, HarnessOptions, ObjectOptions, Outage, OutageKind};
use crate::loss::{FadeModel, LossModel};

/// The most receivers: every county of the national division table.
pub const RECEIVERS_MAX: usize = 2978;
/// The largest object a run airs (the payload is held in memory, with the uplink's
/// encoders for one interleave window).
pub const PAYLOAD_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;
/// The most receiver-bytes in full fidelity (receivers times object size): each receiver
/// keeps its symbols' bytes until a block decodes, so memory grows with both.
pub const FULL_FIDELITY_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;
/// The longest virtual time a run may be given.
pub const VIRTUAL_TIME_MAX: Duration = Duration::from_secs(7 * 86_400);
/// Harness steps a run may take (a step is about one datagram or one timer).
pub const STEPS_MAX: u64 = 2_000_000_000;
/// Virtual time between two samples of the progress curves.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// The most samples kept; beyond it every other one is dropped and the interval doubles.
pub const SAMPLES_MAX: usize = 4096;
/// The most scheduled outages on one command line.
pub const OUTAGES_MAX: usize = 64;
/// Bytes a datagram adds to a symbol: header, FEC payload id and tag.
pub const DATAGRAM_OVERHEAD_BYTES: usize =
    satcast_protocol::wire::HEADER_LEN + satcast_protocol::wire::PAYLOAD_ID_LEN + satcast_protocol::wire::TAG_LEN;
/// The largest symbol: its datagram must fit a UDP payload.
pub const SYMBOL_BYTES_MAX: u16 = 8192;
/// The lowest carrier rate accepted (bits per second): slower, and a 50 MB object takes
/// days of virtual time.
pub const LINK_RATE_MIN_BITS_PER_SEC: u64 = 64_000;
/// The highest carrier rate accepted (bits per second).
pub const LINK_RATE_MAX_BITS_PER_SEC: u64 = 10_000_000_000;
/// The most carousel passes.
pub const CAROUSEL_PASSES_MAX: u32 = 100;
/// The highest loss rate a model may ask for; the protocol's estimates clamp at 0.9.
pub const LOSS_MAX: f64 = 0.9;
/// Salt that separates the county and outage draws from the harness's own stream.
const SCENARIO_SALT: u64 = 0x5ca7_c057_d1a1_0915;

/// How counties lose datagrams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossSpec {
    /// Each datagram lost independently at each county with probability `loss`.
    Independent {
        /// Loss probability.
        loss: f64,
    },
    /// Gilbert-Elliott bursts, per county.
    Bursts {
        /// Long-run loss rate.
        loss: f64,
        /// Mean burst length in datagrams.
        mean_burst_datagrams: f64,
    },
    /// A rain fade per province, shared by all of its counties, plus independent loss per
    /// county.
    RegionalFade {
        /// Share of time a province is faded.
        share: f64,
        /// Mean fade length.
        mean_fade: Duration,
        /// Independent loss per county on top.
        background: f64,
    },
}

impl LossSpec {
    /// The long-run loss rate each county sees.
    pub fn mean_loss(&self) -> f64 {
        match *self {
            LossSpec::Independent { loss } | LossSpec::Bursts { loss, .. } => loss,
            LossSpec::RegionalFade { share, background, .. } => 1.0 - (1.0 - share) * (1.0 - background),
        }
    }

    fn county_model(&self) -> LossModel {
        match *self {
            LossSpec::Independent { loss } => LossModel::Bernoulli(loss),
            LossSpec::Bursts { loss, mean_burst_datagrams } => {
                LossModel::GilbertElliott { mean_loss: loss, mean_burst: mean_burst_datagrams }
            }
            LossSpec::RegionalFade { background, .. } if background > 0.0 => LossModel::Bernoulli(background),
            LossSpec::RegionalFade { .. } => LossModel::None,
        }
    }

    fn fade(&self) -> Option<FadeModel> {
        match *self {
            LossSpec::RegionalFade { share, mean_fade, .. } => Some(FadeModel { share, mean_fade }),
            _ => None,
        }
    }

    /// A short description, for tables and summaries.
    pub fn describe(&self) -> String {
        match *self {
            LossSpec::Independent { loss } => format!("independent {}%", percent(loss)),
            LossSpec::Bursts { loss, mean_burst_datagrams } => format!("bursts {}% (mean {mean_burst_datagrams} datagrams)", percent(loss)),
            LossSpec::RegionalFade { share, mean_fade, background } => {
                format!("regional fade {}% (mean {} s) + {}% independent", percent(share), mean_fade.as_secs_f64(), percent(background))
            }
        }
    }

    fn replay_args(&self) -> String {
        match *self {
            LossSpec::Independent { loss } => format!("--model independent --loss {loss}"),
            LossSpec::Bursts { loss, mean_burst_datagrams } => {
                format!("--model bursts --loss {loss} --burst-datagrams {mean_burst_datagrams}")
            }
            LossSpec::RegionalFade { share, mean_fade, background } => {
                format!("--model fade --loss {share} --fade-ms {} --background-loss {background}", mean_fade.as_millis())
            }
        }
    }

    fn validate(&self) -> Result<(), RunError> {
        let rate = |name: &str, p: f64| {
            if (0.0..=LOSS_MAX).contains(&p) {
                Ok(())
            } else {
                Err(RunError::Invalid(format!("{name} must be in [0, {LOSS_MAX}], not {p}")))
            }
        };
        match *self {
            LossSpec::Independent { loss } => rate("loss", loss),
            LossSpec::Bursts { loss, mean_burst_datagrams } => {
                rate("loss", loss)?;
                if !(1.0..=1e6).contains(&mean_burst_datagrams) {
                    return Err(RunError::Invalid(format!("mean burst must be 1 to 1000000 datagrams, not {mean_burst_datagrams}")));
                }
                Ok(())
            }
            LossSpec::RegionalFade { share, mean_fade, background } => {
                rate("fade share (--loss)", share)?;
                rate("background loss", background)?;
                if mean_fade < Duration::from_millis(1) || mean_fade > Duration::from_secs(86_400) {
                    return Err(RunError::Invalid("mean fade must be 1 ms to 1 day".into()));
                }
                Ok(())
            }
        }
    }
}

fn percent(p: f64) -> String {
    let v = (p * 1000.0).round() / 10.0;
    format!("{v}")
}

/// A scheduled outage for a share of the receivers (drawn from the seed).
#[derive(Debug, Clone, PartialEq)]
pub struct OutageSpec {
    /// Power or WAN.
    pub kind: OutageKind,
    /// When (virtual time since the start).
    pub period: Range<Duration>,
    /// Share of the receivers affected, in (0, 1].
    pub share: f64,
}

/// Feedback-driven repair, or a carousel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeliverySpec {
    /// Receivers report over the WAN; repair rounds follow.
    Feedback,
    /// No feedback: `passes` passes, each sized for `target_loss`.
    Carousel {
        /// Passes.
        passes: u32,
        /// Loss rate each pass is sized for.
        target_loss: f64,
    },
}

/// Everything a run depends on. Two runs with equal options give equal reports (except
/// the wall-clock time).
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Seed of every random choice: counties, keys, payload, loss, jitter, outages.
    pub seed: u64,
    /// Receivers, drawn from the national division table.
    pub receivers: usize,
    /// Object size in bytes.
    pub size_bytes: u64,
    /// Loss model of every county.
    pub loss: LossSpec,
    /// Scheduled outages.
    pub outages: Vec<OutageSpec>,
    /// One-way GEO downlink delay.
    pub geo_delay: Duration,
    /// One-way WAN delay of feedback.
    pub wan_delay: Duration,
    /// Carrier rate, IP and UDP headers included.
    pub link_rate_bits_per_sec: u64,
    /// Bytes per symbol (the DATA datagram's payload is this plus 34 bytes).
    pub symbol_size: u16,
    /// Full decoding or symbol counting.
    pub fidelity: Fidelity,
    /// Feedback or carousel.
    pub delivery: DeliverySpec,
    /// The loss the uplink assumes for a county it has not heard from, which sizes the
    /// first pass. None: the model's long-run loss, as an uplink that has heard these
    /// counties' reports on earlier broadcasts knows it.
    pub prior_loss: Option<f64>,
    /// Give up after this much virtual time.
    pub time_limit: Duration,
}

impl RunOptions {
    /// The defaults of `satcast-sim run`: 200 receivers, 5 MB, 5% independent loss, GEO
    /// 270 ms, WAN 50 ms, 20 Mbit/s, 1436-byte symbols, fast fidelity, feedback.
    pub fn new(seed: u64) -> Self {
        let broadcast = BroadcastConfig::default();
        RunOptions {
            seed,
            receivers: 200,
            size_bytes: 5_000_000,
            loss: LossSpec::Independent { loss: 0.05 },
            outages: Vec::new(),
            geo_delay: Duration::from_millis(270),
            wan_delay: Duration::from_millis(50),
            link_rate_bits_per_sec: broadcast.link_rate_bits_per_sec,
            symbol_size: 1436,
            fidelity: Fidelity::Counting,
            delivery: DeliverySpec::Feedback,
            prior_loss: None,
            time_limit: Duration::from_secs(3600),
        }
    }

    /// Checks every knob; the error says which and why.
    pub fn validate(&self) -> Result<(), RunError> {
        let invalid = |m: String| Err(RunError::Invalid(m));
        if self.receivers == 0 || self.receivers > RECEIVERS_MAX {
            return invalid(format!("receivers must be 1 to {RECEIVERS_MAX} (the counties in the division table), not {}", self.receivers));
        }
        if self.size_bytes == 0 || self.size_bytes > PAYLOAD_BYTES_MAX {
            return invalid(format!("size must be 1 byte to {PAYLOAD_BYTES_MAX} bytes, not {}", self.size_bytes));
        }
        self.loss.validate()?;
        if self.outages.len() > OUTAGES_MAX {
            return invalid(format!("at most {OUTAGES_MAX} outages"));
        }
        for outage in &self.outages {
            if outage.period.start >= outage.period.end {
                return invalid(format!("outage {:?} ends before it starts", outage.period));
            }
            if !(outage.share > 0.0 && outage.share <= 1.0) {
                return invalid(format!("outage share must be in (0, 1], not {}", outage.share));
            }
        }
        if self.geo_delay > Duration::from_secs(60) || self.wan_delay > Duration::from_secs(600) {
            return invalid("GEO delay must be at most 60 s and WAN delay at most 600 s".into());
        }
        if !(LINK_RATE_MIN_BITS_PER_SEC..=LINK_RATE_MAX_BITS_PER_SEC).contains(&self.link_rate_bits_per_sec) {
            return invalid(format!(
                "link rate must be {LINK_RATE_MIN_BITS_PER_SEC} to {LINK_RATE_MAX_BITS_PER_SEC} bit/s, not {}",
                self.link_rate_bits_per_sec
            ));
        }
        if self.symbol_size == 0 || self.symbol_size % u16::from(fec::SYMBOL_ALIGNMENT) != 0 || self.symbol_size > SYMBOL_BYTES_MAX {
            return invalid(format!(
                "symbol size must be a multiple of {} up to {SYMBOL_BYTES_MAX}, not {}",
                fec::SYMBOL_ALIGNMENT,
                self.symbol_size
            ));
        }
        Oti::new_for_object(self.size_bytes, self.symbol_size, fec::DEFAULT_BLOCK_BYTES_MAX).map_err(|e| {
            RunError::Invalid(format!("size {} cannot be aired with {}-byte symbols: {e}", self.size_bytes, self.symbol_size))
        })?;
        if let DeliverySpec::Carousel { passes, target_loss } = self.delivery {
            if passes == 0 || passes > CAROUSEL_PASSES_MAX {
                return invalid(format!("carousel passes must be 1 to {CAROUSEL_PASSES_MAX}, not {passes}"));
            }
            if !(0.0..=LOSS_MAX).contains(&target_loss) {
                return invalid(format!("carousel target loss must be in [0, {LOSS_MAX}], not {target_loss}"));
            }
        }
        if let Some(prior) = self.prior_loss {
            if !(0.0..=LOSS_MAX).contains(&prior) {
                return invalid(format!("prior loss must be in [0, {LOSS_MAX}], not {prior}"));
            }
        }
        if self.time_limit.is_zero() || self.time_limit > VIRTUAL_TIME_MAX {
            return invalid(format!("time limit must be positive and at most {} s", VIRTUAL_TIME_MAX.as_secs()));
        }
        let receiver_bytes = self.size_bytes.saturating_mul(self.receivers as u64);
        if self.fidelity == Fidelity::Full && receiver_bytes > FULL_FIDELITY_BYTES_MAX {
            return Err(RunError::FullFidelityTooLarge { receiver_bytes });
        }
        Ok(())
    }

    /// The loss the uplink assumes for counties it has not heard from.
    pub fn prior_loss(&self) -> f64 {
        self.prior_loss.unwrap_or_else(|| self.loss.mean_loss())
    }

    /// The command line that replays this run.
    pub fn replay_command(&self) -> String {
        let mut line = format!(
            "satcast-sim run --seed {} --receivers {} --size {} {}",
            self.seed,
            self.receivers,
            self.size_bytes,
            self.loss.replay_args()
        );
        for outage in &self.outages {
            let flag = match outage.kind {
                OutageKind::Power => "--outage",
                OutageKind::Wan => "--wan-outage",
            };
            let _ = write!(line, " {flag} {}ms..{}ms@{}", outage.period.start.as_millis(), outage.period.end.as_millis(), outage.share);
        }
        let _ = write!(
            line,
            " --geo-delay-ms {} --wan-delay-ms {} --rate-bps {} --symbol-size {} --fidelity {} --prior-loss {} --time-limit-secs {}",
            self.geo_delay.as_millis(),
            self.wan_delay.as_millis(),
            self.link_rate_bits_per_sec,
            self.symbol_size,
            fidelity_name(self.fidelity),
            self.prior_loss(),
            self.time_limit.as_secs()
        );
        if let DeliverySpec::Carousel { passes, target_loss } = self.delivery {
            let _ = write!(line, " --carousel --carousel-passes {passes} --carousel-target-loss {target_loss}");
        }
        line
    }
}

/// "fast" or "full", as on the command line.
pub fn fidelity_name(fidelity: Fidelity) -> &'static str {
    match fidelity {
        Fidelity::Full => "full",
        Fidelity::Counting => "fast",
    }
}

/// Why a run could not be set up.
#[derive(Debug, Error)]
pub enum RunError {
    /// An option is out of range.
    #[error("{0}")]
    Invalid(String),
    /// Full fidelity would keep too many symbol bytes.
    #[error(
        "full fidelity keeps every receiver's symbols: {receiver_bytes} receiver-bytes is above {max}; use fewer receivers, a smaller size or --fidelity fast",
        max = FULL_FIDELITY_BYTES_MAX
    )]
    FullFidelityTooLarge {
        /// Receivers times object size.
        receiver_bytes: u64,
    },
    /// The harness refused the object.
    #[error(transparent)]
    Harness(#[from] HarnessError),
}

/// Completion-time percentiles over the receivers that completed, in virtual seconds since
/// the object was queued (nearest rank). None when nobody completed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// The last receiver.
    pub max: Option<f64>,
}

impl Percentiles {
    /// Nearest-rank percentiles of `sorted` (ascending).
    pub fn of(sorted: &[f64]) -> Self {
        let rank = |p: f64| {
            if sorted.is_empty() {
                return None;
            }
            let index = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            Some(round3(sorted[index]))
        };
        Percentiles { p50: rank(0.50), p90: rank(0.90), p99: rank(0.99), max: rank(1.0) }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One point of the progress curves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Virtual seconds since the start.
    pub at_secs: f64,
    /// DATA symbols aired so far.
    pub symbols_sent: u64,
    /// Receivers complete so far.
    pub completed: usize,
}

/// What a run measured. Field order is the JSON's; `wall_seconds` comes last so that a
/// determinism check can drop it (or leave it out with `--no-wall`).
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// The command line that replays this run.
    pub replay: String,
    /// "fast" or "full".
    pub fidelity: &'static str,
    /// "feedback" or "carousel".
    pub delivery: &'static str,
    /// The loss model, described.
    pub loss_model: String,
    /// Receivers targeted.
    pub receivers: usize,
    /// Receivers that completed (byte-exact in full fidelity).
    pub completed: usize,
    /// Receivers that assembled wrong bytes (full fidelity; must be 0).
    pub corrupt: usize,
    /// Object size in bytes.
    pub size_bytes: u64,
    /// DATA symbols on the air for the object.
    pub symbols_sent: u64,
    /// DATA symbols aired up to the datagram that completed the last county: what this
    /// loss realisation needed with this sending order. `symbols_sent` minus this is what
    /// went out while the last completion was still travelling back (None if nobody
    /// completed).
    pub symbols_until_last_completion: Option<u64>,
    /// Source symbols in all (sum of the list below).
    pub source_symbols: u64,
    /// K of each source block.
    pub source_symbols_per_block: Vec<u32>,
    /// The lower bound (docs/simulator.md): sum over blocks of K/q + e_N sqrt(K p)/q with
    /// p the counties' long-run loss and N the receivers.
    pub lower_bound_symbols: f64,
    /// (symbols_sent + the SYMBOL LIST bytes in DATA datagrams' worth) / lower_bound_symbols:
    /// what the object cost the carrier, source authentication included.
    pub efficiency: f64,
    /// symbols_sent / lower_bound_symbols: DATA symbols alone (the efficiency before source
    /// authentication aired lists).
    pub efficiency_data: f64,
    /// Bytes of the object's SYMBOL LIST datagrams on the air (IP and UDP included).
    pub symbol_list_bytes: u64,
    /// Rounds after the first pass (extra passes in carousel mode).
    pub repair_rounds: usize,
    /// DATA symbols the uplink planned for each round, the first pass first.
    pub round_symbols: Vec<u64>,
    /// Completion-time percentiles, virtual seconds.
    pub completion_seconds: Percentiles,
    /// Air time of the lower bound's symbols at the carrier rate, seconds: what the last
    /// county's completion time is held against.
    pub bound_air_seconds: f64,
    /// Air time of the DATA symbols aired until the last county completed, over the
    /// virtual time from the first DATA datagram to that completion: the share of that
    /// span the carrier was busy with the object (None if nobody completed).
    pub utilisation: Option<f64>,
    /// The highest share of datagrams lost at one receiver while it was powered.
    pub worst_observed_loss: f64,
    /// Virtual time at the end of the run.
    pub virtual_seconds: f64,
    /// Harness steps taken.
    pub steps: u64,
    /// Bytes on the carrier, headers and control datagrams included.
    pub bytes_on_air: u64,
    /// Digest of every datagram and event: equal digests, equal runs.
    pub digest: String,
    /// Wall-clock seconds the run took (None with --no-wall).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f64>,
    /// Progress curves for the plot.
    #[serde(skip)]
    pub samples: Vec<Sample>,
    /// Each completed receiver's completion time, ascending, virtual seconds.
    #[serde(skip)]
    pub completion_times: Vec<f64>,
    /// When each round started, virtual seconds.
    #[serde(skip)]
    pub round_starts: Vec<f64>,
}

impl RunReport {
    /// Whether every receiver completed, none with wrong bytes.
    pub fn success(&self) -> bool {
        self.completed == self.receivers && self.corrupt == 0
    }
}

/// `n` distinct indices below `len`, drawn from `rng` (partial Fisher-Yates), ascending.
fn draw_indices(rng: &mut impl Rng, len: usize, n: usize) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..len).collect();
    let n = n.min(len);
    for i in 0..n {
        let j = rng.random_range(i..len);
        indices.swap(i, j);
    }
    indices.truncate(n);
    indices.sort_unstable();
    indices
}

/// The harness options for a run: counties drawn from the table, models, outages.
pub fn harness_options(options: &RunOptions) -> Result<HarnessOptions, RunError> {
    options.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ SCENARIO_SALT);
    let table = divisions::counties();
    let model = options.loss.county_model();
    let receivers: Vec<(String, LossModel)> =
        draw_indices(&mut rng, table.len(), options.receivers).into_iter().map(|i| (table[i].code.clone(), model)).collect();
    let mut outages = Vec::new();
    for spec in &options.outages {
        if spec.share >= 1.0 {
            outages.push(Outage { receiver: None, kind: spec.kind, period: spec.period.clone() });
            continue;
        }
        let count = ((spec.share * receivers.len() as f64).round() as usize).max(1);
        for receiver in draw_indices(&mut rng, receivers.len(), count) {
            outages.push(Outage { receiver: Some(receiver), kind: spec.kind, period: spec.period.clone() });
        }
    }
    let mut harness = HarnessOptions::new(options.seed, receivers);
    harness.downlink_delay = options.geo_delay;
    harness.wan_delay = options.wan_delay;
    harness.symbol_size = options.symbol_size;
    harness.fidelity = options.fidelity;
    harness.regional_fade = options.loss.fade();
    harness.outages = outages;
    let broadcast = &mut harness.broadcast;
    broadcast.link_rate_bits_per_sec = options.link_rate_bits_per_sec;
    broadcast.datagram_bytes_max = broadcast.datagram_bytes_max.max(usize::from(options.symbol_size) + DATAGRAM_OVERHEAD_BYTES);
    broadcast.sizing.prior_loss = options.prior_loss();
    // Wait for reports at least a downlink, a report window and a WAN trip, plus slack.
    let round_trip = options.geo_delay + harness.report_window + options.wan_delay + Duration::from_secs(1);
    broadcast.feedback_wait = broadcast.feedback_wait.max(round_trip);
    if let DeliverySpec::Carousel { passes, target_loss } = options.delivery {
        broadcast.target_loss = target_loss;
        harness.carousel_passes = passes;
    }
    Ok(harness)
}

/// Runs a scenario to the end: until the uplink stops airing the object (everyone
/// completed, or the carousel finished) and the downlink is empty, or the time limit.
pub fn run(options: &RunOptions) -> Result<RunReport, RunError> {
    run_with_progress(options, &mut |_| {})
}

/// [`run`], calling `progress` after every sample.
pub fn run_with_progress(options: &RunOptions, progress: &mut dyn FnMut(&Sample)) -> Result<RunReport, RunError> {
    let wall_start = Instant::now();
    let mut harness = Harness::new(harness_options(options)?);
    let len = usize::try_from(options.size_bytes).map_err(|_| RunError::Invalid("size does not fit in memory".into()))?;
    let payload = harness.random_payload(len);
    let carousel = match options.delivery {
        DeliverySpec::Feedback => None,
        DeliverySpec::Carousel { passes, target_loss } => Some(AirPlan { target_loss, passes }),
    };
    let object_options = ObjectOptions { prefixes: vec![String::new()], priority: Priority::Normal, deadline: None, carousel };
    let id = harness.try_add_object(payload, &object_options)?;

    let finished = |h: &Harness| !h.uplink.is_airing(id) && h.downlink_in_flight() == 0;
    let mut samples: Vec<Sample> = Vec::new();
    let mut interval = SAMPLE_INTERVAL;
    let mut steps_left = STEPS_MAX;
    let sample = |h: &Harness| Sample {
        at_secs: h.elapsed().as_secs_f64(),
        symbols_sent: h.objects.get(&id).map_or(0, |o| o.symbols_sent),
        completed: h.objects.get(&id).map_or(0, |o| o.completions),
    };
    samples.push(sample(&harness));
    // Bounded: each slice advances virtual time by `interval` (or ends the run), and the
    // time limit caps the total.
    while harness.elapsed() < options.time_limit && steps_left > 0 {
        let slice = interval.min(options.time_limit - harness.elapsed());
        let before = harness.steps;
        let done = harness.run_until(slice, steps_left, finished);
        steps_left = steps_left.saturating_sub(harness.steps - before);
        let point = sample(&harness);
        progress(&point);
        samples.push(point);
        if samples.len() >= SAMPLES_MAX {
            // Keep the curve's shape within the bound: halve the resolution.
            let mut keep = 0;
            samples.retain(|_| {
                keep += 1;
                keep % 2 == 1
            });
            interval *= 2;
        }
        if done {
            break;
        }
    }

    let object = harness.objects.get(&id).ok_or_else(|| RunError::Invalid("the object vanished".into()))?;
    let mut completion_times: Vec<f64> =
        harness.receivers.iter().filter_map(|r| r.completed.get(&id).map(|at| (*at - object.added_at).as_secs_f64())).collect();
    completion_times.sort_by(f64::total_cmp);
    let source_symbols_per_block = object.source_symbols.clone();
    let bound = lower_bound_symbols(&source_symbols_per_block, options.loss.mean_loss(), object.targets.len());
    // Lists in DATA datagrams' worth of the carrier, so efficiency counts what they cost.
    let list_symbols = object.list_bytes as f64 / wire::data_bytes_on_air(usize::from(options.symbol_size)) as f64;
    let (round_starts, round_symbols): (Vec<f64>, Vec<u64>) = object
        .events
        .iter()
        .filter_map(|(at, e)| match e {
            BroadcastEvent::RoundStarted { symbols, .. } => Some((at.as_secs_f64(), *symbols)),
            _ => None,
        })
        .unzip();
    let worst_observed_loss = harness.receivers.iter().map(|r| r.observed_loss()).fold(0.0, f64::max);
    let datagram_bits = ((usize::from(options.symbol_size) + DATAGRAM_OVERHEAD_BYTES + wire::IP_UDP_HEADER_BYTES) * 8) as f64;
    let air_seconds = |symbols: f64| symbols * datagram_bits / options.link_rate_bits_per_sec as f64;
    let until_last = harness.receivers.iter().filter_map(|r| r.completed_after_symbols.get(&id).copied()).max();
    let last_completion = harness.receivers.iter().filter_map(|r| r.completed.get(&id).copied()).max();
    let utilisation = match (until_last, last_completion, object.first_data_at) {
        (Some(symbols), Some(last), Some(first)) if last > first => {
            Some((air_seconds(symbols as f64) / (last - first).as_secs_f64() * 1e4).round() / 1e4)
        }
        _ => None,
    };
    Ok(RunReport {
        seed: options.seed,
        replay: options.replay_command(),
        fidelity: fidelity_name(options.fidelity),
        delivery: match options.delivery {
            DeliverySpec::Feedback => "feedback",
            DeliverySpec::Carousel { .. } => "carousel",
        },
        loss_model: options.loss.describe(),
        receivers: object.targets.len(),
        completed: object.completions,
        corrupt: harness.receivers.iter().filter(|r| r.corrupt.contains(&id)).count(),
        size_bytes: options.size_bytes,
        symbols_sent: object.symbols_sent,
        symbols_until_last_completion: harness.receivers.iter().filter_map(|r| r.completed_after_symbols.get(&id).copied()).max(),
        source_symbols: source_symbols_per_block.iter().map(|k| u64::from(*k)).sum(),
        source_symbols_per_block,
        lower_bound_symbols: (bound * 10.0).round() / 10.0,
        efficiency: ((object.symbols_sent as f64 + list_symbols) / bound * 1e4).round() / 1e4,
        efficiency_data: (object.symbols_sent as f64 / bound * 1e4).round() / 1e4,
        symbol_list_bytes: object.list_bytes,
        repair_rounds: round_starts.len().saturating_sub(1),
        round_symbols,
        completion_seconds: Percentiles::of(&completion_times),
        bound_air_seconds: round3(air_seconds(bound)),
        utilisation,
        worst_observed_loss: (worst_observed_loss * 1e4).round() / 1e4,
        virtual_seconds: round3(harness.elapsed().as_secs_f64()),
        steps: harness.steps,
        bytes_on_air: harness.uplink.stats().bytes_on_air,
        digest: harness.digest(),
        wall_seconds: Some((wall_start.elapsed().as_secs_f64() * 100.0).round() / 100.0),
        samples,
        completion_times,
        round_starts,
    })
}

/// The human summary of a run.
pub fn summary(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "satcast-sim run: {} receivers, {} bytes in {} blocks ({} source symbols), {} fidelity, {} delivery",
        report.receivers,
        report.size_bytes,
        report.source_symbols_per_block.len(),
        report.source_symbols,
        report.fidelity,
        report.delivery
    );
    let _ = writeln!(out, "loss model      {}", report.loss_model);
    let _ = writeln!(out, "completed       {}/{} ({} corrupt)", report.completed, report.receivers, report.corrupt);
    let _ = writeln!(
        out,
        "symbols sent    {} DATA symbols, lower bound {:.0}: efficiency {:.4} ({:.4} DATA alone; symbol lists {} bytes)",
        report.symbols_sent, report.lower_bound_symbols, report.efficiency, report.efficiency_data, report.symbol_list_bytes
    );
    let rounds: Vec<String> = report.round_symbols.iter().map(u64::to_string).collect();
    if let Some(needed) = report.symbols_until_last_completion {
        let _ = writeln!(
            out,
            "last completion after {needed} symbols aired ({} more went out before the uplink heard of it)",
            report.symbols_sent.saturating_sub(needed)
        );
    }
    let _ = writeln!(out, "repair rounds   {} (symbols per round: {})", report.repair_rounds, rounds.join(", "));
    let c = &report.completion_seconds;
    let secs = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{s:.3} s"));
    let _ = writeln!(out, "completion      p50 {}  p90 {}  p99 {}  max {} (virtual)", secs(c.p50), secs(c.p90), secs(c.p99), secs(c.max));
    let utilisation = report.utilisation.map_or("-".to_owned(), |u| format!("{u:.4}"));
    let _ = writeln!(
        out,
        "air time        {:.3} s for the lower bound's symbols; carrier utilisation until the last completion {utilisation}",
        report.bound_air_seconds
    );
    let _ = writeln!(out, "worst county    {:.2}% of datagrams lost", report.worst_observed_loss * 100.0);
    let wall = report.wall_seconds.map_or(String::new(), |w| format!(" in {w:.1} s of wall time"));
    let _ = writeln!(out, "virtual time    {:.1} s ({} steps){wall}", report.virtual_seconds, report.steps);
    let _ = writeln!(out, "seed {}; replay with: {}", report.seed, report.replay);
    out
}

/// Why a command-line value could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    /// A size such as 50MB, 5MB, 1GiB or 1500.
    #[error("{0:?} is not a size (examples: 50MB, 5MB, 1GiB, 1500)")]
    Size(String),
    /// A duration such as 500ms, 10s, 2m.
    #[error("{0:?} is not a duration (examples: 500ms, 10s, 2m, 1h)")]
    Duration(String),
    /// An outage such as 10s..40s or 10s..40s@0.05.
    #[error("{0:?} is not an outage (FROM..TO or FROM..TO@SHARE, for example 10s..40s@0.05)")]
    Outage(String),
}

/// Splits "12.5MB" into (12.5, "MB").
fn number_and_unit(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some((value, unit.trim()))
}

/// Reads a size: a number of bytes, or with a unit: B, KB, MB, GB (powers of 1000), KiB,
/// MiB, GiB (powers of 1024); case does not matter; decimals are allowed (1.5MB).
pub fn parse_size(s: &str) -> Result<u64, ParseError> {
    let error = || ParseError::Size(s.to_owned());
    let (value, unit) = number_and_unit(s).ok_or_else(error)?;
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(error()),
    };
    let bytes = (value * scale).round();
    if bytes > u64::MAX as f64 / 2.0 {
        return Err(error());
    }
    Ok(bytes as u64)
}

/// Reads a duration: a number with ms, s, m or h (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let error = || ParseError::Duration(s.to_owned());
    let (value, unit) = number_and_unit(s).ok_or_else(error)?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(error()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| error())
}

/// Reads an outage: FROM..TO, or FROM..TO@SHARE for a share of the receivers (default all).
pub fn parse_outage(s: &str, kind: OutageKind) -> Result<OutageSpec, ParseError> {
    let error = || ParseError::Outage(s.to_owned());
    let (range, share) = match s.split_once('@') {
        Some((range, share)) => (range, share.trim().parse::<f64>().map_err(|_| error())?),
        None => (s, 1.0),
    };
    let (from, to) = range.split_once("..").ok_or_else(error)?;
    let period = parse_duration(from).map_err(|_| error())?..parse_duration(to).map_err(|_| error())?;
    if period.start >= period.end || !(share > 0.0 && share <= 1.0) {
        return Err(error());
    }
    Ok(OutageSpec { kind, period, share })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_durations_and_outages_parse() {
        assert_eq!(parse_size("50MB"), Ok(50_000_000));
        assert_eq!(parse_size("5mb"), Ok(5_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5KB"), Ok(1500));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert!(parse_size("50 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-5MB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        let outage = parse_outage("10s..40s@0.05", OutageKind::Power).expect("outage");
        assert_eq!(outage.period, Duration::from_secs(10)..Duration::from_secs(40));
        assert_eq!(outage.share, 0.05);
        assert!(parse_outage("40s..10s", OutageKind::Wan).is_err());
        assert!(parse_outage("10s..40s@2", OutageKind::Wan).is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let times: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&times);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (Some(50.0), Some(90.0), Some(99.0), Some(100.0)));
        assert_eq!(Percentiles::of(&[]).max, None);
    }

    #[test]
    fn the_replay_line_names_every_knob() {
        let mut options = RunOptions::new(42);
        options.outages.push(OutageSpec { kind: OutageKind::Wan, period: Duration::from_secs(1)..Duration::from_secs(2), share: 0.5 });
        let line = options.replay_command();
        for flag in
            ["--seed 42", "--receivers 200", "--size 5000000", "--model independent", "--wan-outage 1000ms..2000ms@0.5", "--fidelity fast"]
        {
            assert!(line.contains(flag), "{flag} missing from {line}");
        }
    }
}
