//! The receiver node's delivery transaction, driven by hand as an executor would: nothing
//! is acknowledged before the request that made it durable has completed, a failed step
//! is retried with one warning, an object already in the cache is delivered from there,
//! storage failures are summarised, and a count storage cannot back is corrected.

use std::time::Instant;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast_protocol::fec::{self, BlockEncoder, Oti};
use satcast_protocol::feedback::FeedbackMessage;
use satcast_protocol::manifest::{Compression, Kind, Manifest};
use satcast_protocol::receiver_node::{Completion, DeliveryStep, HookRecord, NodeEvent, ReceiverNode, ReceiverNodeConfig, Request};
use satcast_protocol::reception::ReceptionConfig;
use satcast_protocol::storage::{self, DecodeOutcome, MemoryStore, NotKept, StoreCompletion, StoreRequest};
use satcast_protocol::trust::{NetworkKey, RootKey, SigningKey};
use satcast_protocol::wire;

const NOW: u64 = 1_795_000_000;
const SYMBOL_SIZE: u16 = 1024;

struct Rig {
    node: ReceiverNode,
    network_key: NetworkKey,
    manifest: Manifest,
    signed: Vec<u8>,
    payload: Vec<u8>,
    oti: Oti,
    now: Instant,
    signer: SigningKey,
    /// The sequence of the last symbol list aired.
    sequence: u64,
}

fn rig(seed: u64, hooks: bool) -> Rig {
    println!("seed {seed}; replay: cargo test -p satcast-protocol --test node (the seed is fixed per test)");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let root = RootKey::generate(&mut rng);
    let network_key = NetworkKey::generate(&mut rng);
    let signer = SigningKey::generate(&mut rng, &root, 1, NOW - 100, NOW + 86_400);
    let mut payload = vec![0u8; 20_000];
    rng.fill_bytes(&mut payload);
    let oti = Oti::new_for_object(payload.len() as u64, SYMBOL_SIZE, 1 << 20).expect("oti");
    let block_hashes = fec::blocks(&oti).iter().map(|b| fec::block_hash(&payload[b.offset as usize..][..b.len as usize])).collect();
    let manifest = Manifest {
        object_id: 7,
        kind: Kind::Policy,
        name: "notice.txt".into(),
        version: 1,
        size_bytes: payload.len() as u64,
        compression: Compression::None,
        oti: oti.encode(),
        object_hash: *blake3::hash(&payload).as_bytes(),
        block_hashes,
        targets: vec!["41".into()],
        created_unix_secs: NOW - 10,
        expires_unix_secs: NOW + 86_400,
    };
    let signed = signer.sign_manifest(&manifest).expect("sign").to_bytes();
    let config = ReceptionConfig::new("410102".into(), root.public(), network_key.clone());
    let hook_kinds = if hooks { vec![Kind::Policy] } else { Vec::new() };
    let node = ReceiverNode::new(ReceiverNodeConfig { reception: config, hook_kinds });
    Rig { node, network_key, manifest, signed, payload, oti, now: Instant::now(), signer, sequence: 0 }
}

impl Rig {
    fn air_manifest(&mut self) {
        let mut buf = Vec::new();
        for fragment in wire::manifest_fragments(&self.signed, 1472) {
            wire::write_manifest_fragment(&mut buf, &self.network_key, self.manifest.object_id, &fragment);
            self.node.handle_datagram(self.now, NOW, &buf);
        }
    }

    /// Airs the manifest and answers storage's begin, as an executor would.
    fn air_manifest_begun(&mut self) {
        self.air_manifest();
        let requests = self.requests();
        assert!(matches!(requests.as_slice(), [Request::Store(StoreRequest::BeginObject { .. })]), "{requests:?}");
        self.node.handle_completion(Completion::Store(StoreCompletion::Begun { object_id: self.manifest.object_id }));
    }

