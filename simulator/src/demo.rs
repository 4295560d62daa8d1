//! `satcast-sim demo`: the whole system on one machine. A real uplink, the impairment
//! relay and N real receivers (counties drawn from the national division table) on
//! loopback; a policy document, a software update and the division code table are
//! broadcast; progress is shown live; the run succeeds only if every object reached every
//! targeted county byte-exact and no other county.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::seq::index::sample;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::cluster::{Cluster, ClusterError, ClusterOptions};
use crate::divisions::{self, Division};
use crate::relay::LossModel;

/// Progress on standard error that ignores a closed or full stream: `eprintln!` would
/// panic there, and the demo's result does not depend on anyone watching it.
macro_rules! note {
    (no_newline, $($arg:tt)*) => {{
        let mut err = std::io::stderr().lock();
        let _ = write!(err, $($arg)*).and_then(|()| err.flush());
    }};
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Knobs of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How many county receivers to run.
    pub receivers: usize,
    /// Seed for the county draw, payloads and loss.
    pub seed: u64,
    /// Highest loss rate a county suffers (each draws its own below it).
    pub loss_max: f64,
    /// The carrier rate.
    pub link_rate_bits_per_sec: u64,
    /// Give up after this long.
    pub timeout: Duration,
    /// Keep the working folder (keys, configs, logs) instead of deleting it.
    pub keep: Option<PathBuf>,
    /// Print progress lines on standard error.
    pub progress: bool,
}

/// One object the demo broadcasts.
#[derive(Debug, Clone, Serialize)]
pub struct DemoObject {
    /// Broadcast id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Target prefixes as given to `send`.
    pub to: String,
    /// Payload size.
    pub size_bytes: u64,
    /// Counties it should reach.
    pub expected: usize,
    /// Counties that hold it byte-exact.
    pub delivered: usize,
}

/// The result, also printed as --json.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// The seed, to replay the run.
    pub seed: u64,
    /// The objects.
    pub objects: Vec<DemoObject>,
    /// Receivers run.
    pub receivers: usize,
    /// (object, county) pairs delivered byte-exact.
    pub delivered: usize,
    /// (object, county) pairs expected.
    pub expected: usize,
    /// Deliveries to counties that were not targeted (must be 0).
    pub misdelivered: usize,
    /// Bytes the uplink put on the carrier, IP and UDP headers included.
    pub bytes_on_air: u64,
    /// Payload bytes times targeted counties: what unicast would have had to carry.
    pub unicast_bytes: u64,
    /// Wall-clock duration of the run.
    pub wall_seconds: f64,
    /// Per county: code, name, and per object whether it arrived ("ok", "missing",
    /// "not targeted").
    pub counties: Vec<(String, String, Vec<String>)>,
}

impl DemoSummary {
    /// True if every expected delivery happened and nothing went where it should not.
    pub fn success(&self) -> bool {
        self.delivered == self.expected && self.misdelivered == 0
    }
}

struct Payload {
    kind: &'static str,
    name: String,
    to: String,
    bytes: Vec<u8>,
    path: PathBuf,
}

fn policy_document(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut text =
        String::from("民政部关于做好基层行政区划信息更新工作的通知\nNotice on updating county-level administrative division records\n\n");
    for article in 1..=400 {
        let clause = rng.random_range(1000..9999);
        text.push_str(&format!(
            "第{article}条 各县级民政部门应当在收到本通知后及时更新本地区划代码表，并于第{clause}号文件规定的期限内完成核对。\nArticle {article}: county bureaus shall update their local division code tables on receipt and complete verification within the period set by document {clause}.\n"
        ));
    }
    text.into_bytes()
}

