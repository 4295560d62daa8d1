//! The reception-side state machine for one county receiver.
//!
//! It authenticates datagrams, reassembles and verifies manifests under the trust rules,
//! collects symbols through a [`ReceptionStore`], decodes each source block as soon as it
//! can, checks every block against its signed BLAKE3 (a poisoned block is dropped and
//! collected again, the others are kept) and finally the whole object. It performs no I/O
//! of its own: the driver supplies the store, the time and the wall-clock time.
//!
//! Call order, for a driver:
//! 1. [`Reception::set_delivered`] for every (kind, name) already delivered (from durable
//!    trust state), before the first datagram;
//! 2. [`Reception::handle_datagram`] for each datagram received;
//! 3. [`Reception::poll_event`] until `None`; on [`ReceptionEvent::Complete`] make the
//!    object durable and deliver it, then call [`Reception::set_delivered`];
//! 4. [`Reception::handle_tick`] about once a second, to expire stale partial objects;
//! 5. [`Reception::handle_timeout`] when [`Reception::poll_timeout`] comes due, then
//!    [`Reception::poll_feedback`] until `None`, sending each message to the uplink.
//!
//! Feedback: after each ROUND marker the receiver reports, per block, how many more symbols
//! it needs, at a random moment within the report window so 2000 counties do not report at
//! once. It also reports by itself when an object it is missing goes quiet (the marker may
//! have been lost), and reports Complete once the driver has made the object durable.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::fec::{self, Block, FecError, Oti};
use crate::feedback::{Feedback, FeedbackMessage};
use crate::manifest::{Kind, Manifest};
use crate::trust::{self, Accepted, RootPublicKey, TrustError};
use crate::wire::{self, Body, ManifestAssembler, NetworkKey, WireError};

/// The most events held for the driver; beyond it the oldest are dropped and counted.
pub const EVENTS_MAX: usize = 4096;
/// How many rejected manifests are remembered, so a forged one repeated on the carousel is
/// verified (and logged) once, not every time.
pub const REJECTED_REMEMBERED_MAX: usize = 1024;
/// How long a rejected manifest is remembered; after that it is checked again, in case the
/// reason was passing (a receiver clock that was wrong).
pub const REJECTED_REMEMBER_FOR: Duration = Duration::from_secs(600);
/// How many completed object ids are remembered, so their repeats are ignored cheaply.
pub const COMPLETED_REMEMBERED_MAX: usize = 4096;
/// The most symbol bytes kept for objects whose manifest has not arrived yet, so a lost
/// manifest costs nothing: about two seconds at 80 Mbit/s, twice the manifest interval.
/// Only datagrams with a valid tag get here; the oldest are dropped beyond this.
pub const EARLY_SYMBOL_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The most symbols kept for objects whose manifest has not arrived yet, whatever their
/// size: tiny forged symbols must not turn the byte bound into millions of entries.
pub const EARLY_SYMBOLS_MAX: usize = 16_384;
/// Bytes each early symbol is charged beyond its own: the entry and its allocation.
const EARLY_ENTRY_OVERHEAD_BYTES: usize = 64;
/// The most feedback messages waiting for the driver; the oldest progress reports are
/// dropped beyond it (the next round asks again).
pub const FEEDBACK_QUEUE_MAX: usize = 1024;

