//! A state folder belongs to one daemon: a second `satcast-uplink serve` or
//! `satcast-receiver run` on the same folder refuses to start, names the first one's pid,
//! and touches nothing; and `satcast-receiver status` judges "running" by that ownership,
//! not by how fresh the status file is (a full disk stops it being rewritten).
//!
//! Real binaries on loopback: build first (`cargo build --workspace`), then
//! `cargo test --test ownership`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast::{Cluster, ClusterOptions, County, bin, seed, wait_until};
use satcast_sim::relay::LossModel;

/// How long a second daemon may take to refuse: generous, it should take well under a second.
const REFUSAL_SECS_MAX: u64 = 10;

fn options(seed: u64, acks: bool) -> ClusterOptions {
    ClusterOptions {
        counties: vec!["410102".into()],
        loss: vec![LossModel::Bernoulli(0.02)],
        link_rate_bits_per_sec: 20_000_000,
        passes: 3,
        seed,
        extra_uplink_config: String::new(),
        acks,
    }
}

/// Runs `program args` in `cwd` until it exits or `limit` passes (then kills it); returns its
/// exit code (None if it had to be killed) and standard error.
fn run_until_exit(program: &str, args: &[&str], cwd: &Path, limit: Duration) -> (Option<i32>, String) {
    let log = cwd.join(format!("{program}.second.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = Command::new(bin(program).expect("built"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status.code().unwrap_or(-1));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Every path under `dir` whose name says it was quarantined.
fn quarantined(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().contains("quarantined")).collect())
        .unwrap_or_default()
}

fn list(cluster: &Cluster) -> serde_json::Value {
    serde_json::from_str(&cluster.uplink_cli(&["list", "--json"]).expect("list")).expect("list json")
}

/// The list without what the running daemon counts as it airs (bytes aired, rate, ETA),
/// which a restarted daemon does not know: the history a restart must keep.
fn history(cluster: &Cluster) -> serde_json::Value {
    let mut list = list(cluster);
    for entry in list.as_array_mut().into_iter().flatten() {
        if let Some(entry) = entry.as_object_mut() {
            for live in ["bytes_aired", "rate_bits_per_sec", "eta_secs"] {
                entry.remove(live);
            }
        }
    }
    list
}

/// `satcast-receiver status --config <county> [--json]`: exit code and standard output.
fn status(county: &County, json: bool) -> (i32, String) {
    let mut command = Command::new(bin("satcast-receiver").expect("built"));
    command.args(["status", "--config"]).arg(&county.config);
    if json {
        command.arg("--json");
    }
    let output = command.output().expect("run status");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned())
}

