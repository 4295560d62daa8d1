//! Limits and full disks: a clear error, nothing already cached lost, service resumes when
//! room returns.

use std::path::Path;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast_protocol::fec::{self, Oti};
use satcast_protocol::manifest::{Compression, Kind, Manifest};
use satcast_protocol::reception::ReceptionStore;
use satcast_protocol::trust::{RootKey, SigningKey};
use satcast_store::{ReceiverLimits, ReceiverStore, StoreError};

const NOW: u64 = 1_795_000_000;

fn signer() -> SigningKey {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let root = RootKey::generate(&mut rng);
    SigningKey::generate(&mut rng, &root, 1, NOW - 10, NOW + 1000)
}

fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

/// Takes an object through the store as the reception machine would: begin, then every
/// verified block. Returns its manifest, or the first I/O error.
fn receive(
    store: &mut ReceiverStore,
    signer: &SigningKey,
    object_id: u64,
    name: &str,
    version: u64,
    payload: &[u8],
) -> std::io::Result<Manifest> {
    let oti = Oti::new_for_object(payload.len() as u64, 1436, 1 << 20).expect("oti");
    let blocks = fec::blocks(&oti);
    let slice = |b: &fec::Block| &payload[b.offset as usize..(b.offset + b.len) as usize];
    let manifest = Manifest {
        object_id,
        kind: Kind::CodeTable,
        name: name.into(),
        version,
        size_bytes: payload.len() as u64,
        compression: Compression::None,
        oti: oti.encode(),
        object_hash: *blake3::hash(payload).as_bytes(),
        block_hashes: blocks.iter().map(|b| fec::block_hash(slice(b))).collect(),
        targets: vec!["41".into()],
        created_unix_secs: NOW,
        expires_unix_secs: NOW + 100,
    };
    let signed = signer.sign_manifest(&manifest).expect("sign").to_bytes();
    store.begin_object(&manifest, &signed)?;
    write_blocks(store, &manifest, payload)?;
    Ok(manifest)
}

fn write_blocks(store: &mut ReceiverStore, manifest: &Manifest, payload: &[u8]) -> std::io::Result<()> {
    let oti = Oti::decode(&manifest.oti).expect("oti");
    for block in fec::blocks(&oti) {
        if !store.block_written(manifest.object_id, block.sbn) {
            store.write_block(
                manifest.object_id,
                block.sbn,
                block.offset,
                &payload[block.offset as usize..(block.offset + block.len) as usize],
            )?;
        }
    }
    Ok(())
}

fn cached_hashes(store: &ReceiverStore) -> Vec<[u8; 32]> {
    let mut hashes: Vec<_> = store.cached().into_iter().map(|e| e.hash).collect();
    hashes.sort();
    hashes
}

fn file_hash(path: &Path) -> [u8; 32] {
    *blake3::hash(&std::fs::read(path).expect("read")).as_bytes()
}

#[test]
fn a_full_cache_refuses_clearly_keeps_what_it_has_and_resumes_when_a_version_is_superseded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = ReceiverLimits { spool_bytes_max: 1 << 30, cache_bytes_max: 5_000_000 };
    let (mut store, _) = ReceiverStore::open(&dir.path().join("state"), &dir.path().join("deliver"), limits, NOW).expect("open");
    let signer = signer();
    let (a1, b, a2) = (payload(3_000_000, 1), payload(3_000_000, 2), payload(1_000_000, 3));

    let a1_manifest = receive(&mut store, &signer, 1, "a.csv", 1, &a1).expect("receive a v1");
    let a1_path = store.commit(&a1_manifest).expect("a v1 fits");
    let b_manifest = receive(&mut store, &signer, 2, "b.csv", 1, &b).expect("receive b");
    let error = store.commit(&b_manifest).expect_err("b does not fit next to a v1");
    assert!(matches!(error, StoreError::CacheFull { needed: 3_000_000, .. }), "{error}");
    assert!(error.to_string().contains("cache full"), "{error}");
    assert_eq!(file_hash(&a1_path), a1_manifest.object_hash, "a v1 is intact");
    assert_eq!(cached_hashes(&store), vec![a1_manifest.object_hash]);

    // A newer version of a.csv arrives: a v1 is superseded and may go to make room for b.
    let a2_manifest = receive(&mut store, &signer, 3, "a.csv", 2, &a2).expect("receive a v2");
    store.commit(&a2_manifest).expect("a v2 fits");
    let b_path = store.commit(&b_manifest).expect("retried, b now fits");
    assert_eq!(file_hash(&b_path), b_manifest.object_hash);
    let mut expected = vec![a2_manifest.object_hash, b_manifest.object_hash];
    expected.sort();
    assert_eq!(cached_hashes(&store), expected, "the latest version of each name is kept");
}

/// A real full disk: the state folder on a 10 MB tmpfs. Needs root (CI runs as root);
/// elsewhere it says so and passes.
#[test]
fn a_full_disk_gives_a_clear_error_and_service_resumes_when_room_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=10m", "tmpfs"])
        .arg(&state)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        println!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&state);
    let (mut store, _) = ReceiverStore::open(&state, &dir.path().join("deliver"), ReceiverLimits::default(), NOW).expect("open");
    let signer = signer();
    let a = payload(3_000_000, 1);
    let a_manifest = receive(&mut store, &signer, 1, "a.csv", 1, &a).expect("receive a");
    let a_cached = state.join("objects").join(hex::encode(a_manifest.object_hash));
    store.commit(&a_manifest).expect("a fits");
    // Something else fills the disk.
    let filler = state.join("other-program.log");
    std::fs::write(&filler, vec![0u8; 3_000_000]).expect("filler");

    let b = payload(6_000_000, 2);
    let error = receive(&mut store, &signer, 2, "b.csv", 1, &b).expect_err("the disk fills up");
    assert_eq!(error.kind(), std::io::ErrorKind::StorageFull, "{error}");
    assert!(error.to_string().contains("No space left"), "{error}");
    assert_eq!(file_hash(&a_cached), a_manifest.object_hash, "a is intact");

    std::fs::remove_file(&filler).expect("room returns");
    let b_manifest = store_manifest_of(&mut store, &signer, &b);
    write_blocks(&mut store, &b_manifest, &b).expect("the rest of b fits now");
    let b_path = store.commit(&b_manifest).expect("b commits");
    assert_eq!(file_hash(&b_path), b_manifest.object_hash);
    assert_eq!(file_hash(&a_cached), a_manifest.object_hash);
}

/// The manifest `receive` built for `b` (object 2), rebuilt the same way.
fn store_manifest_of(store: &mut ReceiverStore, signer: &SigningKey, b: &[u8]) -> Manifest {
    let oti = Oti::new_for_object(b.len() as u64, 1436, 1 << 20).expect("oti");
    let blocks = fec::blocks(&oti);
    let manifest = Manifest {
        object_id: 2,
        kind: Kind::CodeTable,
        name: "b.csv".into(),
        version: 1,
        size_bytes: b.len() as u64,
        compression: Compression::None,
        oti: oti.encode(),
        object_hash: *blake3::hash(b).as_bytes(),
        block_hashes: blocks.iter().map(|x| fec::block_hash(&b[x.offset as usize..(x.offset + x.len) as usize])).collect(),
        targets: vec!["41".into()],
        created_unix_secs: NOW,
        expires_unix_secs: NOW + 100,
    };
    let signed = signer.sign_manifest(&manifest).expect("sign").to_bytes();
    store.begin_object(&manifest, &signed).expect("begin again is a no-op");
    manifest
}
