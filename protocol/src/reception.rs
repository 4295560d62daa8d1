//! The reception-side state machine for one county receiver.
//!
//! It authenticates datagrams, reassembles and verifies manifests under the trust rules,
//! collects symbols through a [`ReceptionStore`], decodes each source block as soon as it
//! can, checks every block against its signed BLAKE3 (a poisoned block is dropped and
//! collected again, the others are kept) and finally the whole object. It performs no I/O
//! of its own: storage work goes out as [`StoreRequest`]s (see [`crate::storage`]) and
//! comes back through [`Reception::handle_completion`]; the driver supplies the time and
//! the wall-clock time.
//!
//! Call order, for a driver:
//! 1. [`Reception::set_delivered`] for every (kind, name) already delivered (from durable
//!    trust state) and [`Reception::set_cached`] for every object in the cache, before the
//!    first datagram;
//!    [`Reception::resume`] for every partial object storage kept;
//! 2. [`Reception::handle_datagram`] for each datagram received;
//! 3. [`Reception::poll_request`] until `None`, handing each request to the executor in
//!    order, and [`Reception::handle_completion`] for each completion it returns (in any
//!    later call; the machine keeps no bound of its own on requests because the driver
//!    drains them after every call, and the executor's queue carries the bound);
//! 4. [`Reception::poll_event`] until `None`; on [`ReceptionEvent::Complete`] make the
//!    object durable and deliver it, then call [`Reception::mark_delivered`];
//! 5. [`Reception::handle_tick`] about once a second, to expire stale partial objects;
//! 6. [`Reception::handle_timeout`] when [`Reception::poll_timeout`] comes due, then
//!    [`Reception::poll_feedback`] until `None`, sending each message to the uplink.
//!
//! Feedback: after each ROUND marker the receiver reports, per block, how many more symbols
//! it needs, at a random moment within the report window so 2000 counties do not report at
//! once. It also reports by itself when an object it is missing goes quiet (the marker may
//! have been lost), and reports Complete once the driver has made the object durable.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::confidential::{self, Opened};
use crate::esi_set::{EsiSet, Inserted};
use crate::fec::{self, Block, FecError, Oti};
use crate::feedback::{Feedback, FeedbackMessage, Refusal, RefusalCode};
use crate::key_tree::{CountySecret, KeyRing, KeyTreeError, Node, SignedKeyWraps};
use crate::manifest::{Kind, Manifest};
use crate::network_key::{NextKeyAccess, SignedNextNetworkKey};
use crate::storage::{DecodeOutcome, Held, NotKept, StoreCompletion, StoreRequest, VerifyOutcome};
// Where they lived before storage became requests; the daemon's store and tests name them here.
pub use crate::storage::{MemoryStore, ReceptionStore};
use crate::trust::{self, Accepted, Heartbeat, RootPublicKey, SignedHeartbeat, SignedRevocation, TrustError};
use crate::wire::{self, Body, ManifestAssembler, NetworkKey, SourceRefusal, WireError};

/// The most events held for the driver; beyond it the oldest are dropped and counted.
pub const EVENTS_MAX: usize = 4096;
/// How many rejected manifests are remembered, so a forged one repeated on the carousel is
/// verified (and logged) once, not every time.
pub const REJECTED_REMEMBERED_MAX: usize = 1024;
/// How long a rejected manifest is remembered; after that it is checked again, in case the
/// reason was passing (a receiver clock that was wrong).
pub const REJECTED_REMEMBER_FOR: Duration = Duration::from_secs(600);
/// Sealed manifests kept while this county lacks the group key that opens them (it was
/// offline through a re-key, or restarted and has not heard the key carousel yet), so the
/// key wraps that bring the key open them at once; their symbols wait in the early buffer
/// meanwhile. Beyond it the oldest is dropped (a later repeat brings it back).
pub const PENDING_SEALED_MAX: usize = 8;
/// How long a sealed manifest waits for its key before it is dropped.
pub const PENDING_SEALED_FOR: Duration = Duration::from_secs(600);
/// How many completed object ids are remembered, so their repeats are ignored cheaply.
pub const COMPLETED_REMEMBERED_MAX: usize = 4096;
/// The most symbol bytes kept for objects whose manifest has not arrived yet, so a lost
/// manifest costs nothing: about two seconds at 80 Mbit/s, twice the manifest interval.
/// Only datagrams with a valid tag get here; the oldest are dropped beyond this.
pub const EARLY_SYMBOL_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The most symbols kept for objects whose manifest has not arrived yet, whatever their
/// size: tiny forged symbols must not turn the byte bound into millions of entries.
pub const EARLY_SYMBOLS_MAX: usize = 16_384;
/// Symbols kept unverified (their signed list was lost, or never came), over all objects:
/// a block uses them only when its verified symbols fall short, and drops them if that
/// attempt fails its hash. The oldest go first beyond this, or beyond
/// [`UNVERIFIED_SYMBOL_BYTES_MAX`].
pub const UNVERIFIED_SYMBOLS_MAX: usize = 16_384;
/// Bytes of unverified symbols kept, over all objects.
pub const UNVERIFIED_SYMBOL_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Failed decode attempts with unverified symbols per block of one object: after that the
/// block uses only symbols a signed list vouches for (an attacker's forgeries cost each
/// block at most this many attempts).
pub const UNVERIFIED_ATTEMPTS_PER_BLOCK_MAX: u8 = 1;
/// Listed symbol hashes remembered per object (those of symbols not received yet: lost
/// ones linger until their block verifies or newer lists push them out).
pub const LISTED_SYMBOLS_MAX: usize = 4096;
/// Sequences of accepted symbol lists remembered per object: a list seen already (or older
/// than all of these) costs a counter, not a signature check.
pub const LIST_SEQUENCES_REMEMBERED: usize = 64;
/// ROUND markers per object that signed lists named, remembered.
pub const LISTED_ROUNDS_MAX: usize = 16;
/// Symbol lists kept, unverified, for objects whose manifest has not been accepted yet.
pub const EARLY_LISTS_MAX: usize = 64;
/// Signing-key certificates remembered from verified manifests and heartbeats: symbol
/// lists name their signer by serial and are checked against these.
pub const LIST_SIGNERS_MAX: usize = 8;
/// Bytes each early symbol is charged beyond its own: the entry and its allocation.
const EARLY_ENTRY_OVERHEAD_BYTES: usize = 64;
/// SYMBOL LIST checks that may fail per second (a bad signature, or a certificate in a list
/// that does not verify under the root), and at once: genuine lists never fail, so this
/// budget costs them nothing until someone forges. An insider (it holds the network key)
/// can otherwise make a county spend an Ed25519 verification (about 50 µs) per forged list.
/// Once it is spent, lists are held unchecked (docs/protocol.md 7.5).
pub const LIST_CHECKS_FAILED_PER_SEC_MAX: u32 = 16;
/// See [`LIST_CHECKS_FAILED_PER_SEC_MAX`].
pub const LIST_CHECKS_FAILED_BURST_MAX: u32 = 16;
/// Checks of held lists, made because a symbol or ROUND marker arrived that one names,
/// that may fail per second, and at once: a separate budget, so a flood of forged lists
/// that spends the first one cannot also keep the genuine held lists from being checked.
pub const LIST_EVIDENCE_CHECKS_FAILED_PER_SEC_MAX: u32 = 16;
/// See [`LIST_EVIDENCE_CHECKS_FAILED_PER_SEC_MAX`].
pub const LIST_EVIDENCE_CHECKS_FAILED_BURST_MAX: u32 = 16;
/// Lists held unchecked while the budget of failed checks is spent, over all objects,
/// oldest out: a genuine list's first symbol follows it within a fraction of a
/// millisecond, so a flood must send this many lists in that gap to push it out.
pub const HELD_LISTS_MAX: usize = 256;
/// How many objects' refusals are remembered, so each (object, reason) is told to the
/// uplink once, and again only when the reason changes: a manifest repeated on the carousel
/// (or replayed by an insider) buys no more feedback. Beyond it the oldest is forgotten
/// (and told again, at most, if its manifest comes back).
pub const REFUSALS_REMEMBERED_MAX: usize = 1024;
/// How long a refusal of an object not being received shows in status after its manifest
/// was last seen (twice [`REJECTED_REMEMBER_FOR`], after which a repeat is checked again).
pub const REFUSAL_SHOWN_FOR: Duration = Duration::from_secs(1200);
/// The shortest time between two Completes of one object (its first, when the driver made
/// it durable, included): the uplink asks again with a ROUND marker when a Complete was lost
/// on the WAN, and its rounds are further apart than this (feedback_wait alone is 2.5 s),
/// while an insider's forged markers at any rate buy no more than one per interval.
pub const COMPLETE_REPEAT_INTERVAL_MIN: Duration = Duration::from_secs(2);
/// Repeated Completes, over all objects, allowed in a burst; the budget refills at
/// [`COMPLETE_REPEATS_PER_SEC_MAX`]. The uplink's ack server allows a county 20 messages a
/// second (burst 200): forged markers for many completed objects must not use that up.
pub const COMPLETE_REPEATS_BURST_MAX: u32 = 8;
/// The rate at which the repeated-Complete budget refills.
pub const COMPLETE_REPEATS_PER_SEC_MAX: u32 = 1;
/// How many refused heartbeats and revocation lists are remembered (by a digest of their
/// bytes), so a refused one repeated at any rate is checked once: its copies cost a hash
/// and a counter. Fresh genuine ones are all different, so a few suffice.
pub const CONTROL_REFUSED_REMEMBERED_MAX: usize = 64;
/// The most feedback messages waiting for the driver; the oldest progress reports are
/// dropped beyond it (the next round asks again).
pub const FEEDBACK_QUEUE_MAX: usize = 1024;
/// How often a receiver reports from the middle of a pass, per object, by default: 2000
/// counties make 2000 reports a second per object at the uplink, which writes none of them
/// down (they steer the airing only; it keeps the latest per county in memory).
pub const PASS_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Object ids of partial objects dropped because the uplink no longer airs them: their
/// manifests, replayed, are dropped before any signature check until a heartbeat names
/// them live again.
pub const ENDED_REMEMBERED_MAX: usize = 1024;
/// A heartbeat's statement of live objects and latest versions is used only if the
/// heartbeat arrived at most this long after the uplink signed it (by the county's
/// clock): one captured long ago and replayed after a restart says nothing about now.
pub const STATEMENT_AGE_MAX: Duration = Duration::from_secs(60);

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
    /// Storage cannot deliver it here (a patch without its base, a payload that does not
    /// decode to its signed bytes).
    #[error("{0}")]
    Undeliverable(Refusal),
}

impl RejectReason {
    /// The refusal the uplink is told of, for a genuine manifest addressed to this county;
    /// None for what is not its business (a forgery, a splice, another county's manifest).
    pub fn refusal(&self) -> Option<Refusal> {
        let clock = |at: u64, now: u64| {
            let (by, way) = if at > now { (at - now, "behind") } else { (now - at, "ahead") };
            format!("county clock {by} s {way} of it")
        };
        Some(match self {
            RejectReason::Trust(error) => match *error {
                TrustError::KeyRevoked { serial } => Refusal::new(RefusalCode::KeyRevoked, format!("serial {serial}")),
                TrustError::KeyNotYetValid { not_before_unix_secs, now_unix_secs } => Refusal::new(
                    RefusalCode::KeyNotYetValid,
                    format!("valid from {not_before_unix_secs}, {}", clock(not_before_unix_secs, now_unix_secs)),
                ),
                TrustError::KeyExpired { not_after_unix_secs, now_unix_secs } => Refusal::new(
                    RefusalCode::KeyExpired,
                    format!("expired at {not_after_unix_secs}, {}", clock(not_after_unix_secs, now_unix_secs)),
                ),
                TrustError::ManifestExpired { expires_unix_secs, now_unix_secs } => Refusal::new(
                    RefusalCode::ManifestExpired,
                    format!("expired at {expires_unix_secs}, {}", clock(expires_unix_secs, now_unix_secs)),
                ),
                TrustError::ManifestFromFuture { created_unix_secs, now_unix_secs } => Refusal::new(
                    RefusalCode::ManifestFromFuture,
                    format!("created at {created_unix_secs}, {}", clock(created_unix_secs, now_unix_secs)),
                ),
                TrustError::Rollback { accepted_version, offered_version } => {
                    Refusal::new(RefusalCode::Rollback, format!("offered version {offered_version}, version {accepted_version} delivered"))
                }
                TrustError::Superseded { latest_version, offered_version } => Refusal::new(
                    RefusalCode::Superseded,
                    format!("offered version {offered_version}, the uplink's latest is version {latest_version}"),
                ),
                _ => return None,
            },
            RejectReason::TooManyPartial(count) => {
                Refusal::new(RefusalCode::TooManyPartial, format!("{count} already, limits.partial_objects_max"))
            }
            RejectReason::Undeliverable(refusal) => refusal.clone(),
            RejectReason::Oti(_) | RejectReason::Inconsistent(_) | RejectReason::ObjectIdMismatch { .. } => return None,
        })
    }
}

