//! Limits and full disks: a clear error, nothing already cached lost, service resumes when
//! room returns.

mod common;

use common::{NOW, Tmpfs, begin, file_hash, manifest, payload, receive, signer, write_blocks};
use satcast_store::{ReceiverLimits, ReceiverStore, StoreError};

fn cached_hashes(store: &ReceiverStore) -> Vec<[u8; 32]> {
    let mut hashes: Vec<_> = store.cached().into_iter().map(|e| e.hash).collect();
    hashes.sort();
    hashes
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

/// An object is begun only if all of it fits in the spool beside the objects in progress,
/// each counted at its full size; the error says how much it needs and how much is free.
#[test]
fn a_spool_without_room_for_the_whole_object_refuses_to_begin_it_and_says_how_much() {
    use satcast_protocol::reception::ReceptionStore;
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = ReceiverLimits { spool_bytes_max: 3 << 20, cache_bytes_max: 1 << 30 };
    let (mut store, _) = ReceiverStore::open(&dir.path().join("state"), &dir.path().join("deliver"), limits, NOW).expect("open");
    let signer = signer();
    let (a, b) = (payload(2 << 20, 1), payload(2 << 20, 2));
    let a_manifest = manifest(1, "a.bin", 1, &a);
    begin(&mut store, &signer, &a_manifest).expect("a fits");
    let b_manifest = manifest(2, "b.bin", 1, &b);
    let error = begin(&mut store, &signer, &b_manifest).expect_err("b does not fit beside a, which will need all of its 2 MiB");
    assert_eq!(error.kind(), std::io::ErrorKind::StorageFull);
    assert_eq!(error.to_string(), "needs 2.0 MiB, 1.0 MiB free under limits.spool_bytes_max");
    // a is delivered and leaves the spool: b fits now.
    write_blocks(&mut store, &a_manifest, &a).expect("blocks");
    store.commit(&a_manifest).expect("commit");
    store.discard(1).expect("discard");
    begin(&mut store, &signer, &b_manifest).expect("b fits once a is done");
}

/// A real full disk: the state folder on a 10 MB tmpfs. Needs root (CI runs as root);
/// elsewhere it says so and passes.
#[test]
fn a_full_disk_gives_a_clear_error_and_service_resumes_when_room_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let Some(_tmpfs) = Tmpfs::mount(&state, "10m") else { return };
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
    let b_manifest = manifest(2, "b.csv", 1, &b);
    begin(&mut store, &signer, &b_manifest).expect("begin again is a no-op");
    write_blocks(&mut store, &b_manifest, &b).expect("the rest of b fits now");
    let b_path = store.commit(&b_manifest).expect("b commits");
    assert_eq!(file_hash(&b_path), b_manifest.object_hash);
    assert_eq!(file_hash(&a_cached), a_manifest.object_hash);
}
