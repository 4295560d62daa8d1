//! Shared fixtures of the benchmarks: keys, payloads, the uplink's `prepare` step done with
//! protocol types, and datagram streams produced by the real broadcast machine.
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::Criterion;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast_protocol::broadcast::{AirPlan, BlockSource, BroadcastConfig, BroadcastEvent, Broadcaster, Delivery, NewObject, Priority};
use satcast_protocol::fec::{self, Oti};
use satcast_protocol::manifest::{Compression, Kind, Manifest};
use satcast_protocol::trust::{NetworkKey, RootKey, SigningKey};

/// The symbol size of a 1500-byte MTU (`wire::symbol_size_for_mtu(1500)`).
pub const SYMBOL_SIZE: u16 = 1436;
/// The object size of the pipeline benchmarks.
pub const OBJECT_BYTES: usize = 16 * 1024 * 1024;
/// The loss rate the carousel pass is sized for, and the loss the receiver benchmark applies.
pub const LOSS: f64 = 0.05;
/// The carrier rate the benchmarks' broadcast machines are configured for. They run on a
/// virtual clock ([`air`]) that jumps to whenever the pacer lets the next datagram go, so
/// the machine is timed as fast as it builds datagrams while airing exactly what it would
/// on this carrier (manifest copies, lists and heartbeats in their real proportions).
pub const LINK_RATE: u64 = 80_000_000;
/// The county every benchmark receiver is.
pub const COUNTY: &str = "410102";
/// The object id of every benchmark object.
pub const OBJECT_ID: u64 = 0x5a7c_a570_0000_0001;

const SEED: u64 = 20_240_601;

/// Criterion settings for a machine of 2 shared cores: few samples, short windows.
pub fn criterion() -> Criterion {
    Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).without_plots()
}

/// Seconds since the Unix epoch.
pub fn now_unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A root key, a certified signing key (rebuilt on demand: it is not `Clone`) and the
/// network key, all from a fixed seed.
pub struct Keys {
    pub root: RootKey,
    pub network: NetworkKey,
    valid_from: u64,
}

impl Keys {
    pub fn new() -> Keys {
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let root = RootKey::generate(&mut rng);
        let network = NetworkKey::generate(&mut rng);
        Keys { root, network, valid_from: now_unix_secs() - 60 }
    }

    /// The same signing key every time.
    pub fn signing(&self) -> SigningKey {
        let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ 1);
        SigningKey::generate(&mut rng, &self.root, 1, self.valid_from, self.valid_from + 86_400)
    }
}

/// `len` random bytes from a fixed seed.
pub fn payload(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(SEED ^ 2).fill_bytes(&mut bytes);
    bytes
}

/// The OTI the uplink chooses for an object of `len` bytes (`uplink.toml` defaults).
pub fn oti_for(len: usize) -> Oti {
    Oti::new_for_object(len as u64, SYMBOL_SIZE, fec::DEFAULT_BLOCK_BYTES_MAX).expect("oti")
}

/// One carousel pass sized for [`LOSS`]: what the broadcast machine airs for the object.
pub fn delivery() -> Delivery {
    Delivery::Carousel(AirPlan { target_loss: LOSS, passes: 1 })
}

/// DATA symbols the broadcast machine airs for one pass over an object with this OTI.
pub fn symbols_per_pass(oti: &Oti) -> u64 {
    fec::blocks(oti).iter().map(|b| u64::from(satcast_protocol::broadcast::symbols_for_loss(b.source_symbols, LOSS))).sum()
}

/// Reads block bytes from the payload file with positioned reads, as the uplink's
/// `prepare::FileSource` does.
pub struct FileSource(pub File);

impl BlockSource for FileSource {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}

/// Serves block bytes from memory.
pub struct MemorySource(pub Vec<u8>);

