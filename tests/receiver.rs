//! The county receiver daemon, unattended: post-receive hooks (exactly once, failures
//! reported and not retried, hangs killed), `status`, heartbeat warnings, garbage at link
//! rate, and the memory a 1 GiB object takes (ignored by default; see the last test).
//!
//! Real binaries on loopback: build first (`cargo build --workspace`), then
//! `cargo test --test receiver`.

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast::{Cluster, ClusterOptions, County, Daemon, bin, seed, wait_until};
use satcast_sim::relay::LossModel;

fn options(seed: u64, acks: bool, rate_bits_per_sec: u64) -> ClusterOptions {
    ClusterOptions {
        counties: vec!["410102".into()],
        loss: vec![LossModel::Bernoulli(0.02)],
        link_rate_bits_per_sec: rate_bits_per_sec,
        passes: 3,
        seed,
        extra_uplink_config: String::new(),
        acks,
    }
}

fn log(county: &County) -> String {
    county.daemon.as_ref().map(|d| d.log_text()).unwrap_or_default()
}

fn uplink_log(cluster: &Cluster) -> String {
    cluster.uplink.as_ref().map(|d| d.log_text()).unwrap_or_default()
}

/// Stops the county's daemon, adds `top` (top-level keys) and `tables` to its config, and
/// starts it again.
fn reconfigure(county: &mut County, top: &str, tables: &str) {
    if let Some(daemon) = county.daemon.as_mut() {
        daemon.stop();
    }
    let text = std::fs::read_to_string(&county.config).expect("county config");
    std::fs::write(&county.config, format!("{top}\n{text}\n{tables}\n")).expect("write config");
    restart(county);
}

fn restart(county: &mut County) {
    county.start().expect("start receiver");
    assert!(wait_until(Duration::from_secs(10), || log(county).contains("receiver started")), "did not start:\n{}", log(county));
}

/// An executable shell script next to the county's config.
fn script(county: &County, name: &str, body: &str) -> PathBuf {
    let path = county.dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write hook");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn payload(rng: &mut ChaCha8Rng, dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).expect("payload");
    (path, bytes)
}

/// Runs `satcast-receiver status --config <county> [--json]`: exit code and standard output.
fn status(county: &County, json: bool) -> (i32, String) {
    let mut command = Command::new(bin("satcast-receiver").expect("satcast-receiver is built"));
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

/// Runs recorded by the env-dumping hook: one block of SATCAST_* lines per run.
fn runs(file: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.split("--- run\n").filter(|r| !r.trim().is_empty()).map(|r| r.lines().map(str::to_owned).collect()).collect()
}

/// VmHWM and VmRSS of a process, in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

const ENV_HOOK: &str = "out=\"$1\"\n{ echo '--- run'; env | grep '^SATCAST_' | sort; } >> \"$out\"";

#[test]
fn a_hook_runs_exactly_once_per_delivery_with_its_environment() {
    let seed = seed("RECEIVER_SEED");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), &options(seed, true, 20_000_000)).expect("cluster");
    let county = &mut cluster.counties[0];
    script(county, "record-env.sh", ENV_HOOK);
    let runs_file = county.dir.join("runs.txt");
    // A relative program path is resolved against the config's folder.
    reconfigure(county, "", &format!("[hooks.policy]\ncommand = [\"./record-env.sh\", \"{}\"]\ntimeout_secs = 30\n", runs_file.display()));
    assert!(wait_until(Duration::from_secs(10), || log(&cluster.counties[0]).contains("acknowledgement channel up")));

    let (path, bytes) = payload(&mut rng, dir.path(), "notice.pdf", 300_000);
    let object_id = cluster.send(&path, "policy", "41", 5).expect("send");
    // A software update too: no hook for that kind, so it must not run the policy hook.
    let (update, _) = payload(&mut rng, dir.path(), "agent.bin", 100_000);
    cluster.send(&update, "software", "41", 5).expect("send");
    let county = &cluster.counties[0];
    let delivered = county.delivered_path("policy", "notice.pdf");
    assert!(wait_until(Duration::from_secs(60), || delivered.exists()), "not delivered:\n{}", log(county));
    assert!(wait_until(Duration::from_secs(60), || county.delivered_path("software", "agent.bin").exists()), "update not delivered");
    assert!(wait_until(Duration::from_secs(10), || runs(&runs_file).len() == 1), "the hook did not run:\n{}", log(county));

    let run = &runs(&runs_file)[0];
    let expect = [
        format!("SATCAST_PATH={}", delivered.display()),
        "SATCAST_KIND=policy".to_string(),
        "SATCAST_NAME=notice.pdf".to_string(),
        "SATCAST_VERSION=5".to_string(),
        format!("SATCAST_OBJECT_ID={object_id}"),
        format!("SATCAST_HASH={}", blake3::hash(&bytes).to_hex()),
    ];
    for line in &expect {
        assert!(run.contains(line), "the hook's environment lacks {line}: {run:?}");
    }
    // The result reached the uplink's ledger over the acknowledgement channel.
    assert!(
        wait_until(Duration::from_secs(20), || uplink_log(&cluster)
            .lines()
            .any(|l| l.contains("post-receive hook succeeded") && l.contains(&object_id))),
        "the uplink never heard of the hook:\n{}",
        uplink_log(&cluster)
    );

    // A restart does not run it again, nor does the carousel repeating the object.
    let county = &mut cluster.counties[0];
    county.daemon.as_mut().expect("running").stop();
    restart(county);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(runs(&runs_file).len(), 1, "the hook ran again after a restart:\n{}", log(county));
    assert!(!log(county).contains("running post-receive hook"), "{}", log(county));
}