/// Runs the demo; returns its summary (success or not) or an error if it could not run.
pub fn run(options: &DemoOptions) -> Result<DemoSummary, ClusterError> {
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let table = divisions::counties();
    let picks = sample(&mut rng, table.len(), options.receivers.min(table.len()).max(1));
    let counties: Vec<Division> = picks.iter().map(|i| table[i].clone()).collect();
    let temp = tempfile::Builder::new()
        .prefix("satcast-demo-")
        .tempdir()
        .map_err(|source| ClusterError::Io { what: "creating a temp dir".into(), source })?;
    let dir = match &options.keep {
        Some(keep) => {
            std::fs::create_dir_all(keep).map_err(|source| ClusterError::Io { what: format!("creating {}", keep.display()), source })?;
            keep.clone()
        }
        None => temp.path().to_owned(),
    };

    // The software update goes to the province with the most counties drawn, so the run
    // also shows that targeting by prefix keeps it away from everyone else.
    let mut by_province = std::collections::BTreeMap::<&str, usize>::new();
    for county in &counties {
        *by_province.entry(&county.code[..2]).or_default() += 1;
    }
    let province = by_province.iter().max_by_key(|(code, n)| (**n, std::cmp::Reverse(**code))).map_or("11", |(code, _)| code).to_owned();
    let mut software = vec![0u8; 3 * 1024 * 1024];
    rng.fill_bytes(&mut software);
    let payloads = vec![
        Payload {
            kind: "policy",
            name: "notice-2026-118.txt".into(),
            to: "all".into(),
            bytes: policy_document(&mut rng),
            path: PathBuf::new(),
        },
        Payload { kind: "software", name: "county-agent-2.4.0.bin".into(), to: province.clone(), bytes: software, path: PathBuf::new() },
        Payload {
            kind: "codetable",
            name: "areas.csv".into(),
            to: "all".into(),
            bytes: divisions::AREAS_CSV.as_bytes().to_vec(),
            path: PathBuf::new(),
        },
    ];
    let payload_dir = dir.join("payloads");
    std::fs::create_dir_all(&payload_dir).map_err(|source| ClusterError::Io { what: "creating payloads".into(), source })?;
    let mut payloads = payloads;
    for p in &mut payloads {
        p.path = payload_dir.join(&p.name);
        std::fs::write(&p.path, &p.bytes).map_err(|source| ClusterError::Io { what: format!("writing {}", p.name), source })?;
    }

    let loss: Vec<LossModel> = counties.iter().map(|_| LossModel::Bernoulli(rng.random_range(0.0..=options.loss_max))).collect();
    let cluster_options = ClusterOptions {
        counties: counties.iter().map(|c| c.code.clone()).collect(),
        loss,
        link_rate_bits_per_sec: options.link_rate_bits_per_sec,
        passes: 3,
        seed: options.seed,
        extra_uplink_config: String::new(),
        acks: false,
    };
    if options.progress {
        note!(
            "satcast demo: seed {} ({} counties, loss up to {:.0}%, {} Mbit/s); replay with --seed {}",
            options.seed,
            counties.len(),
            options.loss_max * 100.0,
            options.link_rate_bits_per_sec / 1_000_000,
            options.seed
        );
        note!(
            "working folder: {}{}",
            dir.display(),
            if options.keep.is_some() { "" } else { " (deleted at exit; keep it with --keep DIR)" }
        );
    }
    let mut cluster = Cluster::start(&dir, &cluster_options)?;
    let mut objects = Vec::new();
    for (version, p) in payloads.iter().enumerate() {
        let id = cluster.send(&p.path, p.kind, &p.to, version as u64 + 1)?;
        let expected = counties.iter().filter(|c| p.to == "all" || c.code.starts_with(&p.to)).count();
        objects.push(DemoObject {
            id,
            kind: p.kind.into(),
            name: p.name.clone(),
            to: p.to.clone(),
            size_bytes: p.bytes.len() as u64,
            expected,
            delivered: 0,
        });
    }
    let expected: usize = objects.iter().map(|o| o.expected).sum();

    let delivered_count = |cluster: &Cluster| -> usize {
        payloads.iter().map(|p| cluster.counties.iter().filter(|c| c.delivered_path(p.kind, &p.name).exists()).count()).sum()
    };
    let mut last_print = Instant::now() - Duration::from_secs(1);
    loop {
        let done = delivered_count(&cluster);
        if options.progress && last_print.elapsed() >= Duration::from_millis(500) {
            last_print = Instant::now();
            let air = cluster.relay.stats.bytes_on_air.load(std::sync::atomic::Ordering::Relaxed);
            note!(
                no_newline,
                "\r[{:5.1}s] delivered {done:3}/{expected} (object, county) pairs, {:.1} MB on the air   ",
                started.elapsed().as_secs_f64(),
                air as f64 / 1e6
            );
        }
        if done >= expected || started.elapsed() > options.timeout {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if options.progress {
        note!("");
    }
    // Give any delivery to an untargeted county a moment to show up before judging.
    std::thread::sleep(Duration::from_millis(300));
    let mut misdelivered = 0;
    let mut rows = Vec::new();
    for (county, division) in cluster.counties.iter().zip(&counties) {
        let mut cells = Vec::new();
        for (object, p) in objects.iter_mut().zip(&payloads) {
            let targeted = p.to == "all" || county.code.starts_with(&p.to);
            let path = county.delivered_path(p.kind, &p.name);
            let exact = std::fs::read(&path).map(|b| b == p.bytes).unwrap_or(false);
            let cell = match (targeted, path.exists(), exact) {
                (true, _, true) => {
                    object.delivered += 1;
                    "ok"
                }
                (true, true, false) => "corrupt",
                (true, false, _) => "missing",
                (false, true, _) => {
                    misdelivered += 1;
                    "misdelivered"
                }
                (false, false, _) => "not targeted",
            };
            cells.push(cell.to_owned());
        }
        rows.push((county.code.clone(), division.name.clone(), cells));
    }
    let bytes_on_air = cluster.relay.stats.bytes_on_air.load(std::sync::atomic::Ordering::Relaxed);
    cluster.stop();
    let unicast_bytes = objects.iter().map(|o| o.size_bytes * o.expected as u64).sum();
    let delivered = objects.iter().map(|o| o.delivered).sum();
    Ok(DemoSummary {
        seed: options.seed,
        objects,
        receivers: counties.len(),
        delivered,
        expected,
        misdelivered,
        bytes_on_air,
        unicast_bytes,
        wall_seconds: started.elapsed().as_secs_f64(),
        counties: rows,
    })
}

/// The human table: one row per county, one column per object.
pub fn table(summary: &DemoSummary) -> String {
    let mut out = String::new();
    out.push_str(&format!("{:<8} {:<22}", "county", "name"));
    for o in &summary.objects {
        out.push_str(&format!(" {:<14}", format!("{}/{}", o.kind, o.to)));
    }
    out.push('\n');
    for (code, name, cells) in &summary.counties {
        let name: String = name.chars().take(10).collect();
        // CJK characters are two columns wide: pad by display width, not chars.
        let pad = 22usize.saturating_sub(name.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum());
        out.push_str(&format!("{code:<8} {name}{}", " ".repeat(pad)));
        for cell in cells {
            out.push_str(&format!(" {cell:<14}"));
        }
        out.push('\n');
    }
    for o in &summary.objects {
        out.push_str(&format!(
            "{} {}/{} ({} bytes) to {}: {}/{} counties\n",
            o.id, o.kind, o.name, o.size_bytes, o.to, o.delivered, o.expected
        ));
    }
    out.push_str(&format!(
        "{}: {}/{} deliveries byte-exact, {} misdelivered; {:.1} MB on the air against {:.1} MB by unicast; {:.1} s\n",
        if summary.success() { "PASS" } else { "FAIL" },
        summary.delivered,
        summary.expected,
        summary.misdelivered,
        summary.bytes_on_air as f64 / 1e6,
        summary.unicast_bytes as f64 / 1e6,
        summary.wall_seconds
    ));
    out
}

/// Where the demo's working folder is, for messages.
pub fn describe(path: &Path) -> String {
    path.display().to_string()
}