/// Where received symbols and decoded blocks go. The in-memory [`MemoryStore`] serves tests
/// and the simulator; the receiver daemon uses a durable one.
pub trait ReceptionStore {
    /// An object was accepted: keep its signed manifest, so a restart can re-verify and
    /// resume it from what was already kept.
    fn begin_object(&mut self, manifest: &Manifest, signed_manifest: &[u8]) -> io::Result<()>;
    /// Keeps one symbol. Returns false if that ESI was already kept for the block.
    fn add_symbol(&mut self, object_id: u64, sbn: u8, esi: u32, symbol: &[u8]) -> io::Result<bool>;
    /// How many distinct symbols are kept for the block.
    fn symbol_count(&self, object_id: u64, sbn: u8) -> u32;
    /// Every symbol kept for the block.
    fn symbols(&mut self, object_id: u64, sbn: u8) -> io::Result<Vec<(u32, Vec<u8>)>>;
    /// Forgets the symbols of one block (decoded, or poisoned).
    fn clear_block(&mut self, object_id: u64, sbn: u8) -> io::Result<()>;
    /// Writes a decoded, verified block at its offset in the partial object.
    fn write_block(&mut self, object_id: u64, sbn: u8, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Whether a verified block was written before (so a restart does not collect it again).
    fn block_written(&self, object_id: u64, sbn: u8) -> bool;
    /// BLAKE3 of the partial object's first `len` bytes, read back from where it is kept.
    fn object_hash(&mut self, object_id: u64, len: u64) -> io::Result<[u8; 32]>;
    /// Forgets everything about an object.
    fn discard(&mut self, object_id: u64) -> io::Result<()>;
}

/// Why a manifest was not accepted.
#[derive(Debug, Error)]
pub enum RejectReason {
    /// The trust chain, expiry, targeting or rollback check failed.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The signed manifest carries an OTI this receiver cannot decode safely.
    #[error("manifest oti: {0}")]
    Oti(#[from] FecError),
    /// The OTI disagrees with the manifest's size or number of block hashes.
    #[error("manifest is inconsistent: {0}")]
    Inconsistent(&'static str),
    /// A genuine manifest arrived under another object id in the datagram header (a splice).
    #[error("manifest for object {manifest:016x} arrived as object {header:016x}")]
    ObjectIdMismatch {
        /// The id in the signed manifest.
        manifest: u64,
        /// The id in the datagram header.
        header: u64,
    },
    /// Too many partial objects are being received already.
    #[error("{0} partial objects already in progress")]
    TooManyPartial(usize),
}

/// What the reception machine reports to its driver.
#[derive(Debug)]
pub enum ReceptionEvent {
    /// A datagram was refused before its body was used.
    Dropped {
        /// Why.
        reason: WireError,
    },
    /// A manifest was refused.
    Rejected {
        /// The object it described.
        object_id: u64,
        /// Why.
        reason: RejectReason,
    },
    /// A manifest was accepted; symbols for the object are now collected.
    Accepted {
        /// The accepted manifest.
        manifest: Box<Manifest>,
    },
    /// A source block decoded and matched its signed hash.
    BlockVerified {
        /// The object.
        object_id: u64,
        /// The block.
        sbn: u8,
    },
    /// A decoded block did not match its signed hash; its symbols were dropped and it is
    /// collected again.
    BlockPoisoned {
        /// The object.
        object_id: u64,
        /// The block.
        sbn: u8,
    },
    /// Every block verified and the whole object matches its signed hash: make it durable
    /// and deliver it.
    Complete {
        /// The object's manifest.
        manifest: Box<Manifest>,
    },
    /// The assembled object did not match its signed hash; it is collected again.
    ObjectPoisoned {
        /// The object.
        object_id: u64,
    },
    /// A partial object's manifest expired; it was discarded.
    Expired {
        /// The object.
        object_id: u64,
    },
    /// The store failed; the object stays partial and is retried as data arrives.
    StoreFailed {
        /// The object.
        object_id: u64,
        /// The I/O error, as text.
        error: String,
    },
    /// A valid, fresh heartbeat arrived.
    Heartbeat {
        /// Its sequence number.
        sequence: u64,
        /// The uplink's wall clock when it was sent.
        uplink_time_unix_ms: u64,
    },
    /// A heartbeat was refused (bad signature, or a replay of an older one).
    HeartbeatRejected {
        /// Why, as text.
        reason: String,
    },
    /// A newer root-signed revocation list arrived: persist it (trust state) so it holds
    /// across restarts. Objects signed by a revoked key were dropped.
    RevocationsUpdated {
        /// The list's sequence.
        sequence: u64,
        /// Every revoked signing-key serial.
        revoked_serials: Vec<u64>,
    },
    /// A revocation list was refused (not signed by the pinned root, or malformed).
    RevocationRejected {
        /// Why, as text.
        reason: String,
    },
}

/// Counters of what arrived, for status and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceptionStats {
    /// Datagrams handed to the machine.
    pub datagrams: u64,
    /// Datagrams refused by the wire parser (bad tag, magic, length...).
    pub dropped: u64,
    /// DATA symbols kept.
    pub symbols_kept: u64,
    /// DATA symbols ignored: unknown or completed object, duplicate, wrong length, bad SBN.
    pub symbols_ignored: u64,
    /// Events dropped because the driver did not poll them in time.
    pub events_lost: u64,
}

/// How faithfully symbols are processed. The simulator uses [`Fidelity::Counting`] to run
/// thousands of receivers: the same machine, the same manifests, reports and events, but
/// symbols are counted instead of kept, and a block "decodes" with the probability RFC 6330
/// gives for the symbols held instead of being decoded and hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fidelity {
    /// Keep symbols, decode with RaptorQ, verify every hash: what the daemon runs.
    Full,
    /// Count symbols; decoding succeeds with probability 1 - 0.01 * 0.01^(n - K) for n >= K
    /// distinct symbols (RFC 6330 section 5.6 failure probabilities).
    Counting,
}

/// Settings for one receiver.
#[derive(Debug, Clone)]
pub struct ReceptionConfig {
    /// This county's six-digit division code.
    pub county_code: String,
    /// The pinned root public key.
    pub root: RootPublicKey,
    /// The network key that tags every datagram.
    pub network_key: NetworkKey,
    /// The most objects received at once.
    pub partial_objects_max: usize,
    /// Progress reports go out at a random moment within this window after a ROUND marker.
    pub report_window: Duration,
    /// An incomplete object that received nothing for this long is reported on the
    /// receiver's own initiative (its ROUND markers may all have been lost).
    pub quiet_report_after: Duration,
    /// Seed of the report jitter (the daemon draws it from the OS; the simulator from its seed).
    pub seed: u64,
    /// Full processing, or symbol counting for large simulations.
    pub fidelity: Fidelity,
}

impl ReceptionConfig {
    /// A configuration with the default report timing.
    pub fn new(county_code: String, root: RootPublicKey, network_key: NetworkKey) -> Self {
        ReceptionConfig {
            county_code,
            root,
            network_key,
            partial_objects_max: 8,
            report_window: Duration::from_secs(1),
            quiet_report_after: Duration::from_secs(5),
            seed: 0,
            fidelity: Fidelity::Full,
        }
    }
}

struct Incoming {
    manifest: Manifest,
    digest: [u8; 8],
    oti: Oti,
    blocks: Vec<Block>,
    verified: Vec<bool>,
    remaining: usize,
    /// Distinct symbols kept per block, as the store counts them.
    kept: Vec<u32>,
    /// Serial of the key that signed the manifest, so a later revocation can drop it.
    signer_serial: u64,
    /// DATA symbols of this object received, useful or not: the uplink's loss estimate.
    symbols_received: u64,
    /// The last ROUND marker seen.
    round: u32,
    last_symbol_at: Instant,
    last_report_at: Option<Instant>,
    report_due: Option<Instant>,
}

/// Progress of one partial object, for status displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The object.
    pub object_id: u64,
    /// Its kind and name.
    pub name: String,
    /// Blocks verified so far.
    pub blocks_verified: usize,
    /// Blocks in all.
    pub blocks: usize,
}