#[test]
fn a_relative_hook_runs_when_the_daemon_is_started_with_a_relative_config_from_elsewhere() {
    let seed = seed("RECEIVER_SEED");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), &options(seed, false, 20_000_000)).expect("cluster");
    let county = &mut cluster.counties[0];
    script(county, "record-env.sh", ENV_HOOK);
    let runs_file = county.dir.join("runs.txt");
    county.daemon.as_mut().expect("running").stop();
    let text = std::fs::read_to_string(&county.config).expect("county config");
    let hook = format!("[hooks.policy]\ncommand = [\"./record-env.sh\", \"{}\"]\ntimeout_secs = 30\n", runs_file.display());
    std::fs::write(&county.config, format!("{text}\n{hook}")).expect("write config");
    // As an operator would: `--config county-410102/receiver.toml` from the folder above.
    let relative = county.config.strip_prefix(dir.path()).expect("the county is inside the cluster").to_string_lossy().into_owned();
    let log_path = county.dir.join("receiver.log");
    county.daemon = Some(Daemon::start("satcast-receiver", &["run", "--config", &relative], dir.path(), &log_path).expect("start"));
    assert!(wait_until(Duration::from_secs(10), || log(county).contains("receiver started")), "did not start:\n{}", log(county));

    let (path, _) = payload(&mut rng, dir.path(), "notice.pdf", 100_000);
    cluster.send(&path, "policy", "41", 5).expect("send");
    let county = &cluster.counties[0];
    assert!(
        wait_until(Duration::from_secs(60), || county.delivered_path("policy", "notice.pdf").exists()),
        "not delivered:\n{}",
        log(county)
    );
    assert!(wait_until(Duration::from_secs(10), || runs(&runs_file).len() == 1), "the hook did not run:\n{}", log(county));
    assert!(wait_until(Duration::from_secs(10), || log(county).contains("post-receive hook succeeded")), "{}", log(county));
}

/// The folders the shipped systemd unit lets the receiver write to.
fn unit_writable_paths() -> Vec<PathBuf> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/satcast-receiver.service");
    let text = std::fs::read_to_string(&unit).expect("the receiver's systemd unit");
    let mut paths: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.strip_prefix("ReadWritePaths="))
        .flat_map(|l| l.split_whitespace().map(PathBuf::from).collect::<Vec<_>>())
        .collect();
    paths.extend(text.lines().filter_map(|l| l.strip_prefix("StateDirectory=")).map(|d| Path::new("/var/lib").join(d.trim())));
    paths
}

