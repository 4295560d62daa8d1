//! `satcast-sim bench`: delivery efficiency (symbols sent / lower bound) and repair rounds
//! over receiver counts and loss models, plus the carousel mode, all in fast fidelity with
//! one seed, and a check against the targets of issue 8.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::run::{self, DeliverySpec, LossSpec, RunError, RunOptions, RunReport};
use satcast_protocol::reception::Fidelity;

/// The most rows one bench prints (receiver counts times scenarios).
pub const ROWS_MAX: usize = 256;

/// Efficiency target at 2000 receivers with 5% independent loss (issue 17; issue 8 had 1.03).
pub const TARGET_INDEPENDENT_5: f64 = 1.01;
/// Efficiency target at 2000 receivers with Gilbert-Elliott bursts (issue 17; issue 8 had 1.08).
pub const TARGET_BURSTS: f64 = 1.03;
/// The last county completes at most this long after the air time of the lower bound's
/// symbols, at 2000 receivers with 5% independent loss (issue 17).
pub const TARGET_LAST_COMPLETION_AFTER_BOUND_AIR_SECS: f64 = 1.0;
/// The receiver count the targets are stated for.
pub const TARGET_RECEIVERS: usize = 2000;

/// Knobs of a bench.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// Seed of every run.
    pub seed: u64,
    /// Object size of every run.
    pub size_bytes: u64,
    /// Receiver counts.
    pub receiver_counts: Vec<usize>,
}

impl BenchOptions {
    /// 50 MB, 20, 200 and 2000 receivers.
    pub fn new(seed: u64) -> Self {
        BenchOptions { seed, size_bytes: 50_000_000, receiver_counts: vec![20, 200, 2000] }
    }

    /// The command line that replays this bench.
    pub fn replay_command(&self) -> String {
        let counts: Vec<String> = self.receiver_counts.iter().map(|n| n.to_string()).collect();
        format!("satcast-sim bench --seed {} --size {} --receivers {}", self.seed, self.size_bytes, counts.join(","))
    }
}

/// The scenarios of one receiver count: loss model and delivery.
pub fn scenarios() -> Vec<(LossSpec, DeliverySpec)> {
    let feedback = DeliverySpec::Feedback;
    vec![
        (LossSpec::Independent { loss: 0.01 }, feedback),
        (LossSpec::Independent { loss: 0.05 }, feedback),
        (LossSpec::Independent { loss: 0.20 }, feedback),
        (LossSpec::Bursts { loss: 0.05, mean_burst_datagrams: 20.0 }, feedback),
        (LossSpec::RegionalFade { share: 0.05, mean_fade: Duration::from_secs(2), background: 0.01 }, feedback),
        (LossSpec::Independent { loss: 0.05 }, DeliverySpec::Carousel { passes: 1, target_loss: 0.05 }),
        (LossSpec::Independent { loss: 0.05 }, DeliverySpec::Carousel { passes: 2, target_loss: 0.05 }),
    ]
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// Receivers.
    pub receivers: usize,
    /// The loss model, described.
    pub model: String,
    /// "feedback" or "carousel, N passes for P%".
    pub delivery: String,
    /// (Symbols sent + symbol lists in DATA datagrams' worth) / lower bound.
    pub efficiency: f64,
    /// Symbols sent / lower bound: DATA alone, as before source authentication.
    pub efficiency_data: f64,
    /// Symbols aired until the last county completed / lower bound: what this loss
    /// realisation needed; efficiency minus this is the tail aired while the last
    /// completion travelled back.
    pub needed: Option<f64>,
    /// Rounds after the first pass.
    pub repair_rounds: usize,
    /// Receivers that completed.
    pub completed: usize,
    /// Completion-time percentiles, virtual seconds.
    pub completion_seconds: run::Percentiles,
    /// Air time of the lower bound's symbols, seconds.
    pub bound_air_seconds: f64,
    /// Carrier utilisation until the last completion (see [`RunReport::utilisation`]).
    pub utilisation: Option<f64>,
    /// Virtual time of the run.
    pub virtual_seconds: f64,
    /// The command that replays this row alone.
    pub replay: String,
    /// Wall-clock seconds of the run.
    pub wall_seconds: f64,
}

/// A target of the issue and how the bench did against it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// What is measured.
    pub name: String,
    /// The target (the measure at most this).
    pub target: f64,
    /// The measured value.
    pub measured: f64,
    /// measured <= target.
    pub met: bool,
}

/// The whole bench.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The seed of every run.
    pub seed: u64,
    /// The command that replays the bench.
    pub replay: String,
    /// Object size of every run.
    pub size_bytes: u64,
    /// The rows, by receiver count then scenario.
    pub rows: Vec<BenchRow>,
    /// The targets, where the bench covered them.
    pub targets: Vec<TargetCheck>,
    /// Wall-clock seconds of the whole bench.
    pub wall_seconds: f64,
}

fn delivery_name(delivery: DeliverySpec) -> String {
    match delivery {
        DeliverySpec::Feedback => "feedback".into(),
        DeliverySpec::Carousel { passes, target_loss } => format!("carousel {passes}x for {}%", (target_loss * 1000.0).round() / 10.0),
    }
}

