//! End to end, confidential broadcasts' key distribution (issue 14): the real uplink airs the
//! key tree that `keys receiver` built, through the lossy relay, and each county's receiver
//! learns the group keys of its own path; `keys revoke-receiver` re-keys the path while the
//! daemons run, and the revoked county learns nothing more. A confidential broadcast from
//! the real uplink is delivered by the targeted county only, and no plaintext is aired.

use std::time::Duration;

use satcast::{Cluster, ClusterOptions, seed, wait_until};
use satcast_sim::cluster::run;
use satcast_sim::relay::LossModel;

/// How long a county may take to hear the key wraps it needs: they go out after every
/// heartbeat (5 s), and 5% of datagrams are lost. Generous for a loaded CI machine.
const LEARN_WITHIN: Duration = Duration::from_secs(60);

/// The `group_keys_learned` counter of a county's status (`status --json`), if it answers.
fn learned(cluster: &Cluster, index: usize) -> Option<u64> {
    counter(cluster, index, "group_keys_learned")
}

/// A county's status as JSON text, for a failure's message.
fn status_text(cluster: &Cluster, index: usize) -> String {
    let config = cluster.counties[index].config.to_string_lossy().into_owned();
    run("satcast-receiver", &["status", "--json", "--config", &config], &cluster.dir).unwrap_or_else(|e| e.to_string())
}

/// A counter of a county's status (`status --json`), if its running daemon wrote it: a
/// restarted daemon's status file is its predecessor's until it writes one (`status_stale`),
/// and that one's counters are not the new process's.
fn counter(cluster: &Cluster, index: usize, key: &str) -> Option<u64> {
    let config = cluster.counties[index].config.to_string_lossy().into_owned();
    let text = run("satcast-receiver", &["status", "--json", "--config", &config], &cluster.dir).ok()?;
    let status: serde_json::Value = serde_json::from_str(&text).ok()?;
    if status.get("status_stale").and_then(|v| v.as_bool()) == Some(true) {
        return None;
    }
    find(&status, key)
}

/// The file called `name` somewhere under `dir`.
fn find_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find_map(|path| if path.is_dir() { find_file(&path, name) } else { path.file_name().is_some_and(|n| n == name).then_some(path) })
}

/// Whether any file under `dir` holds `needle`.
fn any_file_holds(dir: &std::path::Path, needle: &[u8]) -> Option<std::path::PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = any_file_holds(&path, needle) {
                return Some(found);
            }
        } else if std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)) {
            return Some(path);
        }
    }
    None
}

fn find(value: &serde_json::Value, key: &str) -> Option<u64> {
    match value {
        serde_json::Value::Object(map) => map.get(key).and_then(|v| v.as_u64()).or_else(|| map.values().find_map(|v| find(v, key))),
        serde_json::Value::Array(items) => items.iter().find_map(|v| find(v, key)),
        _ => None,
    }
}

/// A cluster of these counties, 5% independent loss towards each, no acknowledgements.
fn start(dir: &std::path::Path, seed: u64, counties: &[&str]) -> Cluster {
    let options = ClusterOptions {
        counties: counties.iter().map(|c| c.to_string()).collect(),
        loss: vec![LossModel::Bernoulli(0.05)],
        link_rate_bits_per_sec: 20_000_000,
        passes: 1,
        seed,
        extra_uplink_config: String::new(),
        acks: false,
    };
    Cluster::start(dir, &options).expect("cluster starts")
}

#[test]
fn counties_learn_their_path_from_the_uplink_and_a_revoked_county_learns_nothing_more() {
    let seed = seed("E2E_SEED");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(tmp.path(), seed, &["410102", "410103", "420101"]);
    // Prefecture, province and nation, for each county.
    let all_learned = wait_until(LEARN_WITHIN, || (0..3).all(|i| learned(&cluster, i) == Some(3)));
    let counts: Vec<Option<u64>> = (0..3).map(|i| learned(&cluster, i)).collect();
    assert!(
        all_learned,
        "group keys learned {counts:?}; uplink log:\n{}",
        cluster.uplink.as_ref().map(|d| d.log_text()).unwrap_or_default()
    );

    // Revoked while everything runs: 4101, 41 and the nation get new keys. 410102 learns
    // all three, 420101 the nation's, 410103 nothing.
    run("satcast-uplink", &["keys", "revoke-receiver", "--dir", "keys", "--id", "410103"], &cluster.dir).expect("revokes");
    let rekeyed = wait_until(LEARN_WITHIN, || learned(&cluster, 0) == Some(6) && learned(&cluster, 2) == Some(4));
    let counts: Vec<Option<u64>> = (0..3).map(|i| learned(&cluster, i)).collect();
    assert!(rekeyed, "group keys learned after the revocation {counts:?}");
    assert_eq!(learned(&cluster, 1), Some(3), "the revoked county learned a new key");
    cluster.stop();
}

