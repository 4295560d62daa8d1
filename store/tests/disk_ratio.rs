//! Bytes on disk against logical bytes for 1 GiB received through the spool (issue: "sled
//! and spool bytes on disk <= 1.5 x logical bytes"). Too slow for every CI run:
//! `cargo test --release -p satcast-store --test disk_ratio -- --ignored --nocapture`.

use std::path::Path;

use satcast_protocol::fec::{self, Oti};
use satcast_protocol::manifest::{Compression, Kind, Manifest};
use satcast_protocol::reception::ReceptionStore;
use satcast_protocol::trust::{RootKey, SigningKey};
use satcast_store::{ReceiverLimits, ReceiverStore};

fn du(path: &Path) -> u64 {
    let output = std::process::Command::new("du").arg("-sb").arg(path).output().expect("du");
    String::from_utf8_lossy(&output.stdout).split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[test]
#[ignore = "writes 2 GiB; run by hand (see the module comment)"]
fn one_gibibyte_through_the_spool() {
    use rand::SeedableRng;
    let logical: u64 = 1 << 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let limits = ReceiverLimits { spool_bytes_max: 4 << 30, cache_bytes_max: 4 << 30 };
    let (mut store, _) = ReceiverStore::open(&state, &dir.path().join("deliver"), limits, 1_795_000_000).expect("open");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let root = RootKey::generate(&mut rng);
    let signer = SigningKey::generate(&mut rng, &root, 1, 0, u64::MAX / 2);
    let oti = Oti::new_for_object(logical, 1436, fec::DEFAULT_BLOCK_BYTES_MAX).expect("oti");
    let blocks = fec::blocks(&oti);
    let manifest = Manifest {
        object_id: 1,
        kind: Kind::Software,
        name: "big.bin".into(),
        version: 1,
        size_bytes: logical,
        compression: Compression::None,
        oti: oti.encode(),
        object_hash: [0; 32],
        block_hashes: vec![[0; 32]; blocks.len()],
        targets: vec!["41".into()],
        created_unix_secs: 1_795_000_000,
        expires_unix_secs: 1_795_100_000,
    };
    let signed = signer.sign_manifest(&manifest).expect("sign").to_bytes();
    store.begin_object(&manifest, &signed).expect("begin");
    let symbol = vec![0x5Au8; 1436];
    let mut symbols = 0u64;
    for block in &blocks {
        for esi in 0..block.source_symbols {
            store.add_symbol(1, block.sbn, esi, &symbol).expect("spool");
            symbols += 1;
        }
    }
    store.sync().expect("sync");
    let spooled = du(&state);
    let logical_spooled = symbols * 1436;
    println!("spooled: {spooled} bytes on disk for {logical_spooled} logical bytes: ratio {:.4}", spooled as f64 / logical_spooled as f64);
    // Decode every block: its bytes go to the partial file and its spool goes.
    let data = vec![0u8; fec::DEFAULT_BLOCK_BYTES_MAX as usize];
    for block in &blocks {
        store.write_block(1, block.sbn, block.offset, &data[..block.len as usize]).expect("write");
        store.clear_block(1, block.sbn).expect("clear");
    }
    store.sync().expect("sync");
    let decoded = du(&state);
    println!("decoded: {decoded} bytes on disk for {logical} logical bytes: ratio {:.4}", decoded as f64 / logical as f64);
    println!("index: {} bytes", store.index_bytes());
    assert!(spooled as f64 <= 1.5 * logical_spooled as f64);
    assert!(decoded as f64 <= 1.5 * logical as f64);
}
