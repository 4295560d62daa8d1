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
    let seed = seed("UPLINK_SEED", "uplink");
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
    let seed = seed("UPLINK_SEED", "uplink");
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
        wait_until(Duration::from_secs(20), || county_log(&cluster).contains("manifest expired; partial object discarded")),
        "the county must drop the partial object when its manifest expires:\n{}",
        county_log(&cluster)
    );
    assert!(!cluster.counties[0].delivered_path("software", "big.bin").exists());
    let spool = cluster.counties[0].dir.join("state/spool");
    assert_eq!(std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0), 0, "nothing left in the spool");
}

#[test]
fn an_emergency_sent_during_a_bulk_broadcast_completes_first() {
    let seed = seed("UPLINK_SEED", "uplink");
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
