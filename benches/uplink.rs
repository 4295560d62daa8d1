//! The uplink pipeline beside raw raptorq encoding of the same data, in the same run.
//!
//! - `raw_raptorq_encode`: `raptorq::SourceBlockEncoder::new` for each block of the 16 MiB
//!   payload with the OTI the uplink chooses, then `source_packets` and `repair_packets` for
//!   as many symbols per block as one carousel pass airs (K plus repair for 5% loss).
//!   (`raw_raptorq_object_encoder`, raptorq's whole-object `Encoder`, is shown for reference:
//!   it regenerates its encoding plan on every call and is the slower of the two.)
//! - `pipeline`: file on disk -> signed manifest (the uplink's `prepare`, step for step) ->
//!   the broadcast machine (FEC, interleaving, keyed-BLAKE3 tags) -> every datagram written
//!   with `send_to` into a real UDP socket on loopback, pacing off (1 Pbit/s).
//!
//! And a breakdown of the pipeline, to see where its time goes:
//! - `prepare_only`: read, hash and sign;
//! - `machine_from_memory`: the broadcast machine with the payload in memory, datagrams
//!   discarded (no file, no socket, no prepare);
//! - `protocol_fec_only`: `fec::BlockEncoder` producing the same symbols, nothing else;
//! - `tags_only`: framing and tagging as many DATA datagrams (`wire::write_data`);
//! - `udp_send_only`: `send_to` of as many 1470-byte datagrams into the loopback socket;
//! - `udp_send_gso`: the same datagrams sent with UDP segmentation offload (quinn-udp), up to
//!   44 per system call: not what the uplink does today, the evidence for a proposed fix.
//!
//! Last, the pipeline and the raw encoder are timed alternately, 7 rounds each, and the
//! median of the per-pair throughput ratios is printed (`paired ...`): the figure least
//! affected by the load of a shared machine.
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

    // The baseline: raptorq's SourceBlockEncoder per block (it shares raptorq's global cache
    // of encoding plans, as the protocol's BlockEncoder does), every source packet and the
    // same repair packets the pass airs.
    let raw_encode = || {
        let config = oti.to_raptorq();
        let mut packets = Vec::with_capacity(data_symbols as usize);
        for block in &blocks {
            let data = &payload[block.offset as usize..(block.offset + block.len) as usize];
            // raptorq wants whole symbols: the last block is zero-padded, as Encoder does.
            let padded_len = block.source_symbols as usize * usize::from(oti.symbol_size);
            let padded;
            let data = if data.len() < padded_len {
                let mut copy = data.to_vec();
                copy.resize(padded_len, 0);
                padded = copy;
                &padded[..]
            } else {
                data
            };
            let encoder = raptorq::SourceBlockEncoder::new(block.sbn, &config, black_box(data));
            packets.extend(encoder.source_packets());
            packets.extend(encoder.repair_packets(0, repair_per_block));
        }
        assert_eq!(packets.len() as u64, data_symbols);
        packets
    };
    group.bench_function("raw_raptorq_encode", |b| b.iter(|| black_box(raw_encode())));

    // For reference: raptorq's whole-object Encoder, which builds a fresh encoding plan on
    // every call instead of using the global cache, so it is slower than the baseline above.
    group.bench_function("raw_raptorq_object_encoder", |b| {
        b.iter(|| {
            let encoder = raptorq::Encoder::new(black_box(&payload), oti.to_raptorq());
            let packets = encoder.get_encoded_packets(repair_per_block);
            assert_eq!(packets.len() as u64, data_symbols);
            black_box(packets)
        })
    });

    let pipeline = || {
        let object = common::prepare_file(&path, &keys.signing());
        let mut broadcaster = common::bench_broadcaster(&keys);
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
        data
    };
    group.bench_function("pipeline", |b| b.iter(|| black_box(pipeline())));

    group.bench_function("prepare_only", |b| b.iter(|| black_box(common::prepare_file(&path, &keys.signing()).signed_manifest.len())));

    let manifest = common::manifest_for(&payload, &oti);
    let signed_manifest = keys.signing().sign_manifest(&manifest).expect("sign").to_bytes();
    group.bench_function("machine_from_memory", |b| {
        b.iter(|| {
            let source = Box::new(common::MemorySource(payload.clone()));
            let object = common::new_object(manifest.clone(), signed_manifest.clone(), source);
            let mut broadcaster = common::bench_broadcaster(&keys);
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
    // Framing and tagging every DATA datagram of the pass (`wire::write_data`), nothing else.
    let symbol_bytes: Vec<&[u8]> = payload.chunks(usize::from(oti.symbol_size)).collect();
    group.bench_function("tags_only", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(1500);
            let mut bytes = 0;
            for i in 0..data_symbols as usize {
                let symbol = symbol_bytes[i % (symbol_bytes.len() - 1)];
                satcast_protocol::wire::write_data(&mut out, &keys.network, common::OBJECT_ID, 0, i as u32, symbol);
                bytes += out.len();
            }
            black_box(bytes)
        })
    });

    // `send_to` of as many full DATA datagrams into the loopback socket, nothing else.
    let datagram = vec![0x5a; satcast_protocol::wire::HEADER_LEN + 4 + usize::from(oti.symbol_size) + satcast_protocol::wire::TAG_LEN];
    group.bench_function("udp_send_only", |b| {
        b.iter(|| {
            for _ in 0..data_symbols {
                sender.send_to(black_box(&datagram), destination).expect("send_to");
            }
        })
    });
    // The same datagrams with UDP segmentation offload: one sendmsg carries up to 44
    // equal-size datagrams (64 KiB), through quinn-udp (already in the tree via quinn). Not
    // what the uplink does today: the evidence for the fix proposed in docs/performance.md.
    let state = quinn::udp::UdpSocketState::new((&sender).into()).expect("udp state");
    let per_send = state.max_gso_segments().min(satcast_protocol::wire::DATAGRAM_BYTES_MAX / datagram.len()).max(1);
    let batch: Vec<u8> = datagram.iter().copied().cycle().take(datagram.len() * per_send).collect();
    println!("udp_send_gso: {per_send} datagrams per sendmsg");
    group.bench_function("udp_send_gso", |b| {
        b.iter(|| {
            let mut left = data_symbols as usize;
            while left > 0 {
                let n = left.min(per_send);
                let transmit = quinn::udp::Transmit {
                    destination,
                    ecn: None,
                    contents: &batch[..n * datagram.len()],
                    segment_size: (n > 1).then_some(datagram.len()),
                    src_ip: None,
                };
                state.send((&sender).into(), &transmit).expect("send");
                left -= n;
            }
        })
    });
    group.finish();

    common::paired(
        "uplink_16MiB pipeline vs raw_raptorq_encode",
        payload.len() as u64,
        7,
        || {
            let start = Instant::now();
            black_box(raw_encode());
            start.elapsed()
        },
        || {
            let start = Instant::now();
            black_box(pipeline());
            start.elapsed()
        },
    );

    drop(receiver);
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = uplink
}
criterion_main!(benches);
