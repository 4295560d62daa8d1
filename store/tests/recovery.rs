//! Recovery without a restart from a full disk mid-record.

mod common;

use common::{NOW, Tmpfs, fill, manifest, payload, signer};
use satcast_protocol::fec::{self, BlockEncoder, Oti};
use satcast_protocol::reception::ReceptionStore;
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
