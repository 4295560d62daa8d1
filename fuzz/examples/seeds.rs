//! Writes the seed corpus, `fuzz/corpus/<target>/<name>`: the test vectors of
//! docs/protocol.md section 12 (read from the document's fenced blocks) and a few valid
//! examples built with the satcast code, laid out as each structured target reads its input.
//! Deterministic: run it again after a format change and commit the result.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```
//!
//! Each structured seed is also run through its target here, and the generator fails unless
//! it reaches what it was written for (for example, the reception seeds must complete an
//! object), so a change to a harness's input layout cannot silently leave its seeds shallow.

use std::collections::BTreeMap;
use std::path::Path;

use satcast_fuzz::harness::{self, op};
use satcast_protocol::fec::Oti;
use satcast_protocol::feedback::{Feedback, FeedbackMessage};
use satcast_protocol::trust::{Heartbeat, Revocation};
use satcast_protocol::wire;

/// The fenced ```` ```hex name ```` and ```` ```text name ```` blocks of the document.
fn vectors() -> BTreeMap<String, (bool, String)> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md")).expect("read docs/protocol.md");
    let mut out = BTreeMap::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(header) = line.strip_prefix("```") else { continue };
        let mut words = header.split_whitespace();
        let (Some(kind), Some(name)) = (words.next(), words.next()) else { continue };
        let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        let is_hex = kind == "hex";
        let text = if is_hex { body.concat() } else { body.join("\n") + "\n" };
        out.insert(name.to_owned(), (is_hex, text));
    }
    out
}

fn hex(vectors: &BTreeMap<String, (bool, String)>, name: &str) -> Vec<u8> {
    let (is_hex, text) = vectors.get(name).unwrap_or_else(|| panic!("vector {name} missing"));
    assert!(is_hex, "{name} is not a hex block");
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit")).collect()
}

/// Writes one seed, replacing any older file of that name.
fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

/// Builds structured input byte by byte.
#[derive(Default)]
struct Bytes(Vec<u8>);

impl Bytes {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn chunk(&mut self, bytes: &[u8]) -> &mut Self {
        self.u16(bytes.len() as u16);
        self.0.extend_from_slice(bytes);
        self
    }
}

/// The reception MANIFEST operation, all flags clear: a good manifest for object `id`
/// (1..=16) of `f` bytes with symbol size 4 * (1 + `t`) and `blocks` symbols per block.
fn good_manifest(b: &mut Bytes, id: u8, f: u16, t: u8, per_block: u8, flags: u8) {
    b.u8(op::MANIFEST).u8(flags).u8(0); // flags, more
    b.u8(0).u8(id - 1); // no existing object picked; id
    b.u8(2).u8(0).u8(3); // kind codetable, name divisions.csv, version 3
    b.u16(f - 1).u8(t).u8(per_block - 1).u8(7); // F, T, block size, payload seed
    b.u8(0).u8(1).u16(360); // targets ["41"], created a minute ago, expires in an hour
    if flags & 1 != 0 {
        b.u8(1); // the poisoned block
    }
    if flags & 64 != 0 {
        b.u8(0); // expires now
    }
    b.u16(400); // fragment room
}

/// The reception BURST operation: `count` genuine symbols from ESI `first` for every block
/// of object `index`, nothing lost.
fn burst(b: &mut Bytes, index: u8, first: u8, count: u8) {
    b.u8(op::BURST).u8(index).u8(0).u8(first).u8(count - 1).u64(0);
}