impl BlockSource for MemorySource {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let bytes = self.0.get(start..start + buf.len()).ok_or_else(|| io::Error::other("read past the end"))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// The manifest of `payload`, as the uplink builds it.
pub fn manifest_for(payload: &[u8], oti: &Oti) -> Manifest {
    let block_hashes = fec::blocks(oti).iter().map(|b| fec::block_hash(&payload[b.offset as usize..(b.offset + b.len) as usize])).collect();
    let now = now_unix_secs();
    Manifest {
        object_id: OBJECT_ID,
        kind: Kind::Software,
        name: "bench.bin".into(),
        version: 1,
        size_bytes: payload.len() as u64,
        compression: Compression::None,
        oti: oti.encode(),
        object_hash: *blake3::hash(payload).as_bytes(),
        block_hashes,
        targets: vec!["41".into()],
        created_unix_secs: now,
        expires_unix_secs: now + 3600,
    }
}

/// The uplink's `prepare::prepare`, step for step, with protocol types: open the queued
/// file, choose the OTI, read and hash every block and the whole payload, sign the manifest,
/// and wrap the open file as the block source.
pub fn prepare_file(path: &Path, signing: &SigningKey) -> NewObject {
    let mut file = File::open(path).expect("open payload");
    let size_bytes = file.metadata().expect("metadata").len();
    let oti = Oti::new_for_object(size_bytes, SYMBOL_SIZE, fec::DEFAULT_BLOCK_BYTES_MAX).expect("oti");
    let mut object_hasher = blake3::Hasher::new();
    let mut block_hashes = Vec::new();
    for block in fec::blocks(&oti) {
        let mut data = vec![0u8; block.len as usize];
        file.read_exact(&mut data).expect("read payload");
        object_hasher.update(&data);
        block_hashes.push(fec::block_hash(&data));
    }
    let now = now_unix_secs();
    let manifest = Manifest {
        object_id: OBJECT_ID,
        kind: Kind::Software,
        name: "bench.bin".into(),
        version: 1,
        size_bytes,
        compression: Compression::None,
        oti: oti.encode(),
        object_hash: *object_hasher.finalize().as_bytes(),
        block_hashes,
        targets: vec!["41".into()],
        created_unix_secs: now,
        expires_unix_secs: now + 3600,
    };
    let signed_manifest = signing.sign_manifest(&manifest).expect("sign").to_bytes();
    new_object(manifest, signed_manifest, Box::new(FileSource(file)))
}

/// A carousel object for the broadcast machine.
pub fn new_object(manifest: Manifest, signed_manifest: Vec<u8>, source: Box<dyn BlockSource>) -> NewObject {
    NewObject {
        manifest,
        signed_manifest,
        source,
        priority: Priority::Normal,
        not_before: None,
        deadline: None,
        delivery: delivery(),
        resume: None,
    }
}

/// A broadcast machine for [`LINK_RATE`], to be driven by [`air`].
pub fn bench_broadcaster(keys: &Keys) -> Broadcaster {
    let config = BroadcastConfig { link_rate_bits_per_sec: LINK_RATE, ..BroadcastConfig::default() };
    Broadcaster::new(Instant::now(), config, keys.network.clone(), keys.signing())
}

/// Drives the machine until its carousel pass is over, handing every datagram to `send`,
/// on a virtual clock: when the machine has nothing to send yet, the clock jumps to its
/// next wake-up instead of waiting, so only the machine's own work takes real time. An
/// encoder still being built on another thread is waited for in real time.
pub fn air(broadcaster: &mut Broadcaster, mut send: impl FnMut(&[u8])) {
    let mut buf = Vec::with_capacity(1500);
    let (start, start_wall_ms) = (Instant::now(), now_unix_ms());
    let mut now = start;
    // Bounded: one pass of a 16 MiB object is about 12,500 datagrams; a stall is a bug.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let wall_ms = start_wall_ms + now.duration_since(start).as_millis() as u64;
        let mut sent = false;
        while broadcaster.poll_transmit(now, wall_ms, &mut buf) {
            send(&buf);
            sent = true;
        }
        let mut finished = false;
        while let Some(event) = broadcaster.poll_event() {
            match event {
                BroadcastEvent::CarouselFinished { .. } => finished = true,
                BroadcastEvent::SourceFailed { error, .. } => panic!("source failed: {error}"),
                _ => {}
            }
        }
        if finished || broadcaster.airing().is_empty() {
            return;
        }
        match broadcaster.poll_timeout() {
            Some(wake) if wake > now => now = wake,
            _ if !sent => {
                std::thread::sleep(ENCODER_WAIT);
                now += ENCODER_WAIT;
            }
            _ => {}
        }
        assert!(Instant::now() < deadline, "the broadcast machine stalled");
    }
}

/// How long [`air`] waits, in real and virtual time, for an encoder built on another thread.
const ENCODER_WAIT: Duration = Duration::from_micros(50);

/// Every datagram of one carousel pass over `payload`, as the broadcast machine emits them.
pub fn datagrams_for(keys: &Keys, payload: &[u8]) -> Vec<Vec<u8>> {
    let oti = oti_for(payload.len());
    let manifest = manifest_for(payload, &oti);
    let signed_manifest = keys.signing().sign_manifest(&manifest).expect("sign").to_bytes();
    let mut broadcaster = bench_broadcaster(keys);
    broadcaster
        .add_object(Instant::now(), new_object(manifest, signed_manifest, Box::new(MemorySource(payload.to_vec()))))
        .expect("add object");
    let mut out = Vec::new();
    air(&mut broadcaster, |d| out.push(d.to_vec()));
    out
}

/// Whether this run only lists or tests the benchmarks (`--list`, `--test`, `--profile-time`),
/// so the paired comparison below is skipped.
pub fn quick_run() -> bool {
    std::env::args().any(|a| a == "--list" || a == "--test" || a == "--profile-time" || a.starts_with("--profile-time="))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

/// Times `baseline` and `candidate` alternately, `rounds` times each (each closure does its
/// own setup and returns only the time of the part that counts), and prints both
/// throughputs and the ratio candidate / baseline: the median of the per-pair ratios, which
/// slow drifts of a shared machine's load affect least.
pub fn paired(label: &str, bytes: u64, rounds: usize, mut baseline: impl FnMut() -> Duration, mut candidate: impl FnMut() -> Duration) {
    if quick_run() {
        return;
    }
    let (mut base, mut cand, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let b = baseline().as_secs_f64();
        let c = candidate().as_secs_f64();
        base.push(b);
        cand.push(c);
        ratios.push(b / c);
    }
    let mib = bytes as f64 / (1024.0 * 1024.0);
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (base_min, cand_min) = (min(&base), min(&cand));
    let (base_median, cand_median) = (median(&mut base), median(&mut cand));
    let ratio = median(&mut ratios);
    println!(
        "paired {label} ({rounds} alternating rounds): baseline median {:.1} ms = {:.1} MiB/s (best {:.1} ms), \
         pipeline median {:.1} ms = {:.1} MiB/s (best {:.1} ms); throughput ratio pipeline/baseline: median of pairs {ratio:.3}, \
         of best times {:.3}",
        base_median * 1e3,
        mib / base_median,
        base_min * 1e3,
        cand_median * 1e3,
        mib / cand_median,
        cand_min * 1e3,
        base_min / cand_min
    );
}
