//! End to end, confidential broadcasts' key distribution (issue 14): the real uplink airs the
//! key tree that `keys receiver` built, through the lossy relay, and each county's receiver
//! learns the group keys of its own path; `keys revoke-receiver` re-keys the path while the
//! daemons run, and the revoked county learns nothing more. (The daemons do not encrypt
//! payloads yet: docs/security.md, residual risk 1.)

use std::time::Duration;

use satcast::{Cluster, ClusterOptions, seed, wait_until};
use satcast_sim::cluster::run;
use satcast_sim::relay::LossModel;

/// How long a county may take to hear the key wraps it needs: they go out after every
/// heartbeat (5 s), and 5% of datagrams are lost. Generous for a loaded CI machine.
const LEARN_WITHIN: Duration = Duration::from_secs(60);

/// The `group_keys_learned` counter of a county's status (`status --json`), if it answers.
fn learned(cluster: &Cluster, index: usize) -> Option<u64> {
    let config = cluster.counties[index].config.to_string_lossy().into_owned();
    let text = run("satcast-receiver", &["status", "--json", "--config", &config], &cluster.dir).ok()?;
    let status: serde_json::Value = serde_json::from_str(&text).ok()?;
    find(&status, "group_keys_learned")
}

fn find(value: &serde_json::Value, key: &str) -> Option<u64> {
    match value {
        serde_json::Value::Object(map) => map.get(key).and_then(|v| v.as_u64()).or_else(|| map.values().find_map(|v| find(v, key))),
        serde_json::Value::Array(items) => items.iter().find_map(|v| find(v, key)),
        _ => None,
    }
}

#[test]
fn counties_learn_their_path_from_the_uplink_and_a_revoked_county_learns_nothing_more() {
    let seed = seed("E2E_SEED", "confidential");
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = ClusterOptions {
        counties: vec!["410102".into(), "410103".into(), "420101".into()],
        loss: vec![LossModel::Bernoulli(0.05)],
        link_rate_bits_per_sec: 20_000_000,
        passes: 1,
        seed,
        extra_uplink_config: String::new(),
        acks: false,
    };
    let mut cluster = Cluster::start(tmp.path(), &options).expect("cluster starts");
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