/// A confidential broadcast to province 41 from the real uplink, through the lossy relay:
/// the targeted county delivers it byte-exact under its real name; the county of province 42
/// (an insider with its own valid bundle, hearing every datagram) and the county revoked
/// before the broadcast cannot read it and keep nothing of it; the bytes aired are not the
/// plaintext.
#[test]
fn a_confidential_broadcast_is_delivered_by_the_targeted_county_only_and_airs_no_plaintext() {
    let seed = seed("E2E_SEED");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(tmp.path(), seed, &["410102", "410103", "420101"]);
    let all_learned = wait_until(LEARN_WITHIN, || (0..3).all(|i| learned(&cluster, i) == Some(3)));
    assert!(all_learned, "group keys learned {:?}", (0..3).map(|i| learned(&cluster, i)).collect::<Vec<_>>());
    run("satcast-uplink", &["keys", "revoke-receiver", "--dir", "keys", "--id", "410103"], &cluster.dir).expect("revokes");
    let rekeyed = wait_until(LEARN_WITHIN, || learned(&cluster, 0) == Some(6));
    assert!(rekeyed, "410102 did not learn the new keys");

    let marker = format!("低保名册 seed {seed} 身份证 410102199001011234");
    let plain: Vec<u8> = (0..2_000).flat_map(|i| format!("{marker} row {i}\n").into_bytes()).collect();
    let path = tmp.path().join("名册.csv");
    std::fs::write(&path, &plain).expect("payload");
    let id = cluster
        .uplink_cli(&["send", path.to_str().expect("utf-8"), "--kind", "policy", "--to", "41", "--confidential"])
        .expect("sends")
        .trim()
        .to_owned();

    let delivered = cluster.counties[0].delivered_path("policy", "名册.csv");
    let byte_exact = || std::fs::read(&delivered).is_ok_and(|bytes| bytes == plain);
    // The counters reach status.json with its next refresh.
    let done = wait_until(LEARN_WITHIN, || {
        byte_exact() && counter(&cluster, 0, "sealed_opened") == Some(1) && counter(&cluster, 1, "sealed_pending").is_some_and(|n| n >= 1)
    });
    // (opened, pending, not targeted) per county.
    let counts: Vec<[Option<u64>; 3]> =
        (0..3).map(|i| ["sealed_opened", "sealed_pending", "sealed_not_targeted"].map(|key| counter(&cluster, i, key))).collect();
    assert!(
        done,
        "broadcast {id}: delivered byte-exact at 410102: {}; (opened, pending, not targeted) per county {counts:?}; 410102 log:\n{}",
        byte_exact(),
        cluster.counties[0].daemon.as_ref().map(|d| d.log_text()).unwrap_or_default()
    );
    assert_eq!(counts[0][0], Some(1), "410102 opened it once");
    let status: serde_json::Value = serde_json::from_str(&cluster.uplink_cli(&["status", &id, "--json"]).expect("status")).expect("json");
    assert_eq!(status["summary"]["confidential"], true, "status shows it confidential: {status:#}");
    assert!(cluster.uplink_cli(&["status", &id]).expect("status").contains("confidential"), "and in text");
    assert_eq!(counts[2], [Some(0); 3], "province 42 is not among the targets: it never opens the section");
    // The revoked county holds its path's keys of before the revocation only: to it the
    // wrap under province 41's new key looks like a key it has not heard yet. It waits, and
    // no carousel will ever bring it that key.
    assert_eq!(counts[1][0], Some(0), "the revoked county opened the section");

    // Nothing readable anywhere else: neither other county keeps the plaintext (nor a file
    // under its real name), and the uplink's aired copy is ciphertext.
    for county in &cluster.counties[1..] {
        assert!(!county.delivered_path("policy", "名册.csv").exists(), "{} delivered it", county.code);
        assert_eq!(any_file_holds(&county.dir, marker.as_bytes()), None, "{} holds the plaintext", county.code);
    }
    // The uplink's copy as aired (beside the payload, which is the plaintext) is ciphertext.
    let aired = find_file(&cluster.dir.join("state"), &format!("{id}.aired")).and_then(|p| std::fs::read(p).ok()).expect("the aired copy");
    assert!(!aired.windows(marker.len()).any(|w| w == marker.as_bytes()), "the aired copy is plaintext");
    cluster.stop();
}

