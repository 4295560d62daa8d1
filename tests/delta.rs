//! Compression and delta updates (issue 16) with real daemons on loopback: a code table goes
//! on the air compressed; its next version goes as a patch against the first, which a county
//! holding the base applies byte-exact; a county whose base was evicted, and one whose base
//! was corrupted on disk, refuse the patch (no_base) and end with the full object, aired by
//! the uplink to exactly them in the same broadcast.

use std::time::Duration;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast::{Cluster, ClusterOptions, County, seed, wait_until};
use satcast_sim::relay::LossModel;

/// Generous bound for a broadcast of a few hundred KB at 20 Mbit/s with 2% loss, plus the
/// full airing after the patch, on a loaded CI machine.
const SLOW: Duration = Duration::from_secs(90);
const HOLDS: &str = "410102";
const EVICTED: &str = "410103";
const CORRUPTED: &str = "410104";

/// A division-code-like table: one line per county, compressible as the real one is.
fn table(seed: u64, lines: usize) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = "代码,名称,级别\n".as_bytes().to_vec();
    for i in 0..lines {
        let n = rng.next_u32();
        out.extend_from_slice(format!("{:06},县{:04x},{}\n", 110_000 + i * 7, n & 0xffff, n % 3).as_bytes());
    }
    out
}

fn status(cluster: &Cluster, id: &str) -> serde_json::Value {
    let text = cluster.uplink_cli(&["status", id, "--json"]).expect("status");
    serde_json::from_str(&text).expect("status json")
}

fn log(county: &County) -> String {
    county.daemon.as_ref().map(|d| d.log_text()).unwrap_or_default()
}

fn send(cluster: &Cluster, path: &std::path::Path, version: &str) -> String {
    let path = path.to_str().expect("utf-8");
    cluster.uplink_cli(&["send", path, "--kind", "codetable", "--to", "41", "--version", version]).expect("send").trim().to_owned()
}

/// The cached object of this delivered hash in a county's state.
fn cached(county: &County, bytes: &[u8]) -> std::path::PathBuf {
    county.dir.join("state").join("objects").join(blake3::hash(bytes).to_hex().as_str())
}