#[test]
fn the_county_bundle_takes_the_uplink_group_and_interface_and_folders_the_unit_allows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| satcast::run("satcast-uplink", args, dir.path());
    run(&["keys", "init", "--dir", "keys"]).expect("keys init");
    let bundle = ["keys", "receiver", "--dir", "keys", "--id", "410102"];
    let with = |out: &str, more: &[&str]| run(&[&bundle[..], &["--out", out], more].concat());
    with("given", &["--uplink", "uplink.example.gov.cn:5701", "--group", "239.192.7.1:5601", "--interface", "10.1.2.3"]).expect("bundle");
    let config = satcast_receiver::ReceiverConfig::load(&dir.path().join("given/receiver.toml")).expect("the bundle's config loads");
    assert_eq!(config.ack.as_ref().map(|a| a.uplink.as_str()), Some("uplink.example.gov.cn:5701"));
    assert_eq!(config.downlink.group, Some("239.192.7.1:5601".parse().expect("addr")));
    assert_eq!(config.downlink.interface, std::net::Ipv4Addr::new(10, 1, 2, 3));
    // Absolute folders the unit (ProtectSystem=strict) lets the daemon write.
    let writable = unit_writable_paths();
    for folder in [&config.state_dir, &config.deliver_dir] {
        assert!(folder.is_absolute(), "{}", folder.display());
        assert!(writable.iter().any(|w| folder.starts_with(w)), "{} is not writable under the unit ({writable:?})", folder.display());
    }
    // The keys stay beside the config.
    assert_eq!(config.keys.root_public, dir.path().join("given/root.public"));

    // Today's defaults when omitted; chosen folders when asked.
    with("defaults", &["--state-dir", "/data/satcast/state", "--deliver-dir", "/data/satcast/deliver"]).expect("bundle");
    let config = satcast_receiver::ReceiverConfig::load(&dir.path().join("defaults/receiver.toml")).expect("loads");
    assert_eq!(config.ack.as_ref().map(|a| a.uplink.as_str()), Some("127.0.0.1:5700"));
    assert_eq!(config.downlink.group, Some("239.192.0.1:5600".parse().expect("addr")));
    assert_eq!(config.downlink.interface, std::net::Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        (config.state_dir.as_path(), config.deliver_dir.as_path()),
        (Path::new("/data/satcast/state"), Path::new("/data/satcast/deliver"))
    );

    // Malformed values: one clear error naming the flag, and no bundle.
    for (flag, value, out) in [
        ("--uplink", "uplink.example.gov.cn"),
        ("--uplink", "uplink.example.gov.cn:0"),
        ("--uplink", "up\"link:5700"),
        ("--group", "10.0.0.1:5600"),
        ("--group", "239.192.0.1"),
        ("--interface", "eth0"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (flag, value))| (flag, value, format!("bad{i}")))
    {
        let error = with(&out, &[flag, value]).expect_err(&format!("{flag} {value:?} must be refused")).to_string();
        assert!(error.contains(flag), "{flag} {value:?}: {error}");
        assert!(!dir.path().join(&out).exists(), "{flag} {value:?}: nothing written");
    }
}

#[test]
fn a_hook_interrupted_by_a_crash_runs_again_once_and_only_then() {
    let seed = seed("RECEIVER_SEED");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), &options(seed, false, 20_000_000)).expect("cluster");
    let county = &mut cluster.counties[0];
    let runs_file = county.dir.join("runs.txt");
    // Records each start, then takes 3 s: long enough to be killed in the middle.
    script(county, "slow.sh", &format!("{ENV_HOOK}\nsleep 3"));
    reconfigure(county, "", &format!("[hooks.codetable]\ncommand = [\"./slow.sh\", \"{}\"]\ntimeout_secs = 30\n", runs_file.display()));
    let (path, _) = payload(&mut rng, dir.path(), "areas.csv", 200_000);
    cluster.send(&path, "codetable", "41", 1).expect("send");
    let county = &mut cluster.counties[0];
    assert!(wait_until(Duration::from_secs(60), || runs(&runs_file).len() == 1), "the hook never started:\n{}", log(county));
    county.daemon.as_mut().expect("running").kill();
    restart(county);
    assert!(
        wait_until(Duration::from_secs(20), || log(county).contains("post-receive hook succeeded")),
        "the interrupted hook must run again at start:\n{}",
        log(county)
    );
    assert!(log(county).contains("the daemon stopped while this hook ran; running it again"), "{}", log(county));
    assert_eq!(runs(&runs_file).len(), 2);
    county.daemon.as_mut().expect("running").stop();
    restart(county);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runs(&runs_file).len(), 2, "a finished hook never runs again:\n{}", log(county));
}

