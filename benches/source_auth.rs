//! What source authentication (signed SYMBOL LISTs, docs/protocol.md 7.5) costs the uplink
//! and a receiver, beside the whole machine on each side, in one run.
//!
//! Input, built once: one carousel pass of a 16 MiB object as the broadcast machine airs it
//! (manifest fragments, heartbeat, SYMBOL LISTs, DATA datagrams of 1436-byte symbols).
//!
//! - uplink `machine`: the broadcast machine airing the pass from memory, lists included;
//!   `lists only`: what the lists add to it: a truncated BLAKE3 of every symbol, the ranges,
//!   one Ed25519 signature and one tagged datagram per list.
//! - receiver `machine`: every datagram through `Reception::handle_datagram` over
//!   `MemoryStore` (tag, manifest, lists, symbols, decode, hashes), lists included;
//!   `lists only`: what the lists add to it: parsing and tag of every list, one signature
//!   check per list, a truncated BLAKE3 of every symbol.
//!
//! Each figure is the median of 7 rounds, and is also given as the share of one core the
//! work takes at 80 Mbit/s on the carrier (the pass's bytes on the air, IP and UDP included,
//! at 80 Mbit/s): list share = lists only / machine, in the same run.
//!
//! Run: `cargo bench --bench source_auth`.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use satcast_protocol::broadcast::{BroadcastConfig, Broadcaster};
use satcast_protocol::reception::{MemoryStore, Reception, ReceptionConfig};
use satcast_protocol::storage;
use satcast_protocol::wire::{self, Body, PacketType};

/// Rounds per figure; the median is printed.
const ROUNDS: usize = 7;
/// The link rate the input is aired at (see [`datagrams_for`]).
const FAST_LINK_BITS_PER_SEC: u64 = 10_000_000_000;
/// The carrier rate the shares are given at.
const CARRIER_BITS_PER_SEC: f64 = 80e6;

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn timed(mut work: impl FnMut()) -> Duration {
    median(
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                work();
                start.elapsed()
            })
            .collect(),
    )
}

/// Every datagram of one carousel pass over `payload` at 10 Gbit/s (on the virtual clock of
/// [`common::air`]).
fn datagrams_for(keys: &common::Keys, payload: &[u8]) -> Vec<Vec<u8>> {
    let oti = common::oti_for(payload.len());
    let manifest = common::manifest_for(payload, &oti);
    let signed_manifest = keys.signing().sign_manifest(&manifest).expect("sign").to_bytes();
    let config = BroadcastConfig { link_rate_bits_per_sec: FAST_LINK_BITS_PER_SEC, ..BroadcastConfig::default() };
    let mut broadcaster = Broadcaster::new(Instant::now(), config, keys.network.clone(), keys.signing());
    broadcaster
        .add_object(Instant::now(), common::new_object(manifest, signed_manifest, Box::new(common::MemorySource(payload.to_vec()))))
        .expect("add object");
    let mut out = Vec::new();
    common::air(&mut broadcaster, |d| out.push(d.to_vec()));
    out
}

