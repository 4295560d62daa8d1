//! The uplink daemon and the operators' CLI, with real daemons on loopback.

use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast::{Cluster, ClusterOptions, seed, wait_until};
use satcast_sim::relay::LossModel;

fn cluster(seed: u64, dir: &std::path::Path, counties: &[&str], rate_bits_per_sec: u64, extra: &str) -> Cluster {
    let options = ClusterOptions {
        counties: counties.iter().map(|c| c.to_string()).collect(),
        loss: vec![LossModel::Bernoulli(0.02)],
        link_rate_bits_per_sec: rate_bits_per_sec,
        passes: 3,
        seed,
        extra_uplink_config: extra.into(),
        acks: true,
    };
    Cluster::start(dir, &options).expect("cluster")
}

fn payload(dir: &std::path::Path, name: &str, len: usize, seed: u64) -> (std::path::PathBuf, Vec<u8>) {
    let mut bytes = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).expect("payload");
    (path, bytes)
}

fn status(cluster: &Cluster, id: &str) -> serde_json::Value {
    let text = cluster.uplink_cli(&["status", id, "--json"]).expect("status");
    serde_json::from_str(&text).expect("status json")
}

#[test]
fn a_broadcast_to_a_province_reaches_exactly_its_counties() {
    let seed = seed("UPLINK_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = cluster(seed, dir.path(), &["410102", "410103", "420102", "110101"], 20_000_000, "");
    let (path, bytes) = payload(dir.path(), "henan-notice.txt", 400_000, seed);
    let id = cluster
        .uplink_cli(&["send", path.to_str().expect("utf-8"), "--kind", "policy", "--to", "41", "--version", "3"])
        .expect("send")
        .trim()
        .to_owned();
    let done = wait_until(Duration::from_secs(60), || status(&cluster, &id)["summary"]["state"] == "completed");
    let report = status(&cluster, &id);
    assert!(done, "not completed: {report:#}");
    let mut delivered: Vec<String> =
        report["delivered"].as_array().expect("list").iter().filter_map(|c| c.as_str().map(str::to_owned)).collect();
    delivered.sort();
    assert_eq!(delivered, vec!["410102", "410103"], "exactly the counties of province 41");
    assert_eq!(report["summary"]["targeted"], 2);
    assert_eq!(report["provinces"][0]["code"], "41");
    assert_eq!(report["provinces"][0]["name"], "河南省");
    for county in &cluster.counties {
        let path = county.delivered_path("policy", "henan-notice.txt");
        if county.code.starts_with("41") {
            assert_eq!(std::fs::read(&path).expect("delivered"), bytes);
        } else {
            assert!(!path.exists(), "{} is outside province 41 but got it", county.code);
        }
    }
    // The list and the receivers table agree; unknown ids get their own exit code.
    let list: serde_json::Value = serde_json::from_str(&cluster.uplink_cli(&["list", "--json"]).expect("list")).expect("json");
    assert_eq!(list[0]["delivered"], 2);
    let receivers: serde_json::Value =
        serde_json::from_str(&cluster.uplink_cli(&["receivers", "--json"]).expect("receivers")).expect("json");
    assert_eq!(receivers.as_array().map(Vec::len), Some(4), "the four enrolled counties");
    assert_eq!(cluster.uplink_cli(&["status", "0123456789abcdef"]).expect_err("unknown").0, 4);
}

#[test]
fn cancel_stops_airing_within_a_second_and_counties_drop_the_partial_object_when_it_expires() {
    let seed = seed("UPLINK_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    // Slow carrier and short manifest lifetime, so the cancel lands mid-object and the
    // manifest expires within the test.
    let mut cluster = cluster(seed, dir.path(), &["410102"], 2_000_000, "");
    let config = std::fs::read_to_string(&cluster.uplink_config).expect("config");
    std::fs::write(&cluster.uplink_config, config.replace("passes = 3\n", "passes = 3\nmanifest_lifetime_secs = 6\n")).expect("config");
    cluster.uplink.as_mut().expect("uplink").stop();
    cluster.start_uplink().expect("restart with the short lifetime");
    let (path, _) = payload(dir.path(), "big.bin", 4_000_000, seed);
    let id = cluster
        .uplink_cli(&["send", path.to_str().expect("utf-8"), "--kind", "software", "--to", "41", "--version", "1"])
        .expect("send")
        .trim()
        .to_owned();
    let county_log = |c: &Cluster| c.counties[0].daemon.as_ref().map(|d| d.log_text()).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(20), || county_log(&cluster).contains("manifest accepted")), "never started receiving");
    std::thread::sleep(Duration::from_millis(1500));
    let asked = Instant::now();
    cluster.uplink_cli(&["cancel", &id]).expect("cancel");
    // Within a second the carrier carries nothing of the object: only heartbeats (one a
    // second here) may still go out.
    std::thread::sleep(Duration::from_secs(1).saturating_sub(asked.elapsed()));
    let before = cluster.relay.stats.received.load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    let after = cluster.relay.stats.received.load(std::sync::atomic::Ordering::Relaxed);
    assert!(after - before <= 4, "{} datagrams aired in the 2 s after the cancel took effect", after - before);
    assert_eq!(status(&cluster, &id)["summary"]["state"], "cancelled");
    assert!(
        wait_until(Duration::from_secs(20), || county_log(&cluster).contains("manifest expired; discarding the partial object")),
        "the county must drop the partial object when its manifest expires:\n{}",
        county_log(&cluster)
    );
    // The log line comes as the discard is handed to the storage worker, which removes the
    // files a moment later.
    let spool = cluster.counties[0].dir.join("state/spool");
    let spool_entries = || std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    assert!(wait_until(Duration::from_secs(5), || spool_entries() == 0), "{} entries left in the spool", spool_entries());
    assert!(!cluster.counties[0].delivered_path("software", "big.bin").exists());
}

