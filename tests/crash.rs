//! Power cuts: the receiver killed with SIGKILL at random moments while it takes in an
//! object. After every restart it resumes from its spool (what it had is never needed
//! again), the deliver folder never holds a partial file, and the object completes.
//!
//! CI runs 50 kills. For a longer soak: `CRASH_KILLS=1000 cargo test --release --test crash`.

use std::path::Path;
use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast::{Cluster, ClusterOptions, seed, wait_until};
use satcast_sim::relay::LossModel;

/// (blocks verified, symbols spooled) from every "resumed partial object" line of a log.
fn resumes(log: &str) -> Vec<(u64, u64)> {
    let field = |line: &str, name: &str| -> Option<u64> {
        let start = line.find(&format!("{name}="))? + name.len() + 1;
        line[start..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    log.lines()
        .filter(|l| l.contains("resumed partial object"))
        .filter_map(|l| Some((field(l, "blocks_verified")?, field(l, "symbols_spooled")?)))
        .collect()
}

fn assert_no_partial_delivery(deliver: &Path, payload: &[u8]) {
    let Ok(entries) = std::fs::read_dir(deliver) else { return };
    for entry in entries.flatten() {
        let bytes = std::fs::read(entry.path()).expect("read delivered file");
        assert!(
            bytes == payload,
            "{} is in the deliver folder but is not the complete payload ({} bytes)",
            entry.path().display(),
            bytes.len()
        );
    }
}

#[test]
fn a_receiver_killed_fifty_times_resumes_from_its_spool_and_completes() {
    let seed = seed("CRASH_SEED");
    let kills: usize = std::env::var("CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ClusterOptions {
        counties: vec!["410102".into()],
        loss: vec![LossModel::Bernoulli(0.01)],
        link_rate_bits_per_sec: 5_000_000,
        passes: 40,
        seed,
        // Small blocks, so kills land between block decodes as well as within them.
        extra_uplink_config: "\n[fec]\nblock_bytes_max = 262144\n".into(),
        acks: false,
    };
    let mut cluster = Cluster::start(dir.path(), &options).expect("cluster");
    let mut payload = vec![0u8; 8_000_000];
    rng.fill_bytes(&mut payload);
    let payload_path = dir.path().join("agent.bin");
    std::fs::write(&payload_path, &payload).expect("payload");
    cluster.send(&payload_path, "software", "41", 7).expect("send");

    let county = &mut cluster.counties[0];
    let delivered = county.delivered_path("software", "agent.bin");
    let deliver_dir = delivered.parent().expect("kind folder").to_owned();
    let mut progress = Vec::new();
    let mut done_early = false;
    for kill in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.random_range(20..250)));
        county.daemon.as_mut().expect("running").kill();
        assert_no_partial_delivery(&deliver_dir, &payload);
        if delivered.exists() {
            done_early = true;
            println!("delivered after {kill} kills");
            break;
        }
        county.start().expect("restart");
        let log = || county.daemon.as_ref().map(|d| d.log_text()).unwrap_or_default();
        assert!(wait_until(Duration::from_secs(10), || log().contains("receiver started")), "restart {kill} failed:\n{}", log());
        if let Some(last) = resumes(&log()).last() {
            progress.push(*last);
        }
    }
    let county = &cluster.counties[0];
    let log = || county.daemon.as_ref().map(|d| d.log_text()).unwrap_or_default();
    let arrived = done_early || wait_until(Duration::from_secs(120), || delivered.exists());
    assert!(arrived, "never delivered.\nlast log:\n{}", log());
    assert_no_partial_delivery(&deliver_dir, &payload);
    println!("resumes (blocks verified, symbols spooled): {progress:?}");
    assert!(!done_early, "the object arrived before {kills} kills: make it larger");
    assert!(progress.len() >= kills / 2, "the receiver should have resumed a partial object after most kills");
    for pair in progress.windows(2) {
        let ((blocks_a, symbols_a), (blocks_b, symbols_b)) = (pair[0], pair[1]);
        assert!(
            blocks_b > blocks_a || (blocks_b == blocks_a && symbols_b >= symbols_a),
            "progress went backwards across a kill: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn a_corrupted_index_is_quarantined_rebuilt_and_the_daemon_runs_on() {
    let seed = seed("CRASH_SEED");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ClusterOptions {
        counties: vec!["410102".into()],
        loss: vec![LossModel::Bernoulli(0.02)],
        link_rate_bits_per_sec: 20_000_000,
        passes: 3,
        seed,
        extra_uplink_config: String::new(),
        acks: false,
    };
    let mut cluster = Cluster::start(dir.path(), &options).expect("cluster");
    let mut first = vec![0u8; 500_000];
    rng.fill_bytes(&mut first);
    let first_path = dir.path().join("first.csv");
    std::fs::write(&first_path, &first).expect("payload");
    cluster.send(&first_path, "codetable", "41", 1).expect("send");
    let county = &mut cluster.counties[0];
    let first_delivered = county.delivered_path("codetable", "first.csv");
    assert!(wait_until(Duration::from_secs(60), || first_delivered.exists()), "first object not delivered");
    county.daemon.as_mut().expect("running").stop();

    // Garbage over every file of the sled index.
    let index = county.dir.join("state/index");
    let mut corrupted = 0;
    for entry in std::fs::read_dir(&index).expect("index dir").flatten() {
        if entry.path().is_file() {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0).max(4096) as usize;
            let mut garbage = vec![0u8; len];
            rng.fill_bytes(&mut garbage);
            std::fs::write(entry.path(), garbage).expect("corrupt");
            corrupted += 1;
        }
    }
    assert!(corrupted > 0, "the index has files to corrupt");

    county.start().expect("restart");
    let log = || cluster.counties[0].daemon.as_ref().map(|d| d.log_text()).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(10), || log().contains("receiver started")), "did not start:\n{}", log());
    assert!(log().contains("quarantined"), "the log must say the index was quarantined:\n{}", log());
    assert!(log().contains("cache_entries_rebuilt=1"), "the cached object is back in the index:\n{}", log());
    let quarantined = std::fs::read_dir(cluster.counties[0].dir.join("state"))
        .expect("state")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("index.quarantined-"));
    assert!(quarantined, "the broken index is kept aside for inspection");

    let mut second = vec![0u8; 500_000];
    rng.fill_bytes(&mut second);
    let second_path = dir.path().join("second.csv");
    std::fs::write(&second_path, &second).expect("payload");
    cluster.send(&second_path, "codetable", "41", 1).expect("send");
    let second_delivered = cluster.counties[0].delivered_path("codetable", "second.csv");
    assert!(wait_until(Duration::from_secs(60), || second_delivered.exists()), "the daemon must run on after the rebuild:\n{}", log());
    assert_eq!(std::fs::read(&second_delivered).expect("read"), second);
    assert_eq!(std::fs::read(&first_delivered).expect("read"), first);
}

