//! End to end: the real uplink and receiver binaries on loopback, through the impairment
//! relay that drops datagrams, with forged datagrams mixed in.

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast::{Daemon, free_udp_addr, make_county, run_ok, seed, wait_until, write_uplink_config};
use satcast_protocol::fec::{self, Oti};
use satcast_protocol::manifest::{Compression, Kind, Manifest};
use satcast_protocol::trust::{NetworkKey, RootKey, SigningKey};
use satcast_protocol::wire;
use satcast_sim::relay::{Destination, LossModel, Relay};

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
    let seed = seed("E2E_SEED", "broadcast");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    run_ok("satcast-uplink", &["keys", "init", "--dir", "keys"], dir);
    let receiver_addr = free_udp_addr();
    let county = make_county(dir, "410102", receiver_addr);
    let county_dir = county.parent().expect("bundle dir").to_owned();
    let relay = Relay::start("127.0.0.1:0".parse().expect("addr"), vec![Destination { addr: receiver_addr, loss: LossModel::Bernoulli(0.05) }], seed)
        .expect("relay");
    let uplink_config = write_uplink_config(dir, relay.listen, 40_000_000);

    let mut payload = vec![0u8; PAYLOAD_BYTES];
    rng.fill_bytes(&mut payload);
    std::fs::write(dir.join("update.bin"), &payload).expect("payload");

    let mut receiver = Daemon::start("satcast-receiver", &["run", "--config", county.to_str().expect("utf-8")], dir, &dir.join("receiver.log"));
    let mut uplink = Daemon::start("satcast-uplink", &["serve", "--config", uplink_config.to_str().expect("utf-8")], dir, &dir.join("uplink.log"));
    assert!(wait_until(Duration::from_secs(10), || receiver.log_text().contains("receiver started")), "receiver did not start:\n{}", receiver.log_text());

    // Forgeries, sent straight at the receiver while the genuine broadcast airs.
    let attacker = UdpSocket::bind("127.0.0.1:0").expect("attacker socket");
    let network_key = NetworkKey::from_text(&read_key(&county_dir.join("network.key"))).expect("network key");
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

    let object_id = run_ok(
        "satcast-uplink",
        &["send", "update.bin", "--config", "uplink.toml", "--kind", "software", "--to", "41", "--version", "2"],
        dir,
    );
    let delivered = county_dir.join("deliver/software/update.bin");
    let arrived = wait_until(Duration::from_secs(120), || delivered.exists());
    assert!(arrived, "not delivered.\nreceiver log:\n{}\nuplink log:\n{}", receiver.log_text(), uplink.log_text());
    let got = std::fs::read(&delivered).expect("delivered file");
    assert!(got == payload, "delivered file differs from the payload");

    // 3. A genuine, correctly signed manifest of an older version: a replay attempt.
    let signing = SigningKey::from_text(&read_key(&dir.join("keys/signing.secret")), &read_key(&dir.join("keys/signing.cert"))).expect("signing key");
    let replay = signing.sign_manifest(&forged_manifest(0x01D, 1)).expect("sign").to_bytes();
    send_manifest(&attacker, receiver_addr, &network_key, 0x01D, &replay);

    let log_has = |needle: &str| wait_until(Duration::from_secs(10), || receiver.log_text().contains(needle));
    assert!(log_has("bad tag"), "no bad-tag rejection in the log:\n{}", receiver.log_text());
    assert!(log_has("BadCertificateSignature"), "no unknown-key rejection in the log:\n{}", receiver.log_text());
    assert!(log_has("Rollback"), "no rollback rejection in the log:\n{}", receiver.log_text());
    assert!(!county_dir.join("deliver/software").read_dir().expect("deliver dir").any(|e| e.map(|e| e.file_name() != "update.bin").unwrap_or(true)), "something else was delivered");

    let dropped = relay.stats.dropped.load(std::sync::atomic::Ordering::Relaxed);
    let forwarded = relay.stats.forwarded.load(std::sync::atomic::Ordering::Relaxed);
    let loss = dropped as f64 / (dropped + forwarded) as f64;
    println!("object {} delivered; relay dropped {dropped} of {} datagrams ({:.1}%)", object_id.trim(), dropped + forwarded, loss * 100.0);
    assert!(loss >= 0.04, "the relay must drop about 5% (dropped {loss})");
    receiver.stop();
    uplink.stop();
    relay.stop();
}