#[test]
fn a_failing_hook_is_reported_and_not_retried() {
    let seed = seed("RECEIVER_SEED");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), &options(seed, true, 20_000_000)).expect("cluster");
    let county = &mut cluster.counties[0];
    let runs_file = county.dir.join("runs.txt");
    script(county, "fail.sh", &format!("{ENV_HOOK}\necho 'reload refused: policy store is read-only' >&2\nexit 3"));
    reconfigure(
        county,
        "",
        &format!("[hooks.policy]\ncommand = [\"{}\", \"{}\"]\n", county.dir.join("fail.sh").display(), runs_file.display()),
    );
    assert!(wait_until(Duration::from_secs(10), || log(&cluster.counties[0]).contains("acknowledgement channel up")));
    let (path, _) = payload(&mut rng, dir.path(), "notice.pdf", 200_000);
    let object_id = cluster.send(&path, "policy", "41", 2).expect("send");

    let county = &cluster.counties[0];
    let failed = wait_until(Duration::from_secs(60), || log(county).contains("post-receive hook failed"));
    assert!(failed, "no failure in the log:\n{}", log(county));
    let line = log(county).lines().find(|l| l.contains("post-receive hook failed")).map(str::to_owned).unwrap_or_default();
    assert!(line.contains("exit status 3") && line.contains("policy store is read-only"), "the log says how it failed: {line}");
    let reported = wait_until(Duration::from_secs(20), || {
        uplink_log(&cluster)
            .lines()
            .any(|l| l.contains("post-receive hook failed") && l.contains(&object_id) && l.contains("exit status 3"))
    });
    assert!(reported, "HookResult did not reach the uplink:\n{}", uplink_log(&cluster));
    // status.json is rewritten every second.
    assert!(wait_until(Duration::from_secs(3), || status_json(county).1["hooks"]["recent"][0]["object_id"] == object_id.as_str()));
    let (code, json) = status_json(county);
    assert_eq!(code, 0);
    let recent = &json["hooks"]["recent"][0];
    assert_eq!(recent["success"], false);

    let county = &mut cluster.counties[0];
    county.daemon.as_mut().expect("running").stop();
    restart(county);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(runs(&runs_file).len(), 1, "a failed hook is never retried:\n{}", log(county));
    assert!(!log(county).contains("running post-receive hook"), "{}", log(county));
}

