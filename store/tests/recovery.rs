//! Recovery without a restart from a full disk mid-record, and after a crash inside
//! `ReceiverStore::commit`: what the store reports, and that no claimed block lacks data.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{COUNTY, NOW, Tmpfs, file_hash, fill, manifest, payload, receive, root, signer, write_blocks};
use satcast_protocol::fec::{self, BlockEncoder, Oti};
use satcast_protocol::manifest::Manifest;
use satcast_protocol::reception::{Reception, ReceptionConfig, ReceptionEvent, ReceptionStore};
use satcast_protocol::storage;
use satcast_protocol::trust::NetworkKey;
use satcast_store::{ReceiverLimits, ReceiverStore};

/// The field defect: a full disk tore the last spool record, every symbol appended after it
/// was off the record grid, and the block never decoded until a restart.
#[test]
fn a_full_disk_mid_record_costs_no_symbol_appended_after_room_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let Some(_tmpfs) = Tmpfs::mount(&state, "10m") else { return };
    let (mut store, _) = ReceiverStore::open(&state, &dir.path().join("deliver"), ReceiverLimits::default(), NOW).expect("open");
    // One block of 100 source symbols.
    let data = payload(100 * usize::from(common::SYMBOL_SIZE), 3);
    let manifest = manifest(5, "d.csv", 1, &data);
    common::begin(&mut store, &signer(), &manifest).expect("begin");
    let oti = Oti::decode(&manifest.oti).expect("oti");
    let encoder = BlockEncoder::new(&oti, 0, &data).expect("encoder");
    let symbol = |esi: u32| {
        let mut out = Vec::new();
        encoder.symbol_into(esi, &mut out).expect("symbol");
        out
    };
    let mut kept = Vec::new();
    // Two records leave the file's last page part full: the next record fits only in part.
    for esi in 0..2 {
        assert!(store.add_symbol(5, 0, esi, &symbol(esi)).expect("room"));
        kept.push(esi);
    }
    let filler = state.join("other-program.log");
    fill(&filler);
    let mut failed = 0;
    for esi in 2..12 {
        match store.add_symbol(5, 0, esi, &symbol(esi)) {
            Ok(added) => {
                assert!(added);
                kept.push(esi);
            }
            Err(error) => {
                assert_eq!(error.kind(), std::io::ErrorKind::StorageFull, "{error}");
                failed += 1;
            }
        }
        assert_eq!(store.symbol_count(5, 0), kept.len() as u32, "esi {esi}: only what was written counts");
    }
    assert!(failed > 0, "the disk did not fill up");

    std::fs::remove_file(&filler).expect("room returns");
    for esi in 12..120 {
        assert!(store.add_symbol(5, 0, esi, &symbol(esi)).expect("room again"));
        kept.push(esi);
    }
    // Without a restart: every symbol appended after room returned is readable and counted.
    assert_eq!(store.symbol_count(5, 0), kept.len() as u32);
    let read = store.symbols(5, 0).expect("read");
    assert_eq!(read.iter().map(|(esi, _)| *esi).collect::<Vec<_>>(), kept);
    assert_eq!(fec::decode_block(&oti, 0, read).expect("decodes"), data);
}

fn reception() -> Reception {
    Reception::new(ReceptionConfig::new(COUNTY.into(), root().public(), NetworkKey([7; 32])))
}

/// Resumes the resumable object (whose manifest names `object_hash`) as the daemon does at
/// start, carrying out the machine's storage requests; the events that follow.
fn resume_all(store: &mut ReceiverStore, object_hash: &[u8; 32]) -> Vec<ReceptionEvent> {
    let mut reception = reception();
    for (object_id, signed) in store.resumable() {
        let held = storage::held(store, object_id, object_hash);
        reception.resume(Instant::now(), NOW, object_id, &signed, &held);
    }
    storage::drain(&mut reception, store);
    std::iter::from_fn(|| reception.poll_event()).collect()
}

