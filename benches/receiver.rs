//! The receiver pipeline beside raw raptorq decoding of the same symbols, in the same run.
//!
//! Input, built once: one carousel pass of a 16 MiB object as the broadcast machine airs it
//! (manifest fragments, heartbeat, DATA datagrams of 1436-byte symbols, K plus repair for
//! 5% loss), with 5% of the DATA datagrams dropped by a seeded coin.
//!
//! - `raw_raptorq_decode`: `raptorq::Decoder` fed the surviving symbols, already parsed,
//!   until it returns the object.
//! - `pipeline`: every datagram through `Reception::handle_datagram` (tag check, manifest
//!   verification, symbols spooled durably by `ReceiverStore` in a temporary directory,
//!   per-block decode and BLAKE3 check, block written and fsynced, whole-object hash), then
//!   `ReceiverStore::commit` on `Complete` (cache rename, delivery by copy and rename). The
//!   store is opened before the clock starts and dropped after it stops.
//!
//! And a breakdown:
//! - `pipeline_memory_store`: the same machine over `MemoryStore` (no disk at all);
//! - `protocol_decode_only`: `fec::decode_block` per block from the same symbols.
//!
//! Run: `cargo bench --bench receiver`. The ratio that matters is
//! pipeline throughput / raw_raptorq_decode throughput (target >= 0.4).

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use raptorq::{EncodingPacket, PayloadId};
use satcast_protocol::fec;
use satcast_protocol::manifest::Manifest;
use satcast_protocol::reception::{MemoryStore, Reception, ReceptionConfig, ReceptionEvent, ReceptionStore};
use satcast_protocol::wire::{self, Body, PacketType};
use satcast_store::{ReceiverLimits, ReceiverStore};

/// Every datagram through a fresh reception machine over `store`; the manifest of the
/// object once the machine reports it complete.
fn receive(keys: &common::Keys, datagrams: &[Vec<u8>], store: &mut dyn ReceptionStore) -> Option<Manifest> {
    let mut config = ReceptionConfig::new(common::COUNTY.into(), keys.root.public(), keys.network.clone());
    config.seed = 1;
    let mut reception = Reception::new(config);
    let wall = common::now_unix_secs();
    let mut complete = None;
    for datagram in datagrams {
        reception.handle_datagram(Instant::now(), wall, datagram, store);
        while let Some(event) = reception.poll_event() {
            match event {
                ReceptionEvent::Complete { manifest } => complete = Some(*manifest),
                ReceptionEvent::StoreFailed { error, .. } => panic!("store failed: {error}"),
                ReceptionEvent::Rejected { reason, .. } => panic!("manifest rejected: {reason}"),
                ReceptionEvent::BlockPoisoned { .. } | ReceptionEvent::ObjectPoisoned { .. } => panic!("poisoned"),
                _ => {}
            }
        }
    }
    complete
}

fn receiver(c: &mut Criterion) {
    let keys = common::Keys::new();
    let payload = common::payload(common::OBJECT_BYTES);
    let oti = common::oti_for(payload.len());
    let aired = common::datagrams_for(&keys, &payload);
    let mut coin = ChaCha8Rng::seed_from_u64(5);
    let datagrams: Vec<Vec<u8>> = aired
        .into_iter()
        .filter(|d| d[5] != PacketType::Data as u8 || !coin.random_bool(common::LOSS))
        .collect();
    let mut symbols: Vec<(u8, u32, Vec<u8>)> = Vec::new();
    for datagram in &datagrams {
        if let Ok(wire::Datagram { body: Body::Data { sbn, esi, symbol }, .. }) = wire::parse(datagram, &keys.network) {
            symbols.push((sbn, esi, symbol.to_vec()));
        }
    }
    let packets: Vec<EncodingPacket> =
        symbols.iter().map(|(sbn, esi, s)| EncodingPacket::new(PayloadId::new(*sbn, *esi), s.clone())).collect();
    let blocks = fec::blocks(&oti);
    let block_hashes = common::manifest_for(&payload, &oti).block_hashes;
    println!(
        "object {} bytes: {} blocks of K={}; {} datagrams after 5% loss, {} DATA symbols",
        payload.len(),
        blocks.len(),
        blocks[0].source_symbols,
        datagrams.len(),
        symbols.len()
    );

    let mut group = c.benchmark_group("receiver_16MiB");
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(payload.len() as u64));

    group.bench_function("raw_raptorq_decode", |b| {
        b.iter_batched(
            || packets.clone(),
            |packets| {
                let mut decoder = raptorq::Decoder::new(oti.to_raptorq());
                let mut result = None;
                for packet in packets {
                    result = decoder.decode(packet);
                    if result.is_some() {
                        break;
                    }
                }
                let result = result.expect("raw decode");
                assert!(result.len() >= payload.len());
                result
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("pipeline", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let (store, _) = ReceiverStore::open(&dir.path().join("state"), &dir.path().join("deliver"), ReceiverLimits::default(), common::now_unix_secs())
                    .expect("open store");
                (dir, store)
            },
            |(dir, mut store)| {
                let manifest = receive(&keys, &datagrams, &mut store).expect("complete");
                // On `Complete` the daemon commits: cache rename, delivery copy and rename.
                let delivered = store.commit(&manifest).expect("commit");
                assert_eq!(std::fs::metadata(&delivered).expect("delivered").len(), payload.len() as u64);
                (dir, store)
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("pipeline_memory_store", |b| {
        b.iter_batched(
            MemoryStore::default,
            |mut store| {
                assert!(receive(&keys, &datagrams, &mut store).is_some());
                store
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("protocol_decode_only", |b| {
        b.iter_batched(
            || {
                let mut per_block: BTreeMap<u8, Vec<(u32, Vec<u8>)>> = BTreeMap::new();
                for (sbn, esi, s) in &symbols {
                    per_block.entry(*sbn).or_default().push((*esi, s.clone()));
                }
                per_block
            },
            |per_block| {
                let mut bytes = 0;
                for (sbn, symbols) in per_block {
                    let data = fec::decode_block(&oti, sbn, symbols).expect("decode block");
                    assert_eq!(fec::block_hash(&data), block_hashes[usize::from(sbn)]);
                    bytes += data.len();
                }
                assert_eq!(bytes, payload.len());
                bytes
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = receiver
}
criterion_main!(benches);