/// The reception-side machine. See the module documentation for the call order.
pub struct Reception {
    config: ReceptionConfig,
    assembler: ManifestAssembler,
    incoming: BTreeMap<u64, Incoming>,
    /// Refused manifests: (object id in the datagram header, digest, when).
    rejected: VecDeque<(u64, [u8; 8], Instant)>,
    /// Completed objects and their hashes, so a repeated ROUND marker re-sends Complete.
    completed: VecDeque<(u64, [u8; 32])>,
    feedback: VecDeque<Feedback>,
    /// Symbols that arrived before their object's manifest: (object id, sbn, esi, symbol).
    early: VecDeque<(u64, u8, u32, Vec<u8>)>,
    early_bytes: usize,
    /// Revoked signing-key serials, and the sequence of the list that named them.
    revoked: (u64, std::collections::BTreeSet<u64>),
    rng: ChaCha8Rng,
    delivered: HashMap<(Kind, String), Accepted>,
    last_heartbeat: Option<(u64, Instant)>,
    events: VecDeque<ReceptionEvent>,
    stats: ReceptionStats,
}

impl std::fmt::Debug for Reception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reception").field("county", &self.config.county_code).field("stats", &self.stats).finish()
    }
}

impl Reception {
    /// A receiver that knows nothing yet.
    pub fn new(config: ReceptionConfig) -> Self {
        Reception {
            assembler: ManifestAssembler::default(),
            incoming: BTreeMap::new(),
            rejected: VecDeque::new(),
            completed: VecDeque::new(),
            feedback: VecDeque::new(),
            early: VecDeque::new(),
            early_bytes: 0,
            revoked: (0, std::collections::BTreeSet::new()),
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            delivered: HashMap::new(),
            last_heartbeat: None,
            events: VecDeque::new(),
            stats: ReceptionStats::default(),
            config,
        }
    }

    /// Records the last version delivered for a (kind, name), from durable trust state at
    /// start: older versions are refused.
    pub fn set_delivered(&mut self, kind: Kind, name: &str, accepted: Accepted) {
        self.delivered.insert((kind, name.to_owned()), accepted);
    }

    /// Restores the revocation list kept in durable trust state, at start.
    pub fn set_revocations(&mut self, sequence: u64, revoked_serials: &[u64]) {
        self.revoked = (sequence, revoked_serials.iter().copied().collect());
    }

    fn handle_revocation(&mut self, signed: &[u8], store: &mut dyn ReceptionStore) {
        let revocation = match trust::verify_revocation(signed, &self.config.root) {
            Ok(revocation) => revocation,
            Err(error) => return self.push(ReceptionEvent::RevocationRejected { reason: error.to_string() }),
        };
        if revocation.sequence <= self.revoked.0 {
            return;
        }
        self.revoked = (revocation.sequence, revocation.revoked_serials.iter().copied().collect());
        // Objects accepted under a key now revoked are dropped, partial data and all.
        let doomed: Vec<(u64, u64)> = self
            .incoming
            .iter()
            .filter(|(_, inc)| self.revoked.1.contains(&inc.signer_serial))
            .map(|(id, inc)| (*id, inc.signer_serial))
            .collect();
        for (object_id, serial) in doomed {
            self.incoming.remove(&object_id);
            if let Err(error) = store.discard(object_id) {
                self.push(ReceptionEvent::StoreFailed { object_id, error: error.to_string() });
            }
            self.push(ReceptionEvent::Rejected { object_id, reason: RejectReason::Trust(TrustError::KeyRevoked { serial }) });
        }
        self.push(ReceptionEvent::RevocationsUpdated { sequence: revocation.sequence, revoked_serials: revocation.revoked_serials });
    }

    /// The driver made a completed object durable and delivered it: remember its version
    /// and tell the uplink.
    pub fn mark_delivered(&mut self, manifest: &Manifest) {
        let accepted = Accepted { version: manifest.version, object_id: manifest.object_id };
        self.delivered.insert((manifest.kind, manifest.name.clone()), accepted);
        self.remember_completed(manifest.object_id, manifest.object_hash);
        self.send_feedback(FeedbackMessage::Complete { object_id: manifest.object_id, object_hash: manifest.object_hash });
    }

    fn send_feedback(&mut self, message: FeedbackMessage) {
        if self.feedback.len() >= FEEDBACK_QUEUE_MAX {
            // Progress is cheap to lose (the next round asks again); keep Complete and Rejected.
            if let Some(i) = self.feedback.iter().position(|f| matches!(f.message, FeedbackMessage::Progress { .. })) {
                self.feedback.remove(i);
            } else {
                self.feedback.pop_front();
            }
        }
        self.feedback.push_back(Feedback { county_code: self.config.county_code.clone(), message });
    }