fn main() {
    let vectors = vectors();
    let datagrams = [
        "data-source-datagram",
        "data-repair-datagram",
        "manifest-datagram-0",
        "manifest-datagram-1",
        "manifest-datagram-2",
        "heartbeat-datagram",
        "round-datagram",
        "key-wrap-datagram",
        "network-key-datagram",
        "symbol-list-datagram",
    ];

    // wire_parse: every vector datagram as is.
    for name in datagrams {
        write("wire_parse", name, &hex(&vectors, name));
    }

    // wire_sealed: the vector datagrams without their tags (the harness seals them), the
    // three manifest fragments in one input so they reassemble.
    let untagged = |name: &str| {
        let mut d = hex(&vectors, name);
        d.truncate(d.len() - 16);
        d
    };
    let mut fragments = Bytes::default();
    for name in ["manifest-datagram-2", "manifest-datagram-0", "manifest-datagram-1"] {
        fragments.u8(1).chunk(&untagged(name));
    }
    write("wire_sealed", "manifest-fragments", &fragments.0);
    for name in ["data-source-datagram", "heartbeat-datagram", "round-datagram", "symbol-list-datagram"] {
        let mut b = Bytes::default();
        b.u8(1).chunk(&untagged(name));
        write("wire_sealed", name, &b.0);
    }
    let mut short = Bytes::default();
    short.u8(0).chunk(&[1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 7, b'x']); // magic added by the harness
    write("wire_sealed", "data-prefixed", &short.0);

    // Canonical structures.
    write("manifest", "vector", &hex(&vectors, "manifest"));
    write("signed_manifest", "vector", &hex(&vectors, "signed-manifest"));
    write("certificate", "vector", &hex(&vectors, "certificate"));
    let heartbeat = hex(&vectors, "heartbeat-datagram");
    write("heartbeat", "vector", &heartbeat[14..heartbeat.len() - 16]);
    let fresh = harness::keys().signing.sign_heartbeat(Heartbeat { sequence: 1, uplink_time_unix_ms: 0, ..Heartbeat::default() });
    write("heartbeat", "sequence-1", &fresh.to_bytes());
    // Revocation lists (the document has no vector yet): signed by the fixed root.
    let root = &harness::keys().root;
    let revoke = |sequence, revoked_serials| {
        root.sign_revocation(Revocation { sequence, issued_unix_secs: harness::NOW_UNIX_SECS, revoked_serials })
            .expect("sign revocation")
            .to_bytes()
    };
    write("revocation", "serials-2-3", &revoke(1, vec![2, 3]));
    write("revocation", "empty", &revoke(2, vec![]));
    let mut datagram = Vec::new();
    wire::write_revocation(&mut datagram, &harness::keys().network, &revoke(1, vec![2, 3]));
    write("wire_parse", "revocation-datagram", &datagram);
    write("oti", "vector", &hex(&vectors, "oti"));
    let announcement = hex(&vectors, "network-key-datagram");
    write("network_key", "vector-12.15", &announcement[14..announcement.len() - 16]);
    for (name, f, t, b) in [("mtu-1500", 10_000_000, 1436, 16 << 20), ("largest", 255 * 56_403 * 8, 8, 56_403 * 8)] {
        let oti = Oti::new_for_object(f, t, b).expect("seed oti");
        write("oti", name, &oti.encode());
    }

    // Operator text.
    for (name, text) in [("provinces", "41,4201,110101"), ("all", "all"), ("spaced", " 41 , ALL ,4101,41"), ("odd-length", "410")] {
        write("parse_targets", name, text.as_bytes());
    }

    // Key text: the selector byte, then the text.
    let key_files = &vectors.get("key-files").expect("key-files block").1;
    let line = |label: &str| key_files.lines().find(|l| l.starts_with(label)).expect("key line").to_owned() + "\n";
    for (selector, name, text) in [
        (0u8, "root-public", line("satcast-root-public-v1")),
        (1, "network-key", line("satcast-network-key-v1")),
        (2, "certificate", line("satcast-certificate-v1")),
        (3, "root-secret", line("satcast-root-secret-v1")),
        (4, "signing-key", line("satcast-signing-secret-v1") + &line("satcast-certificate-v1")),
    ] {
        let mut bytes = vec![selector];
        bytes.extend_from_slice(text.as_bytes());
        write("key_text", name, &bytes);
    }

    // Feedback: one message of each kind.
    let county_code = harness::COUNTY_CODE.to_owned();
    for (name, message) in [
        ("hello", FeedbackMessage::Hello { software_version: "0.1.0".into(), free_disk_bytes: 1 << 30, heartbeat_age_ms: Some(1200) }),
        ("progress", FeedbackMessage::Progress { object_id: 7, round: 1, needs: vec![0, 3, 2], symbols_received: 120 }),
        ("complete", FeedbackMessage::Complete { object_id: 7, object_hash: [9; 32] }),
        ("rejected", FeedbackMessage::Rejected { object_id: 7, reason: "rollback: offered version 1, accepted version 2".into() }),
    ] {
        write("feedback", name, &Feedback { county_code: county_code.clone(), message }.to_bytes());
    }

    // fec_decode: alignment 4, T = 16, F = 70, Z = 2 (the vector's layout), block 0 (K = 3).
    let fec_head = |b: &mut Bytes, sbn: u8| {
        b.u8(2).u8(3).u16(69).u8(1).u8(sbn).u8(7);
    };
    let mut sources = Bytes::default();
    fec_head(&mut sources, 0);
    sources.u8(0).u8(0).u8(0).u8(1).u8(0).u8(2); // source ESIs 0, 1, 2
    write("fec_decode", "all-sources", &sources.0);
    let mut repair = Bytes::default();
    fec_head(&mut repair, 1);
    repair.u8(0).u8(0).u8(0x40).u8(0).u8(0x40).u8(1).u8(0x40).u8(2); // ESI 0 and repairs K, K+1, K+2
    write("fec_decode", "with-repair", &repair.0);
    let mut bad = Bytes::default();
    fec_head(&mut bad, 0);
    bad.u8(4).u8(0).u8(0).u8(4); // ESI 0, corrupted
    bad.u8(5).u8(1).u8(1); // ESI 1, one byte long
    bad.u8(6).u8(2).u32(7); // ESI past 24 bits
    bad.u8(0x47).u8(1); // a second copy of that ESI
    bad.0.extend_from_slice(&[0xAA; 16]);
    write("fec_decode", "malformed", &bad.0);

    // reception: the vector datagrams as received, then a good object end to end, then
    // the same in counting fidelity, then forgeries and refusals.
    let mut received = Bytes::default();
    received.u8(0).u8(10).u8(10).u8(1);
    for name in [
        "data-source-datagram",
        "manifest-datagram-0",
        "manifest-datagram-1",
        "manifest-datagram-2",
        "data-repair-datagram",
        "heartbeat-datagram",
        "symbol-list-datagram",
        "round-datagram",
    ] {
        received.u8(op::RAW).chunk(&hex(&vectors, name));
    }
    received.u8(op::TICK).u8(1);
    check_reception("vectors", &received.0, |c| c.accepted == 1 && c.heartbeats == 1);

    let mut happy = Bytes::default();
    happy.u8(1).u8(10).u8(10).u8(2);
    good_manifest(&mut happy, 5, 1000, 3, 8, 0); // 1000 bytes, T = 16, 8 symbols per block
    burst(&mut happy, 0, 0, 6);
    happy.u8(op::ROUND).u8(0).u8(0); // round 0 of object 0
    happy.u8(op::TICK).u8(1).u8(op::TICK).u8(1);
    burst(&mut happy, 0, 8, 4); // repair symbols complete every block
    happy.u8(op::TICK).u8(1);
    check_reception("object", &happy.0, |c| c.accepted == 1 && c.completed == 1 && c.feedback >= 2);
    let mut counting = happy.0.clone();
    counting[0] |= 0x80;
    check_reception("object-counting", &counting, |c| c.accepted == 1 && c.completed == 1);

    let mut hostile = Bytes::default();
    hostile.u8(2).u8(5).u8(5).u8(3);
    good_manifest(&mut hostile, 9, 300, 1, 4, 1); // block 1's hash is wrong
    burst(&mut hostile, 0, 0, 4);
    good_manifest(&mut hostile, 10, 300, 1, 4, 64); // expired
    hostile.u8(op::SEALED).u8(0).u8(4 * 50 + 2).chunk(&[0, 0, 0, 1, 0xEE]); // a DATA symbol for object 50
    hostile.u8(op::SYMBOL).u8(0).u8(0).u8(0x08).u8(1).u8(0).u8(0x55); // a corrupted source symbol
    hostile.u8(op::HEARTBEAT).u8(0).u16(1).u16(5);
    hostile.u8(op::HEARTBEAT).u8(0).u16(0).u16(0); // a replay: not newer
    hostile.u8(op::HEARTBEAT).u8(1).chunk(&[0; 40]);
    hostile.u8(op::RESTART).u8(1).u8(2).u8(0).u8(7).u8(1); // divisions.csv 7 was delivered
    good_manifest(&mut hostile, 11, 300, 1, 4, 0); // divisions.csv version 3 < delivered 7
    hostile.u8(op::REVOCATION).u8(0).u8(1).u8(2).u8(1); // serial 2 revoked, sequence 1
    hostile.u8(op::REVOCATION).u8(1).chunk(&[7; 30]); // garbage
    good_manifest(&mut hostile, 9, 300, 1, 4, 1); // object 9 again, after the restart
    hostile.u8(op::TIME).u8(0).u16(1000).u32(1_000_000);
    hostile.u8(op::TICK).u8(1);
    check_reception("hostile", &hostile.0, |c| c.accepted == 1 && c.rejected >= 2 && c.poisoned >= 1 && c.heartbeats == 1);

    let mut revoked = Bytes::default();
    revoked.u8(1).u8(5).u8(5).u8(4);
    good_manifest(&mut revoked, 3, 500, 3, 8, 0);
    burst(&mut revoked, 0, 0, 3);
    revoked.u8(op::REVOCATION).u8(0).u8(2).u8(1).u8(3).u8(1); // serials 1 and 3: the key in use
    burst(&mut revoked, 0, 3, 8); // too late: the object was dropped
    good_manifest(&mut revoked, 4, 500, 3, 8, 0); // refused: signed by a revoked key
    revoked.u8(op::RESTART).u8(0); // the revocation list survives a restart
    good_manifest(&mut revoked, 3, 500, 3, 8, 0);
    check_reception("revoked", &revoked.0, |c| c.accepted == 1 && c.completed == 0 && c.rejected >= 3);

    // Configs: the annotated examples, and a unicast receiver.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let receiver = std::fs::read_to_string(root.join("examples/receiver.toml")).expect("examples/receiver.toml");
    write("receiver_config", "example", receiver.as_bytes());
    let unicast =
        receiver.replace("group = \"239.192.0.1:5600\"", "# group").replace("# bind = \"127.0.0.1:5600\"", "bind = \"127.0.0.1:5600\"");
    write("receiver_config", "unicast", unicast.as_bytes());
    let uplink = std::fs::read_to_string(root.join("examples/uplink.toml")).expect("examples/uplink.toml");
    write("uplink_config", "example", uplink.as_bytes());
    write(
        "uplink_config",
        "minimal",
        b"state_dir = \"state\"\nkeys_dir = \"keys\"\n[downlink]\ndestination = \"127.0.0.1:5600\"\nlink_rate_bits_per_sec = 10000\n",
    );

    // Every seed must pass its own target.
    for (name, target) in satcast_fuzz::targets() {
        let files = satcast_fuzz::replay_files(name);
        assert!(!files.is_empty(), "no seeds for {name}");
        for file in files {
            target(&std::fs::read(&file).expect("read seed"));
        }
    }
    println!("seeds written under fuzz/corpus/");
}

fn check_reception(name: &str, seed: &[u8], reached: impl Fn(&harness::ReceptionCounts) -> bool) {
    let counts = harness::reception_with_memory(seed, &|| None);
    assert!(reached(&counts), "reception seed {name} does not reach its goal: {counts:?}");
    write("reception", name, seed);
}