#[test]
fn a_new_version_airs_as_a_patch_and_counties_without_the_base_end_with_the_full_object() {
    let seed = seed("DELTA_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ClusterOptions {
        counties: [HOLDS, EVICTED, CORRUPTED].map(str::to_owned).to_vec(),
        loss: vec![LossModel::Bernoulli(0.02)],
        link_rate_bits_per_sec: 20_000_000,
        passes: 3,
        seed,
        extra_uplink_config: String::new(),
        acks: true,
    };
    let mut cluster = Cluster::start(dir.path(), &options).expect("cluster");
    // Enrolled first, so each broadcast waits for all three.
    let enrolled = wait_until(SLOW, || {
        cluster.uplink_cli(&["receivers", "--json"]).is_ok_and(|t| [HOLDS, EVICTED, CORRUPTED].iter().all(|c| t.contains(c)))
    });
    assert!(enrolled, "the counties never enrolled");

    let v1 = table(seed, 8_000);
    let path = dir.path().join("divisions.csv");
    std::fs::write(&path, &v1).expect("v1");
    let first = send(&cluster, &path, "1");
    let done = wait_until(SLOW, || status(&cluster, &first)["summary"]["state"] == "completed");
    assert!(done, "v1 not completed: {:#}", status(&cluster, &first));
    for county in &cluster.counties {
        assert_eq!(std::fs::read(county.delivered_path("codetable", "divisions.csv")).expect("v1 delivered"), v1, "{}", county.code);
        assert!(
            log(county).contains("compression=\"zstd\"") || log(county).contains("compression=zstd"),
            "v1 aired compressed:\n{}",
            log(county)
        );
    }

    // One county loses its base (evicted), another has it corrupted on disk (same size).
    for (code, corrupt) in [(EVICTED, false), (CORRUPTED, true)] {
        let county = cluster.counties.iter_mut().find(|c| c.code == code).expect("county");
        county.daemon.as_mut().expect("running").stop();
        let base = cached(county, &v1);
        if corrupt {
            let mut bytes = std::fs::read(&base).expect("cached base");
            bytes[100] ^= 0x20;
            std::fs::write(&base, &bytes).expect("corrupt");
        } else {
            std::fs::remove_file(&base).expect("evict");
        }
        county.start().expect("restart");
    }
    let back = wait_until(SLOW, || {
        let text = cluster.uplink_cli(&["receivers", "--json"]).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v.as_array().is_some_and(|a| a.len() == 3))
    });
    assert!(back, "the counties are not listed again");

    // A realistic year: a few counties renamed, one created.
    let mut v2 = String::from_utf8(v1.clone()).expect("utf-8");
    for i in [10usize, 2000, 5000] {
        let code = format!("{:06}", 110_000 + i * 7);
        let line = v2.lines().find(|l| l.starts_with(&code)).expect("line").to_owned();
        v2 = v2.replace(&line, &format!("{code},更名县{i},1"));
    }
    v2.push_str("659999,新设县,2\n");
    let v2 = v2.into_bytes();
    std::fs::write(&path, &v2).expect("v2");
    let second = send(&cluster, &path, "2");
    let done = wait_until(SLOW, || {
        status(&cluster, &second)["summary"]["state"] == "completed"
            && cluster.counties.iter().all(|c| std::fs::read(c.delivered_path("codetable", "divisions.csv")).is_ok_and(|b| b == v2))
    });
    let uplink_log = cluster.uplink.as_ref().map(|d| d.log_text()).unwrap_or_default();
    let logs: String = cluster.counties.iter().map(|c| format!("--- {}\n{}", c.code, log(c))).collect();
    assert!(done, "v2 not delivered byte-exact everywhere: {:#}\n{uplink_log}\n{logs}", status(&cluster, &second));
    let holder = cluster.counties.iter().find(|c| c.code == HOLDS).expect("holder");
    assert!(log(holder).contains("zstd-patch"), "the county holding the base applied the patch:\n{}", log(holder));
    for code in [EVICTED, CORRUPTED] {
        let county = cluster.counties.iter().find(|c| c.code == code).expect("county");
        assert!(log(county).contains("no_base") || log(county).contains("no base"), "{code} refused the patch:\n{}", log(county));
    }
    assert!(uplink_log.contains("airing the full object"), "the uplink aired the full object after the patch:\n{uplink_log}");
    let report = status(&cluster, &second);
    assert_eq!(report["summary"]["delivered"], 3, "one broadcast, delivered to all three: {report:#}");
}

/// The process's peak resident memory (VmHWM), in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

/// What decoding the bomb may add to the receiver's peak memory: the decoder's buffer and
/// the frame's 1 MiB window, with a wide margin for the allocator and the receive path. The
/// bomb expands to [`BOMB_EXPANDED_BYTES`], eight times more.
const BOMB_PEAK_GROWTH_KIB_MAX: u64 = 64 * 1024;
const BOMB_EXPANDED_BYTES: u64 = 512 << 20;
const BOMB_DECLARED_BYTES: u64 = 1 << 20;

