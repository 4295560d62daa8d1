//! `satcast-sim utilisation`: how busy the real daemons keep the carrier. A real uplink
//! (feedback over QUIC through the WAN proxy) and N real county receivers behind the
//! impairment relay; M broadcasts are queued at once, and the bench measures the air time
//! of the bytes that went out against the wall time from the first DATA burst to the last
//! delivery. A carrier idle while work is queued (a whole class of broadcasts waiting for
//! reports at once) shows up as utilisation below 1.
//!
//! Not a CI assertion: a speed figure on a shared machine belongs in a bench, run by hand.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::cluster::{Cluster, ClusterError, ClusterOptions};
use crate::divisions;
use crate::relay::LossModel;

/// The most broadcasts one bench queues.
pub const OBJECTS_MAX: usize = 64;
/// The most counties one bench starts (each is a daemon).
pub const COUNTIES_MAX: usize = 64;
/// Bytes on air beyond the idle carousel (heartbeats, manifests) that mark the first DATA
/// burst: 20 KB is 8 ms at 20 Mbit/s, far above a heartbeat or a manifest.
const FIRST_BURST_BYTES: u64 = 20_000;
/// How often deliveries and the relay's counters are sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(2);

/// Knobs of the bench.
#[derive(Debug, Clone)]
pub struct UtilisationOptions {
    /// Counties (real receivers).
    pub counties: usize,
    /// Broadcasts queued at once.
    pub objects: usize,
    /// Bytes of each.
    pub size_bytes: usize,
    /// Independent loss per county.
    pub loss: f64,
    /// Carrier rate.
    pub link_rate_bits_per_sec: u64,
    /// Seed of payloads and loss.
    pub seed: u64,
    /// Give up after this long.
    pub time_limit: Duration,
    /// Keep keys, configs and logs here.
    pub keep: Option<PathBuf>,
    /// Send every broadcast confidential (sealed for the counties, issue 14).
    pub confidential: bool,
}

/// What the bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct UtilisationReport {
    /// The seed.
    pub seed: u64,
    /// Counties.
    pub counties: usize,
    /// Broadcasts.
    pub objects: usize,
    /// Bytes of each.
    pub size_bytes: usize,
    /// Deliveries seen (counties times broadcasts when all arrived).
    pub delivered: usize,
    /// Bytes on the carrier (IP and UDP headers included) from the first DATA burst to the
    /// last delivery.
    pub bytes_on_air: u64,
    /// Their air time at the carrier rate, seconds.
    pub air_seconds: f64,
    /// From the first DATA burst to the last delivery, seconds.
    pub wall_seconds: f64,
    /// air_seconds / wall_seconds.
    pub utilisation: f64,
    /// Each broadcast's last delivery, seconds after the first DATA burst, in queue order.
    pub completions: Vec<f64>,
    /// Per whole second from the first DATA burst: milliseconds the carrier carried
    /// nothing (its rate less what the relay saw), to find where utilisation is lost.
    pub idle_ms_per_second: Vec<u32>,
}

impl UtilisationReport {
    /// Whether every county got every broadcast.
    pub fn success(&self) -> bool {
        self.delivered == self.counties * self.objects
    }
}

/// Why the bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum UtilisationError {
    /// Starting or driving the daemons failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A file could not be written.
    #[error("{0}")]
    Io(String),
    /// The options are out of range.
    #[error("{0}")]
    Invalid(String),
}

/// Runs the bench.
pub fn run(options: &UtilisationOptions) -> Result<UtilisationReport, UtilisationError> {
    if !(1..=COUNTIES_MAX).contains(&options.counties) || !(1..=OBJECTS_MAX).contains(&options.objects) {
        return Err(UtilisationError::Invalid(format!("1 to {COUNTIES_MAX} counties and 1 to {OBJECTS_MAX} objects")));
    }
    let temp = tempfile::tempdir().map_err(|e| UtilisationError::Io(format!("cannot make a temporary folder: {e}")))?;
    let dir: PathBuf = match &options.keep {
        Some(keep) => {
            std::fs::create_dir_all(keep).map_err(|e| UtilisationError::Io(format!("cannot create {}: {e}", keep.display())))?;
            keep.clone()
        }
        None => temp.path().to_owned(),
    };
    let table = divisions::counties();
    let step = (table.len() / options.counties).max(1);
    let counties: Vec<String> = table.iter().step_by(step).take(options.counties).map(|c| c.code.clone()).collect();
    let cluster_options = ClusterOptions {
        counties: counties.clone(),
        loss: vec![LossModel::Bernoulli(options.loss)],
        link_rate_bits_per_sec: options.link_rate_bits_per_sec,
        passes: 2,
        seed: options.seed,
        extra_uplink_config: String::new(),
        acks: true,
    };
    let mut cluster = Cluster::start(&dir, &cluster_options)?;
    let result = measure(&mut cluster, &dir, options);
    cluster.stop();
    result
}