/// Runs every scenario for every receiver count.
pub fn bench(options: &BenchOptions) -> Result<BenchReport, RunError> {
    bench_with_progress(options, &mut |_| {})
}

/// [`bench`], calling `progress` after each row.
pub fn bench_with_progress(options: &BenchOptions, progress: &mut dyn FnMut(&BenchRow)) -> Result<BenchReport, RunError> {
    let start = Instant::now();
    let scenarios = scenarios();
    if options.receiver_counts.is_empty() || options.receiver_counts.len() * scenarios.len() > ROWS_MAX {
        return Err(RunError::Invalid(format!("1 to {} receiver counts", ROWS_MAX / scenarios.len())));
    }
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for &receivers in &options.receiver_counts {
        for (loss, delivery) in &scenarios {
            let mut run_options = RunOptions::new(options.seed);
            run_options.receivers = receivers;
            run_options.size_bytes = options.size_bytes;
            run_options.loss = *loss;
            run_options.delivery = *delivery;
            run_options.fidelity = Fidelity::Counting;
            let report: RunReport = run::run(&run_options)?;
            let row = BenchRow {
                receivers,
                model: loss.describe(),
                delivery: delivery_name(*delivery),
                efficiency: report.efficiency,
                efficiency_data: report.efficiency_data,
                needed: report.symbols_until_last_completion.map(|n| (n as f64 / report.lower_bound_symbols.max(1.0) * 1e4).round() / 1e4),
                repair_rounds: report.repair_rounds,
                completed: report.completed,
                completion_seconds: report.completion_seconds,
                bound_air_seconds: report.bound_air_seconds,
                utilisation: report.utilisation,
                virtual_seconds: report.virtual_seconds,
                replay: report.replay.clone(),
                wall_seconds: report.wall_seconds.unwrap_or(0.0),
            };
            progress(&row);
            if receivers == TARGET_RECEIVERS && *delivery == DeliverySpec::Feedback {
                let target = match loss {
                    LossSpec::Independent { loss } if (*loss - 0.05).abs() < 1e-9 => Some(TARGET_INDEPENDENT_5),
                    LossSpec::Bursts { .. } => Some(TARGET_BURSTS),
                    _ => None,
                };
                if let Some(target) = target {
                    targets.push(TargetCheck {
                        name: format!("{receivers} receivers, {}: efficiency", row.model),
                        target,
                        measured: row.efficiency,
                        met: row.efficiency <= target,
                    });
                }
                if matches!(loss, LossSpec::Independent { loss } if (*loss - 0.05).abs() < 1e-9) {
                    let last = row.completion_seconds.max.unwrap_or(f64::INFINITY);
                    let target = row.bound_air_seconds + TARGET_LAST_COMPLETION_AFTER_BOUND_AIR_SECS;
                    targets.push(TargetCheck {
                        name: format!("{receivers} receivers, {}: last completion (s)", row.model),
                        target,
                        measured: last,
                        met: last <= target,
                    });
                }
            }
            rows.push(row);
        }
    }
    Ok(BenchReport {
        seed: options.seed,
        replay: options.replay_command(),
        size_bytes: options.size_bytes,
        rows,
        targets,
        wall_seconds: (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    })
}

/// The table, as printed.
pub fn table(report: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "satcast-sim bench: {} bytes per object, fast fidelity, seed {}", report.size_bytes, report.seed);
    let _ = writeln!(
        out,
        "{:>9}  {:<46} {:<20} {:>10} {:>7} {:>7} {:>6} {:>11} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6}",
        "receivers",
        "loss model",
        "delivery",
        "efficiency",
        "data",
        "needed",
        "repair",
        "completed",
        "p50 s",
        "p90 s",
        "p99 s",
        "max s",
        "bound s",
        "util",
        "wall s"
    );
    let secs = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{s:.2}"));
    for row in &report.rows {
        let needed = row.needed.map_or("-".to_owned(), |n| format!("{n:.4}"));
        let c = &row.completion_seconds;
        let _ = writeln!(
            out,
            "{:>9}  {:<46} {:<20} {:>10.4} {:>7.4} {:>7} {:>6} {:>11} {:>7} {:>7} {:>7} {:>7} {:>7.2} {:>6} {:>6.1}",
            row.receivers,
            row.model,
            row.delivery,
            row.efficiency,
            row.efficiency_data,
            needed,
            row.repair_rounds,
            format!("{}/{}", row.completed, row.receivers),
            secs(c.p50),
            secs(c.p90),
            secs(c.p99),
            secs(c.max),
            row.bound_air_seconds,
            row.utilisation.map_or("-".to_owned(), |u| format!("{u:.3}")),
            row.wall_seconds
        );
    }
    for check in &report.targets {
        let verdict = if check.met { "met" } else { "MISSED" };
        let _ = writeln!(out, "target: {} {:.4} <= {:.4}: {verdict}", check.name, check.measured, check.target);
    }
    let _ = writeln!(
        out,
        "bound s: air time of the lower bound's symbols; util: DATA air time until the last completion over the time from the first DATA datagram to it"
    );
    let _ = writeln!(out, "needed: symbols aired until the last county completed, over the bound (the rest is the feedback-latency tail)");
    let _ = writeln!(out, "{:.1} s of wall time; replay with: {}", report.wall_seconds, report.replay);
    out
}
