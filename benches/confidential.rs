//! What confidential broadcasts (issue 14) add, from the real code.
//!
//! First it prints the bytes added on the air at 2000 counties (31 provinces of 8 prefectures
//! of 8 counties) for a target of 1 county, 1 province and the nation: the AEAD tags and the
//! symbol they may add, the confidential section of the manifest (content-key wraps and the
//! sealed name) per manifest airing, and one pass of the key tree's KEY_WRAP carousel. Then
//! criterion times, on the same 16 MiB payload:
//! - `seal`: `confidential::seal_object` (the uplink's added work);
//! - `open`: `confidential::open_block` of every block (the receiver's added work);
//! - `fec_encode`: `fec::BlockEncoder` producing one carousel pass's symbols (the uplink's
//!   main work, for the ratio);
//! - `blake3`: hashing the payload (what the receiver already does per block, for the ratio).
//!
//! Run: `cargo bench --bench confidential`.

mod common;

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::{Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use satcast_protocol::broadcast::symbols_for_loss;
use satcast_protocol::confidential::{self, Secrets};
use satcast_protocol::fec::{self, BlockEncoder};
use satcast_protocol::key_tree::{self, CountySecret, KeyTree, KeyWraps, Node, SecretKey};
use satcast_protocol::manifest::Compression;
use satcast_protocol::wire;

/// The largest UDP payload at a 1500-byte MTU.
const DATAGRAM_BYTES_MAX: usize = 1472;

fn tree_of_2000(rng: &mut ChaCha20Rng) -> KeyTree {
    let mut tree = KeyTree::new(rng);
    let mut n = 0;
    'outer: for province in 11..42u32 {
        for prefecture in 1..=8u32 {
            for county in 1..=8u32 {
                if n == 2000 {
                    break 'outer;
                }
                let node = Node::county(&format!("{province:02}{prefecture:02}{county:02}")).expect("code");
                let public = CountySecret::generate(rng).public();
                tree.enroll(rng, node, public).expect("enrols");
                n += 1;
            }
        }
    }
    tree
}

fn bytes_on_air_table() {
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let tree = tree_of_2000(&mut rng);
    let wraps = tree.edge_wraps(&mut rng).expect("wraps");
    let keys = common::Keys::new();
    let signing = keys.signing();
    let per = key_tree::wraps_per_datagram(DATAGRAM_BYTES_MAX);
    let messages = KeyWraps::sign_all(&signing, tree.sequence, common::now_unix_secs(), &wraps, per).expect("signs");
    let carousel: usize = messages.iter().map(|m| m.to_bytes().len() + wire::HEADER_LEN + wire::TAG_LEN + wire::IP_UDP_HEADER_BYTES).sum();
    println!(
        "key-wrap carousel, 2000 counties: {} edges, {} KEY_WRAP datagrams of up to {per} wraps, {carousel} bytes per pass",
        wraps.len(),
        messages.len()
    );
    println!("| payload | target | wraps | section bytes | tags+padding bytes on air | added / payload (one manifest airing) |");
    for payload in [100_000usize, 1 << 20, 16 << 20] {
        let clear_oti = common::oti_for(payload);
        let clear_symbols = clear_oti.transfer_length.div_ceil(u64::from(clear_oti.symbol_size));
        let sealed_oti = confidential::sealed_oti(payload as u64, common::SYMBOL_SIZE, fec::DEFAULT_BLOCK_BYTES_MAX).expect("layout");
        let sealed_symbols = sealed_oti.transfer_length.div_ceil(u64::from(sealed_oti.symbol_size));
        let tags = (sealed_symbols - clear_symbols) as usize * wire::data_bytes_on_air(usize::from(common::SYMBOL_SIZE));
        for (label, targets) in
            [("1 county", vec!["110101".to_string()]), ("1 province", vec!["41".into()]), ("nation", vec![String::new()])]
        {
            let key = SecretKey::generate(&mut rng);
            let secrets = Secrets {
                name: "relief-roll-2026.xlsx".into(),
                plain_size: payload as u64,
                plain_hash: [0; 32],
                compression: Compression::None,
            };
            let section = confidential::seal_section(&mut rng, &tree, 1, &targets, &key, &secrets).expect("section");
            let section_bytes = section.to_bytes().len();
            let added = section_bytes + tags;
            println!(
                "| {payload} | {label} | {} | {section_bytes} | {tags} | {:.4}% |",
                section.wraps.len(),
                100.0 * added as f64 / payload as f64
            );
        }
    }
    let counties: BTreeSet<Node> = tree.counties().map(|(n, _)| *n).collect();
    assert_eq!(tree.cover(&counties).len(), 1);
}

fn cpu(c: &mut criterion::Criterion) {
    bytes_on_air_table();
    let payload = common::payload(common::OBJECT_BYTES);
    let key = SecretKey([5; 32]);
    let oti = confidential::sealed_oti(payload.len() as u64, common::SYMBOL_SIZE, fec::DEFAULT_BLOCK_BYTES_MAX).expect("layout");
    let sealed = confidential::seal_object(&key, 1, &oti, &payload).expect("seals");
    let blocks = fec::blocks(&oti);
    let mut group = c.benchmark_group("confidential_16MiB");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("seal", |b| b.iter(|| black_box(confidential::seal_object(&key, 1, &oti, &payload).expect("seals"))));
    group.bench_function("open", |b| {
        b.iter(|| {
            for block in &blocks {
                let mut bytes = sealed[block.offset as usize..(block.offset + block.len) as usize].to_vec();
                confidential::open_block(&key, 1, &oti, block.sbn, &mut bytes).expect("opens");
                black_box(bytes);
            }
        })
    });
    group.bench_function("fec_encode", |b| {
        b.iter(|| {
            for block in &blocks {
                let data = &sealed[block.offset as usize..(block.offset + block.len) as usize];
                let encoder = BlockEncoder::new(&oti, block.sbn, data).expect("encoder");
                let k = encoder.source_symbols();
                black_box(encoder.repair_symbols(k, symbols_for_loss(k, common::LOSS) - k).expect("repair"));
            }
        })
    });
    group.bench_function("blake3", |b| b.iter(|| black_box(blake3::hash(&payload))));
    group.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = cpu }
criterion_main!(benches);