fn status_json(county: &County) -> (i32, serde_json::Value) {
    let (code, out) = status(county, true);
    (code, serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json printed no JSON ({e}):\n{out}")))
}

#[test]
fn a_second_daemon_on_a_state_folder_refuses_to_start_and_the_first_keeps_its_history() {
    let seed = seed("OWNERSHIP_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), &options(seed, true)).expect("cluster");
    let mut bytes = vec![0u8; 100_000];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
    let payload = dir.path().join("notice.txt");
    std::fs::write(&payload, &bytes).expect("payload");
    let id = cluster.send(&payload, "policy", "41", 1).expect("send");
    let completed = wait_until(Duration::from_secs(60), || list(&cluster)[0]["state"] == "completed");
    assert!(completed, "not completed: {}", list(&cluster));

    let county_state = cluster.counties[0].dir.join("state");
    let uplink_state = cluster.dir.join("state");
    let delivered = cluster.counties[0].delivered_path("policy", "notice.txt");
    let list_before = history(&cluster);
    let trust_before = std::fs::read(county_state.join("trust.state")).expect("trust state");
    let uplink_pid = cluster.uplink.as_ref().expect("uplink").pid();
    let receiver_pid = cluster.counties[0].daemon.as_ref().expect("receiver").pid();

    let uplink_config = cluster.uplink_config.to_string_lossy().into_owned();
    let limit = Duration::from_secs(REFUSAL_SECS_MAX);
    let (code, stderr) = run_until_exit("satcast-uplink", &["serve", "--config", &uplink_config], &cluster.dir, limit);
    assert!(code.is_some_and(|c| c != 0), "a second uplink must exit non-zero within {limit:?}: {code:?}\n{stderr}");
    let expected = format!("state folder {} is in use by another satcast-uplink (pid {uplink_pid})", uplink_state.display());
    assert!(stderr.contains(&expected), "expected `{expected}` in:\n{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    let county_config = cluster.counties[0].config.to_string_lossy().into_owned();
    let county_dir = cluster.counties[0].dir.clone();
    let (code, stderr) = run_until_exit("satcast-receiver", &["run", "--config", &county_config], &county_dir, limit);
    assert!(code.is_some_and(|c| c != 0), "a second receiver must exit non-zero within {limit:?}: {code:?}\n{stderr}");
    let expected = format!("state folder {} is in use by another satcast-receiver (pid {receiver_pid})", county_state.display());
    assert!(stderr.contains(&expected), "expected `{expected}` in:\n{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    // The first daemons run on, with their history where it was.
    assert!(cluster.uplink.as_mut().expect("uplink").is_running(), "the first uplink must keep running");
    assert!(cluster.counties[0].daemon.as_mut().expect("receiver").is_running(), "the first receiver must keep running");
    assert_eq!(quarantined(&uplink_state), Vec::<PathBuf>::new(), "the uplink's index was quarantined");
    assert_eq!(quarantined(&county_state), Vec::<PathBuf>::new(), "the receiver's index was quarantined");
    assert_eq!(history(&cluster), list_before);
    assert_eq!(std::fs::read(county_state.join("trust.state")).expect("trust state"), trust_before);
    assert_eq!(std::fs::read(&delivered).expect("delivered"), bytes);
    let (code, json) = status_json(&cluster.counties[0]);
    assert_eq!((code, json["pid"].as_u64()), (0, Some(u64::from(receiver_pid))), "{json}");

    // And on disk: a restarted uplink still knows the broadcast and its delivery.
    cluster.uplink.as_mut().expect("uplink").stop();
    cluster.start_uplink().expect("restart uplink");
    let same = wait_until(Duration::from_secs(10), || cluster.uplink_cli(&["list", "--json"]).is_ok_and(|l| l.contains(&id)));
    assert!(same, "the restarted uplink lost the broadcast");
    assert_eq!(history(&cluster), list_before);
}

#[test]
fn status_says_running_while_the_daemon_owns_its_folder_even_when_its_status_file_is_stale() {
    let seed = seed("OWNERSHIP_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), &options(seed, false)).expect("cluster");
    let county = &cluster.counties[0];
    let pid = county.daemon.as_ref().expect("receiver").pid();
    assert!(wait_until(Duration::from_secs(5), || status(county, true).0 == 0), "{}", status(county, false).1);

    // A full disk, simulated (this works as root too): the daemon writes its status to a
    // temp file and renames it; a folder in the temp file's place makes every write fail.
    // mkdir succeeds only between two writes, so none is in flight afterwards.
    let state = county.dir.join("state");
    let blocked = state.join(".status.json.tmp");
    assert!(wait_until(Duration::from_secs(5), || std::fs::create_dir(&blocked).is_ok()), "could not block the status file");
    let mut last: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("status.json")).expect("status.json")).expect("status json");
    let hour_ago = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64 - 3_600_000;
    last["updated_unix_ms"] = hour_ago.into();
    std::fs::write(state.join("status.json"), serde_json::to_vec(&last).expect("json")).expect("write stale status");

    let (code, json) = status_json(county);
    assert_eq!(code, 0, "the daemon owns its folder, so it is running: {json}");
    assert_eq!(json["running"], true, "{json}");
    assert_eq!(json["status_stale"], true, "{json}");
    assert_eq!(json["pid"].as_u64(), Some(u64::from(pid)), "{json}");
    let (code, text) = status(county, false);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("RUNNING") && text.contains(&format!("pid {pid}")) && text.contains("stale"), "{text}");
    assert!(text.contains("1 h 0 min"), "the status file's age is shown: {text}");
    println!("{text}");

    // Room again: the status file is fresh within a few seconds.
    std::fs::remove_dir(&blocked).expect("unblock");
    let fresh = wait_until(Duration::from_secs(5), || {
        let (code, json) = status_json(county);
        code == 0 && json["status_stale"] != true && json["running"] == true
    });
    assert!(fresh, "{}", status(county, false).1);
    cluster.counties[0].daemon.as_mut().expect("receiver").kill();
    assert_eq!(status(&cluster.counties[0], true).0, 3, "a killed daemon no longer owns its folder");
}
