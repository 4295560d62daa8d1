//! Datagram encoding and parsing (`satcast_protocol::wire`), as throughput in datagram bytes:
//! DATA datagrams carrying a full 1436-byte symbol (a 1500-byte MTU), and the MANIFEST
//! fragments of a signed manifest for a 4 GiB object (255 block hashes, several fragments).
//!
//! Run: `cargo bench --bench packets`

mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use satcast_protocol::broadcast::BroadcastConfig;
use satcast_protocol::fec::Oti;
use satcast_protocol::wire::{self, Body, ManifestAssembler};

fn data(c: &mut Criterion) {
    let keys = common::Keys::new();
    let symbol = common::payload(usize::from(common::SYMBOL_SIZE));
    let mut datagram = Vec::with_capacity(1500);
    wire::write_data(&mut datagram, &keys.network, common::OBJECT_ID, 3, 70_000, &symbol);
    assert_eq!(datagram.len() + wire::IP_UDP_HEADER_BYTES, 1498);

    let mut group = c.benchmark_group("packet/data_1436");
    group.throughput(Throughput::Bytes(datagram.len() as u64));
    let mut out = Vec::with_capacity(1500);
    group.bench_function("encode", |b| {
        b.iter(|| {
            wire::write_data(&mut out, &keys.network, black_box(common::OBJECT_ID), 3, black_box(70_000), black_box(&symbol));
            black_box(out.len())
        })
    });
    group.bench_function("parse", |b| {
        b.iter(|| {
            let parsed = wire::parse(black_box(&datagram), &keys.network).expect("parses");
            match parsed.body {
                Body::Data { esi, symbol, .. } => black_box((esi, symbol.len())),
                _ => unreachable!("a data datagram"),
            }
        })
    });
    group.finish();
}

fn manifest(c: &mut Criterion) {
    let keys = common::Keys::new();
    // The largest object the default block size allows: 255 blocks, 255 block hashes.
    let payload_len = 255 * 11_683 * usize::from(common::SYMBOL_SIZE);
    let oti = Oti::new_for_object(payload_len as u64, common::SYMBOL_SIZE, satcast_protocol::fec::DEFAULT_BLOCK_BYTES_MAX).expect("oti");
    let small = common::payload(1000);
    let mut manifest = common::manifest_for(&small, &common::oti_for(small.len()));
    manifest.size_bytes = payload_len as u64;
    manifest.oti = oti.encode();
    manifest.block_hashes = (0..oti.source_blocks).map(|i| *blake3::hash(&[i]).as_bytes()).collect();
    let signed = keys.signing().sign_manifest(&manifest).expect("sign").to_bytes();
    let datagram_bytes_max = BroadcastConfig::default().datagram_bytes_max;
    let datagrams: Vec<Vec<u8>> = wire::manifest_fragments(&signed, datagram_bytes_max)
        .iter()
        .map(|f| {
            let mut out = Vec::new();
            wire::write_manifest_fragment(&mut out, &keys.network, common::OBJECT_ID, f);
            out
        })
        .collect();
    let total: u64 = datagrams.iter().map(|d| d.len() as u64).sum();
    println!("signed manifest: {} bytes in {} fragments, {total} datagram bytes", signed.len(), datagrams.len());

    let mut group = c.benchmark_group(format!("packet/manifest_{}B_{}_fragments", signed.len(), datagrams.len()));
    group.throughput(Throughput::Bytes(total));
    // What the broadcast machine does per carousel repeat (`queue_manifest`): split, frame, tag.
    let mut out = Vec::with_capacity(1500);
    group.bench_function("encode", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for fragment in wire::manifest_fragments(black_box(&signed), datagram_bytes_max) {
                wire::write_manifest_fragment(&mut out, &keys.network, common::OBJECT_ID, &fragment);
                bytes += out.len();
            }
            black_box(bytes)
        })
    });
    group.bench_function("parse", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for datagram in &datagrams {
                match wire::parse(black_box(datagram), &keys.network).expect("parses").body {
                    Body::Manifest(fragment) => bytes += fragment.bytes.len(),
                    _ => unreachable!("a manifest datagram"),
                }
            }
            black_box(bytes)
        })
    });
    group.bench_function("parse_and_reassemble", |b| {
        b.iter(|| {
            let mut assembler = ManifestAssembler::default();
            let mut done = None;
            for datagram in &datagrams {
                if let Body::Manifest(fragment) = wire::parse(black_box(datagram), &keys.network).expect("parses").body {
                    done = assembler.add(common::OBJECT_ID, &fragment);
                }
            }
            black_box(done.expect("reassembled").len())
        })
    });
    group.finish();
}

/// What authenticating each DATA datagram's source would cost per datagram, for the three
/// candidates of docs/security.md ("Source authentication"): an Ed25519 signature per
/// datagram (sign at the uplink, verify at every county), a TESLA MAC (keyed BLAKE3, as
/// cheap as the tag), and a hash list signed ahead (one BLAKE3 of the datagram at each end,
/// and one signature per list of [`HASHES_PER_LIST`] symbols).
fn source_authentication(c: &mut Criterion) {
    use ed25519_dalek::{Signer, Verifier};
    const HASHES_PER_LIST: usize = 80;
    let keys = common::Keys::new();
    let symbol = common::payload(usize::from(common::SYMBOL_SIZE));
    let mut datagram = Vec::with_capacity(1500);
    wire::write_data(&mut datagram, &keys.network, common::OBJECT_ID, 3, 70_000, &symbol);
    let signer = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let verifier = signer.verifying_key();
    let signature = signer.sign(&datagram);
    let list: Vec<u8> = (0..HASHES_PER_LIST).flat_map(|i| blake3::hash(&[i as u8]).as_bytes()[..12].to_vec()).collect();
    let list_signature = signer.sign(&list);

    let mut group = c.benchmark_group("auth/data_1436");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ed25519_sign", |b| b.iter(|| black_box(signer.sign(black_box(&datagram)))));
    group.bench_function("ed25519_verify", |b| b.iter(|| verifier.verify(black_box(&datagram), black_box(&signature)).expect("verifies")));
    group.bench_function("tesla_mac", |b| b.iter(|| black_box(blake3::keyed_hash(&[9; 32], black_box(&datagram)))));
    group.bench_function("hash_list_per_datagram", |b| {
        let mut n = 0usize;
        b.iter(|| {
            // One hash of the datagram, and a 1/HASHES_PER_LIST share of the list's signature.
            let hash = blake3::hash(black_box(&datagram));
            n += 1;
            if n % HASHES_PER_LIST == 0 {
                verifier.verify(&list, &list_signature).expect("verifies");
            }
            black_box(hash)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = data, manifest, source_authentication
}
criterion_main!(benches);