    /// The next feedback message for the uplink.
    pub fn poll_feedback(&mut self) -> Option<Feedback> {
        self.feedback.pop_front()
    }

    /// When [`Reception::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.incoming
            .values()
            .map(|inc| match inc.report_due {
                Some(due) => due,
                None => inc.last_symbol_at.max(inc.last_report_at.unwrap_or(inc.last_symbol_at)) + self.config.quiet_report_after,
            })
            .min()
    }

    /// Sends the progress reports that are due, and schedules reports for objects that
    /// went quiet.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (object_id, inc) in self.incoming.iter_mut() {
            match inc.report_due {
                Some(at) if at <= now => due.push(*object_id),
                None => {
                    let quiet_since = inc.last_symbol_at.max(inc.last_report_at.unwrap_or(inc.last_symbol_at));
                    if now >= quiet_since + self.config.quiet_report_after {
                        let jitter = self.rng.random_range(0..=self.config.report_window.as_millis() as u64);
                        inc.report_due = Some(now + Duration::from_millis(jitter));
                    }
                }
                _ => {}
            }
        }
        for object_id in due {
            self.report_progress(now, object_id);
        }
    }

    fn report_progress(&mut self, now: Instant, object_id: u64) {
        let Some(inc) = self.incoming.get_mut(&object_id) else { return };
        inc.report_due = None;
        inc.last_report_at = Some(now);
        let (round, symbols_received) = (inc.round, inc.symbols_received);
        let needs = inc
            .blocks
            .iter()
            .zip(&inc.verified)
            .zip(&inc.kept)
            .map(|((block, verified), kept)| match (*verified, *kept >= block.source_symbols) {
                (true, _) => 0,
                // K symbols that did not decode yet: RaptorQ almost always needs one or two more.
                (false, true) => 2,
                (false, false) => block.source_symbols - kept,
            })
            .collect();
        self.send_feedback(FeedbackMessage::Progress { object_id, round, needs, symbols_received });
    }

    /// Counters so far.
    pub fn stats(&self) -> ReceptionStats {
        self.stats
    }

    /// How long since the last valid heartbeat, if one arrived.
    pub fn heartbeat_age(&self, now: Instant) -> Option<Duration> {
        self.last_heartbeat.map(|(_, at)| now.saturating_duration_since(at))
    }

    /// Distinct symbols kept for an object's unverified blocks, and its verified blocks.
    pub fn held(&self, object_id: u64) -> Option<(u64, usize)> {
        self.incoming.get(&object_id).map(|inc| (inc.kept.iter().map(|k| u64::from(*k)).sum(), inc.verified.iter().filter(|v| **v).count()))
    }

    /// Progress of every partial object.
    pub fn progress(&self) -> Vec<Progress> {
        self.incoming
            .iter()
            .map(|(id, inc)| Progress {
                object_id: *id,
                name: format!("{}/{}", inc.manifest.kind, inc.manifest.name),
                blocks_verified: inc.verified.iter().filter(|v| **v).count(),
                blocks: inc.blocks.len(),
            })
            .collect()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<ReceptionEvent> {
        self.events.pop_front()
    }

    fn push(&mut self, event: ReceptionEvent) {
        if self.events.len() >= EVENTS_MAX {
            self.events.pop_front();
            self.stats.events_lost += 1;
        }
        self.events.push_back(event);
    }

    fn remember_completed(&mut self, object_id: u64, object_hash: [u8; 32]) {
        if !self.is_completed(object_id) {
            if self.completed.len() >= COMPLETED_REMEMBERED_MAX {
                self.completed.pop_front();
            }
            self.completed.push_back((object_id, object_hash));
        }
    }

    fn is_completed(&self, object_id: u64) -> bool {
        self.completed.iter().any(|(id, _)| *id == object_id)
    }

    /// Handles one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, wall_unix_secs: u64, bytes: &[u8], store: &mut dyn ReceptionStore) {
        match wire::parse(bytes, &self.config.network_key) {
            Ok(datagram) => self.handle_parsed(now, wall_unix_secs, &datagram, store),
            Err(reason) => {
                self.stats.dropped += 1;
                self.push(ReceptionEvent::Dropped { reason });
            }
        }
    }

    /// Handles a datagram already parsed and authenticated with this receiver's network key
    /// (the simulator checks each datagram's tag once for all its receivers).
    pub fn handle_parsed(&mut self, now: Instant, wall_unix_secs: u64, datagram: &wire::Datagram<'_>, store: &mut dyn ReceptionStore) {
        self.stats.datagrams += 1;
        match datagram.body {
            Body::Data { sbn, esi, symbol } => self.handle_symbol(now, datagram.object_id, sbn, esi, symbol, store),
            Body::Manifest(ref fragment) => {
                if self.is_completed(datagram.object_id) {
                    return;
                }
                if let Some(inc) = self.incoming.get(&datagram.object_id) {
                    if inc.digest == fragment.digest {
                        return;
                    }
                }
                let object_id = datagram.object_id;
                if self.rejected.iter().any(|(id, d, at)| {
                    *id == object_id && *d == fragment.digest && now.saturating_duration_since(*at) < REJECTED_REMEMBER_FOR
                }) {
                    return;
                }
                if let Some(signed) = self.assembler.add(datagram.object_id, fragment) {
                    self.handle_manifest(now, wall_unix_secs, datagram.object_id, &signed, store);
                }
            }
            Body::Heartbeat(signed) => self.handle_heartbeat(now, wall_unix_secs, signed),
            Body::Round { round } => self.handle_round(now, datagram.object_id, round),
            Body::Revocation(signed) => self.handle_revocation(signed, store),
        }
    }

    fn handle_round(&mut self, now: Instant, object_id: u64, round: u32) {
        if let Some(&(_, object_hash)) = self.completed.iter().find(|(id, _)| *id == object_id) {
            // The uplink still asks: our Complete may have been lost on the WAN. Say it
            // again, once per round (the marker comes in several copies).
            let already =
                self.feedback.iter().any(|f| matches!(f.message, FeedbackMessage::Complete { object_id: id, .. } if id == object_id));
            if !already && round > 0 {
                self.send_feedback(FeedbackMessage::Complete { object_id, object_hash });
            }
            return;
        }
        let window_ms = self.config.report_window.as_millis() as u64;
        let Some(inc) = self.incoming.get_mut(&object_id) else { return };
        if round < inc.round
            || (round == inc.round && (inc.report_due.is_some() || inc.last_report_at.is_some_and(|at| at >= inc.last_symbol_at)))
        {
            // A copy of a marker already answered (or being answered).
            return;
        }
        inc.round = round;
        let jitter = self.rng.random_range(0..=window_ms);
        inc.report_due = Some(now + Duration::from_millis(jitter));
    }

    /// Re-accepts a signed manifest kept by the store before a restart: it is verified
    /// again under today's clock and trust state, and its kept symbols and blocks count.
    pub fn resume(&mut self, now: Instant, wall_unix_secs: u64, object_id: u64, signed_manifest: &[u8], store: &mut dyn ReceptionStore) {
        self.handle_manifest(now, wall_unix_secs, object_id, signed_manifest, store);
    }

    fn handle_heartbeat(&mut self, now: Instant, wall_unix_secs: u64, signed: &[u8]) {
        if let Some(serial) = trust::heartbeat_signer_serial(signed).filter(|s| self.revoked.1.contains(s)) {
            return self.push(ReceptionEvent::HeartbeatRejected { reason: TrustError::KeyRevoked { serial }.to_string() });
        }
        match trust::verify_heartbeat(signed, &self.config.root, wall_unix_secs) {
            Ok(heartbeat) => {
                let fresh = self.last_heartbeat.is_none_or(|(last_ms, _)| heartbeat.uplink_time_unix_ms > last_ms);
                if fresh {
                    // Its age counts from when the uplink signed it, not from when it arrived:
                    // a heartbeat captured earlier and replayed after a reboot (when the
                    // receiver has forgotten the last one) shows as old, as it is.
                    let age_at_arrival = Duration::from_millis((wall_unix_secs * 1000).saturating_sub(heartbeat.uplink_time_unix_ms));
                    let signed_at = now.checked_sub(age_at_arrival).unwrap_or(now);
                    self.last_heartbeat = Some((heartbeat.uplink_time_unix_ms, signed_at));
                    self.push(ReceptionEvent::Heartbeat {
                        sequence: heartbeat.sequence,
                        uplink_time_unix_ms: heartbeat.uplink_time_unix_ms,
                    });
                } else {
                    self.push(ReceptionEvent::HeartbeatRejected { reason: "replay of an older heartbeat".into() });
                }
            }
            Err(error) => self.push(ReceptionEvent::HeartbeatRejected { reason: error.to_string() }),
        }
    }

    /// Refuses a manifest. The refusal is remembered for this (object id, digest) only, so
    /// a genuine manifest an insider re-tagged under another object id cannot block the
    /// genuine one; a passing refusal (too many partial objects) is not remembered at all.
    fn reject(&mut self, now: Instant, object_id: u64, digest: [u8; 8], reason: RejectReason) {
        if !matches!(reason, RejectReason::TooManyPartial(_)) {
            if self.rejected.len() >= REJECTED_REMEMBERED_MAX {
                self.rejected.pop_front();
            }
            self.rejected.retain(|(id, d, _)| !(*id == object_id && *d == digest));
            self.rejected.push_back((object_id, digest, now));
        }
        self.push(ReceptionEvent::Rejected { object_id, reason });
    }

    fn handle_manifest(&mut self, now: Instant, wall_unix_secs: u64, object_id: u64, signed: &[u8], store: &mut dyn ReceptionStore) {
        let digest = wire::manifest_digest(signed);
        let signer_serial = trust::manifest_signer_serial(signed).unwrap_or(0);
        if self.revoked.1.contains(&signer_serial) {
            return self.reject(now, object_id, digest, TrustError::KeyRevoked { serial: signer_serial }.into());
        }
        let manifest = match trust::verify_signed(signed, &self.config.root, wall_unix_secs) {
            Ok(manifest) => manifest,
            Err(error) => return self.reject(now, object_id, digest, error.into()),
        };
        if manifest.object_id != object_id {
            // A genuine manifest replayed under another object id in the header.
            let reason = RejectReason::ObjectIdMismatch { manifest: manifest.object_id, header: object_id };
            return self.reject(now, object_id, digest, reason);
        }
        let accepted = self.delivered.get(&(manifest.kind, manifest.name.clone())).copied();
        if let Err(error) = trust::check_acceptance(&manifest, &self.config.county_code, wall_unix_secs, accepted) {
            // A genuine manifest for this county that it must refuse: tell the uplink, so
            // it does not wait for this county. Untargeted ones are none of its business.
            if !matches!(error, TrustError::NotTargeted) && !self.rejected.iter().any(|(id, d, _)| *id == object_id && *d == digest) {
                self.send_feedback(FeedbackMessage::Rejected { object_id, reason: error.to_string() });
            }
            return self.reject(now, object_id, digest, error.into());
        }
        if accepted.is_some_and(|a| a.object_id == object_id) {
            // Already delivered: the carousel repeating it.
            self.remember_completed(object_id, manifest.object_hash);
            return;
        }
        let oti = match Oti::decode(&manifest.oti) {
            Ok(oti) => oti,
            Err(error) => return self.reject(now, object_id, digest, error.into()),
        };
        let blocks = fec::blocks(&oti);
        if blocks.len() != manifest.block_hashes.len() {
            return self.reject(now, object_id, digest, RejectReason::Inconsistent("block hashes do not match the oti's blocks"));
        }
        if oti.transfer_length != manifest.size_bytes {
            return self.reject(now, object_id, digest, RejectReason::Inconsistent("size does not match the oti's transfer length"));
        }
        if self.incoming.contains_key(&object_id) {
            // A re-signed manifest for an object in progress (for example after a key
            // rotation): keep the progress, take the newer signature's digest.
            if let Some(inc) = self.incoming.get_mut(&object_id) {
                inc.digest = digest;
            }
            return;
        }
        if self.incoming.len() >= self.config.partial_objects_max {
            return self.reject(now, object_id, digest, RejectReason::TooManyPartial(self.incoming.len()));
        }
        let verified: Vec<bool> = blocks.iter().map(|b| store.block_written(object_id, b.sbn)).collect();
        if let Err(error) = store.begin_object(&manifest, signed) {
            return self.push(ReceptionEvent::StoreFailed { object_id, error: error.to_string() });
        }
        let remaining = verified.iter().filter(|v| !**v).count();
        let kept = blocks.iter().map(|b| store.symbol_count(object_id, b.sbn)).collect();
        self.push(ReceptionEvent::Accepted { manifest: Box::new(manifest.clone()) });
        let incoming = Incoming {
            manifest,
            digest,
            oti,
            blocks,
            verified,
            remaining,
            kept,
            signer_serial,
            symbols_received: 0,
            round: 0,
            last_symbol_at: now,
            last_report_at: None,
            report_due: None,
        };
        self.incoming.insert(object_id, incoming);
        if remaining == 0 {
            return self.finish(object_id, store);
        }
        // Symbols that came before the manifest now count.
        let (early, rest): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.early).into_iter().partition(|e| e.0 == object_id);
        self.early = rest;
        self.early_bytes = self.early.iter().map(|e| e.3.len() + EARLY_ENTRY_OVERHEAD_BYTES).sum();
        for (_, sbn, esi, symbol) in early {
            self.handle_symbol(now, object_id, sbn, esi, &symbol, store);
        }
    }

    fn handle_symbol(&mut self, now: Instant, object_id: u64, sbn: u8, esi: u32, symbol: &[u8], store: &mut dyn ReceptionStore) {
        let Some(inc) = self.incoming.get_mut(&object_id) else {
            if !self.is_completed(object_id) && symbol.len() <= usize::from(fec::SYMBOL_SIZE_MAX) {
                let cost = symbol.len() + EARLY_ENTRY_OVERHEAD_BYTES;
                while self.early_bytes + cost > EARLY_SYMBOL_BYTES_MAX || self.early.len() >= EARLY_SYMBOLS_MAX {
                    let Some(oldest) = self.early.pop_front() else { break };
                    self.early_bytes -= oldest.3.len() + EARLY_ENTRY_OVERHEAD_BYTES;
                }
                self.early_bytes += cost;
                self.early.push_back((object_id, sbn, esi, symbol.to_vec()));
            } else {
                self.stats.symbols_ignored += 1;
            }
            return;
        };
        inc.symbols_received += 1;
        inc.last_symbol_at = now;
        let usable =
            usize::from(sbn) < inc.blocks.len() && symbol.len() == usize::from(inc.oti.symbol_size) && !inc.verified[usize::from(sbn)];
        if !usable {
            self.stats.symbols_ignored += 1;
            return;
        }
        let source_symbols = inc.blocks[usize::from(sbn)].source_symbols;
        match store.add_symbol(object_id, sbn, esi, symbol) {
            Ok(true) => {
                self.stats.symbols_kept += 1;
                if let Some(kept) = self.incoming.get_mut(&object_id).and_then(|inc| inc.kept.get_mut(usize::from(sbn))) {
                    *kept += 1;
                }
            }
            Ok(false) => {
                self.stats.symbols_ignored += 1;
                return;
            }
            Err(error) => {
                self.push(ReceptionEvent::StoreFailed { object_id, error: error.to_string() });
                return;
            }
        }
        if store.symbol_count(object_id, sbn) >= source_symbols {
            self.try_decode(object_id, sbn, store);
        }
    }

    fn try_decode(&mut self, object_id: u64, sbn: u8, store: &mut dyn ReceptionStore) {
        if self.config.fidelity == Fidelity::Counting {
            return self.try_decode_counted(object_id, sbn, store);
        }
        let Some(inc) = self.incoming.get(&object_id) else { return };
        let block = inc.blocks[usize::from(sbn)];
        let expected_hash = inc.manifest.block_hashes[usize::from(sbn)];
        let oti = inc.oti;
        let symbols = match store.symbols(object_id, sbn) {
            Ok(symbols) => symbols,
            Err(error) => return self.push(ReceptionEvent::StoreFailed { object_id, error: error.to_string() }),
        };
        let data = match fec::decode_block(&oti, sbn, symbols) {
            Ok(data) => data,
            // Not yet decodable: the next symbol triggers another attempt.
            Err(_) => return,
        };
        if fec::block_hash(&data) != expected_hash {
            if let Err(error) = store.clear_block(object_id, sbn) {
                self.push(ReceptionEvent::StoreFailed { object_id, error: error.to_string() });
            }
            if let Some(kept) = self.incoming.get_mut(&object_id).and_then(|inc| inc.kept.get_mut(usize::from(sbn))) {
                *kept = 0;
            }
            return self.push(ReceptionEvent::BlockPoisoned { object_id, sbn });
        }
        let stored = store.write_block(object_id, sbn, block.offset, &data).and_then(|()| store.clear_block(object_id, sbn));
        if let Err(error) = stored {
            return self.push(ReceptionEvent::StoreFailed { object_id, error: error.to_string() });
        }
        if self.mark_verified(object_id, sbn) {
            self.finish(object_id, store);
        }
    }

    /// Records a verified block; true when it was the object's last.
    fn mark_verified(&mut self, object_id: u64, sbn: u8) -> bool {
        let Some(inc) = self.incoming.get_mut(&object_id) else { return false };
        inc.verified[usize::from(sbn)] = true;
        inc.remaining -= 1;
        let last = inc.remaining == 0;
        self.push(ReceptionEvent::BlockVerified { object_id, sbn });
        last
    }

    /// The object is whole and verified: out of the incoming set, into the completed one.
    /// Unless a newer version of its (kind, name) was delivered while it arrived: then it
    /// is refused as a rollback, and must not be delivered over the newer one.
    fn complete(&mut self, object_id: u64) {
        let newer = self.incoming.get(&object_id).and_then(|inc| {
            let delivered = self.delivered.get(&(inc.manifest.kind, inc.manifest.name.clone()))?;
            (delivered.version >= inc.manifest.version && delivered.object_id != object_id)
                .then_some((delivered.version, inc.manifest.version))
        });
        if let Some((accepted_version, offered_version)) = newer {
            self.incoming.remove(&object_id);
            let reason = RejectReason::Trust(TrustError::Rollback { accepted_version, offered_version });
            self.send_feedback(FeedbackMessage::Rejected { object_id, reason: reason.to_string() });
            return self.push(ReceptionEvent::Rejected { object_id, reason });
        }
        if let Some(inc) = self.incoming.remove(&object_id) {
            self.remember_completed(object_id, inc.manifest.object_hash);
            self.push(ReceptionEvent::Complete { manifest: Box::new(inc.manifest) });
        }
    }

    /// Counting fidelity: the block decodes with the RFC 6330 success probability for the
    /// distinct symbols held.
    fn try_decode_counted(&mut self, object_id: u64, sbn: u8, store: &mut dyn ReceptionStore) {
        let Some(inc) = self.incoming.get(&object_id) else { return };
        let k = inc.blocks[usize::from(sbn)].source_symbols;
        let overhead = store.symbol_count(object_id, sbn).saturating_sub(k);
        let failure = 0.01 * 0.01f64.powi(overhead.min(16) as i32);
        if self.rng.random_bool(failure) {
            return;
        }
        if let Err(error) = store.clear_block(object_id, sbn) {
            return self.push(ReceptionEvent::StoreFailed { object_id, error: error.to_string() });
        }
        // Counting fidelity keeps no bytes: there is no whole-object hash to check.
        if self.mark_verified(object_id, sbn) {
            self.complete(object_id);
        }
    }

    /// Every block verified: check the whole object as the store holds it.
    fn finish(&mut self, object_id: u64, store: &mut dyn ReceptionStore) {
        let Some(inc) = self.incoming.get(&object_id) else { return };
        match store.object_hash(object_id, inc.manifest.size_bytes) {
            Ok(hash) if hash == inc.manifest.object_hash => self.complete(object_id),
            Ok(_) => {
                let discarded = store.discard(object_id);
                if let Some(inc) = self.incoming.get_mut(&object_id) {
                    inc.verified.iter_mut().for_each(|v| *v = false);
                    inc.kept.iter_mut().for_each(|k| *k = 0);
                    inc.remaining = inc.verified.len();
                }
                if let Err(error) = discarded {
                    self.push(ReceptionEvent::StoreFailed { object_id, error: error.to_string() });
                }
                self.push(ReceptionEvent::ObjectPoisoned { object_id });
            }
            Err(error) => self.push(ReceptionEvent::StoreFailed { object_id, error: error.to_string() }),
        }
    }

    /// Expires partial objects whose manifest has expired.
    pub fn handle_tick(&mut self, wall_unix_secs: u64, store: &mut dyn ReceptionStore) {
        let expired: Vec<u64> =
            self.incoming.iter().filter(|(_, inc)| inc.manifest.expires_unix_secs <= wall_unix_secs).map(|(id, _)| *id).collect();
        for object_id in expired {
            self.incoming.remove(&object_id);
            if let Err(error) = store.discard(object_id) {
                self.push(ReceptionEvent::StoreFailed { object_id, error: error.to_string() });
            }
            self.push(ReceptionEvent::Expired { object_id });
        }
    }
}