#[test]
fn an_emergency_sent_during_a_bulk_broadcast_completes_first() {
    let seed = seed("UPLINK_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = cluster(seed, dir.path(), &["410102", "410103"], 8_000_000, "");
    let (bulk, _) = payload(dir.path(), "mapdata.bin", 6_000_000, seed);
    let (alert, _) = payload(dir.path(), "flood-warning.txt", 100_000, seed + 1);
    let bulk_id = cluster
        .uplink_cli(&["send", bulk.to_str().expect("utf-8"), "--kind", "software", "--to", "41", "--priority", "bulk", "--version", "1"])
        .expect("send bulk")
        .trim()
        .to_owned();
    std::thread::sleep(Duration::from_secs(2));
    let alert_id = cluster
        .uplink_cli(&[
            "send",
            alert.to_str().expect("utf-8"),
            "--kind",
            "policy",
            "--to",
            "41",
            "--priority",
            "emergency",
            "--version",
            "1",
        ])
        .expect("send alert")
        .trim()
        .to_owned();
    let both = wait_until(Duration::from_secs(90), || {
        status(&cluster, &bulk_id)["summary"]["state"] == "completed" && status(&cluster, &alert_id)["summary"]["state"] == "completed"
    });
    assert!(both, "both must complete: {:#}\n{:#}", status(&cluster, &bulk_id), status(&cluster, &alert_id));
    for county in &cluster.counties {
        let modified =
            |kind: &str, name: &str| std::fs::metadata(county.delivered_path(kind, name)).and_then(|m| m.modified()).expect("delivered");
        assert!(
            modified("policy", "flood-warning.txt") < modified("software", "mapdata.bin"),
            "{}: the emergency must arrive first",
            county.code
        );
    }
}

/// An uplink config (and state folder) in `dir` with no daemon running.
fn config_without_daemon(dir: &std::path::Path) -> std::path::PathBuf {
    satcast::write_uplink_config(dir, std::net::SocketAddr::from(([127, 0, 0, 1], 9)), 20_000_000, 3).expect("config")
}

/// The smallest FEC block the uplink takes: with it, the largest object it airs is
/// 255 blocks, about 16.7 MB, small enough for a test to send a larger file.
const SMALL_BLOCK_CONFIG: &str = "\n[fec]\nblock_bytes_max = 65536\n";

/// An uplink daemon with no county: enough for `send`, whose jobs the daemon checks.
fn bare_uplink(seed: u64, dir: &std::path::Path) -> Cluster {
    cluster_of(seed, dir, &[], false, SMALL_BLOCK_CONFIG)
}

fn cluster_of(seed: u64, dir: &std::path::Path, counties: &[&str], acks: bool, extra: &str) -> Cluster {
    let options = ClusterOptions {
        counties: counties.iter().map(|c| c.to_string()).collect(),
        loss: vec![LossModel::None],
        link_rate_bits_per_sec: 20_000_000,
        passes: 1,
        seed,
        extra_uplink_config: extra.into(),
        acks,
    };
    Cluster::start(dir, &options).expect("cluster")
}

/// Runs `satcast-uplink send <args> --config <config>`: exit code, stdout, stderr.
fn send(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(satcast::bin("satcast-uplink").expect("binary"))
        .arg("send")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run send");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The versions of the job files in `state/<folder>`, by object id.
fn jobs_in(dir: &std::path::Path, folder: &str) -> Vec<(String, u64)> {
    let mut jobs = Vec::new();
    for entry in std::fs::read_dir(dir.join("state").join(folder)).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".job").filter(|id| !id.starts_with('.')) {
            let text = std::fs::read_to_string(entry.path()).expect("job");
            let version = text.lines().find_map(|l| l.strip_prefix("version = ")).and_then(|v| v.trim().parse().ok());
            jobs.push((id.to_owned(), version.expect("a version line in the job file")));
        }
    }
    jobs
}