#[test]
fn an_uplink_killed_mid_broadcast_continues_the_same_broadcast() {
    let seed = seed("CRASH_SEED");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ClusterOptions {
        counties: vec!["410102".into(), "410103".into()],
        loss: vec![LossModel::Bernoulli(0.03)],
        link_rate_bits_per_sec: 4_000_000,
        passes: 2,
        seed,
        extra_uplink_config: String::new(),
        acks: false,
    };
    let mut cluster = Cluster::start(dir.path(), &options).expect("cluster");
    let mut payload = vec![0u8; 3_000_000];
    rng.fill_bytes(&mut payload);
    let path = dir.path().join("update.bin");
    std::fs::write(&path, &payload).expect("payload");
    let object_id = cluster.send(&path, "software", "41", 3).expect("send");
    let uplink_log = |c: &Cluster| c.uplink.as_ref().map(|d| d.log_text()).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(10), || uplink_log(&cluster).contains("airing")), "never aired:\n{}", uplink_log(&cluster));
    // Mid-first-pass (3 MB at 4 Mbit/s takes about 6.5 s): a power cut at the uplink.
    std::thread::sleep(Duration::from_millis(2500));
    cluster.uplink.as_mut().expect("running").kill();
    let before = uplink_log(&cluster);
    cluster.start_uplink().expect("restart");
    assert!(
        wait_until(Duration::from_secs(10), || uplink_log(&cluster).contains("resuming interrupted broadcast")),
        "the restarted uplink must resume, not start over:\n{before}\n---\n{}",
        uplink_log(&cluster)
    );
    for county in &cluster.counties {
        let delivered = county.delivered_path("software", "update.bin");
        assert!(wait_until(Duration::from_secs(90), || delivered.exists()), "{} never got it:\n{}", county.code, uplink_log(&cluster));
        assert_eq!(std::fs::read(&delivered).expect("read"), payload);
        // The file appears at the commit; the log line follows once the version is recorded.
        let log = || county.daemon.as_ref().map(|d| d.log_text()).unwrap_or_default();
        let said = wait_until(Duration::from_secs(5), || log().contains(&format!("delivered object={object_id}")));
        let log = log();
        let accepted = log.lines().filter(|l| l.contains("manifest accepted")).count();
        assert_eq!(accepted, 1, "{} saw one broadcast, not two:\n{log}", county.code);
        assert!(said, "{} delivered the same broadcast {object_id}:\n{log}", county.code);
    }
}