    /// Airs every source symbol of every block.
    fn air_symbols(&mut self) {
        let mut buf = Vec::new();
        for block in fec::blocks(&self.oti) {
            let data = &self.payload[block.offset as usize..][..block.len as usize];
            let encoder = BlockEncoder::new(&self.oti, block.sbn, data).expect("encoder");
            let symbols: Vec<Vec<u8>> = (0..encoder.source_symbols())
                .map(|esi| {
                    let mut symbol = Vec::new();
                    encoder.symbol_into(esi, &mut symbol).expect("symbol");
                    symbol
                })
                .collect();
            // The uplink's signed list goes first (a block here has fewer symbols than a list holds).
            let listed: Vec<(u8, u32, &[u8])> = symbols.iter().zip(0..).map(|(s, esi)| (block.sbn, esi, s.as_slice())).collect();
            self.sequence += 1;
            let list = wire::symbol_list_datagram(&self.network_key, &self.signer, self.manifest.object_id, self.sequence, None, &listed);
            self.node.handle_datagram(self.now, NOW, &list);
            for (esi, symbol) in (0..).zip(&symbols) {
                wire::write_data(&mut buf, &self.network_key, self.manifest.object_id, block.sbn, esi, symbol);
                self.node.handle_datagram(self.now, NOW, &buf);
            }
        }
    }

    fn requests(&mut self) -> Vec<Request> {
        std::iter::from_fn(|| self.node.poll_request()).collect()
    }

    fn events(&mut self) -> Vec<NodeEvent> {
        std::iter::from_fn(|| self.node.poll_event()).collect()
    }

    /// Executes storage requests in memory and returns the others, unexecuted.
    fn run_storage(&mut self, store: &mut MemoryStore) -> Vec<Request> {
        let mut others = Vec::new();
        while let Some(request) = self.node.poll_request() {
            match request {
                Request::Store(request) => {
                    if let Some(completion) = storage::execute(request, store) {
                        self.node.handle_completion(Completion::Store(completion));
                    }
                }
                other => others.push(other),
            }
        }
        others
    }
}

fn acknowledged(requests: &[Request]) -> bool {
    requests.iter().any(|r| matches!(r, Request::PushOutbox { feedback } if matches!(feedback.message, FeedbackMessage::Complete { .. })))
}

#[test]
fn a_delivery_is_acknowledged_only_after_each_step_is_durable() {
    let mut rig = rig(1, true);
    let mut store = MemoryStore::default();
    rig.air_manifest_begun();
    rig.air_symbols();
    let requests = rig.run_storage(&mut store);
    assert!(matches!(requests.as_slice(), [Request::RecordHookDue { .. }]), "the hook is recorded first: {requests:?}");
    assert!(!acknowledged(&requests));
    let id = rig.manifest.object_id;
    rig.node.handle_completion(Completion::HookRecorded { object_id: id, result: Ok(HookRecord::Due) });
    let requests = rig.requests();
    assert!(matches!(requests.as_slice(), [Request::Commit { .. }]), "{requests:?}");
    rig.node.handle_completion(Completion::Committed { object_id: id, result: Ok(()) });
    let requests = rig.requests();
    assert!(matches!(requests.as_slice(), [Request::RecordVersion { .. }]), "{requests:?}");
    assert!(!acknowledged(&requests), "acknowledged before the version was recorded");
    rig.node.handle_completion(Completion::VersionRecorded { object_id: id, result: Ok(()) });
    let requests = rig.requests();
    assert!(acknowledged(&requests), "{requests:?}");
    assert!(requests.iter().any(|r| matches!(r, Request::ReleaseHook { object_id } if *object_id == id)), "{requests:?}");
    assert!(rig.events().iter().any(|e| matches!(e, NodeEvent::Delivered { .. })));
}

#[test]
fn a_failed_step_is_retried_every_tick_and_said_once() {
    let mut rig = rig(2, false);
    let mut store = MemoryStore::default();
    rig.air_manifest_begun();
    rig.air_symbols();
    let id = rig.manifest.object_id;
    assert!(matches!(rig.run_storage(&mut store).as_slice(), [Request::Commit { .. }]));
    let mut waiting = 0;
    for _ in 0..5 {
        rig.node.handle_completion(Completion::Committed { object_id: id, result: Err("no space left on device".into()) });
        waiting += rig.events().iter().filter(|e| matches!(e, NodeEvent::DeliveryWaiting { step: DeliveryStep::Commit, .. })).count();
        assert!(rig.requests().is_empty(), "no retry before the tick");
        rig.node.handle_tick(NOW);
        let requests = rig.requests();
        assert!(matches!(requests.as_slice(), [Request::Commit { .. }]), "retried at the tick: {requests:?}");
        assert!(!acknowledged(&requests));
    }
    assert_eq!(waiting, 1, "one warning for a step that keeps failing the same way");
    assert_eq!(rig.node.deliveries_waiting(), 1);
    rig.node.handle_completion(Completion::Committed { object_id: id, result: Ok(()) });
    rig.node.handle_completion(Completion::VersionRecorded { object_id: id, result: Ok(()) });
    assert!(acknowledged(&rig.requests()));
    assert_eq!(rig.node.deliveries_waiting(), 0);
}

