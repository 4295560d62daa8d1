//! Coded payloads (issue 16) through the real store: a compressed object and a patch are
//! delivered as their signed delivered bytes; a patch without its base, or with a base
//! corrupted on disk, is refused for good (no_base) and nothing is delivered; a payload that
//! expands beyond its declared size is refused (undecodable).

mod common;

use common::{NOW, begin, manifest, payload, signer, write_blocks};
use satcast_protocol::codec;
use satcast_protocol::feedback::RefusalCode;
use satcast_protocol::manifest::{Compression, Delivered, Manifest};
use satcast_protocol::storage::{self, StoreCompletion, StoreRequest, VerifyOutcome};
use satcast_store::{ReceiverLimits, ReceiverStore};

/// A code table: lines of digits and names, compressible like the real one.
fn table(lines: usize, seed: u64) -> Vec<u8> {
    let noise = payload(lines * 4, seed);
    let mut out = Vec::new();
    for (i, n) in noise.chunks(4).enumerate() {
        out.extend_from_slice(format!("{:06},县{:02x}{:02x},{}\n", 110_000 + i, n[0], n[1], n[2] % 7).as_bytes());
    }
    out
}

/// The manifest of `aired` (the bytes on the air) declaring `compression`.
fn coded_manifest(object_id: u64, version: u64, aired: &[u8], compression: Compression) -> Manifest {
    Manifest { compression, ..manifest(object_id, "divisions.csv", version, aired) }
}

fn delivered(bytes: &[u8]) -> Delivered {
    Delivered { size_bytes: bytes.len() as u64, hash: *blake3::hash(bytes).as_bytes() }
}

/// Begins (through the executor, as the machine would), writes every block, verifies.
fn receive(store: &mut ReceiverStore, manifest: &Manifest, aired: &[u8]) -> Option<StoreCompletion> {
    let signed = signer().sign_manifest(manifest).expect("sign").to_bytes();
    let begun = storage::execute(StoreRequest::BeginObject { manifest: Box::new(manifest.clone()), signed_manifest: signed }, store);
    if !matches!(begun, Some(StoreCompletion::Begun { .. })) {
        return begun;
    }
    write_blocks(store, manifest, aired).expect("blocks");
    let verify = StoreRequest::VerifyObject {
        object_id: manifest.object_id,
        size_bytes: manifest.size_bytes,
        expected_hash: manifest.object_hash,
        compression: manifest.compression.clone(),
        opened: None,
    };
    storage::execute(verify, store)
}

fn open(dir: &std::path::Path) -> ReceiverStore {
    ReceiverStore::open(&dir.join("state"), &dir.join("deliver"), ReceiverLimits::default(), NOW).expect("open").0
}

fn refusal_code(completion: Option<StoreCompletion>) -> Option<RefusalCode> {
    match completion {
        Some(StoreCompletion::BeginRefused { refusal, .. }) => Some(refusal.code),
        Some(StoreCompletion::ObjectVerified { outcome: VerifyOutcome::Refused(refusal), .. }) => Some(refusal.code),
        _ => None,
    }
}

#[test]
fn a_compressed_object_then_a_patch_deliver_their_signed_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(dir.path());
    let v1 = table(20_000, 1);
    let mut compressed = Vec::new();
    codec::compress(&mut &v1[..], v1.len() as u64, 19, &mut compressed).expect("compress");
    let m1 = coded_manifest(1, 1, &compressed, Compression::Zstd(delivered(&v1)));
    let verified = receive(&mut store, &m1, &compressed);
    assert!(matches!(verified, Some(StoreCompletion::ObjectVerified { outcome: VerifyOutcome::Verified, .. })), "{verified:?}");
    let path = store.commit(&m1).expect("commit");
    assert_eq!(std::fs::read(&path).expect("delivered"), v1);
    assert!(store.cached_object(&m1.delivered_hash()).is_some(), "cached by what it delivers");

    let mut v2 = v1.clone();
    v2[5000..5006].copy_from_slice(b"999999");
    v2.extend_from_slice("659999,新设县,1\n".as_bytes());
    let patch = codec::make_patch(&v1, &v2, 19).expect("patch");
    let m2 = coded_manifest(2, 2, &patch, Compression::ZstdPatch { base_hash: m1.delivered_hash(), delivered: delivered(&v2) });
    let verified = receive(&mut store, &m2, &patch);
    assert!(matches!(verified, Some(StoreCompletion::ObjectVerified { outcome: VerifyOutcome::Verified, .. })), "{verified:?}");
    let path = store.commit(&m2).expect("commit");
    assert_eq!(std::fs::read(&path).expect("delivered"), v2, "the patch applied byte-exact");
    println!("v1 {} bytes compressed to {}; v2 as a patch: {} bytes", v1.len(), compressed.len(), patch.len());
}

#[test]
fn a_patch_without_its_base_or_with_a_corrupted_one_is_refused_and_nothing_is_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(dir.path());
    let v1 = table(5_000, 2);
    let mut v2 = v1.clone();
    v2[100] = b'7';
    let patch = codec::make_patch(&v1, &v2, 19).expect("patch");
    let coded = Compression::ZstdPatch { base_hash: *blake3::hash(&v1).as_bytes(), delivered: delivered(&v2) };

    // Never received the base: refused before a symbol is kept.
    let m2 = coded_manifest(2, 2, &patch, coded.clone());
    assert_eq!(refusal_code(receive(&mut store, &m2, &patch)), Some(RefusalCode::NoBase));

    // The base cached, then corrupted on disk (same size): found at decode time, evicted.
    let m1 = manifest(1, "divisions.csv", 1, &v1);
    begin(&mut store, &signer(), &m1).expect("begin");
    write_blocks(&mut store, &m1, &v1).expect("blocks");
    store.commit(&m1).expect("commit");
    let cached = store.cached_object(&m1.object_hash).expect("cached");
    let mut bytes = std::fs::read(&cached).expect("read");
    bytes[10] ^= 1;
    std::fs::write(&cached, &bytes).expect("corrupt");
    let m3 = coded_manifest(3, 2, &patch, coded);
    assert_eq!(refusal_code(receive(&mut store, &m3, &patch)), Some(RefusalCode::NoBase));
    assert!(store.cached_object(&m1.object_hash).is_none(), "the corrupted base is evicted");
    let deliver = dir.path().join("deliver").join("codetable").join("divisions.csv");
    assert_eq!(std::fs::read(&deliver).expect("v1 still delivered"), v1, "v2 was never delivered wrong");
    assert!(std::fs::read_dir(dir.path().join("state").join("partial")).expect("partial").next().is_none(), "nothing kept");
}

#[test]
fn a_payload_decoding_to_other_bytes_or_past_its_declared_size_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(dir.path());
    let data = table(2_000, 3);
    let mut compressed = Vec::new();
    codec::compress(&mut &data[..], data.len() as u64, 19, &mut compressed).expect("compress");
    let wrong = Delivered { size_bytes: data.len() as u64, hash: [7; 32] };
    let m = coded_manifest(1, 1, &compressed, Compression::Zstd(wrong));
    assert_eq!(refusal_code(receive(&mut store, &m, &compressed)), Some(RefusalCode::Undecodable));
    let small = Delivered { size_bytes: 1000, hash: *blake3::hash(&data[..1000]).as_bytes() };
    let m = coded_manifest(2, 1, &compressed, Compression::Zstd(small));
    assert_eq!(refusal_code(receive(&mut store, &m, &compressed)), Some(RefusalCode::Undecodable));
    assert!(std::fs::read_dir(dir.path().join("state").join("partial")).expect("partial").next().is_none(), "nothing kept");
}
