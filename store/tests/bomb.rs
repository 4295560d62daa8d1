//! A decompression bomb through the real store: a payload of a few KiB that expands to
//! 512 MiB, declared as 1 MiB, is refused (undecodable) with the process's peak memory
//! growing by less than [`PEAK_GROWTH_BYTES_MAX`] and at most the declared size written to
//! disk. Alone in its test binary, so the peak it reads is its own.

mod common;

use std::io::Read;

use common::{NOW, manifest, write_blocks};
use satcast_protocol::feedback::RefusalCode;
use satcast_protocol::manifest::{Compression, Delivered};
use satcast_protocol::storage::{self, StoreCompletion, StoreRequest, VerifyOutcome};
use satcast_store::{ReceiverLimits, ReceiverStore};

/// What the bomb expands to.
const EXPANDED_BYTES: u64 = 512 << 20;
/// What its manifest declares.
const DECLARED_BYTES: u64 = 1 << 20;
/// The peak memory decoding may add: the decoder's buffer and window (the frame's window
/// is 1 MiB) with a wide margin for the allocator; far below the 512 MiB the bomb expands to.
const PEAK_GROWTH_BYTES_MAX: u64 = 32 << 20;

/// The process's peak resident memory (VmHWM), in bytes.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse::<u64>().ok()).expect("kib") * 1024
}

#[test]
fn a_bomb_is_refused_with_bounded_memory_and_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _) =
        ReceiverStore::open(&dir.path().join("state"), &dir.path().join("deliver"), ReceiverLimits::default(), NOW).expect("open");
    let mut bomb = Vec::new();
    {
        // Streamed from a reader of zeros: the bomb is made without holding what it expands to.
        let mut encoder = zstd::stream::write::Encoder::new(&mut bomb, 1).expect("encoder");
        encoder.window_log(20).expect("window");
        std::io::copy(&mut std::io::repeat(0).take(EXPANDED_BYTES), &mut encoder).expect("compress");
        encoder.finish().expect("finish");
    }
    println!("bomb: {} bytes on the air expand to {EXPANDED_BYTES}, {DECLARED_BYTES} declared", bomb.len());
    let declared = Delivered { size_bytes: DECLARED_BYTES, hash: *blake3::hash(&vec![0u8; DECLARED_BYTES as usize]).as_bytes() };
    let m = satcast_protocol::manifest::Manifest { compression: Compression::Zstd(declared), ..manifest(1, "bomb.csv", 1, &bomb) };
    let signed = common::signer().sign_manifest(&m).expect("sign").to_bytes();
    let begun = storage::execute(StoreRequest::BeginObject { manifest: Box::new(m.clone()), signed_manifest: signed }, &mut store);
    assert!(matches!(begun, Some(StoreCompletion::Begun { .. })), "{begun:?}");
    write_blocks(&mut store, &m, &bomb).expect("blocks");

    let before = peak_rss_bytes();
    let verify = StoreRequest::VerifyObject {
        object_id: 1,
        size_bytes: m.size_bytes,
        expected_hash: m.object_hash,
        compression: m.compression,
        opened: None,
    };
    let outcome = storage::execute(verify, &mut store);
    let growth = peak_rss_bytes().saturating_sub(before);
    println!("peak memory grew by {growth} bytes while refusing it");
    match outcome {
        Some(StoreCompletion::ObjectVerified { outcome: VerifyOutcome::Refused(refusal), .. }) => {
            assert_eq!(refusal.code, RefusalCode::Undecodable, "{refusal}");
            assert!(refusal.detail.contains("expands beyond"), "{refusal}");
        }
        other => panic!("the bomb must be refused, got {other:?}"),
    }
    assert!(growth < PEAK_GROWTH_BYTES_MAX, "peak memory grew by {growth} bytes");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("state").join("partial")).expect("partial").flatten().collect();
    assert!(left.is_empty(), "nothing of the bomb is kept: {left:?}");
    assert!(!dir.path().join("deliver").join("codetable").join("bomb.csv").exists());
}