/// A decompression bomb signed with the genuine signing key (an insider holding it, or a bug
/// at the uplink): 16 KiB on the air that expand to 512 MiB, declared as 1 MiB. The real
/// receiver refuses it (undecodable) after the declared size, delivers nothing, keeps nothing,
/// and its peak memory grows by less than [`BOMB_PEAK_GROWTH_KIB_MAX`].
#[test]
fn a_decompression_bomb_is_refused_by_a_real_receiver_with_bounded_memory() {
    use satcast_protocol::fec::{self, BlockEncoder, Oti};
    use satcast_protocol::manifest::{Compression, Delivered, Kind, Manifest};
    use satcast_protocol::wire;

    let seed = seed("DELTA_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ClusterOptions {
        counties: vec![HOLDS.to_owned()],
        loss: vec![LossModel::None],
        link_rate_bits_per_sec: 20_000_000,
        passes: 1,
        seed,
        extra_uplink_config: String::new(),
        acks: false,
    };
    let cluster = Cluster::start(dir.path(), &options).expect("cluster");
    let county = &cluster.counties[0];
    let pid = county.daemon.as_ref().expect("running").pid();
    let started = wait_until(SLOW, || log(county).contains("receiver started"));
    assert!(started, "the receiver did not start:\n{}", log(county));
    let before_kib = peak_kib(pid);

    let mut bomb = Vec::new();
    {
        let mut encoder = zstd::stream::write::Encoder::new(&mut bomb, 1).expect("encoder");
        encoder.window_log(20).expect("window");
        std::io::copy(&mut std::io::Read::take(std::io::repeat(0), BOMB_EXPANDED_BYTES), &mut encoder).expect("compress");
        encoder.finish().expect("finish");
    }
    let keys = cluster.dir.join("keys");
    let signing = satcast_uplink::keys::load_signing_key(&keys).expect("signing key");
    let network = satcast_uplink::keys::load_network_key(&keys).expect("network key");
    let now_secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let oti = Oti::new_for_object(bomb.len() as u64, 1436, 1 << 20).expect("oti");
    let blocks = fec::blocks(&oti);
    let object_id = 0xb0b0_0000_0000_0001 ^ seed;
    let declared = Delivered { size_bytes: BOMB_DECLARED_BYTES, hash: *blake3::hash(&vec![0u8; BOMB_DECLARED_BYTES as usize]).as_bytes() };
    let manifest = Manifest {
        object_id,
        kind: Kind::CodeTable,
        name: "bomb.csv".into(),
        version: 1,
        size_bytes: bomb.len() as u64,
        compression: Compression::Zstd(declared),
        oti: oti.encode(),
        object_hash: *blake3::hash(&bomb).as_bytes(),
        block_hashes: blocks.iter().map(|b| fec::block_hash(&bomb[b.offset as usize..(b.offset + b.len) as usize])).collect(),
        targets: vec![HOLDS.into()],
        created_unix_secs: now_secs - 1,
        expires_unix_secs: now_secs + 3600,
    };
    let signed = signing.sign_manifest(&manifest).expect("sign").to_bytes();
    let mut datagrams = Vec::new();
    for fragment in wire::manifest_fragments(&signed, 1472) {
        let mut datagram = Vec::new();
        wire::write_manifest_fragment(&mut datagram, &network, object_id, &fragment);
        datagrams.push(datagram);
    }
    for block in &blocks {
        let data = &bomb[block.offset as usize..(block.offset + block.len) as usize];
        let encoder = BlockEncoder::new(&oti, block.sbn, data).expect("encoder");
        for esi in 0..block.source_symbols + 4 {
            let mut symbol = Vec::new();
            encoder.symbol_into(esi, &mut symbol).expect("symbol");
            let mut datagram = Vec::new();
            wire::write_data(&mut datagram, &network, object_id, block.sbn, esi, &symbol);
            datagrams.push(datagram);
        }
    }
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    let refused = wait_until(SLOW, || {
        // Manifest first, then the symbols, again until refused (a datagram lost to a full
        // socket buffer comes again), paced a little.
        for datagram in &datagrams {
            let _ = socket.send_to(datagram, county.addr);
            std::thread::sleep(Duration::from_micros(200));
        }
        log(county).contains("undecodable")
    });
    assert!(refused, "the bomb was not refused:\n{}", log(county));
    let growth_kib = peak_kib(pid).saturating_sub(before_kib);
    println!(
        "bomb: {} bytes on the air, {BOMB_EXPANDED_BYTES} expanded, {BOMB_DECLARED_BYTES} declared; peak grew by {growth_kib} KiB",
        bomb.len()
    );
    assert!(log(county).contains("expands beyond"), "refused for its size:\n{}", log(county));
    assert!(growth_kib < BOMB_PEAK_GROWTH_KIB_MAX, "peak memory grew by {growth_kib} KiB");
    assert!(!county.delivered_path("codetable", "bomb.csv").exists(), "nothing delivered");
    let kept: Vec<_> = std::fs::read_dir(county.dir.join("state").join("partial")).expect("partial").flatten().map(|e| e.path()).collect();
    assert!(kept.is_empty(), "nothing of the bomb is kept: {kept:?}");
}
