//! The receiver pipeline beside raw raptorq decoding of the same symbols, in the same run.
//!
//! Input, built once: one carousel pass of a 16 MiB object as the broadcast machine airs it
//! (manifest fragments, heartbeat, DATA datagrams of 1436-byte symbols, K plus repair for
//! 5% loss), with 5% of the DATA datagrams dropped by a seeded coin.
//!
//! - `raw_raptorq_decode`: `raptorq::Decoder` fed the surviving symbols one by one, already
//!   parsed, until it returns the object: like the machine, it decodes each block as soon as
//!   it holds K symbols, so both decode from the same symbols.
//! - `pipeline`: every datagram through `Reception::handle_datagram` (tag check, manifest
//!   verification, symbols spooled durably by `ReceiverStore` in a temporary directory,
//!   per-block decode and BLAKE3 check, block written and fsynced, whole-object hash), then
//!   `ReceiverStore::commit` on `Complete` (cache rename, delivery by copy and rename). The
//!   store is opened before the clock starts and dropped after it stops.
//!
//! And a breakdown:
//! - `pipeline_memory_store`: the same machine over `MemoryStore` (no disk at all);
//! - `raw_raptorq_decode_all_symbols` (reference): raptorq's `SourceBlockDecoder` given all
//!   of a block's symbols at once (K plus about 40 repair), which lets raptorq skip its GF(256)
//!   rows: cheaper than decoding from exactly K symbols, which the machine and the baseline do;
//!   `raw_raptorq_decode_k_plus_15` (reference) the same from the first K + 15 of each block;
//! - `protocol_decode_only`: `fec::decode_block` per block from the first K symbols of each
//!   block (those the machine decodes from), and the BLAKE3 check of each decoded block;
//! - `tag_check_only`: `wire::parse` of every datagram;
//! - `spool_only`: `Spool::append` of every symbol into a temporary directory, then
//!   `Spool::read_block` of every block;
//! - `spool_checks_only`: one spool record check (BLAKE3 of ESI and symbol) per symbol;
//! - `partial_stat_only`: one `fs::metadata` per symbol, as `ReceiverStore::add_symbol` does.
//!
//! Last, the pipeline and the raw decoder are timed alternately, 7 rounds each, and the
//! median of the per-pair throughput ratios is printed (`paired ...`): the figure least
//! affected by the load of a shared machine.
//!
//! Run: `cargo bench --bench receiver`. The ratio that matters is
//! pipeline throughput / raw_raptorq_decode throughput (target >= 0.4).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use raptorq::{EncodingPacket, PayloadId};
use satcast_protocol::fec;
use satcast_protocol::manifest::Manifest;
use satcast_protocol::reception::{MemoryStore, Reception, ReceptionConfig, ReceptionEvent, ReceptionStore};
use satcast_protocol::wire::{self, Body, PacketType};
use satcast_store::spool::Spool;
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
        reception.handle_datagram(Instant::now(), wall, datagram);
        satcast_protocol::storage::drain(&mut reception, store);
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
    let datagrams: Vec<Vec<u8>> = aired.into_iter().filter(|d| d[5] != PacketType::Data as u8 || !coin.random_bool(common::LOSS)).collect();
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

    let raw_decode = |packets: Vec<EncodingPacket>| {
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
    };
    group.bench_function("raw_raptorq_decode", |b| b.iter_batched(|| packets.clone(), raw_decode, BatchSize::PerIteration));

    // For reference: raptorq given every symbol of a block at once (K plus about 40), as
    // `SourceBlockDecoder::decode`. With that much overhead raptorq solves without its HDPC
    // rows (pure GF(2)), which is much cheaper than decoding from exactly K symbols, as the
    // machine and the baseline above do.
    let mut by_block: Vec<Vec<EncodingPacket>> = vec![Vec::new(); blocks.len()];
    for packet in &packets {
        by_block[usize::from(packet.payload_id().source_block_number())].push(packet.clone());
    }
    // And raptorq given the first K + 15 symbols of each block in arrival order: for K = 5842
    // (K' = 5896) raptorq's HDPC count H is 11, so this is K + H + 4, the least overhead that
    // lets it try the GF(2)-only solve (it needs K + H) with a small margin.
    let first_k_plus_15: Vec<Vec<EncodingPacket>> = by_block
        .iter()
        .zip(&blocks)
        .map(|(packets, block)| packets.iter().take(block.source_symbols as usize + 15).cloned().collect())
        .collect();
    group.bench_function("raw_raptorq_decode_k_plus_15", |b| {
        b.iter_batched(
            || first_k_plus_15.clone(),
            |by_block| {
                let config = oti.to_raptorq();
                let mut bytes = 0;
                for (block, packets) in blocks.iter().zip(by_block) {
                    let block_bytes = u64::from(block.source_symbols) * u64::from(oti.symbol_size);
                    let mut decoder = raptorq::SourceBlockDecoder::new(block.sbn, &config, block_bytes);
                    bytes += decoder.decode(packets).expect("raw block decode").len();
                }
                assert!(bytes >= payload.len());
                bytes
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("raw_raptorq_decode_all_symbols", |b| {
        b.iter_batched(
            || by_block.clone(),
            |by_block| {
                let config = oti.to_raptorq();
                let mut bytes = 0;
                for (block, packets) in blocks.iter().zip(by_block) {
                    let block_bytes = u64::from(block.source_symbols) * u64::from(oti.symbol_size);
                    let mut decoder = raptorq::SourceBlockDecoder::new(block.sbn, &config, block_bytes);
                    bytes += decoder.decode(packets).expect("raw block decode").len();
                }
                assert!(bytes >= payload.len());
                bytes
            },
            BatchSize::PerIteration,
        )
    });

    let open_store = || {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) =
            ReceiverStore::open(&dir.path().join("state"), &dir.path().join("deliver"), ReceiverLimits::default(), common::now_unix_secs())
                .expect("open store");
        (dir, store)
    };
    let pipeline = |(dir, mut store): (tempfile::TempDir, ReceiverStore)| {
        let manifest = receive(&keys, &datagrams, &mut store).expect("complete");
        // On `Complete` the daemon commits: cache rename, delivery copy and rename.
        let delivered = store.commit(&manifest).expect("commit");
        assert_eq!(std::fs::metadata(&delivered).expect("delivered").len(), payload.len() as u64);
        (dir, store)
    };
    group.bench_function("pipeline", |b| b.iter_batched(open_store, pipeline, BatchSize::PerIteration));

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
                // The first K symbols of each block in arrival order: the ones the machine
                // decodes from (it tries as soon as the spool holds K).
                let mut per_block: BTreeMap<u8, Vec<(u32, Vec<u8>)>> = BTreeMap::new();
                for (sbn, esi, s) in &symbols {
                    let held = per_block.entry(*sbn).or_default();
                    if held.len() < blocks[usize::from(*sbn)].source_symbols as usize {
                        held.push((*esi, s.clone()));
                    }
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
    // The tag check (`wire::parse`) of every datagram, nothing else.
    group.bench_function("tag_check_only", |b| {
        b.iter(|| {
            let mut ok = 0;
            for datagram in &datagrams {
                ok += usize::from(wire::parse(datagram, &keys.network).is_ok());
            }
            assert_eq!(ok, datagrams.len());
            ok
        })
    });

    // The durable spool alone: append every symbol (`Spool::append`, one write each), then
    // read each block back (`Spool::read_block`, as the machine does before decoding).
    group.bench_function("spool_only", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |dir| {
                let mut spool = Spool::open(dir.path(), usize::from(oti.symbol_size)).expect("spool");
                for (sbn, esi, symbol) in &symbols {
                    spool.append(*sbn, *esi, symbol).expect("append");
                }
                let mut read = 0;
                for block in &blocks {
                    read += spool.read_block(block.sbn).expect("read").len();
                }
                assert_eq!(read, symbols.len());
                dir
            },
            BatchSize::PerIteration,
        )
    });
    // One record check of the spool (BLAKE3 of ESI || symbol, as `spool::check` computes it)
    // per symbol: the spool computes it twice per symbol, at append and at read_block.
    group.bench_function("spool_checks_only", |b| {
        b.iter(|| {
            let mut acc = 0u8;
            for (_, esi, symbol) in &symbols {
                let mut hasher = blake3::Hasher::new();
                hasher.update(&esi.to_be_bytes());
                hasher.update(symbol);
                acc ^= hasher.finalize().as_bytes()[0];
            }
            acc
        })
    });

    // One `fs::metadata` of the partial file per symbol: what `ReceiverStore::add_symbol`
    // pays through `spool_bytes()` for each partial object, on every symbol.
    let stat_dir = tempfile::tempdir().expect("tempdir");
    let partial = stat_dir.path().join("0000000000000001.part");
    std::fs::write(&partial, b"partial").expect("write");
    group.bench_function("partial_stat_only", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for _ in &symbols {
                bytes += std::fs::metadata(&partial).map_or(0, |m| m.len());
            }
            bytes
        })
    });
    group.finish();

    common::paired(
        "receiver_16MiB pipeline vs raw_raptorq_decode",
        payload.len() as u64,
        7,
        || {
            let input = packets.clone();
            let start = Instant::now();
            let out = raw_decode(input);
            let elapsed = start.elapsed();
            drop(out);
            elapsed
        },
        || {
            let input = open_store();
            let start = Instant::now();
            let out = pipeline(input);
            let elapsed = start.elapsed();
            drop(out);
            elapsed
        },
    );
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = receiver
}
criterion_main!(benches);