/// Why an object addressed to this county is not delivered yet, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StuckReason {
    /// Accepted and being collected: this many symbols still needed, summed over blocks.
    WaitingForSymbols {
        /// Symbols still needed.
        needed: u64,
    },
    /// Refused, and the uplink told.
    Refused(Refusal),
    /// Accepted, but storage failed on its last attempt (retried as symbols arrive).
    StorageFailing(String),
}

/// One object this county does not have yet, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// The object.
    pub object_id: u64,
    /// kind/name.
    pub name: String,
    /// Why.
    pub reason: StuckReason,
}

/// A refusal told to the uplink.
#[derive(Debug)]
struct RefusalNote {
    object_id: u64,
    name: String,
    refusal: Refusal,
    last_seen: Instant,
}

/// What the reception machine reports to its driver.
#[derive(Debug)]
pub enum ReceptionEvent {
    /// A next network key was learned from the air: the driver keeps it durably, so a
    /// restart before or after its activation still hears the uplink.
    NextNetworkKey {
        /// When it activates.
        activates_unix_secs: u64,
        /// The key.
        key: NetworkKey,
    },
    /// The next network key took over (a heartbeat tagged with it verified): the driver
    /// keeps it durably as the current key.
    NetworkKeyActivated {
        /// When it activated.
        activates_unix_secs: u64,
        /// The key.
        key: NetworkKey,
    },
    /// A datagram was refused before its body was used.
    Dropped {
        /// Why.
        reason: WireError,
    },
    /// A manifest addressed to this county was refused, or an accepted object cannot be
    /// begun in storage, and the uplink is told: said once per (object, reason code).
    Refused {
        /// The object.
        object_id: u64,
        /// kind/name.
        name: String,
        /// Why.
        refusal: Refusal,
    },
    /// A manifest was refused that the uplink is not told of (a forgery, a splice,
    /// another county's): said once per manifest and [`REJECTED_REMEMBER_FOR`].
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
    /// A partial object the uplink no longer airs (its heartbeats do not list it) was
    /// discarded to make room for a new one.
    Ended {
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
    /// A heartbeat was refused (bad signature, revoked key, dated in the future...): said
    /// once per distinct heartbeat. A replay of one accepted or refused already is no event,
    /// only a count ([`ReceptionStats::heartbeats_replayed`]).
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
    /// A revocation list was refused (not signed by the pinned root, or malformed): said
    /// once per distinct list. A list not above the one held is no event, only a count
    /// ([`ReceptionStats::revocations_replayed`]).
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
    /// Signed messages (manifests, heartbeats, revocation lists) whose signatures were
    /// checked: each costs one or two Ed25519 verifications, so what a replay can make the
    /// receiver spend shows here.
    pub signatures_checked: u64,
    /// Heartbeats dropped as replays: not newer than the last accepted, or the same bytes
    /// as one refused already.
    pub heartbeats_replayed: u64,
    /// Revocation lists dropped as replays: not above the list held, or the same bytes as
    /// one refused already.
    pub revocations_replayed: u64,
    /// ROUND markers for completed objects that were not answered with a Complete again
    /// (a round answered already, or too soon after the last answer).
    pub round_markers_repeated: u64,
    /// Completes said again in answer to ROUND markers of completed objects.
    pub completes_repeated: u64,
    /// Manifest fragments dropped because their object was dropped as ended (a replay
    /// of a broadcast the uplink no longer airs), before any assembly or signature.
    pub manifests_ended: u64,
    /// Partial objects dropped, to make room, because the uplink no longer airs them.
    pub partials_ended: u64,
    /// KEY_WRAP datagrams (the confidential key tree's carousel, docs/protocol.md 7.4).
    pub key_wraps: u64,
    /// KEY_WRAP datagrams dropped before any signature: nothing in them for this county
    /// (another part of the tree, epochs it holds already: the carousel repeating itself),
    /// or this county has no key of its own.
    pub key_wraps_unwanted: u64,
    /// KEY_WRAP datagrams refused: malformed, a revoked or unknown signer, a bad signature.
    pub key_wraps_refused: u64,
    /// Group keys of this county's path learned from them.
    pub group_keys_learned: u64,
    /// NETWORK KEY datagrams (a rotation of the network key, docs/protocol.md 8.6).
    pub network_key_announcements: u64,
    /// Of those, dropped before any signature: a rotation already known or older, or this
    /// county has no key of its own.
    pub network_key_unwanted: u64,
    /// Of those, refused: malformed, a revoked or unknown signer, a bad signature, or not
    /// sealed for this county (revoked before the rotation).
    pub network_key_refused: u64,
    /// Next network keys learned.
    pub network_keys_learned: u64,
    /// Next network keys that took over (at the first verified heartbeat under them).
    pub network_keys_activated: u64,
    /// Confidential objects whose targets include this county's code but whose content key
    /// is not sealed for it (revoked before the object was made, or enrolled after): dropped
    /// without a word to the uplink, once per manifest signature.
    pub sealed_not_targeted: u64,
    /// Manifest repeats of confidential objects sealed under a group key of this county's
    /// path at an epoch it does not hold yet: it waits for the carousel's key wraps and
    /// tries again at a later repeat.
    pub sealed_pending: u64,
    /// Manifests of confidential objects this county opened (it is among their readers):
    /// once per object, and again after a restart.
    pub sealed_opened: u64,
    /// Signed symbol lists accepted (one signature check each).
    pub symbol_lists_accepted: u64,
    /// Symbol lists dropped before any signature check: seen already (replays, repeats
    /// before ROUND markers), or for an object completed or ended.
    pub symbol_lists_replayed: u64,
    /// Symbol lists whose signature did not verify.
    pub symbol_lists_refused: u64,
    /// Symbol lists whose signer this county has not learned (from a manifest or
    /// heartbeat), or revoked or expired: not checked; their symbols stay unverified.
    pub symbol_lists_unknown_signer: u64,
    /// DATA symbols that did not match their signed list: forgeries, never decoded.
    pub symbols_forged: u64,
    /// DATA symbols kept unverified (no signed list named them when they came).
    pub symbols_unverified: u64,
    /// Unverified symbols dropped: pushed out by the bounds, of a block that failed an
    /// attempt with them, or refused because their block uses verified symbols only.
    pub symbols_unverified_dropped: u64,
    /// Blocks decoded with the help of unverified symbols.
    pub unverified_decodes: u64,
    /// Decode attempts with unverified symbols that failed the block's hash: a forged
    /// symbol among them (at most [`UNVERIFIED_ATTEMPTS_PER_BLOCK_MAX`] per block).
    pub unverified_decodes_failed: u64,
    /// ROUND markers no signed list named (forgeries, or a marker whose lists were all lost).
    pub round_markers_unlisted: u64,
    /// Symbol lists held unchecked because the budget of failed checks was spent (someone
    /// is forging lists): each is checked only if a symbol or ROUND marker it names arrives.
    pub symbol_lists_held: u64,
    /// Of those, checked when such a symbol or marker arrived, and accepted.
    pub symbol_lists_held_accepted: u64,
    /// Held lists pushed out unchecked ([`HELD_LISTS_MAX`]): their symbols stay unverified,
    /// as a lost list's.
    pub symbol_lists_unchecked: u64,
}

/// A budget of failed checks: tokens refilled at `per_sec` up to `burst`, one spent per
/// failure (success costs nothing).
#[derive(Debug, Clone, Copy)]
struct FailureBudget {
    per_sec: u32,
    burst: u32,
    tokens: f64,
    refilled_at: Option<Instant>,
}

impl FailureBudget {
    fn new(per_sec: u32, burst: u32) -> Self {
        FailureBudget { per_sec, burst, tokens: f64::from(burst), refilled_at: None }
    }

    /// Whether a check may fail now.
    fn available(&mut self, now: Instant) -> bool {
        let elapsed = self.refilled_at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.tokens = (self.tokens + elapsed.as_secs_f64() * f64::from(self.per_sec)).min(f64::from(self.burst));
        self.refilled_at = Some(now);
        self.tokens >= 1.0
    }

    fn spend(&mut self) {
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

/// A SYMBOL LIST held unchecked while the budget of failed checks is spent: its cheap
/// checks passed (sequence, signer), its signature waits for evidence.
#[derive(Debug)]
struct HeldList {
    object_id: u64,
    /// The signer's public key, found by the cheap checks.
    key: [u8; 32],
    /// The body, as received (the signed part, then the signature).
    body: Vec<u8>,
    round: Option<u32>,
    /// The named (payload id, hash), sorted by payload id.
    entries: Vec<(u32, [u8; wire::SYMBOL_HASH_LEN])>,
}

impl HeldList {
    /// Whether the list names this symbol with this hash: evidence worth its check.
    fn names(&self, payload_id: u32, hash: &[u8; wire::SYMBOL_HASH_LEN]) -> bool {
        self.entries.binary_search_by_key(&payload_id, |(id, _)| *id).is_ok_and(|at| self.entries[at].1 == *hash)
    }
}

/// What the uplink's signed lists vouch for, per object.
#[derive(Debug, Default)]
struct Listed {
    /// Hash of each listed symbol not received yet, by payload id (SBN u8, ESI u24), in
    /// payload-id order so a verified block's entries go at once.
    hashes: BTreeMap<u32, [u8; wire::SYMBOL_HASH_LEN]>,
    /// Payload ids in the order listed, to push out the oldest (may name ones gone already).
    order: VecDeque<u32>,
    /// Sequences of the lists accepted last (at most [`LIST_SEQUENCES_REMEMBERED`]).
    sequences: std::collections::BTreeSet<u64>,
    /// Rounds whose ROUND marker a list named (at most [`LISTED_ROUNDS_MAX`]).
    rounds: VecDeque<u32>,
    /// The last ROUND marker that came before a list naming it.
    pending_round: Option<u32>,
}

impl Listed {
    /// A list with this sequence was taken already, or is older than every one remembered.
    fn seen(&self, sequence: u64) -> bool {
        self.sequences.contains(&sequence)
            || (self.sequences.len() >= LIST_SEQUENCES_REMEMBERED && self.sequences.first().is_some_and(|s| sequence < *s))
    }

    /// Takes a verified list.
    fn take(&mut self, list: &wire::SymbolList<'_>) {
        self.sequences.insert(list.sequence);
        while self.sequences.len() > LIST_SEQUENCES_REMEMBERED {
            self.sequences.pop_first();
        }
        for (payload_id, hash) in list.entries() {
            self.hashes.insert(payload_id, hash);
            self.order.push_back(payload_id);
        }
        while self.hashes.len() > LISTED_SYMBOLS_MAX || self.order.len() > 2 * LISTED_SYMBOLS_MAX {
            let Some(oldest) = self.order.pop_front() else { break };
            self.hashes.remove(&oldest);
        }
        if let Some(round) = list.round {
            if !self.rounds.contains(&round) {
                self.rounds.push_back(round);
            }
            while self.rounds.len() > LISTED_ROUNDS_MAX {
                self.rounds.pop_front();
            }
        }
    }

    /// Forgets the entries of a verified block.
    fn forget_block(&mut self, sbn: u8) {
        let first = wire::payload_id(sbn, 0);
        let last = wire::payload_id(sbn, wire::ESI_MAX);
        let gone: Vec<u32> = self.hashes.range(first..=last).map(|(id, _)| *id).collect();
        for id in gone {
            self.hashes.remove(&id);
        }
    }
}

/// A symbol list kept before its object's manifest was accepted: its body, as received.
#[derive(Debug)]
struct EarlyList {
    object_id: u64,
    sequence: u64,
    body: Vec<u8>,
}

/// Symbols no signed list vouched for when they came, over all objects, bounded by
/// [`UNVERIFIED_SYMBOLS_MAX`] and [`UNVERIFIED_SYMBOL_BYTES_MAX`].
#[derive(Debug, Default)]
struct Unverified {
    symbols: BTreeMap<(u64, u8, u32), Vec<u8>>,
    /// Keys in arrival order, to push out the oldest (may name ones gone already).
    order: VecDeque<(u64, u8, u32)>,
    bytes: usize,
}

impl Unverified {
    fn cost(symbol: &[u8]) -> usize {
        symbol.len() + EARLY_ENTRY_OVERHEAD_BYTES
    }

    /// Keeps a symbol; returns whether it is new, and how many older ones were pushed out
    /// (with the (object, block) each belonged to).
    fn insert(&mut self, key: (u64, u8, u32), symbol: Vec<u8>) -> (bool, Vec<(u64, u8)>) {
        if self.symbols.contains_key(&key) {
            return (false, Vec::new());
        }
        let mut pushed_out = Vec::new();
        let cost = Self::cost(&symbol);
        while self.symbols.len() >= UNVERIFIED_SYMBOLS_MAX
            || self.bytes + cost > UNVERIFIED_SYMBOL_BYTES_MAX
            || self.order.len() > 2 * UNVERIFIED_SYMBOLS_MAX
        {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(gone) = self.symbols.remove(&oldest) {
                self.bytes -= Self::cost(&gone);
                pushed_out.push((oldest.0, oldest.1));
            }
        }
        self.bytes += cost;
        self.symbols.insert(key, symbol);
        self.order.push_back(key);
        (true, pushed_out)
    }

    fn remove(&mut self, key: &(u64, u8, u32)) -> Option<Vec<u8>> {
        let symbol = self.symbols.remove(key)?;
        self.bytes -= Self::cost(&symbol);
        Some(symbol)
    }

    /// The unverified symbols of one block, as (ESI, bytes).
    fn of_block(&self, object_id: u64, sbn: u8) -> Vec<(u32, Vec<u8>)> {
        self.symbols.range((object_id, sbn, 0)..=(object_id, sbn, u32::MAX)).map(|((_, _, esi), s)| (*esi, s.clone())).collect()
    }

    /// Drops the unverified symbols of one block; returns how many.
    fn drop_block(&mut self, object_id: u64, sbn: u8) -> u64 {
        let keys: Vec<_> = self.symbols.range((object_id, sbn, 0)..=(object_id, sbn, u32::MAX)).map(|(k, _)| *k).collect();
        for key in &keys {
            self.remove(key);
        }
        keys.len() as u64
    }
}

/// How faithfully symbols are processed. The simulator uses [`Fidelity::Counting`] to run
/// thousands of receivers: the same machine, the same manifests, requests, reports and
/// events, but symbol requests carry no bytes, and its executor lets a block "decode" with
/// the probability RFC 6330 gives for the symbols counted
/// ([`crate::storage::execute_counting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fidelity {
    /// Symbol requests carry the symbols: what the daemon runs.
    Full,
    /// Symbol requests carry no bytes.
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
    /// When `network_key` took over from an earlier one, seconds since the Unix epoch (0
    /// for the bundle's): an announcement of a key activating no later is old news.
    pub network_key_activates_unix_secs: u64,
    /// A next network key learned from the air (docs/protocol.md 8.6), and when it
    /// activates: tags under it are tried when the current key's fail, and the first
    /// heartbeat under it that verifies makes it current.
    pub next_network_key: Option<(u64, NetworkKey)>,
    /// The most objects received at once.
    pub partial_objects_max: usize,
    /// Progress reports go out at a random moment within this window after a ROUND marker.
    pub report_window: Duration,
    /// An incomplete object that received nothing for this long is reported on the
    /// receiver's own initiative (its ROUND markers may all have been lost).
    pub quiet_report_after: Duration,
    /// While symbols of an incomplete object arrive, a report of where it stands goes out
    /// about this often (drawn from half to one and a half times it), so the uplink knows
    /// at a pass's end who will fall short; None sends none.
    pub pass_report_interval: Option<Duration>,
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
            network_key_activates_unix_secs: 0,
            next_network_key: None,
            partial_objects_max: 8,
            report_window: Duration::from_secs(1),
            quiet_report_after: Duration::from_secs(5),
            pass_report_interval: Some(PASS_REPORT_INTERVAL),
            seed: 0,
            fidelity: Fidelity::Full,
        }
    }
}

