//! The uplink pipeline beside raw raptorq encoding of the same data, in the same run.
//!
//! - `raw_raptorq_encode`: `raptorq::Encoder::new` over the 16 MiB payload with the OTI the
//!   uplink chooses, then `get_encoded_packets` for as many symbols per block as one
//!   carousel pass airs (K plus repair for 5% loss).
//! - `pipeline`: file on disk -> signed manifest (the uplink's `prepare`, step for step) ->
//!   the broadcast machine (FEC, interleaving, keyed-BLAKE3 tags) -> every datagram written
//!   with `send_to` into a real UDP socket on loopback, pacing off (1 Pbit/s).
//!
//! And a breakdown of the pipeline, to see where its time goes:
//! - `prepare_only`: read, hash and sign;
//! - `machine_from_memory`: the broadcast machine with the payload in memory, datagrams
//!   discarded (no file, no socket, no prepare);
//! - `protocol_fec_only`: `fec::BlockEncoder` producing the same symbols, nothing else.
//!
//! Run: `cargo bench --bench uplink`. The ratio that matters is
//! pipeline throughput / raw_raptorq_encode throughput (target >= 0.5).

mod common;

use std::hint::black_box;
use std::io::Write;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use satcast_protocol::broadcast::symbols_for_loss;
use satcast_protocol::fec::{self, BlockEncoder};
use satcast_protocol::wire::PacketType;

fn uplink(c: &mut Criterion) {
    let keys = common::Keys::new();
    let payload = common::payload(common::OBJECT_BYTES);
    let oti = common::oti_for(payload.len());
    let blocks = fec::blocks(&oti);
    let k = blocks[0].source_symbols;
    assert!(blocks.iter().all(|b| b.source_symbols == k), "raw raptorq needs one repair count for every block");
    let repair_per_block = symbols_for_loss(k, common::LOSS) - k;
    let data_symbols = common::symbols_per_pass(&oti);
    println!(
        "object {} bytes: {} blocks of K={k}, T={}; {data_symbols} symbols per pass ({repair_per_block} repair per block)",
        payload.len(),
        blocks.len(),
        oti.symbol_size
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("payload");
    let mut file = std::fs::File::create(&path).expect("create payload");
    file.write_all(&payload).expect("write payload");
    file.sync_all().expect("sync payload");
    drop(file);

    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
    let destination = receiver.local_addr().expect("receiver address");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind sender");

    let mut group = c.benchmark_group("uplink_16MiB");
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(payload.len() as u64));

    group.bench_function("raw_raptorq_encode", |b| {
        b.iter(|| {
            let encoder = raptorq::Encoder::new(black_box(&payload), oti.to_raptorq());
            let packets = encoder.get_encoded_packets(repair_per_block);
            assert_eq!(packets.len() as u64, data_symbols);
            black_box(packets)
        })
    });

    group.bench_function("pipeline", |b| {
        b.iter(|| {
            let object = common::prepare_file(&path, &keys.signing());
            let mut broadcaster = common::unpaced_broadcaster(&keys);
            broadcaster.add_object(Instant::now(), object).expect("add object");
            let mut data = 0u64;
            let mut failed = 0u64;
            common::air(&mut broadcaster, |datagram| {
                if datagram[5] == PacketType::Data as u8 {
                    data += 1;
                }
                if sender.send_to(datagram, destination).is_err() {
                    failed += 1;
                }
            });
            assert_eq!(data, data_symbols);
            assert_eq!(failed, 0, "send_to failed");
            black_box(data)
        })
    });

    group.bench_function("prepare_only", |b| {
        b.iter(|| black_box(common::prepare_file(&path, &keys.signing()).signed_manifest.len()))
    });

    let manifest = common::manifest_for(&payload, &oti);
    let signed_manifest = keys.signing().sign_manifest(&manifest).expect("sign").to_bytes();
    group.bench_function("machine_from_memory", |b| {
        b.iter(|| {
            let source = Box::new(common::MemorySource(payload.clone()));
            let object = common::new_object(manifest.clone(), signed_manifest.clone(), source);
            let mut broadcaster = common::unpaced_broadcaster(&keys);
            broadcaster.add_object(Instant::now(), object).expect("add object");
            let mut bytes = 0u64;
            common::air(&mut broadcaster, |datagram| bytes += datagram.len() as u64);
            black_box(bytes)
        })
    });

    group.bench_function("protocol_fec_only", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(1500);
            let mut symbols = 0u64;
            for block in &blocks {
                let data = &payload[block.offset as usize..(block.offset + block.len) as usize];
                let encoder = BlockEncoder::new(&oti, block.sbn, data).expect("encoder");
                for esi in 0..k + repair_per_block {
                    out.clear();
                    encoder.symbol_into(esi, &mut out).expect("symbol");
                    symbols += 1;
                }
            }
            assert_eq!(symbols, data_symbols);
            black_box(symbols)
        })
    });
    group.finish();
    drop(receiver);
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = uplink
}
criterion_main!(benches);