#[test]
fn a_hanging_hook_is_killed_at_its_timeout_without_holding_up_deliveries() {
    let seed = seed("RECEIVER_SEED");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), &options(seed, false, 20_000_000)).expect("cluster");
    let county = &mut cluster.counties[0];
    let child_pid = county.dir.join("child.pid");
    // The first delivery's hook hangs in a child process (the timeout must kill the whole
    // process group, or the child holds the output pipes open); later ones return at once.
    script(
        county,
        "hang.sh",
        &format!("if [ \"$SATCAST_NAME\" = first.txt ]; then sleep 600 & echo $! > {}; wait; fi\nexit 0", child_pid.display()),
    );
    reconfigure(county, "", "[hooks.policy]\ncommand = [\"./hang.sh\"]\ntimeout_secs = 12\n");
    let (first, _) = payload(&mut rng, dir.path(), "first.txt", 50_000);
    cluster.send(&first, "policy", "41", 1).expect("send");
    let county = &cluster.counties[0];
    assert!(wait_until(Duration::from_secs(60), || child_pid.exists()), "the hook never started:\n{}", log(county));
    let started = Instant::now();
    let pid: u32 = std::fs::read_to_string(&child_pid).expect("pid").trim().parse().expect("pid number");

    // The datapath goes on while the hook hangs.
    let (second, second_bytes) = payload(&mut rng, dir.path(), "second.txt", 50_000);
    cluster.send(&second, "policy", "41", 1).expect("send");
    let second_path = county.delivered_path("policy", "second.txt");
    assert!(wait_until(Duration::from_secs(10), || second_path.exists()), "a hanging hook held up delivery:\n{}", log(county));
    assert_eq!(std::fs::read(&second_path).expect("read"), second_bytes);
    assert!(!log(county).contains("timed out"), "delivered before the first hook's timeout");

    assert!(wait_until(Duration::from_secs(30), || log(county).contains("timed out after 12 s")), "not killed:\n{}", log(county));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "killed {took:?} after it started; the timeout is 12 s");
    assert!(
        wait_until(Duration::from_secs(5), || !Path::new(&format!("/proc/{pid}")).exists()),
        "the hook's child {pid} survived the kill"
    );
    // The next hook runs once the hung one is gone, and succeeds.
    assert!(wait_until(Duration::from_secs(10), || log(county).contains("post-receive hook succeeded")), "{}", log(county));
    // status.json is rewritten once a second, so it may lag the log by that much.
    let timed_out_shown = |json: &serde_json::Value| {
        json["hooks"]["recent"].as_array().is_some_and(|r| r.iter().any(|h| h["timed_out"] == true && h["success"] == false))
    };
    assert!(wait_until(Duration::from_secs(5), || timed_out_shown(&status_json(county).1)), "{}", status_json(county).1);
}

#[test]
fn status_shows_deliveries_and_the_outbox_and_exits_3_once_stopped() {
    let seed = seed("RECEIVER_SEED");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    // No acknowledgement channel: the completion waits in the outbox, so its length shows.
    let mut cluster = Cluster::start(dir.path(), &options(seed, false, 20_000_000)).expect("cluster");
    let (path, bytes) = payload(&mut rng, dir.path(), "divisions.csv", 400_000);
    let object_id = cluster.send(&path, "codetable", "41", 3).expect("send");
    let county = &cluster.counties[0];
    assert!(wait_until(Duration::from_secs(60), || county.delivered_path("codetable", "divisions.csv").exists()), "{}", log(county));
    // The status file is rewritten every second, and may show the object cached a moment
    // before its version is recorded as delivered (the delivery's last step).
    let shown = wait_until(Duration::from_secs(5), || status_json(county).1["cached"][0]["delivered"] == true);
    assert!(shown, "status never listed the delivered object: {}", status(county, true).1);
    let (code, json) = status_json(county);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["running"], true);
    let cached = &json["cached"][0];
    assert_eq!(cached["object_id"], object_id.as_str());
    assert_eq!(cached["name"], "divisions.csv");
    assert_eq!(cached["delivered"], true);
    assert_eq!(cached["size_bytes"], bytes.len() as u64);
    assert!(json["outbox"]["messages"].as_u64().is_some_and(|n| n >= 1), "the completion waits in the outbox: {json}");
    assert!(json["heartbeat"]["age_ms"].as_u64().is_some(), "{json}");
    assert!(json["disk"]["cache_bytes"].as_u64() == Some(bytes.len() as u64), "{json}");
    let (code, text) = status(county, false);
    assert_eq!(code, 0);
    assert!(text.contains("RUNNING") && text.contains("divisions.csv") && text.contains("outbox"), "{text}");
    println!("{text}");

    let county = &mut cluster.counties[0];
    county.daemon.as_mut().expect("running").stop();
    let (code, json) = status_json(county);
    assert_eq!(code, 3, "a stopped daemon is reported as not running: {json}");
    assert_eq!(json["running"], false);
    assert_eq!(json["cached"][0]["name"], "divisions.csv", "what is on disk is still shown: {json}");
    let (code, text) = status(county, false);
    assert_eq!(code, 3);
    assert!(text.contains("NOT RUNNING") && text.contains("divisions.csv"), "{text}");
    println!("{text}");
    // A daemon killed outright (no last status written) is also seen as gone.
    restart(county);
    assert!(wait_until(Duration::from_secs(5), || status(county, true).0 == 0));
    county.daemon.as_mut().expect("running").kill();
    assert_eq!(status(county, true).0, 3);
}

