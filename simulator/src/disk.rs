//! A county's disk in the fault simulation: what the receiver node's requests leave behind,
//! what a crash keeps of it, and faults on purpose, checked against the node's promises.
//!
//! It executes requests as the daemon's storage worker does, with the durability the real
//! store gives each one: appended symbols are lost in a crash until the next periodic sync;
//! verified blocks, manifests, the cache, trust state, hook records and the outbox's
//! completions are durable when their request completes. Faults: a full disk (every write
//! fails), a slow disk (completions come late; a crash can fall between the work and its
//! completion), and a lost index at a crash (the outbox is gone; what the files hold is
//! rebuilt). Decoding is counted (RFC 6330 failure probabilities), as in fast fidelity.
//!
//! Invariants, checked as each request is executed and at the end of a run
//! ([`SimDisk::violations`]):
//! - nothing partial or unverified is committed (delivered);
//! - a version is recorded only for a committed object, and versions never go back;
//! - nothing is acknowledged (a Complete queued for the uplink) that is not durably
//!   delivered and recorded;
//! - a hook is released only for a recorded delivery, and runs exactly once per delivery.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast_protocol::fec::{self, Oti};
use satcast_protocol::feedback::{Feedback, FeedbackMessage, Refusal, RefusalCode};
use satcast_protocol::manifest::{Kind, Manifest};
use satcast_protocol::receiver_node::{Completion, HookRecord, Request};
use satcast_protocol::storage::{self, DecodeOutcome, Held, NotKept, StoreCompletion, StoreRequest, VerifyOutcome};
use satcast_protocol::trust::Accepted;

/// How often appended symbols are synced (the daemon's storage worker syncs once a second).
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// The most completions a slow disk holds back.
pub const PENDING_COMPLETIONS_MAX: usize = 1 << 16;

#[derive(Debug, Clone)]
struct Partial {
    manifest: Box<Manifest>,
    signed: Vec<u8>,
    blocks: usize,
    verified: BTreeSet<u8>,
    symbols: BTreeMap<u8, BTreeSet<u32>>,
    /// The whole object was verified as kept.
    whole: bool,
}

/// Whether a hook record is due or has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HookState {
    Due,
    Ran,
}

/// One county's disk.
#[derive(Debug)]
pub struct SimDisk {
    partials: BTreeMap<u64, Partial>,
    /// Verified objects by hash: the content-addressed cache.
    cache: BTreeMap<[u8; 32], Box<Manifest>>,
    /// Trust state: the last version delivered per (kind, name).
    versions: BTreeMap<(Kind, String), Accepted>,
    hooks: BTreeMap<u64, HookState>,
    /// Hook runs per object (must end at exactly one per delivery of a hooked kind).
    pub hook_runs: BTreeMap<u64, u32>,
    /// Symbols appended since the last sync: lost in a crash.
    unsynced: Vec<(u64, u8, u32)>,
    last_sync: Option<Instant>,
    /// Every write fails while set.
    pub full: bool,
    /// Completions come this late (a slow disk).
    pub delay: Duration,
    pending: VecDeque<(Instant, Completion)>,
    /// Broken promises, in words.
    pub violations: Vec<String>,
    rng: ChaCha8Rng,
}