/// A county offline through two re-keys (two other counties revoked while it was down,
/// each re-keying the nation) reads a confidential broadcast aired once, sent as it comes
/// back: its group keys were in memory only, so the manifest may come before the key
/// carousel has taught it the new ones; it then keeps the manifest and the symbols until
/// the carousel does (protocol/tests/confidential.rs shows that order deterministically).
#[test]
fn a_county_offline_through_two_rekeys_reads_a_broadcast_aired_before_it_heard_the_carousel() {
    let seed = seed("E2E_SEED");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(tmp.path(), seed, &["410102", "410103", "410104", "420101"]);
    assert!(wait_until(LEARN_WITHIN, || (0..4).all(|i| learned(&cluster, i) == Some(3))), "the first keys");
    if let Some(daemon) = cluster.counties[0].daemon.as_mut() {
        daemon.stop();
    }
    // Each revocation re-keys the nation; 410104 (4101's other county) hears both.
    run("satcast-uplink", &["keys", "revoke-receiver", "--dir", "keys", "--id", "410103"], &cluster.dir).expect("revokes");
    assert!(wait_until(LEARN_WITHIN, || learned(&cluster, 2) == Some(6)), "the first re-key: {:?}", learned(&cluster, 2));
    run("satcast-uplink", &["keys", "revoke-receiver", "--dir", "keys", "--id", "420101"], &cluster.dir).expect("revokes");
    assert!(wait_until(LEARN_WITHIN, || learned(&cluster, 2) == Some(7)), "the second re-key: {:?}", learned(&cluster, 2));

    // Back up and sent to at once: the one pass airs before the next heartbeat's key wraps.
    cluster.counties[0].start().expect("410102 comes back");
    let plain: Vec<u8> = (0..3_000).flat_map(|i| format!("救灾物资 seed {seed} row {i}\n").into_bytes()).collect();
    let path = tmp.path().join("救灾名单.csv");
    std::fs::write(&path, &plain).expect("payload");
    cluster.uplink_cli(&["send", path.to_str().expect("utf-8"), "--kind", "policy", "--to", "41", "--confidential"]).expect("sends");
    let delivered = cluster.counties[0].delivered_path("policy", "救灾名单.csv");
    assert!(
        wait_until(LEARN_WITHIN, || std::fs::read(&delivered).is_ok_and(|bytes| bytes == plain)),
        "410102 did not deliver it byte-exact; status {}; log:\n{}",
        status_text(&cluster, 0),
        cluster.counties[0].daemon.as_ref().map(|d| d.log_text()).unwrap_or_default()
    );
    assert!(wait_until(LEARN_WITHIN, || learned(&cluster, 0) == Some(3)), "its path, relearnt: {}", status_text(&cluster, 0));
    cluster.stop();
}