#[test]
fn the_heartbeat_warning_comes_once_when_the_uplink_stops_and_clears_when_it_returns() {
    let seed = seed("RECEIVER_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), &options(seed, false, 5_000_000)).expect("cluster");
    reconfigure(&mut cluster.counties[0], "heartbeat_warn_after_secs = 3", "");
    let county = &cluster.counties[0];
    assert!(
        wait_until(Duration::from_secs(10), || status_json(county).1["heartbeat"]["age_ms"].as_u64().is_some()),
        "no heartbeat arrived"
    );
    cluster.uplink.as_mut().expect("uplink").stop();
    let county = &cluster.counties[0];
    assert!(wait_until(Duration::from_secs(10), || log(county).contains("uplink heartbeats stopped")), "no warning:\n{}", log(county));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(log(county).matches("uplink heartbeats stopped").count(), 1, "warned once, not every second:\n{}", log(county));
    assert_eq!(status_json(county).1["heartbeat"]["stale"], true);

    // A receiver that starts while the uplink is silent says so once, too.
    restart(&mut cluster.counties[0]);
    let county = &cluster.counties[0];
    assert!(wait_until(Duration::from_secs(10), || log(county).contains("no uplink heartbeat since start")), "{}", log(county));
    cluster.start_uplink().expect("uplink");
    let county = &cluster.counties[0];
    assert!(wait_until(Duration::from_secs(10), || log(county).contains("uplink heartbeats are back")), "{}", log(county));
    assert_eq!(log(county).matches("no uplink heartbeat since start").count(), 1);
    assert!(wait_until(Duration::from_secs(3), || status_json(county).1["heartbeat"]["stale"] == false));
}

/// How many distinct garbage datagrams the flood cycles through (drawn up front: drawing
/// 1.4 KB of randomness per datagram in a debug build would cap the flood at a few thousand
/// a second).
const FLOOD_POOL: usize = 4096;

/// Sends random datagrams, half of them starting with the magic, the version and a valid
/// type so they get as far as the tag check, at `to` as fast as one loop can for
/// `duration`. Returns how many.
fn flood(to: std::net::SocketAddr, seed: u64, duration: Duration) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pool: Vec<Vec<u8>> = (0..FLOOD_POOL)
        .map(|i| {
            let mut datagram = vec![0u8; rng.random_range(1..=1472)];
            rng.fill_bytes(&mut datagram);
            if i % 2 == 0 && datagram.len() >= 6 {
                datagram[..4].copy_from_slice(b"SCST");
                datagram[4] = 1;
                datagram[5] = rng.random_range(0..6);
            }
            datagram
        })
        .collect();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("flood socket");
    let mut sent = 0u64;
    let end = Instant::now() + duration;
    while Instant::now() < end {
        // Bounded by the clock; a batch between clock reads keeps the loop tight.
        for datagram in pool.iter_mut() {
            // A fresh tail each pass, so no two datagrams repeat exactly.
            let len = datagram.len();
            if len >= 14 {
                datagram[len - 8..].copy_from_slice(&sent.to_le_bytes());
            }
            if socket.send_to(datagram, to).is_ok() {
                sent += 1;
            }
        }
    }
    sent
}