#[test]
fn an_object_already_in_the_cache_is_delivered_without_a_symbol() {
    let mut rig = rig(3, false);
    rig.air_manifest();
    let requests = rig.requests();
    let Some(Request::Store(StoreRequest::BeginObject { .. })) = requests.first() else { panic!("{requests:?}") };
    // The storage worker found objects/<hash>: a crash came between commit and version record.
    rig.node.handle_completion(Completion::Store(StoreCompletion::AlreadyCached { object_id: 7 }));
    let requests = rig.requests();
    assert!(matches!(requests.as_slice(), [Request::Commit { .. }]), "delivered from the cache: {requests:?}");
    rig.air_symbols();
    let requests = rig.requests();
    assert!(!requests.iter().any(|r| matches!(r, Request::Store(StoreRequest::AppendSymbol { .. }))), "symbols kept again: {requests:?}");
    assert_eq!(rig.node.stats().symbols_kept, 0);

    // Symbols that arrive while storage has not answered the begin yet are held back, and
    // not counted as kept, until it does.
    let mut rig = self::rig(7, false);
    rig.air_manifest();
    let _begin = rig.requests();
    rig.air_symbols();
    assert!(rig.requests().is_empty(), "symbols went to storage before it began the object");
    rig.node.handle_completion(Completion::Store(StoreCompletion::AlreadyCached { object_id: 7 }));
    assert_eq!(rig.node.stats().symbols_kept, 0, "symbols counted for an object already cached");
}

#[test]
fn a_resumed_object_in_the_cache_is_delivered_from_it() {
    let mut rig = rig(4, false);
    let held = storage::Held { in_cache: true, ..storage::Held::default() };
    let (now, id, signed) = (rig.now, rig.manifest.object_id, rig.signed.clone());
    rig.node.resume(now, NOW, id, &signed, &held);
    let requests = rig.requests();
    assert!(matches!(requests.as_slice(), [Request::Commit { .. }]), "{requests:?}");
}

#[test]
fn storage_failures_are_summarised_once_per_tick() {
    let mut rig = rig(5, false);
    rig.air_manifest_begun();
    rig.air_symbols();
    for request in rig.requests() {
        if let Request::Store(StoreRequest::AppendSymbol { object_id, sbn, esi, .. }) = request {
            let why = NotKept::Failed("no space left on device".into());
            rig.node.handle_completion(Completion::Store(StoreCompletion::SymbolNotKept { object_id, sbn, esi, why }));
        }
    }
    assert!(!rig.events().iter().any(|e| matches!(e, NodeEvent::StoreFailures { .. })), "nothing said per symbol");
    rig.node.handle_tick(NOW);
    let summaries: Vec<_> = rig.events().into_iter().filter(|e| matches!(e, NodeEvent::StoreFailures { .. })).collect();
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert!(matches!(&summaries[0], NodeEvent::StoreFailures { failures, .. } if *failures >= 20));
    // Symbols that were not kept count no more: the same symbols, aired again, are kept.
    rig.air_symbols();
    let appended = rig.requests().iter().filter(|r| matches!(r, Request::Store(StoreRequest::AppendSymbol { .. }))).count();
    assert!(appended >= 20, "only {appended} symbols kept on the second airing");
}

#[test]
fn a_count_storage_cannot_read_back_is_corrected_and_asked_for_again() {
    let mut rig = rig(6, false);
    rig.air_manifest_begun();
    rig.air_symbols();
    let decode = rig.requests().into_iter().find_map(|r| match r {
        Request::Store(StoreRequest::DecodeBlock { object_id, sbn, symbols_counted, .. }) => Some((object_id, sbn, symbols_counted)),
        _ => None,
    });
    let Some((object_id, sbn, counted)) = decode else { panic!("no decode request") };
    // A torn spool record: storage read back five symbols fewer than the node counted.
    let outcome = DecodeOutcome::NotYet { symbols_readable: counted - 5 };
    rig.node.handle_completion(Completion::Store(StoreCompletion::BlockDecoded { object_id, sbn, outcome }));
    assert_eq!(rig.node.held(object_id).map(|h| h.0), Some(u64::from(counted - 5)));
}