fn main() {
    if common::quick_run() {
        return;
    }
    let keys = common::Keys::new();
    let payload = common::payload(common::OBJECT_BYTES);
    let datagrams = datagrams_for(&keys, &payload);
    let on_air = |d: &Vec<u8>| (d.len() + wire::IP_UDP_HEADER_BYTES) as u64;
    let bytes_on_air: u64 = datagrams.iter().map(on_air).sum();
    let lists: Vec<&Vec<u8>> = datagrams.iter().filter(|d| d[5] == PacketType::SymbolList as u8).collect();
    let data: Vec<&Vec<u8>> = datagrams.iter().filter(|d| d[5] == PacketType::Data as u8).collect();
    let list_bytes: u64 = lists.iter().map(|d| on_air(d)).sum();
    let data_bytes: u64 = data.iter().map(|d| on_air(d)).sum();
    let carrier = Duration::from_secs_f64(bytes_on_air as f64 * 8.0 / CARRIER_BITS_PER_SEC);
    println!(
        "input: {} datagrams, {} DATA ({} bytes on air), {} SYMBOL LISTs ({} bytes on air, {:.2}% of DATA's); {:.2} s of carrier at 80 Mbit/s",
        datagrams.len(),
        data.len(),
        data_bytes,
        lists.len(),
        list_bytes,
        list_bytes as f64 * 100.0 / data_bytes as f64,
        carrier.as_secs_f64()
    );

    // The symbols of each list, as (sbn, esi, bytes), in airing order.
    let symbols: Vec<(u8, u32, Vec<u8>)> = data
        .iter()
        .filter_map(|d| match wire::parse(d, &keys.network).ok()?.body {
            Body::Data { sbn, esi, symbol } => Some((sbn, esi, symbol.to_vec())),
            _ => None,
        })
        .collect();
    let per_list = symbols.len().div_ceil(lists.len().max(1)).max(1);
    let signing = keys.signing();

    let uplink_machine = timed(|| {
        black_box(datagrams_for(&keys, &payload));
    });
    let uplink_lists = timed(|| {
        let mut out = Vec::new();
        for (sequence, batch) in (1..).zip(symbols.chunks(per_list)) {
            let mut ranges = Vec::new();
            for (sbn, esi, symbol) in batch {
                wire::add_to_ranges(&mut ranges, *sbn, *esi, wire::symbol_hash(symbol));
            }
            let signed = wire::symbol_list_signed_part(signing.serial(), sequence, None, None, &ranges);
            let signature = signing.sign_symbol_list(common::OBJECT_ID, &signed);
            wire::write_symbol_list(&mut out, &keys.network, common::OBJECT_ID, &signed, &signature);
            black_box(&out);
        }
    });

    let receiver_machine = timed(|| {
        let mut config = ReceptionConfig::new(common::COUNTY.into(), keys.root.public(), keys.network.clone());
        config.seed = 1;
        let mut reception = Reception::new(config);
        let mut store = MemoryStore::default();
        let wall = common::now_unix_secs();
        let now = Instant::now();
        for datagram in &datagrams {
            reception.handle_datagram(now, wall, datagram);
            storage::drain(&mut reception, &mut store);
            while reception.poll_event().is_some() {}
        }
        let stats = reception.stats();
        assert_eq!(stats.symbols_forged + stats.symbols_unverified, 0, "every symbol was listed: {stats:?}");
        // Lists that come after the object completed are counted, not checked.
        assert_eq!(stats.symbol_lists_accepted + stats.symbol_lists_replayed, lists.len() as u64, "{stats:?}");
        black_box(stats);
    });
    let public_key = signing.certificate().body.public_key;
    let receiver_lists = timed(|| {
        for list in &lists {
            let Ok(datagram) = wire::parse(list, &keys.network) else { panic!("a list that does not parse") };
            let Body::SymbolList(parsed) = datagram.body else { panic!("not a list") };
            assert!(satcast_protocol::trust::verify_symbol_list(&public_key, datagram.object_id, parsed.signed, parsed.signature));
        }
        for (_, _, symbol) in &symbols {
            black_box(wire::symbol_hash(symbol));
        }
    });

    let share = |d: Duration| d.as_secs_f64() * 100.0 / carrier.as_secs_f64();
    for (side, machine, lists_only) in [("uplink", uplink_machine, uplink_lists), ("receiver", receiver_machine, receiver_lists)] {
        println!(
            "{side}: machine {:.1} ms ({:.1}% of a core at 80 Mbit/s), lists only {:.1} ms ({:.2}% of a core at 80 Mbit/s); list share of the machine {:.1}%",
            machine.as_secs_f64() * 1e3,
            share(machine),
            lists_only.as_secs_f64() * 1e3,
            share(lists_only),
            lists_only.as_secs_f64() * 100.0 / machine.as_secs_f64()
        );
    }
}