fn measure(cluster: &mut Cluster, dir: &Path, options: &UtilisationOptions) -> Result<UtilisationReport, UtilisationError> {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut names = Vec::new();
    let mut files = Vec::new();
    for i in 0..options.objects {
        let name = format!("bench-{i}.bin");
        let mut payload = vec![0u8; options.size_bytes];
        rng.fill_bytes(&mut payload);
        let path = dir.join(&name);
        std::fs::write(&path, &payload).map_err(|e| UtilisationError::Io(format!("cannot write {}: {e}", path.display())))?;
        names.push(name);
        files.push(path);
    }
    // Every county must be enrolled (heard from) before the jobs are targeted.
    std::thread::sleep(Duration::from_secs(1));
    let stats = cluster.relay.stats.clone();
    let baseline = stats.bytes_on_air.load(Ordering::Relaxed);
    let rate = options.link_rate_bits_per_sec as f64;
    for file in &files {
        if options.confidential {
            let path = file.to_string_lossy();
            let args = ["send", path.as_ref(), "--kind", "software", "--to", "all", "--version", "1", "--confidential"];
            cluster.uplink_cli(&args).map_err(|(code, out)| UtilisationError::Io(format!("send exited {code}: {out}")))?;
        } else {
            cluster.send(file, "software", "all", 1)?;
        }
    }
    let start = Instant::now();
    let mut first_burst: Option<f64> = None;
    let mut done: Vec<Vec<Option<f64>>> = vec![vec![None; options.counties]; options.objects];
    let mut at_last = baseline;
    let mut last_at = 0.0;
    // Bytes the relay saw in each whole second since the first burst.
    let mut per_second: Vec<u64> = Vec::new();
    let mut previous = baseline;
    while start.elapsed() < options.time_limit {
        let now = start.elapsed().as_secs_f64();
        let on_air = stats.bytes_on_air.load(Ordering::Relaxed);
        if first_burst.is_none() && on_air > baseline + FIRST_BURST_BYTES {
            // The burst began when the bytes beyond the baseline started to go out.
            first_burst = Some(now - (on_air - baseline) as f64 * 8.0 / rate);
        }
        if let Some(first) = first_burst {
            let second = ((now - first).max(0.0) as usize).min(options.time_limit.as_secs() as usize);
            if per_second.len() <= second {
                per_second.resize(second + 1, 0);
            }
            per_second[second] += on_air - previous;
            previous = on_air;
        }
        let mut all = true;
        for (object, name) in names.iter().enumerate() {
            for (county_index, county) in cluster.counties.iter().enumerate() {
                if done[object][county_index].is_none() {
                    if county.delivered_path("software", name).exists() {
                        done[object][county_index] = Some(now);
                        at_last = on_air;
                        last_at = now;
                    } else {
                        all = false;
                    }
                }
            }
        }
        if all {
            break;
        }
        std::thread::sleep(SAMPLE_INTERVAL);
    }
    let first = first_burst.unwrap_or(0.0);
    // Bytes aired before the first burst are the idle carousel's, left out with it.
    let bytes_on_air = at_last.saturating_sub(baseline);
    let air_seconds = bytes_on_air as f64 * 8.0 / rate;
    let wall_seconds = (last_at - first).max(1e-9);
    let delivered = done.iter().flatten().filter(|d| d.is_some()).count();
    let whole_seconds = wall_seconds.floor() as usize;
    let idle_ms_per_second =
        per_second.iter().take(whole_seconds).map(|bytes| ((1.0 - *bytes as f64 * 8.0 / rate).max(0.0) * 1000.0).round() as u32).collect();
    let completions: Vec<f64> = done.iter().map(|o| o.iter().map(|d| d.map_or(f64::NAN, |t| t - first)).fold(0.0, f64::max)).collect();
    Ok(UtilisationReport {
        seed: options.seed,
        counties: options.counties,
        objects: options.objects,
        size_bytes: options.size_bytes,
        delivered,
        bytes_on_air,
        air_seconds: round3(air_seconds),
        wall_seconds: round3(wall_seconds),
        utilisation: round4(air_seconds / wall_seconds),
        completions: completions.into_iter().map(round3).collect(),
        idle_ms_per_second,
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The human summary.
pub fn summary(report: &UtilisationReport) -> String {
    let completions: Vec<String> = report.completions.iter().map(|c| format!("{c:.2}")).collect();
    format!(
        "satcast-sim utilisation: {} x {} bytes to {} counties, seed {}\n\
         delivered       {}/{}\n\
         on the carrier  {} bytes: {:.3} s of air time\n\
         first DATA burst to last delivery {:.3} s: utilisation {:.4}\n\
         last delivery of each broadcast (s): {}\n\
         carrier idle per whole second (ms): {}\n",
        report.objects,
        report.size_bytes,
        report.counties,
        report.seed,
        report.delivered,
        report.counties * report.objects,
        report.bytes_on_air,
        report.air_seconds,
        report.wall_seconds,
        report.utilisation,
        completions.join(" "),
        report.idle_ms_per_second.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
    )
}