impl SimDisk {
    /// An empty disk; `seed` drives its decoding draws.
    pub fn new(seed: u64) -> Self {
        SimDisk {
            partials: BTreeMap::new(),
            cache: BTreeMap::new(),
            versions: BTreeMap::new(),
            hooks: BTreeMap::new(),
            hook_runs: BTreeMap::new(),
            unsynced: Vec::new(),
            last_sync: None,
            full: false,
            delay: Duration::ZERO,
            pending: VecDeque::new(),
            violations: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// What it holds, in a line, for a violation report.
    pub fn summary(&self) -> String {
        let partials: Vec<String> = self
            .partials
            .iter()
            .map(|(id, p)| {
                format!("{id}: {}/{} blocks, {} symbols", p.verified.len(), p.blocks, p.symbols.values().map(|e| e.len()).sum::<usize>())
            })
            .collect();
        format!(
            "partials [{}], cached {}, versions {}, full {}, delay {:?}, pending {}",
            partials.join("; "),
            self.cache.len(),
            self.versions.len(),
            self.full,
            self.delay,
            self.pending.len()
        )
    }

    /// Whether the county durably delivered this object (cache and trust state).
    pub fn delivered(&self, object_id: u64) -> bool {
        self.versions.values().any(|a| a.object_id == object_id)
    }

    /// The delivered versions, to start a node from.
    pub fn versions(&self) -> impl Iterator<Item = (Kind, &str, Accepted)> {
        self.versions.iter().map(|((k, n), a)| (*k, n.as_str(), *a))
    }

    /// The objects in the cache, to start a node from (their versions are rollback floors).
    pub fn cached(&self) -> impl Iterator<Item = (Kind, &str, Accepted)> {
        self.cache.values().map(|m| (m.kind, m.name.as_str(), Accepted { version: m.version, object_id: m.object_id }))
    }

    /// The partial objects and what they hold, to resume a node from.
    pub fn resumable(&self) -> Vec<(u64, Vec<u8>, Held)> {
        self.partials
            .iter()
            .map(|(id, p)| {
                let held = Held {
                    verified: p.verified.iter().copied().collect(),
                    kept: p.symbols.iter().map(|(sbn, esis)| (*sbn, esis.len() as u32)).filter(|(_, n)| *n > 0).collect(),
                    in_cache: self.cache.contains_key(&p.manifest.delivered_hash()),
                };
                (*id, p.signed.clone(), held)
            })
            .collect()
    }

    /// The power goes: unsynced symbols and completions not yet handed back are lost
    /// (their work, if done, stays done).
    pub fn crash(&mut self) {
        for (object_id, sbn, esi) in self.unsynced.drain(..) {
            if let Some(esis) = self.partials.get_mut(&object_id).and_then(|p| p.symbols.get_mut(&sbn)) {
                esis.remove(&esi);
            }
        }
        self.pending.clear();
    }

    /// The daemon starts again: hook records are settled against what was delivered, as
    /// `HookBook::reconcile` does (a due hook whose delivery was recorded runs).
    pub fn restart(&mut self) {
        let delivered: BTreeSet<u64> = self.versions.values().map(|a| a.object_id).collect();
        for (object_id, state) in self.hooks.iter_mut() {
            if *state == HookState::Due && delivered.contains(object_id) {
                *state = HookState::Ran;
                *self.hook_runs.entry(*object_id).or_default() += 1;
            }
        }
    }

    /// Completions whose time has come (a slow disk).
    pub fn due(&mut self, now: Instant) -> Vec<Completion> {
        let mut due = Vec::new();
        while self.pending.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, completion)) = self.pending.pop_front() {
                due.push(completion);
            }
        }
        due
    }

    /// When the next held-back completion is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.front().map(|(at, _)| *at)
    }

    /// Executes one request. Returns its completion now, or holds it back on a slow disk.
    /// Feedback for the uplink is pushed to `outbox`.
    pub fn execute(&mut self, now: Instant, request: Request, outbox: &mut Vec<Feedback>) -> Option<Completion> {
        if self.last_sync.is_none_or(|at| now.saturating_duration_since(at) >= SYNC_INTERVAL) {
            self.last_sync = Some(now);
            self.unsynced.clear();
        }
        let completion = self.carry_out(request, outbox)?;
        if self.delay.is_zero() || self.pending.len() >= PENDING_COMPLETIONS_MAX {
            return Some(completion);
        }
        self.pending.push_back((now + self.delay, completion));
        None
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    fn carry_out(&mut self, request: Request, outbox: &mut Vec<Feedback>) -> Option<Completion> {
        const FULL: &str = "No space left on device";
        let full = self.full;
        match request {
            Request::Store(request) => self.store(request).map(Completion::Store),
            Request::RecordHookDue { manifest } => {
                let object_id = manifest.object_id;
                let result = if full {
                    Err(FULL.to_owned())
                } else if self.hooks.get(&object_id) == Some(&HookState::Ran) {
                    Ok(HookRecord::AlreadyHandled)
                } else {
                    self.hooks.insert(object_id, HookState::Due);
                    Ok(HookRecord::Due)
                };
                Some(Completion::HookRecorded { object_id, result })
            }
            Request::Commit { manifest } => {
                let object_id = manifest.object_id;
                if full {
                    return Some(Completion::Committed { object_id, result: Err(FULL.to_owned()) });
                }
                let verified = self.partials.get(&object_id).is_some_and(|p| p.whole);
                if !verified && !self.cache.contains_key(&manifest.delivered_hash()) {
                    self.violation(format!("object {object_id} committed (delivered) without being verified"));
                }
                self.partials.remove(&object_id);
                self.unsynced.retain(|(id, _, _)| *id != object_id);
                self.cache.insert(manifest.delivered_hash(), manifest);
                Some(Completion::Committed { object_id, result: Ok(()) })
            }
            Request::RecordVersion { manifest } => {
                let object_id = manifest.object_id;
                if full {
                    return Some(Completion::VersionRecorded { object_id, result: Err(FULL.to_owned()) });
                }
                if !self.cache.contains_key(&manifest.delivered_hash()) {
                    self.violation(format!("object {object_id}: version recorded before the object was committed"));
                }
                let key = (manifest.kind, manifest.name.clone());
                if let Some(old) = self.versions.get(&key).filter(|old| old.version > manifest.version) {
                    let old = old.version;
                    self.violation(format!("{}/{}: version went back from {old} to {}", manifest.kind, manifest.name, manifest.version));
                }
                self.versions.insert(key, Accepted { version: manifest.version, object_id });
                Some(Completion::VersionRecorded { object_id, result: Ok(()) })
            }
            Request::ReleaseHook { object_id } => {
                if full {
                    return Some(Completion::HookReleased { object_id, result: Err(FULL.to_owned()) });
                }
                if !self.delivered(object_id) {
                    self.violation(format!("object {object_id}: hook released before its delivery was recorded"));
                }
                match self.hooks.get(&object_id) {
                    Some(HookState::Due) => {
                        self.hooks.insert(object_id, HookState::Ran);
                        *self.hook_runs.entry(object_id).or_default() += 1;
                    }
                    Some(HookState::Ran) => {}
                    None => self.violation(format!("object {object_id}: hook released that was never recorded as due")),
                }
                Some(Completion::HookReleased { object_id, result: Ok(()) })
            }
            Request::RecordRevocations { .. } => full.then(|| Completion::RevocationsNotRecorded { error: FULL.into() }),
            Request::PushOutbox { feedback } => {
                if let FeedbackMessage::Complete { object_id, .. } = feedback.message {
                    if !self.delivered(object_id) {
                        self.violation(format!("object {object_id} acknowledged before it was durably delivered"));
                    }
                }
                // A progress report needs no flush; a completion does, and a full disk fails it.
                if full && !matches!(feedback.message, FeedbackMessage::Progress { .. }) {
                    return Some(Completion::OutboxFailed { feedback, error: FULL.into() });
                }
                crate::harness::hold(outbox, feedback);
                None
            }
        }
    }

    fn store(&mut self, request: StoreRequest) -> Option<StoreCompletion> {
        let full = self.full;
        match request {
            StoreRequest::BeginObject { manifest, signed_manifest } => {
                let object_id = manifest.object_id;
                if self.cache.contains_key(&manifest.delivered_hash()) {
                    return Some(StoreCompletion::AlreadyCached { object_id });
                }
                // A patch needs its base in the cache, as the daemon's store does.
                if manifest.base_hash().is_some_and(|base| !self.cache.contains_key(&base)) {
                    let refusal = Refusal::new(RefusalCode::NoBase, "base is not in the cache");
                    return Some(StoreCompletion::BeginRefused { object_id, refusal });
                }
                if full {
                    return Some(StoreCompletion::BeginFailed { object_id, error: "No space left on device".into(), storage_full: true });
                }
                self.partials.entry(object_id).or_insert_with(|| Partial {
                    blocks: manifest.block_hashes.len(),
                    manifest,
                    signed: signed_manifest,
                    verified: BTreeSet::new(),
                    symbols: BTreeMap::new(),
                    whole: false,
                });
                Some(StoreCompletion::Begun { object_id })
            }
            StoreRequest::AppendSymbol { object_id, sbn, esi, .. } => {
                let why = match self.partials.get_mut(&object_id) {
                    _ if full => NotKept::Failed("No space left on device".into()),
                    None => NotKept::Failed(format!("no partial object {object_id}")),
                    Some(partial) => {
                        if partial.symbols.entry(sbn).or_default().insert(esi) {
                            self.unsynced.push((object_id, sbn, esi));
                            return None;
                        }
                        NotKept::Duplicate
                    }
                };
                Some(StoreCompletion::SymbolNotKept { object_id, sbn, esi, why })
            }
            StoreRequest::DecodeBlock { object_id, oti, sbn, unverified, .. } => {
                let outcome = if full {
                    DecodeOutcome::Failed("No space left on device".into())
                } else {
                    self.decode(object_id, &oti, sbn, unverified.len() as u32)
                };
                Some(StoreCompletion::BlockDecoded { object_id, sbn, outcome })
            }
            StoreRequest::VerifyObject { object_id, .. } => {
                let outcome = match self.partials.get_mut(&object_id) {
                    Some(p) if p.verified.len() == p.blocks => {
                        p.whole = true;
                        VerifyOutcome::Verified
                    }
                    Some(_) => {
                        self.partials.remove(&object_id);
                        VerifyOutcome::Mismatch
                    }
                    None => VerifyOutcome::Failed(format!("no partial object {object_id}")),
                };
                Some(StoreCompletion::ObjectVerified { object_id, outcome })
            }
            StoreRequest::Discard { object_id } => {
                self.partials.remove(&object_id);
                self.unsynced.retain(|(id, _, _)| *id != object_id);
                None
            }
        }
    }

    /// Decodes from what was kept and `unverified` symbols (the genuine ones of a lost list:
    /// the simulator forges none).
    fn decode(&mut self, object_id: u64, oti: &Oti, sbn: u8, unverified: u32) -> DecodeOutcome {
        let Some(partial) = self.partials.get_mut(&object_id) else {
            return DecodeOutcome::Failed(format!("no partial object {object_id}"));
        };
        let readable = partial.symbols.get(&sbn).map_or(0, |e| e.len() as u32);
        let source_symbols = fec::blocks(oti).get(usize::from(sbn)).map_or(u32::MAX, |b| b.source_symbols);
        let usable = readable + unverified;
        if usable < source_symbols || self.rng.random::<f64>() < storage::decode_failure_probability(usable - source_symbols) {
            return DecodeOutcome::NotYet { symbols_readable: readable };
        }
        partial.verified.insert(sbn);
        partial.symbols.remove(&sbn);
        self.unsynced.retain(|(id, s, _)| !(*id == object_id && *s == sbn));
        DecodeOutcome::Verified
    }
}