#[test]
fn garbage_at_full_rate_does_not_stop_a_genuine_delivery_or_grow_memory() {
    // Bound: 96 MiB. The receiver holds at most: a decode of one block (the default 16 MiB
    // block is read from the spool and decoded: about 3 x 16 MiB with the decoder's
    // matrices), the early-symbol buffer (16 MiB, only for datagrams with a valid tag, so
    // garbage never fills it), sled's page cache (8 MiB), code, TLS and thread stacks
    // (~15 MiB). Garbage itself is refused before any allocation but one log key per reason.
    const RSS_BOUND_KIB: u64 = 96 * 1024;
    let seed = seed("RECEIVER_SEED");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), &options(seed, false, 40_000_000)).expect("cluster");
    let county = &cluster.counties[0];
    let pid = county.daemon.as_ref().expect("running").pid();
    let (idle_hwm, _) = memory_kib(pid).expect("receiver memory");
    let (path, bytes) = payload(&mut rng, dir.path(), "update.bin", 20_000_000);
    cluster.send(&path, "software", "41", 4).expect("send");
    assert!(wait_until(Duration::from_secs(10), || log(county).contains("manifest accepted")), "never accepted:\n{}", log(county));
    // Status lists the object being received, with its blocks.
    let listed = wait_until(Duration::from_secs(5), || status_json(county).1["partial"][0]["blocks"].as_u64().is_some_and(|b| b >= 1));
    assert!(listed, "status does not show the partial object: {}", status(county, true).1);
    let (_, text) = status(county, false);
    assert!(text.contains("software/update.bin"), "{text}");
    let to = county.addr;
    let flood_seed = rng.next_u64();
    let flooder = std::thread::spawn(move || flood(to, flood_seed, Duration::from_secs(6)));
    let mut peak_rss = 0;
    let mut samples = 0;
    while !flooder.is_finished() && samples < 1000 {
        if let Some((_, rss)) = memory_kib(pid) {
            peak_rss = peak_rss.max(rss);
        }
        samples += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = flooder.join().expect("flood");
    let delivered = county.delivered_path("software", "update.bin");
    assert!(wait_until(Duration::from_secs(120), || delivered.exists()), "the genuine object never arrived:\n{}", log(county));
    assert!(std::fs::read(&delivered).expect("read") == bytes, "delivered bytes differ");
    let (hwm, rss) = memory_kib(pid).expect("receiver memory");
    let (_, json) = status_json(county);
    println!(
        "flood: {sent} datagrams in 6 s ({:.0}/s); receiver refused {}; VmHWM idle {idle_hwm} KiB, peak RSS during the flood {} KiB, VmHWM after delivery {hwm} KiB, VmRSS now {rss} KiB",
        sent as f64 / 6.0,
        json["reception"]["dropped"],
        peak_rss
    );
    // Summaries come at the end of each 10 s window.
    assert!(wait_until(Duration::from_secs(15), || log(county).contains("datagrams dropped")), "refusals are summarised in the log");
    let summaries = log(county).lines().filter(|l| l.contains("datagram")).count();
    assert!(summaries < 100, "{summaries} log lines about dropped datagrams: the log must stay small under a flood");
    assert!(hwm < RSS_BOUND_KIB, "receiver peak memory {hwm} KiB exceeds {RSS_BOUND_KIB} KiB");
}