impl Incoming {
    /// Fresh symbols still needed per block (0 = verified). Unverified symbols count: with
    /// no attacker they are the uplink's, and a block whose attempt with them failed holds
    /// none.
    fn needs(&self) -> Vec<u32> {
        self.blocks
            .iter()
            .zip(&self.verified)
            .zip(self.kept.iter().zip(&self.unverified))
            .map(|((block, verified), (kept, unverified))| {
                let held = kept.count() + unverified;
                match (*verified, held >= block.source_symbols) {
                    (true, _) => 0,
                    // K symbols that did not decode yet: RaptorQ almost always needs one or two more.
                    (false, true) => 2,
                    (false, false) => block.source_symbols - held,
                }
            })
            .collect()
    }
}

struct Incoming {
    /// The manifest as this county uses it: for a sealed object, under its real name.
    manifest: Manifest,
    /// For a sealed object, what decrypts it.
    opened: Option<Box<confidential::Opening>>,
    /// As received, to begin the object again in storage after a whole-object mismatch.
    signed: Vec<u8>,
    digest: [u8; 8],
    oti: Oti,
    blocks: Vec<Block>,
    verified: Vec<bool>,
    remaining: usize,
    /// The ESIs kept per block (sent to storage and not refused).
    kept: Vec<EsiSet>,
    /// Per block: a decode request is out, and how many symbols were counted when the last
    /// attempt came back undecodable (the next attempt waits for more).
    decoding: Vec<bool>,
    tried_at: Vec<u32>,
    /// A whole-object verification is out.
    verifying: bool,
    /// Storage has begun the object (or held it from before a restart): until then its
    /// symbols wait in the early buffer, so an object storage already has costs nothing.
    begun: bool,
    /// A begin request is out (false after one failed: the tick asks again).
    beginning: bool,
    /// Why the last begin failed, until one succeeds: no progress is reported meanwhile,
    /// so the uplink keeps showing the refusal.
    begin_failed: Option<Refusal>,
    /// The last storage failure since a block last verified.
    store_error: Option<String>,
    /// Serial of the key that signed the manifest, so a later revocation can drop it.
    signer_serial: u64,
    /// DATA symbols of this object received, useful or not: the uplink's loss estimate.
    symbols_received: u64,
    /// What the uplink's signed lists vouch for.
    listed: Listed,
    /// Per block: unverified symbols held (see [`Unverified`]).
    unverified: Vec<u32>,
    /// Per block: the decode request out includes unverified symbols.
    decoding_unverified: Vec<bool>,
    /// Per block: failed decode attempts with unverified symbols (at most
    /// [`UNVERIFIED_ATTEMPTS_PER_BLOCK_MAX`], then the block takes verified symbols only).
    unverified_failures: Vec<u8>,
    /// The last ROUND marker seen.
    round: u32,
    /// When the manifest was accepted: a heartbeat that arrived later and does not list
    /// the object says its broadcast ended.
    accepted_at: Instant,
    last_symbol_at: Instant,
    last_report_at: Option<Instant>,
    report_due: Option<Instant>,
    /// Per block: one past the highest ESI received.
    seen: Vec<u32>,
    /// When the next report from the middle of a pass goes, while symbols arrive.
    pass_report_due: Option<Instant>,
}

/// A moment between half and one and a half times `interval` from now, so counties that
/// heard the same symbols do not report at the same moment.
fn jittered(rng: &mut ChaCha8Rng, interval: Duration) -> Duration {
    let millis = interval.as_millis().min(u128::from(u32::MAX)) as u64;
    Duration::from_millis(rng.random_range(millis / 2..=millis + millis / 2))
}

/// The live objects and latest versions of the last fresh heartbeat.
#[derive(Debug)]
struct Statement {
    received_at: Instant,
    live: HashSet<u64>,
    live_complete: bool,
    latest: HashMap<[u8; 8], u64>,
}

/// A bounded set of object ids, oldest dropped first.
#[derive(Debug, Default)]
struct RecentIds {
    order: VecDeque<u64>,
    set: HashSet<u64>,
}

impl RecentIds {
    fn contains(&self, id: u64) -> bool {
        self.set.contains(&id)
    }

    fn insert(&mut self, id: u64) {
        if self.set.insert(id) {
            self.order.push_back(id);
        }
        while self.order.len() > ENDED_REMEMBERED_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
    }

    fn remove(&mut self, id: u64) {
        if self.set.remove(&id) {
            self.order.retain(|o| *o != id);
        }
    }
}