/// The network key rotated over the air with real daemons (docs/protocol.md 8.6): a county
/// whose bundle leaked is revoked, the key is rotated, the two enrolled counties learn the
/// next key (one of them restarts before the switch and keeps it durably), switch with the
/// uplink and receive the next broadcast; the revoked county hears nothing after the switch.
#[test]
fn the_network_key_rotates_over_the_air_and_the_revoked_county_hears_nothing_after() {
    let seed = seed("E2E_SEED");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(tmp.path(), seed, &["410102", "410103", "420101", "410104"]);
    assert!(wait_until(LEARN_WITHIN, || (0..4).all(|i| learned(&cluster, i) == Some(3))), "the first keys");
    // 410104 is off the air from here until after the switch: it hears neither the re-key
    // nor the announcement, and must follow during the handover.
    if let Some(daemon) = cluster.counties[3].daemon.as_mut() {
        daemon.stop();
    }
    run("satcast-uplink", &["keys", "revoke-receiver", "--dir", "keys", "--id", "420101"], &cluster.dir).expect("revokes");
    // The nation is re-keyed: the others learn its new key before the rotation is sealed
    // under it (a later reseal would reach them too, only later).
    assert!(wait_until(LEARN_WITHIN, || (0..2).all(|i| learned(&cluster, i) == Some(4))), "the re-key");
    let said =
        run("satcast-uplink", &["keys", "rotate-network-key", "--dir", "keys", "--activate-in", "25s"], &cluster.dir).expect("rotates");
    assert!(said.contains("next network key written"), "{said}");
    let knows_next = |cluster: &Cluster, i: usize| counter(cluster, i, "network_keys_learned") == Some(1);
    assert!(wait_until(LEARN_WITHIN, || (0..2).all(|i| knows_next(&cluster, i))), "{}", status_text(&cluster, 0));
    assert_eq!(counter(&cluster, 2, "network_keys_learned"), Some(0), "the revoked county cannot open it");

    // 410103 restarts before the switch: it starts with the next key it kept.
    if let Some(daemon) = cluster.counties[1].daemon.as_mut() {
        daemon.stop();
    }
    cluster.counties[1].start().expect("410103 comes back");
    let switched = |cluster: &Cluster, i: usize| counter(cluster, i, "network_keys_activated") == Some(1);
    assert!(
        wait_until(LEARN_WITHIN, || (0..2).all(|i| switched(&cluster, i))),
        "the counties did not switch: {}\n{}",
        status_text(&cluster, 0),
        status_text(&cluster, 1)
    );
    // Its status is rewritten every second: what it heard before the switch is all in it.
    std::thread::sleep(Duration::from_millis(1500));
    // After the switch the revoked county hears only the handover (the announcement and the
    // key wraps aired under the old key for late counties), none of which it can open.
    let heard_outside_handover = |cluster: &Cluster| {
        let of = |key| counter(cluster, 2, key).unwrap_or(0);
        of("datagrams") - of("network_key_announcements") - of("key_wraps")
    };
    let heard_by_revoked = heard_outside_handover(&cluster);

    cluster.counties[3].start().expect("410104 comes back");
    assert!(
        wait_until(LEARN_WITHIN, || switched(&cluster, 3)),
        "the county off the air through the announcement did not follow: {}",
        status_text(&cluster, 3)
    );

    let plain: Vec<u8> = (0..2_000).flat_map(|i| format!("after the rotation, seed {seed}, row {i}\n").into_bytes()).collect();
    let path = tmp.path().join("notice-after-rotation.txt");
    std::fs::write(&path, &plain).expect("payload");
    cluster.uplink_cli(&["send", path.to_str().expect("utf-8"), "--kind", "policy", "--to", "41", "--no-confidential"]).expect("sends");
    for i in [0, 1, 3] {
        let delivered = cluster.counties[i].delivered_path("policy", "notice-after-rotation.txt");
        assert!(
            wait_until(LEARN_WITHIN, || std::fs::read(&delivered).is_ok_and(|bytes| bytes == plain)),
            "county {i} did not deliver after the switch: {}",
            status_text(&cluster, i)
        );
    }
    // The uplink's heartbeats went on all along: the revoked county counted none of them.
    assert_eq!(heard_outside_handover(&cluster), heard_by_revoked, "the revoked county still hears the uplink");
    assert_eq!(counter(&cluster, 2, "network_keys_learned"), Some(0), "the revoked county opened the handover");
    assert!(counter(&cluster, 2, "dropped").is_some_and(|n| n > 0), "its datagrams fail their tag: {}", status_text(&cluster, 2));
    run("satcast-uplink", &["keys", "rotate-network-key", "--dir", "keys"], &cluster.dir)
        .expect("a second rotation may start once the first took over");
    cluster.stop();
}