/// Every job the daemon took, queued or already aired.
fn jobs(dir: &std::path::Path) -> Vec<(String, u64)> {
    [jobs_in(dir, "queue"), jobs_in(dir, "done")].concat()
}

/// Files left in the queue folder (payloads and uploads included).
fn queue_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir.join("state/queue"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Issue "Operators and county sites", item 3 and 4, now checked by the daemon behind the
/// control API (the CLI no longer validates or writes the queue itself).
#[test]
fn send_refuses_names_targets_and_versions_no_county_would_take_and_queues_nothing() {
    let seed = seed("UPLINK_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = bare_uplink(seed, dir.path());
    let config = cluster.uplink_config.clone();
    let file = dir.path().join("notice.txt");
    std::fs::write(&file, b"notice").expect("payload");
    let file = file.to_str().expect("utf-8");
    let long = "x".repeat(300);
    for name in ["a/b", "../x", "", long.as_str(), ".hidden", "tab\there", "..", "a\\b"] {
        let (code, stdout, stderr) = send(&config, &[file, "--kind", "policy", "--to", "41", "--name", name]);
        assert_eq!(code, Some(2), "name {name:?}: {stdout}{stderr}");
        assert!(stderr.starts_with("error: ") && stderr.trim_end().lines().count() == 1, "one line for {name:?}: {stderr}");
        assert!(stdout.is_empty(), "no id for a refused job: {stdout}");
    }
    for to in ["99", "419999", "4199", "41,99"] {
        let (code, _, stderr) = send(&config, &[file, "--kind", "policy", "--to", to]);
        assert_eq!(code, Some(2), "--to {to}: {stderr}");
        assert!(stderr.contains("no county") && stderr.trim_end().lines().count() == 1, "--to {to}: {stderr}");
    }
    // Dates: a deadline before the not-before time, or already past.
    for dates in [["--not-before", "+2h", "--deadline", "+1h"], ["--not-before", "+0s", "--deadline", "1000"]] {
        let (code, _, stderr) = send(&config, &[&[file, "--kind", "policy", "--to", "41"][..], &dates[..]].concat());
        assert_eq!(code, Some(2), "{dates:?}: {stderr}");
        assert!(stderr.contains("deadline") && stderr.trim_end().lines().count() == 1, "{dates:?}: {stderr}");
    }
    // Larger than the uplink can air (255 blocks of 64 KiB): refused before the upload.
    let large = dir.path().join("large.bin");
    std::fs::File::create(&large).and_then(|f| f.set_len(255 * 65_536 + 1)).expect("sparse file");
    let (code, _, stderr) = send(&config, &[large.to_str().expect("utf-8"), "--kind", "software", "--to", "41"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("at most 16711680 bytes") && stderr.trim_end().lines().count() == 1, "{stderr}");
    // A refusal in JSON: the error object on stdout, exit code 2.
    let (code, stdout, _) = send(&config, &[file, "--kind", "policy", "--to", "99", "--json"]);
    let error: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout:?}"));
    assert_eq!((code, error["exit_code"].as_u64()), (Some(2), Some(2)), "{stdout}");
    assert_eq!(jobs(dir.path()), [], "nothing refused may be left queued");
    assert_eq!(queue_files(dir.path()), Vec::<String>::new(), "no payload or upload left behind");

    // Explicit versions only go up per (kind, name); another name or kind is separate.
    let explicit = |version: &str, kind: &str| send(&config, &[file, "--kind", kind, "--to", "41", "--version", version]);
    assert_eq!(explicit("5", "policy").0, Some(0));
    for version in ["5", "4"] {
        let (code, _, stderr) = explicit(version, "policy");
        assert_eq!(code, Some(2), "version {version}: {stderr}");
        assert!(stderr.contains("version") && stderr.contains('5'), "names the last version: {stderr}");
    }
    assert_eq!(explicit("3", "software").0, Some(0), "another kind has its own versions");
    assert_eq!(jobs(dir.path()).len(), 2);
    // Default versions: two sends within a second still go up; --json prints the id the
    // daemon answered, which `list` knows.
    let (a, b) = (
        send(&config, &[file, "--kind", "codetable", "--to", "41"]),
        send(&config, &[file, "--kind", "codetable", "--to", "41", "--json"]),
    );
    assert_eq!((a.0, b.0), (Some(0), Some(0)), "{a:?} {b:?}");
    let b_id: serde_json::Value = serde_json::from_str(b.1.trim()).unwrap_or_else(|e| panic!("{e}: {:?}", b.1));
    let b_id = b_id["id"].as_str().expect("an id").to_owned();
    let versions: std::collections::HashMap<String, u64> = jobs(dir.path()).into_iter().collect();
    assert!(versions[a.1.trim()] < versions[&b_id], "default versions must go up: {versions:?}");
    let list = cluster.uplink_cli(&["list", "--json"]).expect("list");
    assert!(list.contains(&b_id), "{b_id} is not listed:\n{list}\njobs: {:?}", jobs(dir.path()));
}

/// Issue "Operators and county sites", items 1 and 6, with one way in: `send` goes through
/// the daemon's control API, so with the daemon down it fails and queues nothing (v1 wrote
/// the queue itself and printed an id for a job that sat there; a retrying script queued it
/// twice). Once queued, the id is printed as soon as the daemon answers.
#[test]
fn send_with_the_daemon_down_fails_in_one_line_and_queues_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_without_daemon(dir.path());
    let file = dir.path().join("notice.txt");
    std::fs::write(&file, b"notice").expect("payload");
    let file = file.to_str().expect("utf-8");
    let (code, stdout, stderr) = send(&config, &[file, "--kind", "policy", "--to", "41"]);
    assert_eq!(code, Some(3), "the daemon is not running: {stdout}{stderr}");
    assert!(stdout.is_empty(), "no id: nothing was queued: {stdout}");
    assert!(stderr.starts_with("error: ") && stderr.trim_end().lines().count() == 1 && stderr.contains("not running"), "{stderr}");
    let (code, stdout, stderr) = send(&config, &[file, "--kind", "policy", "--to", "41", "--wait", "--json"]);
    assert_eq!(code, Some(3), "{stderr}");
    let error: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: stdout {stdout:?}"));
    assert_eq!(error["exit_code"], 3, "{stdout}");
    assert!(error.get("id").is_none(), "{stdout}");
    assert_eq!(jobs(dir.path()), [], "nothing may be queued while the daemon is down");
    assert_eq!(queue_files(dir.path()), Vec::<String>::new());
}

/// Issue "Operators and county sites", item 4 at the daemon: a job file already in the
/// queue folder (left by an older build that wrote it directly) for an area the division
/// table does not have must end refused, saying why, not air to nobody as "0/0 aired".
#[test]
fn a_queued_job_for_an_area_not_in_the_division_table_ends_refused() {
    let seed = seed("UPLINK_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = bare_uplink(seed, dir.path());
    let id = "00000000000099aa";
    let queue = dir.path().join("state/queue");
    std::fs::write(queue.join(format!("{id}.payload")), b"notice").expect("payload");
    let job = format!(
        "object_id = \"{id}\"\nkind = \"policy\"\nname = \"notice.txt\"\nversion = 7\ntargets = [\"99\"]\nqueued_unix_secs = 1800000000\n"
    );
    std::fs::write(queue.join(".incoming.job"), job).expect("job");
    std::fs::rename(queue.join(".incoming.job"), queue.join(format!("{id}.job"))).expect("job in place");
    let entry = || -> serde_json::Value {
        let list: serde_json::Value = serde_json::from_str(&cluster.uplink_cli(&["list", "--json"]).expect("list")).expect("json");
        list.as_array().and_then(|l| l.iter().find(|b| b["id"] == id).cloned()).unwrap_or_default()
    };
    let ended = wait_until(Duration::from_secs(20), || !matches!(entry()["state"].as_str(), None | Some("queued" | "preparing")));
    let entry = entry();
    assert!(ended, "the job never left the queue: {entry:#}");
    assert_eq!(entry["state"], "refused", "{entry:#}");
    let reason = entry["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("99") && reason.contains("no county"), "the reason names the area: {entry:#}");
    assert!(!queue.join(format!("{id}.job")).exists(), "a refused job leaves the queue");
    let text = cluster.uplink_cli(&["status", id]).expect("status");
    assert!(text.contains("refused") && text.contains("99"), "{text}");
}

/// Issue "Operators and county sites", item 8: a scheduled broadcast shows as `scheduled`
/// with its not-before time and deadline (v1: "airing", every county "lagging", the times
/// nowhere), and list, status and `send --wait` show bytes aired, rate and ETA.
#[test]
fn a_scheduled_broadcast_shows_its_times_and_a_broadcast_its_progress() {
    const COUNTY: &str = "410102";
    // Generous bound for steps that take a few seconds on an idle machine.
    const SLOW: Duration = Duration::from_secs(30);
    let seed = seed("UPLINK_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = cluster_of(seed, dir.path(), &[COUNTY], true, "");
    let enrolled = wait_until(SLOW, || cluster.uplink_cli(&["receivers", "--json"]).is_ok_and(|t| t.contains(COUNTY)));
    assert!(enrolled, "the county never enrolled");
    let (path, _) = payload(dir.path(), "later.txt", 50_000, seed);
    let path = path.to_str().expect("utf-8");
    let id = cluster
        .uplink_cli(&["send", path, "--kind", "policy", "--to", "41", "--not-before", "+2h", "--deadline", "+3h"])
        .expect("send")
        .trim()
        .to_owned();
    let scheduled = wait_until(SLOW, || status(&cluster, &id)["summary"]["state"] == "scheduled");
    let report = status(&cluster, &id);
    assert!(scheduled, "a broadcast not due for two hours is scheduled: {report:#}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let not_before = report["summary"]["not_before_unix_secs"].as_u64().expect("not-before in JSON");
    let deadline = report["summary"]["deadline_unix_secs"].as_u64().expect("deadline in JSON");
    assert!(not_before.abs_diff(now + 7200) < 60 && deadline.abs_diff(now + 10_800) < 60, "{report:#}");
    assert_eq!(report["lagging"], serde_json::json!([]), "no county lags behind a broadcast not yet due: {report:#}");
    let list = cluster.uplink_cli(&["list"]).expect("list");
    let line = list.lines().find(|l| l.starts_with(&id)).unwrap_or_default();
    assert!(line.contains("scheduled") && line.contains("not before") && line.contains("deadline"), "{list}");
    let text = cluster.uplink_cli(&["status", &id]).expect("status");
    assert!(text.contains("scheduled") && text.contains("not before") && text.contains("deadline"), "{text}");
    assert!(!text.contains("lagging"), "{text}");

    // A broadcast that airs now: --wait off a terminal prints plain progress lines.
    let (path, _) = payload(dir.path(), "now.bin", 2_000_000, seed + 1);
    let (code, stdout, stderr) =
        send(&cluster.uplink_config, &[path.to_str().expect("utf-8"), "--kind", "software", "--to", "41", "--wait"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let now_id = stdout.trim();
    assert!(!stderr.contains('\r'), "no progress bar off a terminal: {stderr:?}");
    assert!(stderr.lines().any(|l| l.contains("aired") && l.contains("counties")), "plain progress lines: {stderr}");
    let report = status(&cluster, now_id);
    assert_eq!(report["summary"]["state"], "completed", "{report:#}");
    assert!(report["summary"]["bytes_aired"].as_u64().unwrap_or(0) >= 2_000_000, "all of it aired at least once: {report:#}");
    let text = cluster.uplink_cli(&["status", now_id]).expect("status");
    assert!(text.contains("aired"), "{text}");
}

#[test]
fn a_chinese_name_with_a_space_is_delivered_byte_exact_and_a_resend_within_a_second_supersedes_it() {
    let seed = seed("UPLINK_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = cluster(seed, dir.path(), &["410102"], 20_000_000, "");
    let name = "通知 2026.txt";
    let send_default = |len: usize, seed: u64| {
        let (path, bytes) = payload(dir.path(), name, len, seed);
        let id = cluster.uplink_cli(&["send", path.to_str().expect("utf-8"), "--kind", "policy", "--to", "410102"]).expect("send");
        (id.trim().to_owned(), bytes)
    };
    // The same file name twice within a second, default versions: the second supersedes.
    let (first, _) = send_default(60_000, seed);
    let (second, bytes) = send_default(70_000, seed + 1);
    let delivered = cluster.counties[0].delivered_path("policy", name);
    let done = wait_until(Duration::from_secs(60), || {
        status(&cluster, &second)["summary"]["state"] == "completed" && std::fs::read(&delivered).is_ok_and(|got| got == bytes)
    });
    let log = cluster.counties[0].daemon.as_ref().map(|d| d.log_text()).unwrap_or_default();
    assert!(done, "{name} (second send) not delivered byte-exact: {:#}\n{:#}\n{log}", status(&cluster, &first), status(&cluster, &second));
}

/// Issue "Operators and county sites", item 2: a broadcast that missed its deadline while
/// a county was powered off, re-aired to it without --deadline, must air (v1 kept the old
/// deadline, so the re-air ended at once with outcome "deadline") and the job file must say
/// so, for a restart to keep it.
#[test]
fn a_reair_after_a_missed_deadline_airs_without_one_and_the_county_gets_the_file() {
    const COUNTY: &str = "410102";
    // Generous bounds for steps that take a few seconds on an idle machine.
    const SLOW: Duration = Duration::from_secs(30);
    let seed = seed("UPLINK_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = cluster(seed, dir.path(), &[COUNTY], 20_000_000, "");
    // Enrolled first, so the broadcast waits for its acknowledgement; then powered off.
    let enrolled = wait_until(SLOW, || cluster.uplink_cli(&["receivers", "--json"]).is_ok_and(|t| t.contains(COUNTY)));
    assert!(enrolled, "the county never enrolled");
    cluster.counties[0].daemon.as_mut().expect("running").stop();
    let (path, bytes) = payload(dir.path(), "notice.txt", 200_000, seed);
    let path = path.to_str().expect("utf-8");
    let id = cluster
        .uplink_cli(&["send", path, "--kind", "policy", "--to", "41", "--version", "1", "--deadline", "+2s"])
        .expect("send")
        .trim()
        .to_owned();
    let missed = wait_until(SLOW, || status(&cluster, &id)["summary"]["state"] == "deadline");
    assert!(missed, "the deadline never ended it: {:#}", status(&cluster, &id));

    cluster.counties[0].start().expect("start the county again");
    let reair = cluster.uplink_cli(&["reair", &id, "--to", COUNTY, "--json"]).unwrap_or_else(|e| panic!("reair failed: {e:?}"));
    println!("reair: {}", reair.trim());
    // In the queue now, or in done/ already if it finished that fast.
    let state = cluster.uplink_config.parent().expect("config folder").join("state");
    let job = ["queue", "done"].iter().find_map(|d| std::fs::read_to_string(state.join(d).join(format!("{id}.job"))).ok());
    let job = job.expect("the job file is queued or done");
    let done = wait_until(SLOW, || status(&cluster, &id)["summary"]["state"] == "completed");
    assert!(done, "the re-air must air until the county has it: {:#}", status(&cluster, &id));
    let delivered = cluster.counties[0].delivered_path("policy", "notice.txt");
    assert_eq!(std::fs::read(&delivered).expect("delivered"), bytes);
    assert!(!job.contains("deadline"), "the requeued job file must carry no deadline:\n{job}");
}

/// Sets a county's spool limit (`None`: the default) and restarts it.
fn set_spool_limit(county: &mut satcast::County, bytes: Option<u64>) {
    if let Some(daemon) = county.daemon.as_mut() {
        daemon.stop();
    }
    let text = std::fs::read_to_string(&county.config).expect("county config");
    let text = text.split("\n[limits]\n").next().unwrap_or_default().to_owned();
    let limits = bytes.map_or(String::new(), |b| format!("\n[limits]\nspool_bytes_max = {b}\n"));
    std::fs::write(&county.config, format!("{text}{limits}")).expect("write county config");
    county.start().expect("start receiver");
}

fn receiver_status(county: &satcast::County, json: bool) -> String {
    let mut command = std::process::Command::new(satcast::bin("satcast-receiver").expect("satcast-receiver is built"));
    command.args(["status", "--config"]).arg(&county.config);
    if json {
        command.arg("--json");
    }
    String::from_utf8_lossy(&command.output().expect("run status").stdout).into_owned()
}

/// A county whose spool cannot hold the object refuses it and says why: at the uplink it
/// shows as refused with the reason, not silent, and counts add up; its own status says
/// why the object is stuck. Once it has room it takes the object like any other.
#[test]
fn a_county_without_room_shows_as_refused_with_why_at_the_uplink_and_in_its_status_then_catches_up() {
    const SPOOL_BYTES_MAX: u64 = 256 * 1024;
    const SPOOL_LOG_LINES_MAX: usize = 10;
    let seed = seed("UPLINK_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = cluster(seed, dir.path(), &["410102", "410103"], 20_000_000, "");
    set_spool_limit(&mut cluster.counties[1], Some(SPOOL_BYTES_MAX));
    let (path, bytes) = payload(dir.path(), "agent.bin", 1_000_000, seed);
    let id = cluster
        .uplink_cli(&["send", path.to_str().expect("utf-8"), "--kind", "software", "--to", "41", "--version", "1"])
        .expect("send")
        .trim()
        .to_owned();
    let refused = |report: &serde_json::Value| {
        report["lagging"].as_array().is_some_and(|l| l.iter().any(|c| c["code"] == "410103" && c["state"] == "refused"))
            && report["summary"]["delivered"] == 1
    };
    let shown = wait_until(Duration::from_secs(30), || refused(&status(&cluster, &id)));
    let report = status(&cluster, &id);
    assert!(shown, "410103 is not shown as refused:\n{report:#}\n{}", receiver_status(&cluster.counties[1], false));
    let county = report["lagging"].as_array().and_then(|l| l.iter().find(|c| c["code"] == "410103")).expect("lagging entry");
    assert_eq!(county["reason"], "spool_full", "{county:#}");
    let detail = county["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("spool full (needs 976.6 KiB, 256.0 KiB free"), "{detail}");
    let s = &report["summary"];
    assert_eq!(
        (s["targeted"].as_u64(), s["delivered"].as_u64(), s["silent"].as_u64(), s["rejected"].as_u64()),
        (Some(2), Some(1), Some(0), Some(1)),
        "counts add up: {s:#}"
    );
    let text = cluster.uplink_cli(&["status", &id]).expect("status");
    assert!(text.lines().any(|l| l.contains("410103") && l.contains("refused") && l.contains("spool full (needs")), "{text}");
    // The county's own status says why the object is stuck.
    // (status.json is rewritten every second.)
    let local = || -> serde_json::Value { serde_json::from_str(&receiver_status(&cluster.counties[1], true)).expect("status json") };
    let listed =
        |local: &serde_json::Value| local["stuck"].as_array().and_then(|l| l.iter().find(|s| s["object_id"] == id.as_str())).cloned();
    wait_until(Duration::from_secs(10), || listed(&local()).is_some());
    let local = local();
    let stuck = listed(&local).unwrap_or_else(|| panic!("not listed as stuck: {local:#}"));
    assert_eq!((stuck["state"].as_str(), stuck["reason"].as_str()), (Some("refused"), Some("spool_full")), "{stuck:#}");
    let text = receiver_status(&cluster.counties[1], false);
    assert!(text.contains("refused: spool full (needs 976.6 KiB"), "{text}");
    // Seconds of refusing, with the manifest repeated every half second and symbols arriving
    // all along: the county's log says so a handful of times, not per datagram (defect 12:
    // a spool limit logged hundreds of warnings a second).
    let log = cluster.counties[1].daemon.as_ref().map(|d| d.log_text()).unwrap_or_default();
    let spool_lines = log.lines().filter(|l| l.contains("spool")).count();
    assert!(
        (1..=SPOOL_LOG_LINES_MAX).contains(&spool_lines),
        "{spool_lines} log lines about the spool (said, and not per datagram):\n{log}"
    );

    // Room again: the county takes the object, and the uplink ends with it delivered.
    set_spool_limit(&mut cluster.counties[1], None);
    let done = wait_until(Duration::from_secs(90), || status(&cluster, &id)["summary"]["state"] == "completed");
    let report = status(&cluster, &id);
    assert!(done, "not completed once the county had room:\n{report:#}\n{}", receiver_status(&cluster.counties[1], false));
    assert_eq!(report["summary"]["delivered"], 2, "{report:#}");
    assert_eq!(report["summary"]["rejected"], 0, "{report:#}");
    assert_eq!(std::fs::read(cluster.counties[1].delivered_path("software", "agent.bin")).expect("delivered"), bytes);
}

/// A client that starts an upload and then sends nothing does not hold one of the
/// UPLOADS_MAX upload slots for ever: after `control.body_stall_secs` its upload is answered
/// 408 and dropped (nothing queued, no upload file left), and `send` works again.
#[test]
fn stalled_uploads_are_abandoned_after_the_stall_bound_and_free_their_slots() {
    use std::io::{Read, Write};
    let seed = seed("UPLINK_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = bare_uplink(seed, dir.path());
    let config = std::fs::read_to_string(&cluster.uplink_config).expect("config");
    std::fs::write(&cluster.uplink_config, config.replace("[control]\n", "[control]\nbody_stall_secs = 3\n")).expect("config");
    cluster.uplink.as_mut().expect("uplink").stop();
    cluster.start_uplink().expect("restart with a short stall bound");
    let control = satcast::control_listen(&std::fs::read_to_string(&cluster.uplink_config).expect("config")).expect("control");
    let token = std::fs::read_to_string(dir.path().join("state/control.token")).expect("token");
    // As many uploads as there are slots, each sending 10 of its 100000 bytes (more than
    // a small body a server might read whole before answering), then nothing.
    let stalled: Vec<std::net::TcpStream> = (0..4)
        .map(|i| {
            let mut stream = std::net::TcpStream::connect(control).expect("connect");
            let head = format!(
                "POST /v1/broadcasts?kind=policy&to=41&name=stalled-{i}.txt HTTP/1.1\r\nHost: uplink\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n0123456789",
                token.trim()
            );
            stream.write_all(head.as_bytes()).expect("send the head");
            stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
            stream
        })
        .collect();
    // The daemon takes the four slots as the heads arrive: a moment, well inside the bound.
    std::thread::sleep(Duration::from_millis(300));
    let (path, _) = payload(dir.path(), "after.txt", 1000, seed);
    let path = path.to_str().expect("utf-8").to_owned();
    let args = ["--kind", "policy", "--to", "41"];
    assert!(
        wait_until(Duration::from_secs(5), || {
            let (code, _, stderr) = send(&cluster.uplink_config, &[&[path.as_str()][..], &args].concat());
            code != Some(0) && stderr.contains("uploads are running")
        }),
        "the stalled uploads should hold every slot for a while"
    );
    for mut stream in stalled {
        // Read until the answer is in (the daemon may keep the connection open after it).
        let mut answer = String::new();
        let mut buf = [0u8; 4096];
        while !answer.contains("queued") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        assert!(answer.starts_with("HTTP/1.1 408"), "a stalled upload is answered 408: {answer:?}");
        assert!(answer.contains("nothing was queued"), "{answer}");
    }
    let (code, out, stderr) = send(&cluster.uplink_config, &[&[path.as_str()][..], &args].concat());
    assert_eq!(code, Some(0), "send works once the slots are free: {out}{stderr}");
    assert!(queue_files(dir.path()).iter().all(|f| !f.ends_with(".upload")), "{:?}", queue_files(dir.path()));
    assert_eq!(jobs(dir.path()).len(), 1, "only the last upload was queued");
}