/// A [`ReceptionStore`] for [`Fidelity::Counting`]: remembers which ESIs arrived, not
/// their bytes (about 4 bytes per symbol instead of T).
#[derive(Debug, Default)]
pub struct CountingStore {
    esis: HashMap<(u64, u8), std::collections::HashSet<u32>>,
}

impl ReceptionStore for CountingStore {
    fn begin_object(&mut self, _manifest: &Manifest, _signed_manifest: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn add_symbol(&mut self, object_id: u64, sbn: u8, esi: u32, _symbol: &[u8]) -> io::Result<bool> {
        Ok(self.esis.entry((object_id, sbn)).or_default().insert(esi))
    }

    fn symbol_count(&self, object_id: u64, sbn: u8) -> u32 {
        self.esis.get(&(object_id, sbn)).map_or(0, |e| e.len() as u32)
    }

    fn symbols(&mut self, _object_id: u64, _sbn: u8) -> io::Result<Vec<(u32, Vec<u8>)>> {
        Err(io::Error::other("a counting store keeps no symbol bytes"))
    }

    fn clear_block(&mut self, object_id: u64, sbn: u8) -> io::Result<()> {
        self.esis.remove(&(object_id, sbn));
        Ok(())
    }

    fn write_block(&mut self, _object_id: u64, _sbn: u8, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn block_written(&self, _object_id: u64, _sbn: u8) -> bool {
        false
    }

    fn object_hash(&mut self, _object_id: u64, _len: u64) -> io::Result<[u8; 32]> {
        Err(io::Error::other("a counting store keeps no object bytes"))
    }

    fn discard(&mut self, object_id: u64) -> io::Result<()> {
        self.esis.retain(|(id, _), _| *id != object_id);
        Ok(())
    }
}

/// A [`ReceptionStore`] in memory, for tests and the simulator.
#[derive(Debug, Default)]
pub struct MemoryStore {
    symbols: HashMap<(u64, u8), BTreeMap<u32, Vec<u8>>>,
    objects: HashMap<u64, Vec<u8>>,
    written: HashMap<u64, Vec<u8>>,
}

impl MemoryStore {
    /// The assembled bytes of an object, if any block was written.
    pub fn object(&self, object_id: u64) -> Option<&[u8]> {
        self.objects.get(&object_id).map(Vec::as_slice)
    }
}

impl ReceptionStore for MemoryStore {
    fn begin_object(&mut self, _manifest: &Manifest, _signed_manifest: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn add_symbol(&mut self, object_id: u64, sbn: u8, esi: u32, symbol: &[u8]) -> io::Result<bool> {
        let block = self.symbols.entry((object_id, sbn)).or_default();
        if block.contains_key(&esi) {
            return Ok(false);
        }
        block.insert(esi, symbol.to_vec());
        Ok(true)
    }

    fn symbol_count(&self, object_id: u64, sbn: u8) -> u32 {
        self.symbols.get(&(object_id, sbn)).map_or(0, |b| b.len() as u32)
    }

    fn symbols(&mut self, object_id: u64, sbn: u8) -> io::Result<Vec<(u32, Vec<u8>)>> {
        Ok(self.symbols.get(&(object_id, sbn)).map(|b| b.iter().map(|(e, s)| (*e, s.clone())).collect()).unwrap_or_default())
    }

    fn clear_block(&mut self, object_id: u64, sbn: u8) -> io::Result<()> {
        self.symbols.remove(&(object_id, sbn));
        Ok(())
    }

    fn write_block(&mut self, object_id: u64, sbn: u8, offset: u64, data: &[u8]) -> io::Result<()> {
        let object = self.objects.entry(object_id).or_default();
        let end = offset as usize + data.len();
        if object.len() < end {
            object.resize(end, 0);
        }
        object[offset as usize..end].copy_from_slice(data);
        self.written.entry(object_id).or_default().push(sbn);
        Ok(())
    }

    fn block_written(&self, object_id: u64, sbn: u8) -> bool {
        self.written.get(&object_id).is_some_and(|w| w.contains(&sbn))
    }

    fn object_hash(&mut self, object_id: u64, len: u64) -> io::Result<[u8; 32]> {
        let object = self.objects.get(&object_id).map(Vec::as_slice).unwrap_or_default();
        let len = (len as usize).min(object.len());
        Ok(*blake3::hash(&object[..len]).as_bytes())
    }

    fn discard(&mut self, object_id: u64) -> io::Result<()> {
        self.symbols.retain(|(id, _), _| *id != object_id);
        self.objects.remove(&object_id);
        self.written.remove(&object_id);
        Ok(())
    }
}
