//! End to end: the real uplink and receiver binaries on loopback, through the impairment
//! relay that drops datagrams, with forged datagrams mixed in.

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::Ordering;

use satcast::{Cluster, ClusterOptions, seed, wait_until};
use satcast_protocol::fec::{self, Oti};
use satcast_protocol::manifest::{Compression, Kind, Manifest};
use satcast_protocol::trust::{NetworkKey, RootKey, SigningKey};
use satcast_protocol::wire;
use satcast_sim::relay::LossModel;

const PAYLOAD_BYTES: usize = 10 * 1024 * 1024 + 12_345;

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn read_key(path: &Path) -> String {
    std::fs::read_to_string(path).expect("key file")
}

/// A manifest as a forger would build it, for a payload that never airs.
fn forged_manifest(object_id: u64, version: u64) -> Manifest {
    let oti = Oti::new_for_object(4096, 1436, fec::DEFAULT_BLOCK_BYTES_MAX).expect("oti");
    let now = unix_secs();
    Manifest {
        object_id,
        kind: Kind::Software,
        name: "update.bin".into(),
        version,
        size_bytes: 4096,
        compression: Compression::None,
        oti: oti.encode(),
        object_hash: [0; 32],
        block_hashes: vec![[0; 32]],
        targets: vec!["41".into()],
        created_unix_secs: now - 5,
        expires_unix_secs: now + 3600,
    }
}

fn send_manifest(socket: &UdpSocket, to: std::net::SocketAddr, key: &NetworkKey, object_id: u64, signed: &[u8]) {
    let mut buf = Vec::new();
    for fragment in wire::manifest_fragments(signed, 1472) {
        wire::write_manifest_fragment(&mut buf, key, object_id, &fragment);
        socket.send_to(&buf, to).expect("send");
    }
}

#[test]
fn ten_megabytes_arrive_byte_exact_through_loss_and_forgeries() {
    let seed = seed("E2E_SEED");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ClusterOptions {
        counties: vec!["410102".into()],
        loss: vec![LossModel::Bernoulli(0.05)],
        link_rate_bits_per_sec: 40_000_000,
        passes: 3,
        seed,
        extra_uplink_config: String::new(),
        acks: false,
    };
    let mut cluster = Cluster::start(dir.path(), &options).expect("cluster");
    let county = &cluster.counties[0];
    let receiver_addr = county.addr;
    let receiver_log = || county.daemon.as_ref().map(|d| d.log_text()).unwrap_or_default();

    let mut payload = vec![0u8; PAYLOAD_BYTES];
    rng.fill_bytes(&mut payload);
    let payload_path = dir.path().join("update.bin");
    std::fs::write(&payload_path, &payload).expect("payload");

    // Forgeries, sent straight at the receiver while the genuine broadcast airs.
    let attacker = UdpSocket::bind("127.0.0.1:0").expect("attacker socket");
    let network_key = NetworkKey::from_text(&read_key(&county.dir.join("network.key"))).expect("network key");
    // 1. Datagrams from someone without the network key: bad tags.
    let mut buf = Vec::new();
    for i in 0..200u32 {
        wire::write_data(&mut buf, &NetworkKey([0xEE; 32]), 0x1234, 0, i, &[0xAB; 1436]);
        attacker.send_to(&buf, receiver_addr).expect("send");
    }
    // 2. A manifest signed by a key the pinned root never certified (an insider with the
    //    network key but not the signing key).
    let rogue_root = RootKey::generate(&mut rng);
    let now = unix_secs();
    let rogue_signer = SigningKey::generate(&mut rng, &rogue_root, 1, now - 60, now + 3600);
    let rogue = rogue_signer.sign_manifest(&forged_manifest(0xBAD, 99)).expect("sign").to_bytes();
    send_manifest(&attacker, receiver_addr, &network_key, 0xBAD, &rogue);

    let object_id = cluster.send(&payload_path, "software", "41", 2).expect("send");
    let delivered = county.delivered_path("software", "update.bin");
    let arrived = wait_until(Duration::from_secs(120), || delivered.exists());
    let uplink_log = || cluster.uplink.as_ref().map(|d| d.log_text()).unwrap_or_default();
    assert!(arrived, "not delivered.\nreceiver log:\n{}\nuplink log:\n{}", receiver_log(), uplink_log());
    let got = std::fs::read(&delivered).expect("delivered file");
    assert!(got == payload, "delivered file differs from the payload");

    // 3. A genuine, correctly signed manifest of an older version: a replay attempt.
    let keys = dir.path().join("keys");
    let signing =
        SigningKey::from_text(&read_key(&keys.join("signing.secret")), &read_key(&keys.join("signing.cert"))).expect("signing key");
    let replay = signing.sign_manifest(&forged_manifest(0x01D, 1)).expect("sign").to_bytes();
    send_manifest(&attacker, receiver_addr, &network_key, 0x01D, &replay);

    let log_has = |needle: &str| wait_until(Duration::from_secs(10), || receiver_log().contains(needle));
    assert!(log_has("bad tag"), "no bad-tag rejection in the log:\n{}", receiver_log());
    assert!(log_has("BadCertificateSignature"), "no unknown-key rejection in the log:\n{}", receiver_log());
    // A genuine manifest for this county: refused with its typed reason (and the uplink told).
    assert!(log_has("rollback (offered version 1, version 2 delivered)"), "no rollback refusal in the log:\n{}", receiver_log());
    let others: Vec<_> = std::fs::read_dir(county.dir.join("deliver/software"))
        .expect("deliver dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != "update.bin")
        .collect();
    assert!(others.is_empty(), "something else was delivered: {others:?}");

    let dropped = cluster.relay.stats.dropped.load(Ordering::Relaxed);
    let forwarded = cluster.relay.stats.forwarded.load(Ordering::Relaxed);
    let loss = dropped as f64 / (dropped + forwarded) as f64;
    println!("object {object_id} delivered; relay dropped {dropped} of {} datagrams ({:.1}%)", dropped + forwarded, loss * 100.0);
    assert!(loss >= 0.04, "the relay must drop about 5% (dropped {loss})");
    cluster.stop();
}