/// The 1 GiB measurement. Run with a release build:
/// `cargo build --release --workspace && cargo test --release --test receiver -- --ignored --nocapture`
#[test]
#[ignore = "takes minutes and 2 GiB of disk; run by hand with --release"]
fn one_gibibyte_object_peak_memory() {
    const TARGET_KIB: u64 = 128 * 1024;
    let seed = seed("RECEIVER_SEED");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rate: u64 = std::env::var("GIB_RATE_BITS_PER_SEC").ok().and_then(|s| s.parse().ok()).unwrap_or(400_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = options(seed, false, rate);
    options.loss = vec![LossModel::Bernoulli(0.01)];
    let cluster = Cluster::start(dir.path(), &options).expect("cluster");
    let county = &cluster.counties[0];
    let pid = county.daemon.as_ref().expect("running").pid();
    let (idle_hwm, _) = memory_kib(pid).expect("receiver memory");
    let len = 1usize << 30;
    let path = dir.path().join("image.bin");
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("payload"));
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..len / chunk.len() {
            rng.fill_bytes(&mut chunk);
            file.write_all(&chunk).expect("write payload");
        }
    }
    let started = Instant::now();
    cluster.send(&path, "software", "41", 1).expect("send");
    let delivered = county.delivered_path("software", "image.bin");
    let mut peak = 0;
    let arrived = wait_until(Duration::from_secs(1800), || {
        if let Some((hwm, _)) = memory_kib(pid) {
            peak = hwm;
        }
        delivered.exists()
    });
    assert!(arrived, "1 GiB not delivered in 30 min:\n{}", log(county));
    let (hwm, rss) = memory_kib(pid).map_or((peak, 0), |m| m);
    let size = std::fs::metadata(&delivered).map(|m| m.len()).unwrap_or(0);
    println!(
        "1 GiB at {} Mbit/s: delivered in {:.0} s ({size} bytes); receiver VmHWM {hwm} KiB ({:.1} MiB; {idle_hwm} KiB idle before), VmRSS after {rss} KiB; target {} MiB",
        rate / 1_000_000,
        started.elapsed().as_secs_f64(),
        hwm as f64 / 1024.0,
        TARGET_KIB / 1024
    );
    assert_eq!(size, len as u64);
    assert!(hwm <= TARGET_KIB, "peak {hwm} KiB is over the {TARGET_KIB} KiB target");
}

/// A real full disk: the county's spool on an 8 MB tmpfs filled to the last byte while an
/// object arrives. The failures are summarised (one warning a second at most, not one per
/// datagram), and once the space is freed the object completes without a restart.
/// Needs root to mount (CI runs as root); skipped, saying so, elsewhere.
#[test]
fn a_full_disk_is_summarised_and_recovered_from_without_a_restart() {
    let seed = seed("RECEIVER_SEED");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), &options(seed, true, 8_000_000)).expect("cluster");
    let spool = cluster.counties[0].dir.join("state").join("spool");
    std::fs::create_dir_all(&spool).expect("spool folder");
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"]).arg(&spool).status().is_ok_and(|s| s.success());
    if !mounted {
        println!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let filler = spool.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 1 << 16];
        // Bounded: the tmpfs holds 8 MB.
        for _ in 0..256 {
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
    }
    let (path, bytes) = payload(&mut rng, dir.path(), "agent.bin", 3_000_000);
    cluster.send(&path, "software", "41", 1).expect("send");
    let county = &cluster.counties[0];
    let datagrams = |county: &County| status_json(county).1["reception"]["datagrams"].as_u64().unwrap_or(0);
    assert!(wait_until(Duration::from_secs(30), || datagrams(county) > 1_000), "the object never arrived:\n{}", log(county));
    let (start, heard_before) = (Instant::now(), datagrams(county));
    std::thread::sleep(Duration::from_secs(4));
    let heard = datagrams(county) - heard_before;
    let warnings = log(county).lines().filter(|l| l.contains("WARN") && l.contains("stor")).count();
    // A summary a second, and a few start-up lines.
    let allowed = start.elapsed().as_secs() as usize + 8;
    let accepted = log(county).matches("manifest accepted").count();
    assert!(accepted <= 2, "the manifest was accepted {accepted} times while the disk was full:\n{}", log(county));
    assert!(warnings <= allowed, "{warnings} storage warnings for {heard} datagrams in {:?}:\n{}", start.elapsed(), log(county));
    assert!(log(county).contains("storage failed (summary of the last second)"), "no summary:\n{}", log(county));
    assert!(!county.delivered_path("software", "agent.bin").exists(), "delivered through a full disk?");

    std::fs::remove_file(&filler).expect("free the space");
    let delivered = county.delivered_path("software", "agent.bin");
    let done = wait_until(Duration::from_secs(90), || delivered.exists());
    cluster.stop();
    let _ = Command::new("umount").arg("-l").arg(&spool).status();
    assert!(done, "not delivered after the space came back:\n{}", log(&cluster.counties[0]));
    assert_eq!(std::fs::read(&delivered).expect("read"), bytes);
}
