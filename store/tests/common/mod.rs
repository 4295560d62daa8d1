//! Helpers shared by the store's integration tests: a signer, payloads, manifests, taking
//! an object through the store as the reception machine would, and a real small disk.

// Each test file uses its own subset of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast_protocol::fec::{self, Oti};
use satcast_protocol::manifest::{Compression, Kind, Manifest};
use satcast_protocol::reception::ReceptionStore;
use satcast_protocol::trust::{RootKey, SigningKey};
use satcast_store::ReceiverStore;

pub const NOW: u64 = 1_795_000_000;
/// The county the test manifests target (they target province 41).
pub const COUNTY: &str = "410102";
pub const SYMBOL_SIZE: u16 = 1436;

pub fn root() -> RootKey {
    RootKey::generate(&mut ChaCha8Rng::seed_from_u64(1))
}

pub fn signer() -> SigningKey {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    SigningKey::generate(&mut rng, &root(), 1, NOW - 10, NOW + 1000)
}

pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

/// The manifest of `payload` as object `object_id`, in 1 MB blocks of 1436-byte symbols.
pub fn manifest(object_id: u64, name: &str, version: u64, payload: &[u8]) -> Manifest {
    let oti = Oti::new_for_object(payload.len() as u64, SYMBOL_SIZE, 1 << 20).expect("oti");
    let blocks = fec::blocks(&oti);
    Manifest {
        object_id,
        kind: Kind::CodeTable,
        name: name.into(),
        version,
        size_bytes: payload.len() as u64,
        compression: Compression::None,
        oti: oti.encode(),
        object_hash: *blake3::hash(payload).as_bytes(),
        block_hashes: blocks.iter().map(|b| fec::block_hash(block_of(payload, b))).collect(),
        targets: vec!["41".into()],
        created_unix_secs: NOW,
        expires_unix_secs: NOW + 100,
    }
}

pub fn block_of<'a>(payload: &'a [u8], block: &fec::Block) -> &'a [u8] {
    &payload[block.offset as usize..(block.offset + block.len) as usize]
}

/// Begins the object in the store (a no-op if it was begun), as the reception machine does.
pub fn begin(store: &mut ReceiverStore, signer: &SigningKey, manifest: &Manifest) -> std::io::Result<()> {
    let signed = signer.sign_manifest(manifest).expect("sign").to_bytes();
    store.begin_object(manifest, &signed)
}

/// Takes an object through the store as the reception machine would: begin, then every
/// verified block. Returns its manifest, or the first I/O error.
pub fn receive(
    store: &mut ReceiverStore,
    signer: &SigningKey,
    object_id: u64,
    name: &str,
    version: u64,
    payload: &[u8],
) -> std::io::Result<Manifest> {
    let manifest = manifest(object_id, name, version, payload);
    begin(store, signer, &manifest)?;
    write_blocks(store, &manifest, payload)?;
    Ok(manifest)
}

pub fn write_blocks(store: &mut ReceiverStore, manifest: &Manifest, payload: &[u8]) -> std::io::Result<()> {
    let oti = Oti::decode(&manifest.oti).expect("oti");
    for block in fec::blocks(&oti) {
        if !store.block_written(manifest.object_id, block.sbn) {
            store.write_block(manifest.object_id, block.sbn, block.offset, block_of(payload, &block))?;
        }
    }
    Ok(())
}

pub fn file_hash(path: &Path) -> [u8; 32] {
    *blake3::hash(&std::fs::read(path).expect("read")).as_bytes()
}

/// A real small disk: a tmpfs of `size` (as mount takes it, "10m") mounted on `path` and
/// unmounted when dropped. None where mounting is not allowed (it needs root; CI runs as root).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).expect("mkdir");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            println!("skipped: cannot mount a tmpfs here (needs root)");
        }
        mounted.then(|| Tmpfs(path.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` to the last byte with a file there.
pub fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 1 << 16];
    // Bounded: the disk is at most this big.
    const FILL_BYTES_MAX: usize = 1 << 30;
    for _ in 0..FILL_BYTES_MAX / chunk.len() {
        if file.write_all(&chunk).is_err() {
            return;
        }
    }
    panic!("{} did not fill up", path.display());
}