/// An object this receiver completed.
#[derive(Debug)]
struct Completed {
    object_id: u64,
    object_hash: [u8; 32],
    /// The driver has made its delivery durable: only then is it acknowledged.
    delivered: bool,
    /// The round of the last ROUND marker answered with a Complete, and when (None until
    /// the first marker after the delivery).
    told: Option<(u32, Instant)>,
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

/// A sealed manifest that waits for the group key that opens it.
#[derive(Debug)]
struct PendingSealed {
    object_id: u64,
    digest: [u8; 8],
    signed: Vec<u8>,
    since: Instant,
}

/// The reception-side machine. See the module documentation for the call order.
pub struct Reception {
    config: ReceptionConfig,
    assembler: ManifestAssembler,
    incoming: BTreeMap<u64, Incoming>,
    /// Refused manifests: (object id in the datagram header, digest, when).
    rejected: VecDeque<(u64, [u8; 8], Instant)>,
    /// Sealed manifests waiting for a group key, oldest first (at most
    /// [`PENDING_SEALED_MAX`]).
    pending_sealed: VecDeque<PendingSealed>,
    /// Refusals told to the uplink, oldest first (at most [`REFUSALS_REMEMBERED_MAX`]).
    refusals: VecDeque<RefusalNote>,
    /// Completed objects, so their repeats are ignored and a ROUND marker for one is
    /// answered with Complete (within bounds).
    completed: VecDeque<Completed>,
    /// Tokens for repeated Completes, shared by all objects, and when they were last
    /// refilled (see [`COMPLETE_REPEATS_BURST_MAX`]).
    complete_budget: (f64, Option<Instant>),
    /// Digests of refused heartbeats and revocation lists, oldest first.
    refused_control: VecDeque<[u8; 32]>,
    feedback: VecDeque<Feedback>,
    /// Symbols that arrived before their object's manifest: (object id, sbn, esi, symbol).
    early: VecDeque<(u64, u8, u32, Vec<u8>)>,
    early_bytes: usize,
    /// Symbol lists of objects not accepted yet, unverified, oldest first.
    early_lists: VecDeque<EarlyList>,
    /// Symbols of objects being received that no signed list named.
    unverified: Unverified,
    /// Failed list checks ([`LIST_CHECKS_FAILED_PER_SEC_MAX`]), and failed checks of held
    /// lists on evidence ([`LIST_EVIDENCE_CHECKS_FAILED_PER_SEC_MAX`]).
    list_failures: FailureBudget,
    evidence_failures: FailureBudget,
    /// Lists held unchecked, oldest first (at most [`HELD_LISTS_MAX`]).
    held_lists: VecDeque<HeldList>,
    /// Certificates that verified under the pinned root (in manifests and heartbeats),
    /// newest last: symbol lists name their signer by serial.
    signers: VecDeque<trust::KeyCertificate>,
    /// Revoked signing-key serials, and the sequence of the list that named them.
    revoked: (u64, std::collections::BTreeSet<u64>),
    rng: ChaCha8Rng,
    delivered: HashMap<(Kind, String), Accepted>,
    /// Objects complete and verified whose delivery the driver has not confirmed yet (the
    /// node's delivery transaction): for rollback, they count as accepted already, so an
    /// older version heard meanwhile is refused as it will be once the delivery is recorded.
    delivering: HashMap<(Kind, String), Accepted>,
    /// Versions an earlier run committed to the cache whose delivery record was never
    /// written (stopped between the commit and the record, or the record failed): for
    /// rollback they count as accepted, though the object is not delivered until it is
    /// aired again (and then comes from the cache).
    committed: HashMap<(Kind, String), Accepted>,
    last_heartbeat: Option<(u64, Instant)>,
    /// What the last fresh heartbeat said is live and latest.
    statement: Option<Statement>,
    /// Partial objects dropped as ended, newest last (at most [`ENDED_REMEMBERED_MAX`]).
    ended: RecentIds,
    events: VecDeque<ReceptionEvent>,
    requests: VecDeque<StoreRequest>,
    stats: ReceptionStats,
    /// This county's own key and the group keys of its path (confidential broadcasts).
    keys: Option<KeyRing>,
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
            pending_sealed: VecDeque::new(),
            refusals: VecDeque::new(),
            completed: VecDeque::new(),
            complete_budget: (f64::from(COMPLETE_REPEATS_BURST_MAX), None),
            refused_control: VecDeque::new(),
            feedback: VecDeque::new(),
            early: VecDeque::new(),
            early_bytes: 0,
            early_lists: VecDeque::new(),
            unverified: Unverified::default(),
            list_failures: FailureBudget::new(LIST_CHECKS_FAILED_PER_SEC_MAX, LIST_CHECKS_FAILED_BURST_MAX),
            evidence_failures: FailureBudget::new(LIST_EVIDENCE_CHECKS_FAILED_PER_SEC_MAX, LIST_EVIDENCE_CHECKS_FAILED_BURST_MAX),
            held_lists: VecDeque::new(),
            signers: VecDeque::new(),
            revoked: (0, std::collections::BTreeSet::new()),
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            delivered: HashMap::new(),
            delivering: HashMap::new(),
            committed: HashMap::new(),
            last_heartbeat: None,
            statement: None,
            ended: RecentIds::default(),
            events: VecDeque::new(),
            requests: VecDeque::new(),
            stats: ReceptionStats::default(),
            keys: None,
            config,
        }
    }

    /// The network keys as they stand: the current one with the time it took over (0: the
    /// bundle's) and the next one announced, if any. A driver keeps them durably from
    /// this, not from the events that announce changes: a flood can push those out of the
    /// bounded event queue.
    pub fn network_keys(&self) -> ((u64, &NetworkKey), Option<&(u64, NetworkKey)>) {
        ((self.config.network_key_activates_unix_secs, &self.config.network_key), self.config.next_network_key.as_ref())
    }

    /// Gives the receiver its county's own X25519 key (from its bundle), so it learns the
    /// group keys of its path from the carousel's KEY_WRAP datagrams.
    pub fn set_county_secret(&mut self, secret: CountySecret) -> Result<(), KeyTreeError> {
        let county = Node::county(&self.config.county_code)?;
        self.keys = Some(KeyRing::new(county, secret));
        Ok(())
    }

    /// The group keys this county holds: (prefix, epoch), prefecture first.
    pub fn group_epochs(&self) -> Vec<(String, u64)> {
        let Some(ring) = &self.keys else { return Vec::new() };
        ring.county().path().filter_map(|node| ring.group(&node).map(|g| (node.prefix(), g.epoch))).collect()
    }

    /// A KEY_WRAP datagram: cheap checks first (decode, then whether any wrap is for this
    /// county's path at a newer epoch: the carousel repeating itself costs a counter), the
    /// signer's revocation, certificate and signature only for wraps it wants.
    fn handle_key_wrap(&mut self, now: Instant, wall_unix_secs: u64, bytes: &[u8]) {
        self.stats.key_wraps += 1;
        let Some(ring) = self.keys.as_ref() else {
            self.stats.key_wraps_unwanted += 1;
            return;
        };
        let Ok((signed, message)) = SignedKeyWraps::decode(bytes) else {
            self.stats.key_wraps_refused += 1;
            return;
        };
        if !ring.wants_any(&message) {
            self.stats.key_wraps_unwanted += 1;
            return;
        }
        // A forgery repeated costs a hash: the same bytes refused before are not verified again.
        let digest = *blake3::hash(bytes).as_bytes();
        if self.refused_control.contains(&digest) {
            self.stats.key_wraps_refused += 1;
            return;
        }
        if self.revoked.1.contains(&signed.certificate.body.serial) {
            self.stats.key_wraps_refused += 1;
            return self.remember_refused_control(digest);
        }
        self.stats.signatures_checked += 1;
        if signed.verify(&self.config.root, wall_unix_secs).is_err() {
            self.stats.key_wraps_refused += 1;
            return self.remember_refused_control(digest);
        }
        let learned = self.keys.as_mut().map_or(0, |ring| ring.learn(&message.wraps));
        self.stats.group_keys_learned += learned as u64;
        if learned > 0 {
            self.open_pending_sealed(now, wall_unix_secs);
        }
    }

    /// Tries the sealed manifests that waited for a key again, now that keys arrived: one
    /// that opens begins at once, and the symbols it waited with count.
    fn open_pending_sealed(&mut self, now: Instant, wall_unix_secs: u64) {
        let waiting = std::mem::take(&mut self.pending_sealed);
        for pending in waiting {
            if now.saturating_duration_since(pending.since) < PENDING_SEALED_FOR {
                self.handle_manifest(now, wall_unix_secs, pending.object_id, &pending.signed, None);
            }
        }
    }

    /// Keeps a sealed manifest that waits for its group key (once per object id and digest).
    fn keep_pending_sealed(&mut self, now: Instant, object_id: u64, digest: [u8; 8], signed: &[u8]) {
        self.pending_sealed.retain(|p| now.saturating_duration_since(p.since) < PENDING_SEALED_FOR && p.object_id != object_id);
        if self.pending_sealed.len() >= PENDING_SEALED_MAX {
            self.pending_sealed.pop_front();
        }
        self.pending_sealed.push_back(PendingSealed { object_id, digest, signed: signed.to_vec(), since: now });
    }

    /// Records the last version delivered for a (kind, name), from durable trust state at
    /// start: older versions are refused.
    pub fn set_delivered(&mut self, kind: Kind, name: &str, accepted: Accepted) {
        self.delivered.insert((kind, name.to_owned()), accepted);
    }

    /// An object found in the cache at start. Only what the cache holds above the recorded
    /// delivery is kept: the cache takes an object only after every check a delivery
    /// passes, so an older version must be refused even when the record of the newer one
    /// was lost.
    pub fn set_cached(&mut self, kind: Kind, name: &str, accepted: Accepted) {
        let key = (kind, name.to_owned());
        let above = |held: Option<&Accepted>| held.is_none_or(|h| accepted.version > h.version);
        if above(self.delivered.get(&key)) && above(self.committed.get(&key)) {
            self.committed.insert(key, accepted);
        }
    }

    /// How many (kind, name) have a cached version above their recorded delivery (set by
    /// [`Reception::set_cached`], until that version is delivered).
    pub fn unrecorded_versions(&self) -> usize {
        self.committed.len()
    }

    /// Restores the revocation list kept in durable trust state, at start.
    pub fn set_revocations(&mut self, sequence: u64, revoked_serials: &[u64]) {
        self.revoked = (sequence, revoked_serials.iter().copied().collect());
    }

    /// A revocation list: cheap checks first (the same bytes as a list refused already, a
    /// sequence not above the one held: a replay, counted and dropped), the root's
    /// signature only for a list that would change something.
    fn handle_revocation(&mut self, signed: &[u8]) {
        let digest = *blake3::hash(signed).as_bytes();
        if self.refused_control.contains(&digest) {
            self.stats.revocations_replayed += 1;
            return;
        }
        let list = match SignedRevocation::from_bytes(signed) {
            Ok(list) => list,
            Err(error) => return self.refuse_revocation(digest, error.into()),
        };
        if list.revocation.sequence <= self.revoked.0 {
            self.stats.revocations_replayed += 1;
            return;
        }
        self.stats.signatures_checked += 1;
        let revocation = match list.verify(&self.config.root) {
            Ok(revocation) => revocation,
            Err(error) => return self.refuse_revocation(digest, error),
        };
        self.revoked = (revocation.sequence, revocation.revoked_serials.iter().copied().collect());
        // Objects accepted under a key now revoked are dropped, partial data and all.
        let doomed: Vec<(u64, u64)> = self
            .incoming
            .iter()
            .filter(|(_, inc)| self.revoked.1.contains(&inc.signer_serial))
            .map(|(id, inc)| (*id, inc.signer_serial))
            .collect();
        for (object_id, serial) in doomed {
            let Some(inc) = self.incoming.remove(&object_id) else { continue };
            self.requests.push_back(StoreRequest::Discard { object_id });
            self.refuse(inc.last_symbol_at, &inc.manifest, &RejectReason::Trust(TrustError::KeyRevoked { serial }));
        }
        self.push(ReceptionEvent::RevocationsUpdated { sequence: revocation.sequence, revoked_serials: revocation.revoked_serials });
    }

    fn refuse_revocation(&mut self, digest: [u8; 32], error: TrustError) {
        self.remember_refused_control(digest);
        self.push(ReceptionEvent::RevocationRejected { reason: error.to_string() });
    }

    fn remember_refused_control(&mut self, digest: [u8; 32]) {
        if self.refused_control.len() >= CONTROL_REFUSED_REMEMBERED_MAX {
            self.refused_control.pop_front();
        }
        self.refused_control.push_back(digest);
    }

    /// The driver made a completed object durable and delivered it: remember its version
    /// and tell the uplink.
    pub fn mark_delivered(&mut self, manifest: &Manifest) {
        let accepted = Accepted { version: manifest.version, object_id: manifest.object_id };
        let key = (manifest.kind, manifest.name.clone());
        if self.delivering.get(&key).is_some_and(|d| d.object_id == manifest.object_id) {
            self.delivering.remove(&key);
        }
        if self.committed.get(&key).is_some_and(|c| c.version <= accepted.version) {
            self.committed.remove(&key);
        }
        self.delivered.insert(key, accepted);
        self.remember_completed(manifest.object_id, manifest.delivered_hash(), true);
        self.refusals.retain(|n| n.object_id != manifest.object_id);
        self.send_feedback(FeedbackMessage::Complete { object_id: manifest.object_id, object_hash: manifest.delivered_hash() });
    }

    /// Tells the uplink why an object addressed to this county is refused, unless it was
    /// told this reason (code) for this object already; the detail is kept up to date for
    /// status either way. True if the uplink is told.
    fn refuse(&mut self, now: Instant, manifest: &Manifest, reason: &RejectReason) -> bool {
        let Some(refusal) = reason.refusal() else { return false };
        self.note_refusal(now, manifest.object_id, format!("{}/{}", manifest.kind, manifest.name), refusal)
    }

    fn note_refusal(&mut self, now: Instant, object_id: u64, name: String, refusal: Refusal) -> bool {
        if let Some(note) = self.refusals.iter_mut().find(|n| n.object_id == object_id) {
            note.last_seen = now;
            let same = note.refusal.code == refusal.code;
            note.refusal = refusal.clone();
            if same {
                return false;
            }
        } else {
            if self.refusals.len() >= REFUSALS_REMEMBERED_MAX {
                self.refusals.pop_front();
            }
            self.refusals.push_back(RefusalNote { object_id, name: name.clone(), refusal: refusal.clone(), last_seen: now });
        }
        self.send_feedback(FeedbackMessage::Refused { object_id, refusal: refusal.clone() });
        self.push(ReceptionEvent::Refused { object_id, name, refusal });
        true
    }

    /// Whether the uplink was told of this refusal for this object already: checked before
    /// any signature, so a repeated manifest costs nothing more.
    fn told(&self, object_id: u64, reason: &RejectReason) -> bool {
        let Some(code) = reason.refusal().map(|r| r.code) else { return false };
        self.refusals.iter().any(|n| n.object_id == object_id && n.refusal.code == code)
    }

    /// Objects addressed to this county that are not delivered yet, and why: those being
    /// received, then those refused whose manifest was seen within [`REFUSAL_SHOWN_FOR`].
    pub fn stuck(&self, now: Instant) -> Vec<Stuck> {
        let mut stuck: Vec<Stuck> = self
            .incoming
            .iter()
            .map(|(id, inc)| {
                let reason = if let Some(refusal) = inc.begin_failed.clone().filter(|_| !inc.begun) {
                    StuckReason::Refused(refusal)
                } else if let Some(error) = &inc.store_error {
                    StuckReason::StorageFailing(error.clone())
                } else {
                    StuckReason::WaitingForSymbols { needed: inc.needs().iter().map(|n| u64::from(*n)).sum() }
                };
                Stuck { object_id: *id, name: format!("{}/{}", inc.manifest.kind, inc.manifest.name), reason }
            })
            .collect();
        stuck.extend(
            self.refusals
                .iter()
                .rev()
                .filter(|n| !self.incoming.contains_key(&n.object_id) && now.saturating_duration_since(n.last_seen) < REFUSAL_SHOWN_FOR)
                .map(|n| Stuck { object_id: n.object_id, name: n.name.clone(), reason: StuckReason::Refused(n.refusal.clone()) }),
        );
        stuck
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
            .map(|inc| {
                let report = match inc.report_due {
                    Some(due) => due,
                    None => inc.last_symbol_at.max(inc.last_report_at.unwrap_or(inc.last_symbol_at)) + self.config.quiet_report_after,
                };
                inc.pass_report_due.map_or(report, |due| due.min(report))
            })
            .min()
    }

    /// Sends the progress reports that are due, and schedules reports for objects that
    /// went quiet.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        let mut pass_due = Vec::new();
        for (object_id, inc) in self.incoming.iter_mut() {
            if inc.pass_report_due.is_some_and(|at| at <= now) {
                pass_due.push(*object_id);
            }
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
        for object_id in pass_due {
            self.report_pass_progress(object_id);
        }
    }

    /// Reports where an object stands in the middle of a pass. The next such report is
    /// armed by the next symbol, so a quiet object sends none.
    fn report_pass_progress(&mut self, object_id: u64) {
        let Some(inc) = self.incoming.get_mut(&object_id) else { return };
        inc.pass_report_due = None;
        if inc.remaining == 0 || (inc.begin_failed.is_some() && !inc.begun) {
            return;
        }
        let (needs, seen) = (inc.needs(), inc.seen.clone());
        self.send_feedback(FeedbackMessage::PassProgress { object_id, needs, seen });
    }

    fn report_progress(&mut self, now: Instant, object_id: u64) {
        let Some(inc) = self.incoming.get_mut(&object_id) else { return };
        inc.report_due = None;
        inc.last_report_at = Some(now);
        if inc.begin_failed.is_some() && !inc.begun {
            // Storage cannot take it: the uplink was told so, and a progress report would
            // overwrite that with a need it cannot be served.
            return;
        }
        let (round, symbols_received) = (inc.round, inc.symbols_received);
        let needs = inc.needs();
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
        self.incoming
            .get(&object_id)
            .map(|inc| (inc.kept.iter().map(|k| u64::from(k.count())).sum(), inc.verified.iter().filter(|v| **v).count()))
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

    /// The next storage request, in the order they must be carried out.
    pub fn poll_request(&mut self) -> Option<StoreRequest> {
        self.requests.pop_front()
    }

    fn push(&mut self, event: ReceptionEvent) {
        if self.events.len() >= EVENTS_MAX {
            self.events.pop_front();
            self.stats.events_lost += 1;
        }
        self.events.push_back(event);
    }

    fn remember_completed(&mut self, object_id: u64, object_hash: [u8; 32], delivered: bool) {
        if let Some(entry) = self.completed.iter_mut().find(|c| c.object_id == object_id) {
            entry.delivered |= delivered;
            return;
        }
        if self.completed.len() >= COMPLETED_REMEMBERED_MAX {
            self.completed.pop_front();
        }
        self.completed.push_back(Completed { object_id, object_hash, delivered, told: None });
    }

    fn is_completed(&self, object_id: u64) -> bool {
        self.completed.iter().any(|c| c.object_id == object_id)
    }

    /// Handles one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, wall_unix_secs: u64, bytes: &[u8]) {
        match wire::parse(bytes, &self.config.network_key) {
            Ok(datagram) => self.handle_parsed(now, wall_unix_secs, &datagram),
            Err(WireError::Tag) if self.config.next_network_key.is_some() => self.handle_under_next_key(now, wall_unix_secs, bytes),
            Err(reason) => {
                self.stats.dropped += 1;
                self.push(ReceptionEvent::Dropped { reason });
            }
        }
    }

    /// A datagram whose tag fails under the current network key, while a next one is held:
    /// a heartbeat under the next key whose signature verifies means the uplink switched,
    /// and the next key becomes current. Anything else under it waits for that heartbeat
    /// (an insider who knows the next key cannot switch this county early).
    fn handle_under_next_key(&mut self, now: Instant, wall_unix_secs: u64, bytes: &[u8]) {
        let Some((activates_unix_secs, next)) = self.config.next_network_key.clone() else { return };
        let heartbeat = match wire::parse(bytes, &next) {
            Ok(wire::Datagram { body: Body::Heartbeat(signed), .. }) => signed,
            _ => {
                self.stats.dropped += 1;
                return self.push(ReceptionEvent::Dropped { reason: WireError::Tag });
            }
        };
        let before = self.last_heartbeat;
        self.stats.datagrams += 1;
        self.handle_heartbeat(now, wall_unix_secs, heartbeat);
        if self.last_heartbeat != before {
            self.config.network_key = next.clone();
            self.config.network_key_activates_unix_secs = activates_unix_secs;
            self.config.next_network_key = None;
            self.stats.network_keys_activated += 1;
            self.push(ReceptionEvent::NetworkKeyActivated { activates_unix_secs, key: next });
        }
    }

    /// A NETWORK KEY datagram: cheap checks first (a rotation already known or older, the
    /// same bytes refused before), then the signature, then the AEAD with this county's
    /// keys. One not sealed for it (revoked) is remembered, so its repeats cost a hash.
    fn handle_network_key(&mut self, wall_unix_secs: u64, bytes: &[u8]) {
        self.stats.network_key_announcements += 1;
        let Some(ring) = self.keys.as_ref() else {
            self.stats.network_key_unwanted += 1;
            return;
        };
        let Ok((signed, message)) = SignedNextNetworkKey::decode(bytes) else {
            self.stats.network_key_refused += 1;
            return;
        };
        let activates = message.activates_unix_secs;
        let known = activates <= self.config.network_key_activates_unix_secs
            || self.config.next_network_key.as_ref().is_some_and(|(held, _)| *held >= activates);
        if known {
            self.stats.network_key_unwanted += 1;
            return;
        }
        let digest = *blake3::hash(bytes).as_bytes();
        if self.refused_control.contains(&digest) {
            self.stats.network_key_refused += 1;
            return;
        }
        if self.revoked.1.contains(&signed.certificate.body.serial) {
            self.stats.network_key_refused += 1;
            return self.remember_refused_control(digest);
        }
        // The AEAD before the signature: a forgery not sealed for this county costs no
        // signature check.
        match message.open(ring) {
            // Its group keys come with the carousel; a later repeat opens it.
            NextKeyAccess::Pending => self.stats.network_key_unwanted += 1,
            NextKeyAccess::NotTargeted => {
                self.stats.network_key_refused += 1;
                self.remember_refused_control(digest);
            }
            NextKeyAccess::Key(key) => {
                self.stats.signatures_checked += 1;
                if signed.verify(&self.config.root, wall_unix_secs).is_err() {
                    self.stats.network_key_refused += 1;
                    return self.remember_refused_control(digest);
                }
                self.config.next_network_key = Some((activates, key.clone()));
                self.stats.network_keys_learned += 1;
                self.push(ReceptionEvent::NextNetworkKey { activates_unix_secs: activates, key });
            }
        }
    }

    /// Handles a datagram already parsed and authenticated with this receiver's network key
    /// (the simulator checks each datagram's tag once for all its receivers).
    pub fn handle_parsed(&mut self, now: Instant, wall_unix_secs: u64, datagram: &wire::Datagram<'_>) {
        self.stats.datagrams += 1;
        match datagram.body {
            Body::Data { sbn, esi, symbol } => self.handle_symbol(now, datagram.object_id, sbn, esi, symbol),
            Body::Manifest(ref fragment) => {
                if self.is_completed(datagram.object_id) {
                    return;
                }
                if self.ended.contains(datagram.object_id) {
                    self.stats.manifests_ended += 1;
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
                let assembled = self.assembler.add(datagram.object_id, fragment);
                if let Some(refusal) = self.assembler.take_refusal() {
                    // Only a key holder who is not the uplink sends these: the driver's drop
                    // log counts them and summarises, so a flood costs no log line each.
                    self.push(ReceptionEvent::Dropped { reason: WireError::Assembly(refusal) });
                }
                if let Some(signed) = assembled {
                    self.handle_manifest(now, wall_unix_secs, datagram.object_id, &signed, None);
                }
            }
            Body::Heartbeat(signed) => self.handle_heartbeat(now, wall_unix_secs, signed),
            Body::Round { round } => self.handle_round(now, datagram.object_id, round),
            Body::Revocation(signed) => self.handle_revocation(signed),
            Body::KeyWrap(signed) => self.handle_key_wrap(now, wall_unix_secs, signed),
            Body::NetworkKey(signed) => self.handle_network_key(wall_unix_secs, signed),
            Body::SymbolList(ref list) => self.handle_list(now, wall_unix_secs, datagram.object_id, list),
        }
    }

    /// Remembers a certificate that verified under the pinned root (a manifest's or a
    /// heartbeat's): symbol lists signed by its key are checked against it.
    fn learn_signer(&mut self, certificate: &trust::KeyCertificate) {
        if let Some(known) = self.signers.iter().position(|c| c == certificate) {
            self.signers.remove(known);
        }
        self.signers.push_back(*certificate);
        while self.signers.len() > LIST_SIGNERS_MAX {
            self.signers.pop_front();
        }
    }

    /// The public key of the signer `serial`, if learned, not revoked and not expired.
    fn list_signer(&self, serial: u64, wall_unix_secs: u64) -> Option<[u8; 32]> {
        if self.revoked.1.contains(&serial) {
            return None;
        }
        let body = self.signers.iter().rev().find(|c| c.body.serial == serial)?.body;
        (wall_unix_secs <= body.not_after_unix_secs).then_some(body.public_key)
    }

    /// The public key of a list's certificate when its signer is not known yet: one check
    /// of the certificate under the pinned root, then it is known (and costs a lookup).
    /// A certificate that fails spends the budget of failed list checks, and none is
    /// checked while it is spent (the list then counts as of an unknown signer).
    fn learn_list_certificate(&mut self, now: Instant, list: &wire::SymbolList<'_>, wall_unix_secs: u64) -> Option<[u8; 32]> {
        if self.revoked.1.contains(&list.signer_serial) {
            return None;
        }
        let certificate = trust::KeyCertificate::from_bytes(list.certificate?).ok()?;
        if certificate.body.serial != list.signer_serial {
            return None;
        }
        // Counting receivers trust their simulator's uplink, as for the list's signature.
        if self.config.fidelity == Fidelity::Full {
            if !self.list_failures.available(now) {
                return None;
            }
            self.stats.signatures_checked += 1;
            if certificate.verify(&self.config.root, wall_unix_secs).is_err() {
                self.list_failures.spend();
                return None;
            }
        }
        self.learn_signer(&certificate);
        Some(certificate.body.public_key)
    }

    /// A SYMBOL LIST. Cheap checks first: an object completed or ended costs a counter; one
    /// not accepted yet is kept unverified (bounded) until its manifest is; a list seen
    /// already (by sequence) costs a counter, as does an unknown signer; only then one
    /// signature check, after which its symbols, the unverified ones it names and a ROUND
    /// marker that waited for it are used. A check that fails spends the budget of failed
    /// checks; while it is spent, lists are held and checked only on evidence (see
    /// [`Reception::check_held_lists`]): a flood of forgeries costs a bounded number of
    /// checks, and a genuine list among them is checked when its first symbol arrives.
    fn handle_list(&mut self, now: Instant, wall_unix_secs: u64, object_id: u64, list: &wire::SymbolList<'_>) {
        if self.is_completed(object_id) || self.ended.contains(object_id) {
            self.stats.symbol_lists_replayed += 1;
            return;
        }
        let Some(inc) = self.incoming.get(&object_id) else {
            if self.early_lists.iter().any(|e| e.object_id == object_id && e.sequence == list.sequence) {
                self.stats.symbol_lists_replayed += 1;
                return;
            }
            while self.early_lists.len() >= EARLY_LISTS_MAX {
                self.early_lists.pop_front();
            }
            let mut body = list.signed.to_vec();
            body.extend_from_slice(list.signature);
            self.early_lists.push_back(EarlyList { object_id, sequence: list.sequence, body });
            return;
        };
        if inc.listed.seen(list.sequence) {
            self.stats.symbol_lists_replayed += 1;
            return;
        }
        let known = self.list_signer(list.signer_serial, wall_unix_secs);
        let Some(key) = known.or_else(|| self.learn_list_certificate(now, list, wall_unix_secs)) else {
            self.stats.symbol_lists_unknown_signer += 1;
            return;
        };
        // The simulator's counting receivers trust their uplink's lists: 2000 signature
        // checks per list would be most of a run's time, and it forges none.
        if self.config.fidelity == Fidelity::Full {
            if !self.list_failures.available(now) {
                return self.hold_list(now, object_id, key, list);
            }
            self.stats.signatures_checked += 1;
            if !trust::verify_symbol_list(&key, object_id, list.signed, list.signature) {
                self.list_failures.spend();
                self.stats.symbol_lists_refused += 1;
                return self.push(ReceptionEvent::Dropped { reason: WireError::Source(SourceRefusal::BadListSignature) });
            }
        }
        self.accept_list(now, object_id, list);
    }

    /// Holds a list whose cheap checks passed while the budget of failed checks is spent;
    /// if symbols it names came already (unverified), they are its evidence at once.
    fn hold_list(&mut self, now: Instant, object_id: u64, key: [u8; 32], list: &wire::SymbolList<'_>) {
        let mut body = Vec::with_capacity(list.signed.len() + list.signature.len());
        body.extend_from_slice(list.signed);
        body.extend_from_slice(list.signature);
        if self.held_lists.iter().any(|held| held.object_id == object_id && held.body == body) {
            self.stats.symbol_lists_replayed += 1;
            return;
        }
        let mut entries: Vec<_> = list.entries().collect();
        entries.sort_unstable_by_key(|(id, _)| *id);
        // Only blocks that hold unverified symbols are looked up: a flood of forged lists
        // costs an array index per entry, not a map lookup, while no list is lost.
        let unverified_blocks = self.incoming.get(&object_id).map_or(&[][..], |inc| inc.unverified.as_slice());
        let evidence = entries
            .iter()
            .find(|(id, hash)| {
                let (sbn, esi) = ((id >> 24) as u8, id & wire::ESI_MAX);
                unverified_blocks.get(usize::from(sbn)).is_some_and(|count| *count > 0)
                    && self.unverified.symbols.get(&(object_id, sbn, esi)).is_some_and(|symbol| wire::symbol_hash(symbol) == *hash)
            })
            .copied();
        while self.held_lists.len() >= HELD_LISTS_MAX {
            self.held_lists.pop_front();
            self.stats.symbol_lists_unchecked += 1;
        }
        self.stats.symbol_lists_held += 1;
        self.held_lists.push_back(HeldList { object_id, key, body, round: list.round, entries });
        if let Some((payload_id, hash)) = evidence {
            self.check_held_lists(now, object_id, |held| held.names(payload_id, &hash));
        }
    }

    /// Checks the held lists of `object_id` that `named` picks (a symbol or ROUND marker
    /// that arrived names them), oldest first, until one verifies or the budget of failed
    /// checks on evidence is spent. Returns whether one verified (and was taken).
    ///
    /// Oldest first because an insider who copies a genuine list's entries under another
    /// sequence or signature sees the genuine list on the air before it can send the copy:
    /// the copy is newer, and the genuine list verifies before it is ever checked. Only an
    /// insider who computes symbols before they are aired (those of blocks it decoded
    /// already) can place a copy ahead of the genuine list.
    fn check_held_lists(&mut self, now: Instant, object_id: u64, named: impl Fn(&HeldList) -> bool) -> bool {
        let mut index = 0;
        while let Some(held) = self.held_lists.get(index) {
            if held.object_id != object_id || !named(held) {
                index += 1;
                continue;
            }
            if !self.evidence_failures.available(now) {
                // Left held: later evidence may find the budget refilled.
                return false;
            }
            let Some(held) = self.held_lists.remove(index) else { break };
            let Ok(list) = wire::parse_symbol_list(&held.body) else { continue };
            if self.incoming.get(&object_id).is_none_or(|inc| inc.listed.seen(list.sequence)) {
                // A list of this sequence was taken meanwhile: this one is a copy or a forgery.
                self.stats.symbol_lists_replayed += 1;
                continue;
            }
            self.stats.signatures_checked += 1;
            if !trust::verify_symbol_list(&held.key, object_id, list.signed, list.signature) {
                self.evidence_failures.spend();
                self.stats.symbol_lists_refused += 1;
                self.push(ReceptionEvent::Dropped { reason: WireError::Source(SourceRefusal::BadListSignature) });
                continue;
            }
            self.stats.symbol_lists_held_accepted += 1;
            self.accept_list(now, object_id, &list);
            return true;
        }
        false
    }

    /// Takes a list whose signature verified: its hashes, its round, the unverified symbols
    /// it names and a ROUND marker that waited for it.
    fn accept_list(&mut self, now: Instant, object_id: u64, list: &wire::SymbolList<'_>) {
        self.stats.symbol_lists_accepted += 1;
        let Some(inc) = self.incoming.get_mut(&object_id) else { return };
        inc.listed.take(list);
        let waiting_round = inc.listed.pending_round.filter(|r| inc.listed.rounds.contains(r));
        if waiting_round.is_some() {
            inc.listed.pending_round = None;
        }
        // Symbols that came before their list (it was late, or they were early) are
        // checked now: vouched for, or forged.
        let mut named = Vec::new();
        for (payload_id, hash) in list.entries() {
            let (sbn, esi) = ((payload_id >> 24) as u8, payload_id & wire::ESI_MAX);
            if let Some(symbol) = self.unverified.remove(&(object_id, sbn, esi)) {
                named.push((sbn, esi, hash, symbol));
            }
        }
        for (sbn, esi, hash, symbol) in named {
            if let Some(count) = self.incoming.get_mut(&object_id).and_then(|inc| inc.unverified.get_mut(usize::from(sbn))) {
                *count = count.saturating_sub(1);
            }
            self.handle_symbol_again(now, object_id, sbn, esi, hash, &symbol);
        }
        if let Some(round) = waiting_round {
            self.handle_round(now, object_id, round);
        }
    }

    /// An unverified symbol that a list named later: kept if it matches, dropped if not.
    fn handle_symbol_again(&mut self, now: Instant, object_id: u64, sbn: u8, esi: u32, hash: [u8; wire::SYMBOL_HASH_LEN], symbol: &[u8]) {
        if self.config.fidelity == Fidelity::Full && wire::symbol_hash(symbol) != hash {
            self.stats.symbols_forged += 1;
            return self.push(ReceptionEvent::Dropped { reason: WireError::Source(SourceRefusal::ForgedSymbol) });
        }
        let Some(inc) = self.incoming.get_mut(&object_id) else { return };
        inc.listed.hashes.remove(&wire::payload_id(sbn, esi));
        self.keep_symbol(now, object_id, sbn, esi, symbol);
    }

    /// Symbol lists kept before the manifest of `object_id` was accepted are checked now.
    fn replay_early_lists(&mut self, now: Instant, wall_unix_secs: u64, object_id: u64) {
        if !self.early_lists.iter().any(|e| e.object_id == object_id) {
            return;
        }
        let (early, rest): (VecDeque<_>, VecDeque<_>) =
            std::mem::take(&mut self.early_lists).into_iter().partition(|e| e.object_id == object_id);
        self.early_lists = rest;
        for list in early {
            if let Ok(parsed) = wire::parse_symbol_list(&list.body) {
                self.handle_list(now, wall_unix_secs, object_id, &parsed);
            }
        }
    }

    fn handle_round(&mut self, now: Instant, object_id: u64, round: u32) {
        if let Some(index) = self.completed.iter().position(|c| c.object_id == object_id) {
            return self.handle_round_of_completed(now, index, round);
        }
        let window_ms = self.config.report_window.as_millis() as u64;
        let Some(inc) = self.incoming.get_mut(&object_id) else { return };
        if !inc.listed.rounds.contains(&round) {
            // Not (yet) named by the uplink: it waits for its list, which normally came
            // first; a forgery waits in vain and costs a counter. A held list naming it is
            // checked now, and takes the marker if it verifies.
            inc.listed.pending_round = Some(round);
            self.stats.round_markers_unlisted += 1;
            self.push(ReceptionEvent::Dropped { reason: WireError::Source(SourceRefusal::UnlistedRound) });
            if !self.held_lists.is_empty() {
                self.check_held_lists(now, object_id, |held| held.round == Some(round));
            }
            return;
        }
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

    /// A ROUND marker for an object completed here. The uplink still asks: our Complete may
    /// have been lost on the WAN, so say it again, but at most once per (object, round), no
    /// sooner than [`COMPLETE_REPEAT_INTERVAL_MIN`] after the last, and within the budget
    /// shared by all objects: an insider forging markers (it holds the network key) buys a
    /// bounded trickle of true Completes, and each other marker costs a counter.
    fn handle_round_of_completed(&mut self, now: Instant, index: usize, round: u32) {
        let Some(entry) = self.completed.get(index) else { return };
        let (object_id, object_hash) = (entry.object_id, entry.object_hash);
        if !entry.delivered || round == 0 {
            // Not durable yet (it is acknowledged when it is, not before); round 0 is the
            // first pass, whose Complete went at delivery.
            return;
        }
        let queued = self.feedback.iter().any(|f| matches!(f.message, FeedbackMessage::Complete { object_id: id, .. } if id == object_id));
        let due = match entry.told {
            // The first marker since the delivery: the uplink has not heard the Complete.
            None => true,
            Some((told_round, told_at)) => round != told_round && now.saturating_duration_since(told_at) >= COMPLETE_REPEAT_INTERVAL_MIN,
        } && !queued;
        if !due || !self.take_complete_token(now) {
            self.stats.round_markers_repeated += 1;
            return;
        }
        if let Some(entry) = self.completed.get_mut(index) {
            entry.told = Some((round, now));
        }
        self.stats.completes_repeated += 1;
        self.send_feedback(FeedbackMessage::Complete { object_id, object_hash });
    }

    /// Takes one repeated Complete from the budget shared by all objects, refilled at
    /// [`COMPLETE_REPEATS_PER_SEC_MAX`] up to [`COMPLETE_REPEATS_BURST_MAX`].
    fn take_complete_token(&mut self, now: Instant) -> bool {
        let (tokens, refilled_at) = &mut self.complete_budget;
        let elapsed = refilled_at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        *tokens = (*tokens + elapsed.as_secs_f64() * f64::from(COMPLETE_REPEATS_PER_SEC_MAX)).min(f64::from(COMPLETE_REPEATS_BURST_MAX));
        *refilled_at = Some(now);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Re-accepts a signed manifest kept by storage before a restart: it is verified
    /// again under today's clock and trust state, and what storage `held` of it counts.
    pub fn resume(&mut self, now: Instant, wall_unix_secs: u64, object_id: u64, signed_manifest: &[u8], held: &Held) {
        self.handle_manifest(now, wall_unix_secs, object_id, signed_manifest, Some(held));
    }

    /// A heartbeat: cheap checks first, so a replay captured and re-sent at any rate costs
    /// a hash and a counter. The same bytes as a heartbeat refused already, or a time not
    /// after the last accepted heartbeat's (a replay: counted, dropped, no event); a time
    /// beyond the county's clock plus [`trust::CLOCK_SKEW_MAX_SECS`], or a revoked signer
    /// (refused); only then the signatures. Heartbeats are ordered by their signed time,
    /// not their sequence, which starts again when the uplink restarts.
    fn handle_heartbeat(&mut self, now: Instant, wall_unix_secs: u64, signed: &[u8]) {
        let digest = *blake3::hash(signed).as_bytes();
        if self.refused_control.contains(&digest) {
            self.stats.heartbeats_replayed += 1;
            return;
        }
        let parsed = match SignedHeartbeat::from_bytes(signed) {
            Ok(parsed) => parsed,
            Err(error) => return self.refuse_heartbeat(digest, error.into()),
        };
        let sent_ms = parsed.heartbeat.uplink_time_unix_ms;
        if self.last_heartbeat.is_some_and(|(last_ms, _)| sent_ms <= last_ms) {
            self.stats.heartbeats_replayed += 1;
            return;
        }
        if let Err(error) = trust::check_heartbeat_time(&parsed.heartbeat, wall_unix_secs) {
            return self.refuse_heartbeat(digest, error);
        }
        let serial = parsed.certificate.body.serial;
        if self.revoked.1.contains(&serial) {
            return self.refuse_heartbeat(digest, TrustError::KeyRevoked { serial });
        }
        self.stats.signatures_checked += 1;
        let heartbeat = match parsed.verify(&self.config.root, wall_unix_secs) {
            Ok(heartbeat) => heartbeat,
            Err(error) => return self.refuse_heartbeat(digest, error),
        };
        self.learn_signer(&parsed.certificate);
        // Its age counts from when the uplink signed it, not from when it arrived: a
        // heartbeat captured earlier and replayed after a reboot (when the receiver has
        // forgotten the last one) shows as old, as it is.
        let age_at_arrival = Duration::from_millis((wall_unix_secs * 1000).saturating_sub(heartbeat.uplink_time_unix_ms));
        let signed_at = now.checked_sub(age_at_arrival).unwrap_or(now);
        self.last_heartbeat = Some((heartbeat.uplink_time_unix_ms, signed_at));
        self.push(ReceptionEvent::Heartbeat { sequence: heartbeat.sequence, uplink_time_unix_ms: heartbeat.uplink_time_unix_ms });
        if age_at_arrival <= STATEMENT_AGE_MAX {
            self.take_statement(now, heartbeat);
        }
    }

    /// A fresh heartbeat's statement: objects it lists live may be taken again; partial
    /// objects of a version older than the stated latest are dropped and the uplink told.
    fn take_statement(&mut self, now: Instant, heartbeat: Heartbeat) {
        for id in &heartbeat.live {
            self.ended.remove(*id);
        }
        self.statement = Some(Statement {
            received_at: now,
            live: heartbeat.live.into_iter().collect(),
            live_complete: heartbeat.live_complete,
            latest: heartbeat.latest.into_iter().map(|l| (l.name, l.version)).collect(),
        });
        let superseded: Vec<u64> =
            self.incoming.iter().filter(|(_, inc)| self.stated_latest(&inc.manifest).is_some()).map(|(id, _)| *id).collect();
        for object_id in superseded {
            let Some(inc) = self.incoming.remove(&object_id) else { continue };
            self.requests.push_back(StoreRequest::Discard { object_id });
            if let Some(reason) = self.stated_latest(&inc.manifest) {
                self.refuse(now, &inc.manifest, &reason);
            }
        }
    }

    /// The refusal of `manifest` if the last fresh heartbeat states a newer version of its
    /// (kind, name).
    fn stated_latest(&self, manifest: &Manifest) -> Option<RejectReason> {
        let latest = *self.statement.as_ref()?.latest.get(&trust::name_digest(manifest.kind, &manifest.name))?;
        (latest > manifest.version)
            .then_some(RejectReason::Trust(TrustError::Superseded { latest_version: latest, offered_version: manifest.version }))
    }

    /// Drops one partial object whose broadcast ended (a complete live list that arrived
    /// after it was accepted does not name it) to make room; true if one was dropped. Its
    /// id is remembered, so its manifest replayed costs a lookup.
    fn drop_one_ended(&mut self) -> bool {
        let Some(statement) = self.statement.as_ref().filter(|s| s.live_complete) else { return false };
        let ended = self
            .incoming
            .iter()
            .filter(|(id, inc)| inc.accepted_at < statement.received_at && !statement.live.contains(id))
            .min_by_key(|(_, inc)| inc.last_symbol_at)
            .map(|(id, _)| *id);
        let Some(object_id) = ended else { return false };
        self.incoming.remove(&object_id);
        self.ended.insert(object_id);
        self.stats.partials_ended += 1;
        self.requests.push_back(StoreRequest::Discard { object_id });
        self.push(ReceptionEvent::Ended { object_id });
        true
    }

    fn refuse_heartbeat(&mut self, digest: [u8; 32], error: TrustError) {
        self.remember_refused_control(digest);
        self.push(ReceptionEvent::HeartbeatRejected { reason: error.to_string() });
    }

    /// Refuses a manifest. The refusal is remembered for this (object id, digest) only, so
    /// a genuine manifest an insider re-tagged under another object id cannot block the
    /// genuine one; a passing refusal (too many partial objects) is not remembered at all.
    fn reject(&mut self, now: Instant, object_id: u64, digest: [u8; 8], reason: RejectReason) {
        self.remember_rejected(now, object_id, digest, &reason);
        self.push(ReceptionEvent::Rejected { object_id, reason });
    }

    fn remember_rejected(&mut self, now: Instant, object_id: u64, digest: [u8; 8], reason: &RejectReason) {
        if !matches!(reason, RejectReason::TooManyPartial(_)) {
            if self.rejected.len() >= REJECTED_REMEMBERED_MAX {
                self.rejected.pop_front();
            }
            self.rejected.retain(|(id, d, _)| !(*id == object_id && *d == digest));
            self.rejected.push_back((object_id, digest, now));
        }
    }

    /// Refuses a verified manifest addressed to this county: remembered like any refusal,
    /// and the uplink told (once per reason).
    fn reject_genuine(&mut self, now: Instant, manifest: &Manifest, digest: [u8; 8], reason: RejectReason) {
        self.remember_rejected(now, manifest.object_id, digest, &reason);
        self.refuse(now, manifest, &reason);
    }

    /// Refuses a manifest whose signer is revoked or out of its validity by this county's
    /// clock. The uplink is told only if the manifest is genuine and addressed to this
    /// county, and only once: a refusal told already is checked first, before any signature.
    fn reject_signer(&mut self, now: Instant, object_id: u64, digest: [u8; 8], signed: &[u8], reason: RejectReason) {
        if self.told(object_id, &reason) {
            self.remember_rejected(now, object_id, digest, &reason);
            if let Some(note) = self.refusals.iter_mut().find(|n| n.object_id == object_id) {
                note.last_seen = now;
            }
            return;
        }
        self.stats.signatures_checked += 1;
        match trust::verify_genuine(signed, &self.config.root) {
            Ok(manifest) if manifest.object_id == object_id && manifest.targets_code(&self.config.county_code) => {
                self.reject_genuine(now, &manifest, digest, reason)
            }
            _ => self.reject(now, object_id, digest, reason),
        }
    }

    fn handle_manifest(&mut self, now: Instant, wall_unix_secs: u64, object_id: u64, signed: &[u8], held: Option<&Held>) {
        let digest = wire::manifest_digest(signed);
        if self.pending_sealed.iter().any(|p| p.object_id == object_id && p.digest == digest) {
            self.stats.sealed_pending += 1;
            return;
        }
        let signer_serial = trust::manifest_signer_serial(signed).unwrap_or(0);
        if self.revoked.1.contains(&signer_serial) {
            return self.reject_signer(now, object_id, digest, signed, TrustError::KeyRevoked { serial: signer_serial }.into());
        }
        self.stats.signatures_checked += 1;
        let manifest = match trust::verify_signed(signed, &self.config.root, wall_unix_secs) {
            Ok(manifest) => manifest,
            Err(error @ (TrustError::KeyNotYetValid { .. } | TrustError::KeyExpired { .. })) => {
                return self.reject_signer(now, object_id, digest, signed, error.into());
            }
            Err(error) => return self.reject(now, object_id, digest, error.into()),
        };
        if let Ok(parsed) = trust::SignedManifest::from_bytes(signed) {
            self.learn_signer(&parsed.certificate);
        }
        if manifest.object_id != object_id {
            // A genuine manifest replayed under another object id in the header.
            let reason = RejectReason::ObjectIdMismatch { manifest: manifest.object_id, header: object_id };
            return self.reject(now, object_id, digest, reason);
        }
        // The heartbeat states versions by the public (pseudonymous) name.
        let stated = self.stated_latest(&manifest);
        let mut opening = None;
        if let (true, Some(section)) = (manifest.targets_code(&self.config.county_code), manifest.confidential()) {
            // Opened before anything is begun: a county that cannot read it keeps nothing of it.
            let opened = self.keys.as_ref().map(|ring| confidential::open_section(ring, object_id, section));
            match opened {
                None | Some(Ok(Opened::NotTargeted)) => {
                    // Quietly: the uplink knows whom it sealed it for, and the daemon's log
                    // gets no line per object; remembered so repeats cost no signature.
                    self.stats.sealed_not_targeted += 1;
                    return self.remember_rejected(now, object_id, digest, &RejectReason::Trust(TrustError::NotTargeted));
                }
                Some(Ok(Opened::Pending)) => {
                    // Kept: the key wraps that bring the key open it (its symbols wait in
                    // the early buffer), and its repeats meanwhile cost no signature.
                    self.stats.sealed_pending += 1;
                    return self.keep_pending_sealed(now, object_id, digest, signed);
                }
                Some(Err(_)) => {
                    return self.reject(now, object_id, digest, RejectReason::Inconsistent("the confidential section does not open"));
                }
                Some(Ok(Opened::Readable(key, secrets))) => {
                    self.stats.sealed_opened += 1;
                    opening = Some(Box::new(confidential::Opening { key, secrets: *secrets }));
                }
            }
        }
        // From here on a sealed object is what it is to this county: its real name, under
        // which it is checked against what was delivered, received and delivered.
        let manifest = match &opening {
            Some(opening) => Manifest { name: opening.secrets.name.clone(), ..manifest },
            None => manifest,
        };
        let accepted = self.accepted(manifest.kind, &manifest.name);
        if let Err(error) = trust::check_acceptance(&manifest, &self.config.county_code, wall_unix_secs, accepted) {
            // A genuine manifest for this county that it must refuse: tell the uplink, so
            // it does not wait for this county. Untargeted ones are none of its business.
            if matches!(error, TrustError::NotTargeted) {
                return self.reject(now, object_id, digest, error.into());
            }
            return self.reject_genuine(now, &manifest, digest, error.into());
        }
        if let Some(reason) = stated {
            return self.reject_genuine(now, &manifest, digest, reason);
        }
        if self.delivered_or_delivering(manifest.kind, &manifest.name).is_some_and(|a| a.object_id == object_id) {
            // Already delivered (it is not in the completed list, so this receiver restarted
            // since): say so once. The Complete it queued before may have been lost with its
            // outbox, and an uplink that went idle waiting for it airs no more round markers.
            self.remember_completed(object_id, manifest.delivered_hash(), true);
            self.send_feedback(FeedbackMessage::Complete { object_id, object_hash: manifest.delivered_hash() });
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
        if self.incoming.len() >= self.config.partial_objects_max && !self.drop_one_ended() {
            // Passing: taken when a slot frees, at a later repeat of the manifest.
            return self.reject_genuine(now, &manifest, digest, RejectReason::TooManyPartial(self.incoming.len()));
        }
        let verified: Vec<bool> = blocks.iter().map(|b| held.is_some_and(|h| h.verified.contains(&b.sbn))).collect();
        let verified_len = verified.len();
        let kept = blocks
            .iter()
            .map(|b| {
                let count = held.and_then(|h| h.kept.iter().find(|(sbn, _)| *sbn == b.sbn)).map_or(0, |(_, n)| *n);
                EsiSet::with_count(b.source_symbols, count)
            })
            .collect();
        if held.is_none() {
            self.requests.push_back(StoreRequest::BeginObject { manifest: Box::new(manifest.clone()), signed_manifest: signed.to_vec() });
        }
        let remaining = verified.iter().filter(|v| !**v).count();
        // What was received before a restart counts towards the uplink's loss estimate: a
        // count restarting at zero would look like heavy loss and inflate its repair.
        let symbols_received = blocks
            .iter()
            .zip(&verified)
            .zip(&kept)
            .map(|((b, v), k): ((&Block, &bool), &EsiSet)| u64::from(if *v { b.source_symbols } else { k.count() }))
            .sum();
        self.push(ReceptionEvent::Accepted { manifest: Box::new(manifest.clone()) });
        let incoming = Incoming {
            signed: signed.to_vec(),
            manifest,
            opened: opening,
            digest,
            oti,
            blocks,
            decoding: vec![false; verified.len()],
            tried_at: vec![0; verified.len()],
            verifying: false,
            begun: held.is_some(),
            beginning: held.is_none(),
            begin_failed: None,
            store_error: None,
            verified,
            remaining,
            kept,
            signer_serial,
            symbols_received,
            listed: Listed::default(),
            unverified: vec![0; verified_len],
            decoding_unverified: vec![false; verified_len],
            unverified_failures: vec![0; verified_len],
            round: 0,
            accepted_at: now,
            last_symbol_at: now,
            last_report_at: None,
            report_due: None,
            seen: vec![0; verified_len],
            pass_report_due: None,
        };
        self.incoming.insert(object_id, incoming);
        self.replay_early_lists(now, wall_unix_secs, object_id);
        if held.is_some_and(|h| h.in_cache) {
            return self.complete(object_id);
        }
        if remaining == 0 {
            return self.finish(object_id);
        }
        // Blocks that already held enough before a restart are tried at once.
        let ready: Vec<u8> = self.incoming.get(&object_id).map_or_else(Vec::new, |inc| {
            inc.blocks
                .iter()
                .filter(|b| !inc.verified[usize::from(b.sbn)] && inc.kept[usize::from(b.sbn)].count() >= b.source_symbols)
                .map(|b| b.sbn)
                .collect()
        });
        for sbn in ready {
            self.try_decode(object_id, sbn);
        }
        if held.is_some() {
            self.replay_early(now, object_id);
        }
    }

    /// Symbols that came before the object was begun in storage now count (or, with
    /// `now` None, are dropped: the object needs none).
    fn replay_early(&mut self, now: Instant, object_id: u64) {
        let (early, rest): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.early).into_iter().partition(|e| e.0 == object_id);
        self.early = rest;
        self.early_bytes = self.early.iter().map(|e| e.3.len() + EARLY_ENTRY_OVERHEAD_BYTES).sum();
        for (_, sbn, esi, symbol) in early {
            self.handle_symbol(now, object_id, sbn, esi, &symbol);
        }
    }

    fn handle_symbol(&mut self, now: Instant, object_id: u64, sbn: u8, esi: u32, symbol: &[u8]) {
        let Some(inc) = self.incoming.get_mut(&object_id).filter(|inc| inc.begun) else {
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
        if let Some(seen) = inc.seen.get_mut(usize::from(sbn)) {
            *seen = (*seen).max(esi.saturating_add(1));
        }
        if inc.pass_report_due.is_none() && inc.remaining > 0 {
            if let Some(interval) = self.config.pass_report_interval {
                inc.pass_report_due = Some(now + jittered(&mut self.rng, interval));
            }
        }
        let usable =
            usize::from(sbn) < inc.blocks.len() && symbol.len() == usize::from(inc.oti.symbol_size) && !inc.verified[usize::from(sbn)];
        let index = usize::from(sbn);
        if !usable || inc.kept[index].contains(esi) {
            self.stats.symbols_ignored += 1;
            return;
        }
        // Cheap checks first (block, size, held already); then the list; only then the hash.
        // A symbol that does not match its list never reaches the decoder.
        let payload_id = wire::payload_id(sbn, esi);
        if !inc.listed.hashes.contains_key(&payload_id) && !self.held_lists.is_empty() && self.config.fidelity == Fidelity::Full {
            // Lists held unchecked (someone forges lists): one naming this symbol as it is
            // is worth its signature check now.
            let hash = wire::symbol_hash(symbol);
            self.check_held_lists(now, object_id, |held| held.names(payload_id, &hash));
        }
        let Some(inc) = self.incoming.get_mut(&object_id) else { return };
        let Some(listed) = inc.listed.hashes.get(&payload_id) else {
            return self.hold_unverified(object_id, sbn, esi, symbol);
        };
        // The simulator's counting receivers trust the lookup alone: their symbols are the
        // uplink's own, and 2000 hashes per datagram would be the whole run's time.
        if self.config.fidelity == Fidelity::Full && wire::symbol_hash(symbol) != *listed {
            self.stats.symbols_forged += 1;
            return self.push(ReceptionEvent::Dropped { reason: WireError::Source(SourceRefusal::ForgedSymbol) });
        }
        inc.listed.hashes.remove(&payload_id);
        self.keep_symbol(now, object_id, sbn, esi, symbol);
    }

    /// Keeps a symbol no signed list named (its list was lost, or it is forged): a block
    /// uses such symbols only when its verified ones fall short (see [`Reception::try_decode`]).
    fn hold_unverified(&mut self, object_id: u64, sbn: u8, esi: u32, symbol: &[u8]) {
        let Some(inc) = self.incoming.get_mut(&object_id) else { return };
        let index = usize::from(sbn);
        if inc.unverified_failures[index] >= UNVERIFIED_ATTEMPTS_PER_BLOCK_MAX {
            self.stats.symbols_unverified_dropped += 1;
            return;
        }
        let bytes = match self.config.fidelity {
            Fidelity::Full => symbol.to_vec(),
            Fidelity::Counting => Vec::new(),
        };
        let (new, pushed_out) = self.unverified.insert((object_id, sbn, esi), bytes);
        if !new {
            self.stats.symbols_ignored += 1;
            return;
        }
        self.stats.symbols_unverified += 1;
        inc.unverified[index] += 1;
        for (gone_object, gone_sbn) in pushed_out {
            self.stats.symbols_unverified_dropped += 1;
            if let Some(count) = self.incoming.get_mut(&gone_object).and_then(|i| i.unverified.get_mut(usize::from(gone_sbn))) {
                *count = count.saturating_sub(1);
            }
        }
        self.try_decode(object_id, sbn);
    }

    /// Keeps a symbol a signed list vouched for: to storage, and a decode if it is enough.
    fn keep_symbol(&mut self, _now: Instant, object_id: u64, sbn: u8, esi: u32, symbol: &[u8]) {
        let Some(inc) = self.incoming.get_mut(&object_id) else { return };
        let index = usize::from(sbn);
        if inc.verified.get(index).is_none_or(|v| *v) || inc.kept[index].insert(esi) != Inserted::New {
            self.stats.symbols_ignored += 1;
            return;
        }
        self.stats.symbols_kept += 1;
        let symbol = match self.config.fidelity {
            Fidelity::Full => symbol.to_vec(),
            Fidelity::Counting => Vec::new(),
        };
        let ready = inc.kept[index].count() + inc.unverified[index] >= inc.blocks[index].source_symbols;
        self.requests.push_back(StoreRequest::AppendSymbol { object_id, sbn, esi, symbol });
        if ready {
            self.try_decode(object_id, sbn);
        }
    }

    /// Asks storage to decode a block that holds K symbols or more, unless a request for it
    /// is out already or the last attempt saw as many symbols as there are now.
    ///
    /// Verified symbols first: the unverified ones of the block join only when the verified
    /// ones are fewer than K and both together reach it (a lost list then costs nothing).
    fn try_decode(&mut self, object_id: u64, sbn: u8) {
        let Some(inc) = self.incoming.get_mut(&object_id) else { return };
        let index = usize::from(sbn);
        let Some(block) = inc.blocks.get(index) else { return };
        let verified_count = inc.kept[index].count();
        let unverified_count = inc.unverified[index];
        let with_unverified = verified_count < block.source_symbols && unverified_count > 0;
        let counted = verified_count + if with_unverified { unverified_count } else { 0 };
        if inc.verified[index] || inc.decoding[index] || counted < block.source_symbols || counted <= inc.tried_at[index] {
            return;
        }
        inc.decoding[index] = true;
        inc.decoding_unverified[index] = with_unverified;
        let expected_hash = inc.manifest.block_hashes[index];
        let unverified = if with_unverified { self.unverified.of_block(object_id, sbn) } else { Vec::new() };
        self.requests.push_back(StoreRequest::DecodeBlock {
            object_id,
            oti: inc.oti,
            sbn,
            expected_hash,
            symbols_counted: counted,
            unverified,
        });
    }

    /// Takes back the result of a storage request.
    pub fn handle_completion(&mut self, completion: StoreCompletion) {
        match completion {
            StoreCompletion::BeginFailed { object_id, error, storage_full } => {
                // A full spool or disk, say: the object stays accepted (its symbols wait in
                // the early buffer), the tick asks storage again, and the uplink is told
                // why this county is not progressing.
                if let Some(inc) = self.incoming.get_mut(&object_id) {
                    inc.beginning = false;
                    let code = if storage_full { RefusalCode::StorageFull } else { RefusalCode::StorageFailed };
                    let refusal = Refusal::new(code, error.clone());
                    inc.begin_failed = Some(refusal.clone());
                    let (at, name) = (inc.last_symbol_at, format!("{}/{}", inc.manifest.kind, inc.manifest.name));
                    self.note_refusal(at, object_id, name, refusal);
                }
                self.push(ReceptionEvent::StoreFailed { object_id, error });
            }
            StoreCompletion::Begun { object_id } => {
                let Some(inc) = self.incoming.get_mut(&object_id) else { return };
                inc.begun = true;
                inc.beginning = false;
                inc.begin_failed = None;
                inc.store_error = None;
                // Progress reports tell the uplink from now on; a later refusal is news again.
                self.refusals.retain(|n| n.object_id != object_id);
                let Some(inc) = self.incoming.get_mut(&object_id) else { return };
                let since = inc.last_symbol_at;
                self.replay_early(since, object_id);
            }
            StoreCompletion::BeginRefused { object_id, refusal } => self.refuse_for_good(object_id, refusal),
            StoreCompletion::AlreadyCached { object_id } => {
                if self.incoming.contains_key(&object_id) {
                    self.complete(object_id);
                    // What arrived meanwhile is not needed.
                    self.early.retain(|e| e.0 != object_id);
                    self.early_bytes = self.early.iter().map(|e| e.3.len() + EARLY_ENTRY_OVERHEAD_BYTES).sum();
                }
            }
            StoreCompletion::SymbolNotKept { object_id, sbn, esi, why } => {
                let Some(kept) = self.incoming.get_mut(&object_id).and_then(|inc| inc.kept.get_mut(usize::from(sbn))) else { return };
                match why {
                    // Storage had it from before a restart: it was counted twice.
                    NotKept::Duplicate => kept.set_count(kept.count().saturating_sub(1)),
                    NotKept::Failed(error) => {
                        kept.remove(esi);
                        if let Some(inc) = self.incoming.get_mut(&object_id) {
                            inc.store_error = Some(error.clone());
                        }
                        self.push(ReceptionEvent::StoreFailed { object_id, error });
                    }
                }
            }
            StoreCompletion::BlockDecoded { object_id, sbn, outcome } => self.block_decoded(object_id, sbn, outcome),
            StoreCompletion::ObjectVerified { object_id, outcome } => self.object_verified(object_id, outcome),
            StoreCompletion::DiscardFailed { object_id, error } => self.push(ReceptionEvent::StoreFailed { object_id, error }),
        }
    }

    fn block_decoded(&mut self, object_id: u64, sbn: u8, outcome: DecodeOutcome) {
        let Some(inc) = self.incoming.get_mut(&object_id) else { return };
        let index = usize::from(sbn);
        let Some(decoding) = inc.decoding.get_mut(index) else { return };
        *decoding = false;
        let with_unverified = std::mem::take(&mut inc.decoding_unverified[index]);
        match outcome {
            DecodeOutcome::Verified => {
                if with_unverified {
                    self.stats.unverified_decodes += 1;
                }
                if self.mark_verified(object_id, sbn) {
                    self.finish(object_id);
                }
            }
            DecodeOutcome::UnverifiedRejected => {
                // A forged symbol among the unverified ones: they all go, the verified
                // ones stay, and the block takes verified symbols only from now on.
                inc.unverified_failures[index] = inc.unverified_failures[index].saturating_add(1);
                inc.unverified[index] = 0;
                inc.tried_at[index] = 0;
                self.stats.unverified_decodes_failed += 1;
                self.stats.symbols_unverified_dropped += self.unverified.drop_block(object_id, sbn);
                self.push(ReceptionEvent::Dropped { reason: WireError::Source(SourceRefusal::UnverifiedBlock) });
                self.try_decode(object_id, sbn);
            }
            DecodeOutcome::Poisoned => {
                inc.kept[index].clear();
                inc.tried_at[index] = 0;
                self.push(ReceptionEvent::BlockPoisoned { object_id, sbn });
            }
            DecodeOutcome::NotYet { symbols_readable } => {
                // Storage may hold fewer than counted (a record torn by a full disk or a
                // crash): count what it has, so the next report asks for the rest.
                let kept = &mut inc.kept[index];
                kept.set_count(symbols_readable.min(kept.count()));
                // The attempt counted the unverified symbols it used: the next waits for more.
                inc.tried_at[index] = kept.count() + if with_unverified { inc.unverified[index] } else { 0 };
                // Symbols that arrived while decoding may already be enough.
                self.try_decode(object_id, sbn);
            }
            DecodeOutcome::Failed(error) => {
                inc.tried_at[index] = 0;
                inc.store_error = Some(error.clone());
                self.push(ReceptionEvent::StoreFailed { object_id, error });
            }
        }
    }

    /// Records a verified block; true when it was the object's last.
    fn mark_verified(&mut self, object_id: u64, sbn: u8) -> bool {
        let Some(inc) = self.incoming.get_mut(&object_id) else { return false };
        let index = usize::from(sbn);
        if inc.verified[index] {
            return false;
        }
        inc.verified[index] = true;
        inc.store_error = None;
        inc.kept[index].clear();
        inc.unverified[index] = 0;
        inc.listed.forget_block(sbn);
        self.unverified.drop_block(object_id, sbn);
        let Some(inc) = self.incoming.get_mut(&object_id) else { return false };
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
            let accepted = self.accepted(inc.manifest.kind, &inc.manifest.name)?;
            (accepted.version >= inc.manifest.version && accepted.object_id != object_id)
                .then_some((accepted.version, inc.manifest.version))
        });
        let newer = newer
            .map(|(accepted_version, offered_version)| RejectReason::Trust(TrustError::Rollback { accepted_version, offered_version }))
            .or_else(|| self.incoming.get(&object_id).and_then(|inc| self.stated_latest(&inc.manifest)));
        if let Some(reason) = newer {
            let Some(inc) = self.incoming.remove(&object_id) else { return };
            self.requests.push_back(StoreRequest::Discard { object_id });
            self.refuse(inc.last_symbol_at, &inc.manifest, &reason);
            return;
        }
        if let Some(inc) = self.incoming.remove(&object_id) {
            self.remember_completed(object_id, inc.manifest.delivered_hash(), false);
            let accepted = Accepted { version: inc.manifest.version, object_id };
            self.delivering.insert((inc.manifest.kind, inc.manifest.name.clone()), accepted);
            self.push(ReceptionEvent::Complete { manifest: Box::new(inc.manifest) });
        }
    }

    /// Storage cannot deliver the object here (it refused it at the start or after
    /// decoding): out of the incoming set, its symbols dropped, its manifest remembered as
    /// refused, and the uplink told (once), which then airs the full object to this county.
    fn refuse_for_good(&mut self, object_id: u64, refusal: Refusal) {
        let Some(inc) = self.incoming.remove(&object_id) else { return };
        self.early.retain(|e| e.0 != object_id);
        self.early_bytes = self.early.iter().map(|e| e.3.len() + EARLY_ENTRY_OVERHEAD_BYTES).sum();
        let reason = RejectReason::Undeliverable(refusal);
        self.remember_rejected(inc.last_symbol_at, object_id, inc.digest, &reason);
        self.refuse(inc.last_symbol_at, &inc.manifest, &reason);
    }

    /// The newest version of (kind, name) delivered, on its way to delivery, or committed
    /// by an earlier run: what an offered version must not be older than.
    fn accepted(&self, kind: Kind, name: &str) -> Option<Accepted> {
        let committed = self.committed.get(&(kind, name.to_owned())).copied();
        self.delivered_or_delivering(kind, name).into_iter().chain(committed).max_by_key(|a| a.version)
    }

    /// The newest version of (kind, name) delivered or on its way to delivery.
    fn delivered_or_delivering(&self, kind: Kind, name: &str) -> Option<Accepted> {
        let key = (kind, name.to_owned());
        [self.delivered.get(&key), self.delivering.get(&key)].into_iter().flatten().copied().max_by_key(|a| a.version)
    }

    /// Every block verified: ask storage to check the whole object as it holds it.
    fn finish(&mut self, object_id: u64) {
        let Some(inc) = self.incoming.get_mut(&object_id) else { return };
        if inc.verifying {
            return;
        }
        inc.verifying = true;
        let (size_bytes, expected_hash, compression) =
            (inc.manifest.size_bytes, inc.manifest.object_hash, inc.manifest.compression.clone());
        let opened = inc.opened.clone();
        self.requests.push_back(StoreRequest::VerifyObject { object_id, size_bytes, expected_hash, compression, opened });
    }

    fn object_verified(&mut self, object_id: u64, outcome: VerifyOutcome) {
        let Some(inc) = self.incoming.get_mut(&object_id) else { return };
        inc.verifying = false;
        match outcome {
            VerifyOutcome::Verified => self.complete(object_id),
            VerifyOutcome::Refused(refusal) => self.refuse_for_good(object_id, refusal),
            VerifyOutcome::Mismatch => {
                // Storage discarded it: begin it again and collect everything again.
                let (manifest, signed_manifest) = (Box::new(inc.manifest.clone()), inc.signed.clone());
                self.requests.push_back(StoreRequest::BeginObject { manifest, signed_manifest });
                let Some(inc) = self.incoming.get_mut(&object_id) else { return };
                inc.begun = false;
                inc.beginning = true;
                inc.verified.iter_mut().for_each(|v| *v = false);
                inc.kept.iter_mut().for_each(EsiSet::clear);
                inc.tried_at.iter_mut().for_each(|t| *t = 0);
                inc.remaining = inc.verified.len();
                self.push(ReceptionEvent::ObjectPoisoned { object_id });
            }
            // Retried at the next tick: storage may recover (space freed, say).
            VerifyOutcome::Failed(error) => {
                inc.store_error = Some(error.clone());
                self.push(ReceptionEvent::StoreFailed { object_id, error })
            }
        }
    }

    /// Expires partial objects whose manifest has expired, and retries a whole-object
    /// verification that storage failed.
    pub fn handle_tick(&mut self, wall_unix_secs: u64) {
        let expired: Vec<u64> =
            self.incoming.iter().filter(|(_, inc)| inc.manifest.expires_unix_secs <= wall_unix_secs).map(|(id, _)| *id).collect();
        for object_id in expired {
            self.incoming.remove(&object_id);
            self.requests.push_back(StoreRequest::Discard { object_id });
            self.push(ReceptionEvent::Expired { object_id });
        }
        for inc in self.incoming.values_mut().filter(|inc| !inc.begun && !inc.beginning) {
            inc.beginning = true;
            let (manifest, signed_manifest) = (Box::new(inc.manifest.clone()), inc.signed.clone());
            self.requests.push_back(StoreRequest::BeginObject { manifest, signed_manifest });
        }
        let unfinished: Vec<u64> =
            self.incoming.iter().filter(|(_, inc)| inc.remaining == 0 && !inc.verifying).map(|(id, _)| *id).collect();
        for object_id in unfinished {
            self.finish(object_id);
        }
        let stalled: Vec<(u64, u8)> = self
            .incoming
            .iter()
            .flat_map(|(id, inc)| {
                inc.blocks
                    .iter()
                    .filter(|b| {
                        let i = usize::from(b.sbn);
                        !inc.verified[i] && !inc.decoding[i] && inc.tried_at[i] == 0 && inc.kept[i].count() >= b.source_symbols
                    })
                    .map(|b| (*id, b.sbn))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (object_id, sbn) in stalled {
            self.try_decode(object_id, sbn);
        }
    }
}