/// Receives object 9 whole, then leaves on disk what a crash inside `commit` after its
/// rename into the cache left in the field: the object in the cache, the partial file gone,
/// the spool and the index's block claims kept. Returns the manifest and the cached path.
fn crash_after_the_rename_into_the_cache(state: &Path, deliver: &Path, data: &[u8]) -> (Manifest, PathBuf) {
    let (mut store, _) = ReceiverStore::open(state, deliver, ReceiverLimits::default(), NOW).expect("open");
    let manifest = receive(&mut store, &signer(), 9, "c.csv", 1, data).expect("receive");
    store.sync().expect("sync");
    drop(store);
    let cached = state.join("objects").join(hex::encode(manifest.object_hash));
    std::fs::copy(state.join("spool").join(format!("{:016x}", 9)).join("manifest"), cached.with_extension("manifest")).expect("manifest");
    std::fs::rename(state.join("partial").join(format!("{:016x}.part", 9)), &cached).expect("rename");
    (manifest, cached)
}

#[test]
fn a_partial_whose_object_is_already_cached_completes_from_the_cache_without_a_byte_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (state, deliver) = (dir.path().join("state"), dir.path().join("deliver"));
    let data = payload(2_500_000, 4);
    let (manifest, cached) = crash_after_the_rename_into_the_cache(&state, &deliver, &data);

    let (mut store, report) = ReceiverStore::open(&state, &deliver, ReceiverLimits::default(), NOW).expect("reopen");
    assert_eq!((report.partial_objects, report.partials_cached, report.claims_dropped), (1, 1, 3), "{report:?}");
    assert_eq!(store.cached_object(&manifest.object_hash), Some(cached.clone()), "the store says where it is");
    assert!(store.has_cached(&manifest.object_hash));
    let held = storage::held(&store, 9, &manifest.object_hash);
    assert!(held.in_cache && held.verified.is_empty(), "no claim on the partial file that is gone: {held:?}");
    let events = resume_all(&mut store, &manifest.object_hash);
    assert!(!events.iter().any(|e| matches!(e, ReceptionEvent::StoreFailed { .. })), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, ReceptionEvent::Complete { .. })), "completes without a symbol: {events:?}");
    let delivered = store.commit(&manifest).expect("commit from the cache");
    assert_eq!(file_hash(&delivered), manifest.object_hash);
    drop(store);
    let (store, report) = ReceiverStore::open(&state, &deliver, ReceiverLimits::default(), NOW).expect("reopen");
    assert_eq!(report.partial_objects, 0, "nothing left to resume");
    assert!(store.resumable().is_empty());
    assert!(store.cached().iter().any(|e| e.hash == manifest.object_hash), "the cache lists it");
}

/// Blocks the index claims but the partial file does not hold are collected again.
#[test]
fn claims_the_partial_file_does_not_back_are_dropped_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (state, deliver) = (dir.path().join("state"), dir.path().join("deliver"));
    let open = || ReceiverStore::open(&state, &deliver, ReceiverLimits::default(), NOW).expect("open");
    let (mut store, _) = open();
    let data = payload(2_500_000, 5);
    let manifest = receive(&mut store, &signer(), 11, "e.csv", 1, &data).expect("receive");
    let blocks = fec::blocks(&Oti::decode(&manifest.oti).expect("oti"));
    assert_eq!(blocks.len(), 3);
    drop(store);
    let partial = state.join("partial").join(format!("{:016x}.part", 11));
    let file = std::fs::OpenOptions::new().write(true).open(&partial).expect("partial");
    file.set_len(blocks[1].offset + 10).expect("cut block 1 short");
    drop(file);

    let (store, report) = open();
    assert_eq!(report.claims_dropped, 2, "{report:?}");
    let written: Vec<bool> = blocks.iter().map(|b| store.block_written(11, b.sbn)).collect();
    assert_eq!(written, vec![true, false, false], "only block 0 is still in the partial file");
    drop(store);
    std::fs::remove_file(&partial).expect("remove the partial file");
    let (mut store, _) = open();
    assert!(blocks.iter().all(|b| !store.block_written(11, b.sbn)), "no partial file, no block");

    write_blocks(&mut store, &manifest, &data).expect("collected again");
    assert_eq!(store.object_hash(11, manifest.size_bytes).expect("hash"), manifest.object_hash);
    assert_eq!(file_hash(&store.commit(&manifest).expect("commit")), manifest.object_hash);
}
