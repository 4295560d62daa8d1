//! The broadcast-side state machine: decides which datagram goes on the carrier next.
//!
//! It owns the pacer, the manifest and heartbeat carousel and, per object, the airing
//! schedule. An object is aired in rounds. Round 0 (the first pass) sends every source
//! symbol plus repair symbols sized from the targeted counties' loss rates (see
//! [`crate::sizing`]: few counties, or for an emergency-sized object almost surely none,
//! need a repair round); each round interleaves the source blocks of a
//! window so a rain-fade burst costs every block a little instead of one block everything;
//! each round ends with a ROUND marker. Then:
//!
//! - with feedback, the machine waits for progress reports (the round trip measured on
//!   earlier rounds plus the receivers' report window, at most the configured wait, and
//!   no longer once every outstanding county has reported), and sizes the next round per
//!   block to the worst reporting receiver's need, inflated by the observed loss, with
//!   fresh ESIs; until every targeted receiver has completed (or refused), the deadline
//!   passes, or the object is cancelled. If nobody reports, a few blind rounds sized from
//!   the target loss follow, then the object idles until reports arrive (a WAN outage);
//! - without feedback (carousel mode), a fixed number of passes is aired, each sized so a
//!   receiver losing the target loss rate still completes from one pass.
//!
//! Objects are scheduled by priority class, emergency > high > normal > bulk: the best
//! class with something to send takes every datagram, so an emergency object preempts the
//! rest at once. Within a class the object with the fewest symbols left in its round goes
//! first (ties: the one added first). So objects of a class end their passes one after
//! another, not all together: while one waits for its counties' reports the carrier airs
//! the next, and a short repair round goes ahead of a long pass.
//!
//! It performs no I/O: block bytes come from a [`BlockSource`] the driver supplies; time
//! and wall-clock time are passed in; feedback arrives through [`Broadcaster::handle_feedback`].
//! A source may build block encoders elsewhere ([`BlockSource::encoder`]): while one is not
//! ready, the machine airs everything else and asks again, so a driver's pacing thread never
//! waits on FEC encoding.
//!
//! Call order, for a driver:
//! 1. [`Broadcaster::add_object`], [`Broadcaster::cancel`] and
//!    [`Broadcaster::handle_feedback`] as they happen;
//! 2. [`Broadcaster::poll_transmit`] until it returns `false`, sending each datagram;
//! 3. [`Broadcaster::poll_event`] until `None`;
//! 4. sleep until [`Broadcaster::poll_timeout`] (or until new input arrives), then go to 2.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bincode::{Decode, Encode};
use thiserror::Error;

use crate::fec::{self, Block, BlockEncoder, Oti};
use crate::feedback::{Feedback, FeedbackMessage};
use crate::manifest::{Kind, Manifest};
use crate::pacer::Pacer;
use crate::sizing::{self, LossBook, SIZING_LOSS_MAX, SizingConfig};
use crate::trust::{self, Heartbeat, LatestVersion, SigningKey};
use crate::wire::{self, NetworkKey, PacketType};

/// The most source-block bytes interleaved at once. Encoders for one window stay in memory,
/// so this bounds the uplink's memory per object; at 80 Mbit/s it spans about 7 seconds of
/// air time, longer than a typical rain-fade burst.
pub const INTERLEAVE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// The most objects the machine holds at once (airing, waiting or idle).
pub const AIRING_OBJECTS_MAX: usize = 1024;
/// The most events held for the driver; older ones are dropped beyond this.
pub const EVENTS_MAX: usize = 4096;
/// The most targeted receivers per object.
pub const TARGETS_MAX: usize = 100_000;
/// The most (kind, name) whose newest aired version is remembered for the heartbeat's
/// latest-version statement (the one protecting for the shortest time is dropped first).
pub const VERSION_NOTES_MAX: usize = 4096;
/// Copies of each ROUND marker, spaced by [`ROUND_MARKER_SPACING`], so one lost datagram
/// does not cost a round trip.
pub const ROUND_MARKER_COPIES: u32 = 3;
/// Spacing between copies of a ROUND marker.
pub const ROUND_MARKER_SPACING: Duration = Duration::from_millis(50);
/// Every this many SYMBOL LISTs of symbols, one carries the signing key's certificate (as
/// every list naming a ROUND marker does): a county that missed the heartbeats of a new key
/// keeps at most about this many lists' symbols unverified before it learns the key.
pub const SYMBOL_LIST_CERTIFICATE_EVERY: u64 = 16;
/// Extra copies of a new object's manifest, after its first, before the regular carousel
/// interval takes over: a county that misses them all keeps the symbols it hears meanwhile
/// (see `reception::EARLY_SYMBOL_BYTES_MAX`), but each copy it catches saves it a round.
pub const FIRST_MANIFEST_REPEATS: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(300)];
/// The most symbols beyond K a county may claim to need for a block.
pub const NEED_OVERHEAD_SYMBOLS_MAX: u32 = 16;
/// In carousel mode, the chance at most that a county losing the pass's target loss of its
/// datagrams misses every copy of the manifest aired during one pass. Nothing else brings
/// it the manifest (no feedback, and the object leaves the carousel after its last pass):
/// without one, the symbols it heard are useless. With 300 counties at 5% loss, the three
/// copies of a short pass left about one run in thirty with a county that never completed.
pub const CAROUSEL_MANIFEST_MISS_MAX: f64 = 1e-6;
/// The fewest and the most copies of the manifest spread over one carousel pass.
pub const CAROUSEL_MANIFEST_COPIES: std::ops::RangeInclusive<u32> = 3..=64;
/// Times a round's markers are repeated when the WAN is up but outstanding counties stay
/// silent, before any blind repair: a repeat costs a few datagrams and one wait, a blind
/// round a tenth of the object.
pub const MARKER_REPEATS_MAX: u32 = 1;
/// Idle objects repeat their manifest this many times less often than airing ones.
pub const IDLE_MANIFEST_SLOWDOWN: u32 = 10;
/// How soon the machine asks its source again for a block encoder that was not ready.
pub const ENCODER_RETRY_INTERVAL: Duration = Duration::from_millis(5);
/// When the object on the air has this few symbols left in its round, the encoder of the
/// object after it is asked for: about 0.6 s at 20 Mbit/s, time to build a block encoder
/// of 1 MiB on a loaded uplink, so the carrier does not idle between broadcasts.
pub const ENCODER_PREFETCH_SYMBOLS: u64 = 1024;
/// The shortest wait for reports after a round, however short the measured round trip.
pub const FEEDBACK_WAIT_MIN: Duration = Duration::from_millis(200);
/// Added to the measured round trip and the report window: timer and scheduling slack on
/// both ends.
pub const FEEDBACK_WAIT_SLACK: Duration = Duration::from_millis(250);

/// Scheduling class. Ordered so that `Emergency` is the smallest (goes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Disaster-relief notices: preempt everything.
    Emergency,
    /// Urgent.
    High,
    /// The default.
    Normal,
    /// Large, patient transfers.
    Bulk,
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Priority::Emergency => "emergency",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Bulk => "bulk",
        })
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "emergency" => Ok(Priority::Emergency),
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "bulk" => Ok(Priority::Bulk),
            other => Err(format!("unknown priority {other:?} (emergency, high, normal or bulk)")),
        }
    }
}

/// Settings of the carrier, the carousel and the repair rounds.
#[derive(Debug, Clone)]
pub struct BroadcastConfig {
    /// The carrier rate the pacer holds, IP and UDP headers included.
    pub link_rate_bits_per_sec: u64,
    /// The largest UDP payload to send (MTU less 28 bytes of IPv4 and UDP headers).
    pub datagram_bytes_max: usize,
    /// How often every airing object's manifest is repeated.
    pub manifest_interval: Duration,
    /// How often a signed heartbeat is sent.
    pub heartbeat_interval: Duration,
    /// How the first pass with feedback is sized (the loss prior, the emergency size).
    pub sizing: SizingConfig,
    /// The longest wait for progress reports after a round's end: the downlink delay, the
    /// receivers' report jitter window and the WAN delay, with some slack. Once a round
    /// trip has been measured the wait is that plus `report_window` and
    /// [`FEEDBACK_WAIT_SLACK`], if shorter.
    pub feedback_wait: Duration,
    /// The receivers' report jitter window (their `ReceptionConfig::report_window`).
    pub report_window: Duration,
    /// Loss rate assumed when no receiver reports (blind rounds, carousel passes).
    pub target_loss: f64,
    /// Blind rounds aired when nobody reports before the object idles.
    pub blind_rounds_max: u32,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        BroadcastConfig {
            link_rate_bits_per_sec: 20_000_000,
            datagram_bytes_max: 1472,
            manifest_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(5),
            sizing: SizingConfig::default(),
            feedback_wait: Duration::from_millis(2500),
            report_window: Duration::from_secs(1),
            target_loss: 0.1,
            blind_rounds_max: 2,
        }
    }
}

/// How much to air for one object in carousel mode (no feedback).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AirPlan {
    /// The loss rate a receiver may suffer and still complete from one pass.
    pub target_loss: f64,
    /// Passes over the whole object, each with fresh repair symbols, for receivers that
    /// joined late or lost a whole pass.
    pub passes: u32,
}

/// Copies of the manifest to spread over one carousel pass so that a county losing `loss`
/// of its datagrams (independently) misses them all with chance at most
/// [`CAROUSEL_MANIFEST_MISS_MAX`].
pub fn carousel_manifest_copies(loss: f64) -> u32 {
    let (fewest, most) = (*CAROUSEL_MANIFEST_COPIES.start(), *CAROUSEL_MANIFEST_COPIES.end());
    if loss.is_nan() || loss <= 0.0 {
        return fewest;
    }
    if loss >= 1.0 {
        return most;
    }
    let mut copies = ((CAROUSEL_MANIFEST_MISS_MAX.ln() / loss.ln()).ceil() as u32).clamp(fewest, most);
    // The logarithms may round a whole ratio up or down by one ulp.
    while copies < most && loss.powi(copies as i32) > CAROUSEL_MANIFEST_MISS_MAX {
        copies += 1;
    }
    copies
}

/// The manifest's spacing over a carousel pass of `symbols` DATA datagrams: the pass's air
/// time at the carrier rate, divided among [`carousel_manifest_copies`] copies. `None` for
/// an object with feedback (its counties' reports and the next round bring the manifest).
fn carousel_pass_manifest_spacing(config: &BroadcastConfig, plan: Option<AirPlan>, symbols: u64) -> Option<Duration> {
    let plan = plan?;
    let pass_bits = symbols.saturating_mul(config.datagram_bytes_max as u64 + wire::IP_UDP_HEADER_BYTES as u64).saturating_mul(8);
    let air_time = Duration::from_secs_f64(pass_bits as f64 / config.link_rate_bits_per_sec.max(1) as f64);
    Some(air_time / carousel_manifest_copies(plan.target_loss))
}

/// Symbols per block so that a receiver losing `loss` of them still gets K with high
/// probability: K/q plus three standard deviations, plus two for the RaptorQ decoding
/// overhead (RFC 6330 section 5.6: K+2 symbols fail about once in a million).
pub fn symbols_for_loss(source_symbols: u32, loss: f64) -> u32 {
    let k = f64::from(source_symbols);
    let p = loss.clamp(0.0, 0.9);
    let q = 1.0 - p;
    let n = k / q + 3.0 * (k * p).sqrt() / q + 2.0;
    (n.ceil() as u32).max(source_symbols)
}

/// Fresh symbols to send for a block whose worst reporting receiver needs `need` more and
/// loses `loss` of what is sent: need/q plus two standard deviations, so one round
/// usually suffices without paying for certainty.
pub fn repair_symbols_for_need(need: u32, loss: f64) -> u32 {
    if need == 0 {
        return 0;
    }
    let n = f64::from(need);
    let p = loss.clamp(0.0, 0.9);
    let q = 1.0 - p;
    (n / q + 2.0 * (n * p).sqrt() / q).ceil() as u32
}

/// Reads source-block bytes of one object, from wherever the driver keeps them.
pub trait BlockSource: Send {
    /// Fills `buf` with the object's bytes starting at `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;

    /// The encoder for `block`, or `Ok(None)` while it is being built elsewhere: the machine
    /// then airs other datagrams and asks again after [`ENCODER_RETRY_INTERVAL`]. `next`
    /// lists, in order, the blocks the machine will ask for after this one (the rest of the
    /// current interleaving window, then the next window), so a source may build them ahead;
    /// an encoder built for a block in neither `block` nor `next` will not be asked for.
    ///
    /// The default reads the block with [`BlockSource::read_at`] and builds its encoder on
    /// the caller's thread, which takes tens of milliseconds per 16 MiB block.
    fn encoder(&mut self, oti: &Oti, block: Block, next: &[Block]) -> std::io::Result<Option<BlockEncoder>> {
        let _ = next;
        let mut data = vec![0u8; block.len as usize];
        self.read_at(block.offset, &mut data)?;
        BlockEncoder::new(oti, block.sbn, &data).map(Some).map_err(std::io::Error::other)
    }
}

/// How completion is judged for an object.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Receivers report over the WAN; airing goes on until these counties (six-digit
    /// codes) have all completed or refused.
    Feedback {
        /// The targeted counties.
        targets: Vec<String>,
    },
    /// No feedback: air this plan and stop.
    Carousel(AirPlan),
}

/// Where an object's airing stood, so an uplink restarted mid-broadcast continues the same
/// broadcast: same object id, fresh ESIs only, and the counties that already completed
/// are not waited for again.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Checkpoint {
    /// The round in progress (0 is the first pass).
    pub round: u32,
    /// The next fresh ESI of each block. ESIs are reserved a window at a time before any
    /// of them is aired, so none below these can have gone out unrecorded.
    pub next_esi: Vec<u32>,
    /// Counties that completed.
    pub complete: Vec<String>,
    /// Counties that refused, with their reasons.
    pub refused: Vec<(String, String)>,
}

/// One object to air.
pub struct NewObject {
    /// The manifest, already signed into `signed_manifest`.
    pub manifest: Manifest,
    /// Canonical signed-manifest bytes as they go on the carousel.
    pub signed_manifest: Vec<u8>,
    /// Where the payload bytes come from.
    pub source: Box<dyn BlockSource>,
    /// Scheduling class.
    pub priority: Priority,
    /// Do not air before this instant.
    pub not_before: Option<Instant>,
    /// Stop airing at this instant, complete or not.
    pub deadline: Option<Instant>,
    /// Feedback or carousel.
    pub delivery: Delivery,
    /// Continue an interrupted broadcast from here instead of starting afresh.
    pub resume: Option<Checkpoint>,
}

impl std::fmt::Debug for NewObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewObject")
            .field("object_id", &self.manifest.object_id)
            .field("priority", &self.priority)
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

/// Why an object cannot be aired.
#[derive(Debug, Error)]
pub enum BroadcastError {
    /// The manifest's OTI is not valid.
    #[error("invalid oti: {0}")]
    Oti(#[from] fec::FecError),
    /// An object with this id is already held.
    #[error("object {0:016x} is already airing")]
    Duplicate(u64),
    /// Too many objects are held.
    #[error("{} objects already airing", AIRING_OBJECTS_MAX)]
    TooMany,
    /// The manifest disagrees with its OTI (size or number of block hashes): every
    /// receiver would refuse it.
    #[error("manifest is inconsistent with its oti: {0}")]
    Inconsistent(&'static str),
    /// More targets than [`TARGETS_MAX`], or none.
    #[error("an object needs 1 to {max} targeted receivers, not {count}", max = TARGETS_MAX)]
    Targets {
        /// How many were given.
        count: usize,
    },
}

/// What the broadcast machine reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BroadcastEvent {
    /// A round of symbols starts.
    RoundStarted {
        /// The object.
        object_id: u64,
        /// The round (0 is the first pass).
        round: u32,
        /// Symbols planned for the round.
        symbols: u64,
    },
    /// Every symbol of a round has been aired; the ROUND marker goes out, unless a repair
    /// round predicted from reports during the pass starts at once (a RoundStarted follows).
    RoundEnded {
        /// The object.
        object_id: u64,
        /// The round.
        round: u32,
    },
    /// Every targeted receiver has completed or refused the object; airing stopped.
    Completed {
        /// The object.
        object_id: u64,
        /// Counties that refused it (with their reasons).
        refused: Vec<(String, String)>,
        /// DATA symbols aired for it in all: the last counties may complete before the
        /// round on the air ends, so the rounds' ends do not add up to this.
        symbols_sent: u64,
    },
    /// No receiver reported a need and blind rounds are used up: the object idles until a
    /// report arrives (for example when the WAN returns).
    Idle {
        /// The object.
        object_id: u64,
        /// Targeted counties that have not completed.
        incomplete: Vec<String>,
    },
    /// The deadline passed; airing stopped.
    DeadlinePassed {
        /// The object.
        object_id: u64,
        /// Targeted counties that had not completed.
        incomplete: Vec<String>,
        /// DATA symbols aired for it in all.
        symbols_sent: u64,
    },
    /// A carousel-mode object aired all its passes.
    CarouselFinished {
        /// The object.
        object_id: u64,
    },
    /// The payload could not be read; the object was withdrawn.
    SourceFailed {
        /// The object.
        object_id: u64,
        /// The I/O error, as text.
        error: String,
    },
}

/// Counters of what went on the air.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AirStats {
    /// DATA datagrams sent.
    pub data_datagrams: u64,
    /// MANIFEST datagrams sent.
    pub manifest_datagrams: u64,
    /// HEARTBEAT datagrams sent.
    pub heartbeat_datagrams: u64,
    /// ROUND datagrams sent.
    pub round_datagrams: u64,
    /// REVOCATION datagrams sent.
    pub revocation_datagrams: u64,
    /// KEY_WRAP datagrams sent (the confidential key tree's carousel).
    pub key_wrap_datagrams: u64,
    /// NETWORK KEY datagrams sent (the next network key, during a rotation).
    pub network_key_datagrams: u64,
    /// SYMBOL LIST datagrams sent.
    pub symbol_list_datagrams: u64,
    /// Bytes of SYMBOL LIST datagrams on the carrier, IP and UDP headers included (also
    /// counted in `bytes_on_air`): what source authentication costs.
    pub symbol_list_bytes: u64,
    /// Bytes on the carrier, IP and UDP headers included.
    pub bytes_on_air: u64,
}

/// A county's latest progress report for an object.
#[derive(Debug, Clone)]
struct Report {
    received_at: Instant,
    needs: Vec<u32>,
    symbols_received: u64,
}

/// A county's latest report from the middle of a pass.
#[derive(Debug, Clone)]
struct PassReport {
    /// The object's `symbols_sent` when it arrived: reports from before the current round
    /// started are not used again, so one report buys at most one early repair.
    sent_when_received: u64,
    needs: Vec<u32>,
    seen: Vec<u32>,
}

#[derive(Debug, Default)]
struct FeedbackState {
    targets: BTreeSet<String>,
    complete: BTreeSet<String>,
    refused: BTreeMap<String, String>,
    reports: HashMap<String, Report>,
    /// At most one per targeted county.
    pass_reports: HashMap<String, PassReport>,
    blind_rounds: u32,
    /// A targeted county said anything (a report, a completion, a refusal) since the round
    /// started or its markers were last repeated: the WAN is up.
    heard_this_round: bool,
    /// Times this round's markers were repeated for counties that stayed silent.
    markers_repeated: u32,
}

impl FeedbackState {
    fn outstanding(&self) -> impl Iterator<Item = &String> {
        self.targets.iter().filter(|c| !self.complete.contains(*c) && !self.refused.contains_key(*c))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Before `not_before`.
    Scheduled,
    /// Sending the symbols of `round`.
    Sending,
    /// Round ended at `since`; waiting for reports until `until`.
    AwaitingFeedback { since: Instant, until: Instant },
    /// Nothing to send until a report with a need arrives.
    Idle,
}

/// The bytes a HEARTBEAT datagram carrying `heartbeat` takes: its canonical encoding, a
/// certificate and a signature, in the wire's frame.
fn heartbeat_datagram_len(heartbeat: &Heartbeat) -> usize {
    wire::HEADER_LEN + heartbeat.to_bytes().len() + trust::SIGNED_HEARTBEAT_OVERHEAD_BYTES + wire::TAG_LEN
}

/// The newest version aired of one (kind, name), and until when an older version's
/// manifest may still be accepted somewhere (seconds since the Unix epoch).
#[derive(Debug, Clone, Copy, Default)]
struct VersionNote {
    version: u64,
    expires_unix_secs: u64,
    older_expire_unix_secs: u64,
}

struct Airing {
    manifest: Manifest,
    signed_manifest: Vec<u8>,
    oti: Oti,
    blocks: Vec<Block>,
    /// Consecutive block-index ranges interleaved together.
    windows: Vec<std::ops::Range<usize>>,
    source: Box<dyn BlockSource>,
    priority: Priority,
    not_before: Option<Instant>,
    deadline: Option<Instant>,
    carousel: Option<AirPlan>,
    feedback: FeedbackState,
    phase: Phase,
    round: u32,
    /// Symbols per block in the current round.
    round_counts: Vec<u32>,
    window: usize,
    /// The next fresh ESI of each block.
    next_esi: Vec<u32>,
    schedule: fec::Interleaved,
    encoders: HashMap<u8, BlockEncoder>,
    /// A symbol taken from the schedule whose encoder was not ready: it goes next.
    held: Option<(u8, u32)>,
    /// Set while the encoder for `held` is awaited: when to ask the source again.
    retry_at: Option<Instant>,
    /// Symbols built ahead whose SYMBOL LIST went out: they are aired next, in order.
    ready: VecDeque<(u8, u32, Vec<u8>)>,
    /// Bytes of this object's SYMBOL LIST datagrams handed out so far (IP and UDP included).
    list_bytes_sent: u64,
    symbols_sent: u64,
    /// Symbols planned for the current round, and `symbols_sent` when it started: what is
    /// left of it orders the objects of a class.
    round_symbols: u64,
    round_start_sent: u64,
    /// Order of arrival, breaking ties between objects of a class.
    seq: u64,
    /// The shortest delay from this round's end to a report answering it.
    report_delay: Option<Duration>,
    next_manifest_at: Instant,
    /// In carousel mode, the manifest's spacing during the current pass (shorter than the
    /// configured interval for a short pass; see [`carousel_manifest_copies`]).
    pass_manifest_spacing: Option<Duration>,
    /// `symbols_sent` when the last manifest copy was queued: during a carousel pass a copy
    /// waits for at least one DATA datagram after the last, so a spacing shorter than the
    /// host can send (a carrier rate the machine cannot reach) cannot air manifests only.
    symbols_sent_at_manifest: u64,
    resume: Option<Checkpoint>,
}

impl Airing {
    /// When the next manifest copy is due: never before the object is scheduled, and during
    /// a carousel pass not before one of its DATA datagrams followed the last copy.
    fn manifest_due_at(&self) -> Option<Instant> {
        let spaced_over_pass = self.phase == Phase::Sending && self.pass_manifest_spacing.is_some();
        let data_since = self.symbols_sent > self.symbols_sent_at_manifest;
        (self.phase != Phase::Scheduled && (data_since || !spaced_over_pass)).then_some(self.next_manifest_at)
    }

    fn new(now: Instant, object: NewObject) -> Result<Self, BroadcastError> {
        let oti = Oti::decode(&object.manifest.oti)?;
        let blocks = fec::blocks(&oti);
        if oti.transfer_length != object.manifest.size_bytes {
            return Err(BroadcastError::Inconsistent("size differs from the transfer length"));
        }
        if blocks.len() != object.manifest.block_hashes.len() {
            return Err(BroadcastError::Inconsistent("block hash count differs from the number of blocks"));
        }
        let mut windows = Vec::new();
        let mut start = 0;
        let mut bytes = 0u64;
        for (i, block) in blocks.iter().enumerate() {
            if i > start && bytes + block.len > INTERLEAVE_BYTES_MAX {
                windows.push(start..i);
                start = i;
                bytes = 0;
            }
            bytes += block.len;
        }
        windows.push(start..blocks.len());
        let (carousel, feedback) = match object.delivery {
            Delivery::Carousel(plan) => (Some(plan), FeedbackState::default()),
            Delivery::Feedback { targets } => {
                if targets.is_empty() || targets.len() > TARGETS_MAX {
                    return Err(BroadcastError::Targets { count: targets.len() });
                }
                (None, FeedbackState { targets: targets.into_iter().collect(), ..FeedbackState::default() })
            }
        };
        let block_count = blocks.len();
        Ok(Airing {
            manifest: object.manifest,
            signed_manifest: object.signed_manifest,
            oti,
            blocks,
            windows,
            source: object.source,
            priority: object.priority,
            not_before: object.not_before,
            deadline: object.deadline,
            carousel,
            feedback,
            phase: Phase::Scheduled,
            round: 0,
            round_counts: vec![0; block_count],
            window: 0,
            next_esi: vec![0; block_count],
            schedule: fec::interleave(&[]),
            encoders: HashMap::new(),
            held: None,
            retry_at: None,
            ready: VecDeque::new(),
            list_bytes_sent: 0,
            symbols_sent: 0,
            round_symbols: 0,
            round_start_sent: 0,
            seq: 0,
            report_delay: None,
            next_manifest_at: now,
            pass_manifest_spacing: None,
            symbols_sent_at_manifest: 0,
            resume: object.resume,
        })
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            round: self.round,
            next_esi: self.next_esi.clone(),
            complete: self.feedback.complete.iter().cloned().collect(),
            refused: self.feedback.refused.iter().map(|(c, r)| (c.clone(), r.clone())).collect(),
        }
    }

    /// Takes up an interrupted broadcast: fresh ESIs continue after the checkpoint's, and
    /// counties that completed stay complete.
    fn restore(&mut self, checkpoint: Checkpoint) {
        if checkpoint.next_esi.len() == self.next_esi.len() {
            self.next_esi = checkpoint.next_esi.iter().map(|e| (*e).min(wire::ESI_MAX)).collect();
        }
        self.round = checkpoint.round;
        for county in checkpoint.complete {
            if self.feedback.targets.contains(&county) {
                self.feedback.complete.insert(county);
            }
        }
        for (county, reason) in checkpoint.refused {
            if self.feedback.targets.contains(&county) {
                self.feedback.refused.insert(county, reason);
            }
        }
    }

    fn object_id(&self) -> u64 {
        self.manifest.object_id
    }

    /// Spreads the manifest's copies over the carousel pass just started (`spacing`, from
    /// [`carousel_pass_manifest_spacing`]): the next copy is due no later than one spacing
    /// from now, however long the configured interval.
    fn space_manifests_over_pass(&mut self, now: Instant, spacing: Option<Duration>) {
        self.pass_manifest_spacing = spacing;
        if let Some(spacing) = spacing {
            self.next_manifest_at = self.next_manifest_at.min(now + spacing);
        }
    }

    /// Starts a round with `counts` symbols per block (fresh ESIs continue from where the
    /// last round stopped; round 0 starts at ESI 0, the source symbols).
    fn start_round(&mut self, round: u32, counts: Vec<u32>) -> u64 {
        self.round = round;
        self.round_counts = counts;
        self.window = 0;
        // A round that follows at once (the next carousel pass, a repair predicted from
        // reports) keeps the encoders its first window shares with the last round's: asking
        // for them again left the carrier idle while they were rebuilt, 45 ms of a 16 MB
        // carousel's pass boundary under load (docs/performance.md, the ackload section).
        let (first, blocks, counts) = (self.windows[0].clone(), &self.blocks, &self.round_counts);
        self.encoders.retain(|sbn, _| first.clone().any(|i| blocks[i].sbn == *sbn && counts[i] > 0));
        self.held = None;
        self.retry_at = None;
        self.ready.clear();
        self.phase = Phase::Sending;
        self.schedule = self.window_schedule();
        self.round_symbols = self.round_counts.iter().map(|c| u64::from(*c)).sum();
        self.round_start_sent = self.symbols_sent;
        self.feedback.heard_this_round = false;
        self.feedback.markers_repeated = 0;
        self.round_symbols
    }

    /// Symbols left to air in the current round.
    fn round_left(&self) -> u64 {
        self.round_symbols.saturating_sub(self.symbols_sent - self.round_start_sent)
    }

    /// The interleaved (sbn, esi) order for the current round over the current window.
    fn window_schedule(&mut self) -> fec::Interleaved {
        let mut plan = Vec::new();
        for index in self.windows[self.window].clone() {
            let first = self.next_esi[index];
            let count = self.round_counts[index].min(wire::ESI_MAX.saturating_sub(first));
            self.next_esi[index] = first + count;
            if count > 0 {
                plan.push((self.blocks[index].sbn, first, count));
            }
        }
        fec::interleave(&plan)
    }

    /// The next (sbn, esi) of the round, moving window by window; None at the round's end.
    fn next_symbol(&mut self) -> Option<(u8, u32)> {
        if let Some(held) = self.held.take() {
            return Some(held);
        }
        loop {
            if let Some(next) = self.schedule.next() {
                return Some(next);
            }
            if self.window + 1 >= self.windows.len() {
                // The round's end decides what its encoders are kept for (start_round).
                return None;
            }
            self.encoders.clear();
            self.window += 1;
            self.schedule = self.window_schedule();
        }
    }

    /// Takes the next symbol of the round ahead of time (it goes next, as a held one) and
    /// asks the source for its encoder, no more often than a held symbol's retries. A
    /// failure is left for the symbol's turn to report.
    fn prefetch(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        if self.held.is_none() {
            self.held = self.next_symbol();
        }
        let Some((sbn, _)) = self.held else { return };
        if let Ok(None) = self.encoder(sbn) {
            self.retry_at = Some(now + ENCODER_RETRY_INTERVAL);
        }
    }

    /// The encoder for block `sbn`, or None if the source has not built it yet.
    fn encoder(&mut self, sbn: u8) -> std::io::Result<Option<&BlockEncoder>> {
        if !self.encoders.contains_key(&sbn) {
            let block = self.blocks[usize::from(sbn)];
            let next = self.blocks_after(sbn);
            let Some(encoder) = self.source.encoder(&self.oti, block, &next)? else { return Ok(None) };
            self.encoders.insert(sbn, encoder);
        }
        self.encoders.get(&sbn).map(Some).ok_or_else(|| std::io::Error::other("encoder vanished"))
    }

    /// The blocks this round still needs encoders for after `sbn`: the rest of the current
    /// window, then the next window; in a carousel pass's last window, the next pass's
    /// first (it starts at once, and its encoders are not the ones at hand).
    fn blocks_after(&self, sbn: u8) -> Vec<Block> {
        let needed = |index: &usize| self.round_counts[*index] > 0 && self.next_esi[*index] < wire::ESI_MAX;
        let current = self.windows[self.window].clone().filter(needed).filter(|i| {
            let block = self.blocks[*i].sbn;
            block != sbn && !self.encoders.contains_key(&block)
        });
        let pass_follows = self.window > 0 && self.carousel.is_some_and(|plan| self.round + 1 < plan.passes);
        let next = match self.windows.get(self.window + 1) {
            Some(window) => window.clone(),
            None if pass_follows => self.windows[0].clone(),
            None => 0..0,
        };
        current.chain(next.filter(needed)).map(|i| self.blocks[i]).collect()
    }

    /// Symbols per block of the first pass: for a carousel, enough for its target loss;
    /// with feedback, sized for the targeted counties' loss rates (see [`crate::sizing`]).
    fn first_pass_counts(&self, now: Instant, config: &BroadcastConfig, losses: &LossBook) -> Vec<u32> {
        match self.carousel {
            Some(plan) => self.blocks.iter().map(|b| symbols_for_loss(b.source_symbols, plan.target_loss)).collect(),
            None => {
                let histogram = losses.histogram(now, self.feedback.outstanding());
                let source: Vec<u32> = self.blocks.iter().map(|b| b.source_symbols).collect();
                sizing::first_pass_counts(&config.sizing, self.manifest.size_bytes, &source, &histogram)
            }
        }
    }

    /// For an emergency-sized object with feedback: the manifest's spacing over its first
    /// pass of `symbols`, so that few counties miss every copy of it (each would wait a
    /// carousel interval for the next). None for anything else.
    fn first_pass_manifest_spacing(&self, now: Instant, config: &BroadcastConfig, losses: &LossBook, symbols: u64) -> Option<Duration> {
        if self.carousel.is_some() || self.manifest.size_bytes > config.sizing.all_complete_bytes_max {
            return None;
        }
        let histogram = losses.histogram(now, self.feedback.outstanding());
        let copies = sizing::manifest_copies(&histogram, 1.0 - sizing::ALL_COMPLETE_PROBABILITY, *CAROUSEL_MANIFEST_COPIES.end());
        let pass_bits = symbols.saturating_mul(config.datagram_bytes_max as u64 + wire::IP_UDP_HEADER_BYTES as u64).saturating_mul(8);
        let air_time = Duration::from_secs_f64(pass_bits as f64 / config.link_rate_bits_per_sec.max(1) as f64);
        Some((air_time / copies.max(1)).max(Duration::from_millis(1)))
    }

    /// The next round's symbols per block from the reports received since the last round
    /// ended, or None if no outstanding receiver reported a need.
    fn repair_counts(&self, since: Instant) -> Option<Vec<u32>> {
        let mut worst_need = vec![0u32; self.blocks.len()];
        let mut worst_loss: f64 = 0.0;
        let mut any = false;
        for county in self.feedback.outstanding() {
            let Some(report) = self.feedback.reports.get(county) else { continue };
            if report.received_at < since || report.needs.len() != self.blocks.len() {
                continue;
            }
            if report.needs.iter().all(|n| *n == 0) {
                continue;
            }
            any = true;
            // A county cannot need more than a block's source symbols (plus RaptorQ's few
            // extra): a larger claim is a bug or a lie, and must not buy air time.
            for ((worst, need), block) in worst_need.iter_mut().zip(&report.needs).zip(&self.blocks) {
                *worst = (*worst).max((*need).min(block.source_symbols + NEED_OVERHEAD_SYMBOLS_MAX));
            }
            if self.symbols_sent > 0 {
                let loss = 1.0 - report.symbols_received as f64 / self.symbols_sent as f64;
                worst_loss = worst_loss.max(loss);
            }
        }
        // A receiver that joined late reports a high "loss"; cap it so the inflation stays
        // sane (its need is already in worst_need).
        let loss = worst_loss.clamp(0.0, 0.5);
        any.then(|| worst_need.iter().map(|n| repair_symbols_for_need(*n, loss)).collect())
    }

    /// At the end of a round, the symbols per block that the counties' reports from the
    /// middle of it say they will still need, or None if none will. A county that had
    /// received `seen[b]` of block b's ESIs will still receive the rest of what was aired,
    /// less its loss; what that leaves short is repaired at once, without a marker and a
    /// wait for reports. The expected shortfall is used, not a worst case: a county that
    /// ends only just short is repaired from its report after the marker, as before.
    fn predicted_counts(&self, now: Instant, losses: &LossBook) -> Option<Vec<u32>> {
        let mut worst_short = vec![0.0f64; self.blocks.len()];
        let mut worst_loss: f64 = 0.0;
        for county in self.feedback.outstanding() {
            let Some(report) = self.feedback.pass_reports.get(county) else { continue };
            let (blocks, stale) = (self.blocks.len(), report.sent_when_received < self.round_start_sent);
            if stale || report.needs.len() != blocks || report.seen.len() != blocks {
                continue;
            }
            let loss = losses.loss(now, county).min(SIZING_LOSS_MAX);
            for (index, block) in self.blocks.iter().enumerate() {
                let need = report.needs[index].min(block.source_symbols + NEED_OVERHEAD_SYMBOLS_MAX);
                let coming = f64::from(self.next_esi[index].saturating_sub(report.seen[index])) * (1.0 - loss);
                let short = f64::from(need) - coming;
                if short > 0.0 {
                    worst_short[index] = worst_short[index].max(short);
                    worst_loss = worst_loss.max(loss);
                }
            }
        }
        worst_short
            .iter()
            .any(|s| *s > 0.0)
            .then(|| worst_short.iter().map(|s| if *s > 0.0 { repair_symbols_for_need(s.ceil() as u32, worst_loss) } else { 0 }).collect())
    }

    fn blind_counts(&self, config: &BroadcastConfig) -> Vec<u32> {
        self.blocks.iter().map(|b| symbols_for_loss(b.source_symbols, config.target_loss) - b.source_symbols + 2).collect()
    }

    fn incomplete(&self) -> Vec<String> {
        self.feedback.outstanding().cloned().collect()
    }
}

/// KEY_WRAP datagrams aired after each regular heartbeat: the tree of 2000 counties (206
/// datagrams at a 1500-byte MTU) goes round in 13 heartbeat intervals, about a minute at the
/// default 5 s, 23 kB per heartbeat (37 kbit/s).
pub const KEY_WRAPS_PER_HEARTBEAT: usize = 16;
/// Key-wrap messages a broadcaster keeps: a tree of `key_tree::COUNTIES_MAX` counties at a
/// 1500-byte MTU needs about 900.
pub const KEY_WRAP_MESSAGES_MAX: usize = 16_384;

/// The broadcast-side machine. See the module documentation for the call order.
pub struct Broadcaster {
    config: BroadcastConfig,
    network_key: NetworkKey,
    signing_key: SigningKey,
    pacer: Pacer,
    objects: VecDeque<Airing>,
    /// Control datagrams (manifest fragments, round markers) and when each is due.
    control: VecDeque<(Instant, Vec<u8>, PacketType)>,
    /// A datagram built but held back by the pacer.
    pending: Option<(Vec<u8>, PacketType)>,
    next_heartbeat_at: Instant,
    heartbeat_sequence: u64,
    /// The time of the last heartbeat, so the next is always later (receivers drop one
    /// not later than the last as a replay).
    last_heartbeat_unix_ms: u64,
    /// An object was added or ended since the last heartbeat: the next goes at once, so
    /// receivers learn a new object is live before its first manifest arrives.
    live_changed: bool,
    /// The newest version aired of each (kind, name), for the heartbeat's statement.
    versions: BTreeMap<[u8; 8], VersionNote>,
    /// The root-signed revocation list, aired after every heartbeat so a receiver that was
    /// offline learns it within one heartbeat interval.
    revocation: Option<Vec<u8>>,
    /// The signed next network key, aired after every regular heartbeat until it takes over.
    next_network_key: Option<Vec<u8>>,
    /// After a switch, for a while: the previous network key and the signed announcement of
    /// the current one. Both, with the key-wrap carousel, are aired under the previous key
    /// too, so a county that was off the air through the whole announcement learns the key
    /// (and the group keys to open it) and follows (docs/protocol.md 8.6).
    handover: Option<(NetworkKey, Vec<u8>)>,
    /// The key tree's signed key-wrap messages, aired in turn, [`KEY_WRAPS_PER_HEARTBEAT`]
    /// after every heartbeat (docs/protocol.md 7.4).
    key_wraps: Vec<Vec<u8>>,
    /// The next of `key_wraps` to air.
    key_wrap_next: usize,
    events: VecDeque<BroadcastEvent>,
    stats: AirStats,
    /// The sequence of the last SYMBOL LIST: the wall clock in milliseconds, or one more than
    /// the last, so it keeps growing across restarts (receivers drop lists seen already).
    list_sequence: u64,
    /// The wall clock of the last call to [`Broadcaster::poll_transmit`], in milliseconds.
    wall_unix_ms: u64,
    /// SYMBOL LISTs of symbols built so far (see [`SYMBOL_LIST_CERTIFICATE_EVERY`]).
    lists_built: u64,
    /// Each county's loss rate, from its reports: sizes first passes.
    losses: LossBook,
    /// The round trip from a round's end to the first report answering it, smoothed over
    /// rounds: how long to wait for reports.
    report_delay: Option<Duration>,
    next_seq: u64,
}

impl std::fmt::Debug for Broadcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcaster").field("objects", &self.objects.len()).field("stats", &self.stats).finish()
    }
}

impl Broadcaster {
    /// A machine with nothing to air yet; it sends heartbeats from `now` on.
    pub fn new(now: Instant, config: BroadcastConfig, network_key: NetworkKey, signing_key: SigningKey) -> Self {
        // Allow a burst of a few datagrams so timer granularity does not cost rate.
        let burst_bytes = (config.datagram_bytes_max as u64 + wire::IP_UDP_HEADER_BYTES as u64) * 4;
        Broadcaster {
            pacer: Pacer::new(now, config.link_rate_bits_per_sec, burst_bytes),
            network_key,
            signing_key,
            objects: VecDeque::new(),
            control: VecDeque::new(),
            pending: None,
            next_heartbeat_at: now,
            heartbeat_sequence: 0,
            last_heartbeat_unix_ms: 0,
            live_changed: false,
            versions: BTreeMap::new(),
            revocation: None,
            next_network_key: None,
            handover: None,
            key_wraps: Vec::new(),
            key_wrap_next: 0,
            events: VecDeque::new(),
            stats: AirStats::default(),
            list_sequence: 0,
            wall_unix_ms: 0,
            lists_built: 0,
            losses: LossBook::new(config.sizing.prior_loss),
            report_delay: None,
            next_seq: 0,
            config,
        }
    }

    /// Takes an object to air: its manifest goes out at once (or at `not_before`), then
    /// its symbols as its priority allows.
    pub fn add_object(&mut self, now: Instant, object: NewObject) -> Result<(), BroadcastError> {
        let object_id = object.manifest.object_id;
        if self.objects.iter().any(|a| a.object_id() == object_id) {
            return Err(BroadcastError::Duplicate(object_id));
        }
        if self.objects.len() >= AIRING_OBJECTS_MAX {
            return Err(BroadcastError::TooMany);
        }
        let mut airing = Airing::new(now, object)?;
        airing.seq = self.next_seq;
        self.next_seq += 1;
        let manifest = &airing.manifest;
        self.note_aired(manifest.kind, &manifest.name, manifest.version, manifest.expires_unix_secs);
        self.objects.push_back(airing);
        self.live_changed = true;
        self.advance(now);
        Ok(())
    }

    /// Stops airing an object at once. False if it was not held.
    pub fn cancel(&mut self, object_id: u64) -> bool {
        let before = self.objects.len();
        self.objects.retain(|a| a.object_id() != object_id);
        self.control.retain(|(_, buf, _)| buf.get(6..14) != Some(object_id.to_be_bytes().as_slice()));
        self.live_changed |= before != self.objects.len();
        before != self.objects.len()
    }

    /// Records that a manifest of (kind, name) at `version`, valid until `expires_unix_secs`,
    /// went on the air (objects added here are noted by themselves; the uplink notes those
    /// of its stored broadcasts at start). While an older version's manifest is unexpired,
    /// heartbeats state the newest, so receivers refuse the older one if it is aired again.
    pub fn note_aired(&mut self, kind: Kind, name: &str, version: u64, expires_unix_secs: u64) {
        let note = self.versions.entry(trust::name_digest(kind, name)).or_default();
        if version > note.version {
            note.older_expire_unix_secs = note.older_expire_unix_secs.max(note.expires_unix_secs);
            (note.version, note.expires_unix_secs) = (version, expires_unix_secs);
        } else if version < note.version {
            note.older_expire_unix_secs = note.older_expire_unix_secs.max(expires_unix_secs);
        } else {
            note.expires_unix_secs = note.expires_unix_secs.max(expires_unix_secs);
        }
        if self.versions.len() > VERSION_NOTES_MAX {
            // The note that protects for the shortest time goes first.
            let shortest = self.versions.iter().min_by_key(|(_, n)| n.older_expire_unix_secs).map(|(k, _)| *k);
            if let Some(key) = shortest {
                self.versions.remove(&key);
            }
        }
    }

    /// The signed heartbeat due now: the live objects and the latest-version statement,
    /// trimmed to fit one datagram (a trimmed live list is marked incomplete).
    fn heartbeat_datagram(&mut self, wall_unix_ms: u64) -> Vec<u8> {
        self.heartbeat_sequence += 1;
        self.last_heartbeat_unix_ms = wall_unix_ms.max(self.last_heartbeat_unix_ms + 1);
        self.live_changed = false;
        let now_unix_secs = self.last_heartbeat_unix_ms / 1000;
        self.versions.retain(|_, n| n.older_expire_unix_secs > now_unix_secs || n.expires_unix_secs > now_unix_secs);
        let mut latest: Vec<(u64, LatestVersion)> = self
            .versions
            .iter()
            .filter(|(_, n)| n.older_expire_unix_secs > now_unix_secs)
            .map(|(name, n)| (n.older_expire_unix_secs, LatestVersion { name: *name, version: n.version }))
            .collect();
        // Those protecting the longest first, should the list be cut.
        latest.sort_by_key(|(until, _)| std::cmp::Reverse(*until));
        let mut heartbeat = Heartbeat {
            sequence: self.heartbeat_sequence,
            uplink_time_unix_ms: self.last_heartbeat_unix_ms,
            live: self.objects.iter().map(Airing::object_id).take(trust::LIVE_OBJECTS_MAX).collect(),
            live_complete: self.objects.len() <= trust::LIVE_OBJECTS_MAX,
            latest: latest.into_iter().map(|(_, l)| l).take(trust::LATEST_VERSIONS_MAX).collect(),
        };
        // A small MTU: the statement shrinks (16 bytes a latest version, then 8 a live id),
        // the heartbeat still goes. The encoding's size is exact, so one cut suffices.
        let mut over = (heartbeat_datagram_len(&heartbeat)).saturating_sub(self.config.datagram_bytes_max);
        while over > 0 && !(heartbeat.live.is_empty() && heartbeat.latest.is_empty()) {
            if heartbeat.latest.pop().is_some() {
                over = over.saturating_sub(16);
            } else {
                heartbeat.live.pop();
                heartbeat.live_complete = false;
                over = over.saturating_sub(8);
            }
        }
        let signed = self.signing_key.sign_heartbeat(heartbeat).to_bytes();
        let mut buf = Vec::new();
        wire::write_heartbeat(&mut buf, &self.network_key, &signed);
        buf
    }

    /// Airs these signed key-wrap messages (canonical bytes, one per KEY_WRAP datagram) from
    /// now on, in turn, [`KEY_WRAPS_PER_HEARTBEAT`] after every heartbeat; at most
    /// [`KEY_WRAP_MESSAGES_MAX`] are kept.
    pub fn set_key_wraps(&mut self, mut signed_key_wraps: Vec<Vec<u8>>) {
        signed_key_wraps.truncate(KEY_WRAP_MESSAGES_MAX);
        self.key_wraps = signed_key_wraps;
        self.key_wrap_next = 0;
    }

    /// Airs this signed next network key (canonical bytes) from now on, after every regular
    /// heartbeat, or stops (None).
    pub fn set_next_network_key(&mut self, signed_next_network_key: Option<Vec<u8>>) {
        self.next_network_key = signed_next_network_key;
    }

    /// Also airs `announcement` (the signed announcement of the current key) and the key
    /// wraps under `previous` after every regular heartbeat, for the counties still on it;
    /// or stops (None).
    pub fn set_network_key_handover(&mut self, handover: Option<(NetworkKey, Vec<u8>)>) {
        self.handover = handover;
    }

    /// Tags every datagram with `key` from now on (a rotation's activation), those already
    /// queued included, and stops airing the announcement of it.
    pub fn set_network_key(&mut self, key: NetworkKey) {
        self.network_key = key;
        self.next_network_key = None;
        for (_, datagram, _) in self.control.iter_mut() {
            wire::retag(datagram, &self.network_key);
        }
        if let Some((datagram, _)) = self.pending.as_mut() {
            wire::retag(datagram, &self.network_key);
        }
    }

    /// Airs this signed revocation list (canonical bytes) from now on, after every heartbeat.
    pub fn set_revocation(&mut self, signed_revocation: Option<Vec<u8>>) {
        self.revocation = signed_revocation;
    }

    /// Signs heartbeats with a new key from now on (after a rotation). Objects already held
    /// keep the manifests they were signed with; they stay valid until that key expires.
    pub fn set_signing_key(&mut self, signing_key: SigningKey) {
        self.signing_key = signing_key;
        // Receivers check symbol lists with a key they learned from a manifest or a
        // heartbeat: a heartbeat under the new key goes at once, before its first list.
        self.live_changed = true;
    }

    /// Bytes of SYMBOL LIST datagrams aired for one object so far, IP and UDP included.
    pub fn list_bytes_sent(&self, object_id: u64) -> Option<u64> {
        self.objects.iter().find(|a| a.object_id() == object_id).map(|a| a.list_bytes_sent)
    }

    /// Ids of the objects held now (airing, scheduled or idle).
    pub fn airing(&self) -> Vec<u64> {
        self.objects.iter().map(Airing::object_id).collect()
    }

    /// What has gone on the air so far.
    pub fn stats(&self) -> AirStats {
        self.stats
    }

    /// Where an object's airing stands, to persist for a restart.
    pub fn checkpoint(&self, object_id: u64) -> Option<Checkpoint> {
        self.objects.iter().find(|a| a.object_id() == object_id).map(Airing::checkpoint)
    }

    /// The symbol size of one airing object: an object under one configured symbol airs in a
    /// smaller one (see [`Oti::symbol_size_for`]).
    pub fn symbol_size(&self, object_id: u64) -> Option<u16> {
        self.objects.iter().find(|a| a.object_id() == object_id).map(|a| a.oti.symbol_size)
    }

    /// The loss rate the machine holds for a county now (its prior if it never reported).
    pub fn county_loss(&self, now: Instant, county: &str) -> f64 {
        self.losses.loss(now, county)
    }

    /// How long the machine waits for reports after a round ends, now: the measured round
    /// trip plus the report window and slack, or the configured wait before any was
    /// measured (and never longer).
    pub fn feedback_wait(&self) -> Duration {
        let longest = self.config.feedback_wait.max(FEEDBACK_WAIT_MIN);
        match self.report_delay {
            Some(delay) => (delay + self.config.report_window + FEEDBACK_WAIT_SLACK).clamp(FEEDBACK_WAIT_MIN, longest),
            None => self.config.feedback_wait,
        }
    }

    /// DATA symbols aired for one object so far.
    pub fn symbols_sent(&self, object_id: u64) -> Option<u64> {
        self.objects.iter().find(|a| a.object_id() == object_id).map(|a| a.symbols_sent)
    }

    /// Stops waiting for `county` on every object airing with feedback: it was revoked, so it
    /// can neither read what is sealed nor report. It counts as refused with `reason`, and an
    /// object that waited only for it completes.
    pub fn withdraw(&mut self, now: Instant, county: &str, reason: &str) {
        for airing in self.objects.iter_mut().filter(|a| a.carousel.is_none()) {
            let feedback = &mut airing.feedback;
            if feedback.targets.contains(county) && !feedback.complete.contains(county) {
                feedback.reports.remove(county);
                feedback.pass_reports.remove(county);
                feedback.refused.insert(county.to_owned(), reason.to_owned());
            }
        }
        self.advance(now);
    }

    /// Takes one feedback message. The caller has authenticated `feedback.county_code`.
    pub fn handle_feedback(&mut self, now: Instant, feedback: &Feedback) {
        let county = &feedback.county_code;
        let (object_id, update): (u64, FeedbackUpdate) = match &feedback.message {
            FeedbackMessage::Hello { .. } | FeedbackMessage::HookResult { .. } => return,
            FeedbackMessage::PassProgress { object_id, needs, seen } => {
                let Some(airing) = self.objects.iter_mut().find(|a| a.object_id() == *object_id) else { return };
                if airing.carousel.is_none() && airing.feedback.targets.contains(county) {
                    airing.feedback.heard_this_round = true;
                    let report = PassReport { sent_when_received: airing.symbols_sent, needs: needs.clone(), seen: seen.clone() };
                    airing.feedback.pass_reports.insert(county.clone(), report);
                }
                return;
            }
            FeedbackMessage::Progress { object_id, needs, symbols_received, .. } => {
                let report = Report { received_at: now, needs: needs.clone(), symbols_received: *symbols_received };
                let county = county.clone();
                (
                    *object_id,
                    Box::new(move |f: &mut FeedbackState| {
                        f.reports.insert(county, report);
                    }),
                )
            }
            FeedbackMessage::Complete { object_id, .. } => {
                let county = county.clone();
                (
                    *object_id,
                    Box::new(move |f: &mut FeedbackState| {
                        f.reports.remove(&county);
                        f.complete.insert(county);
                    }),
                )
            }
            FeedbackMessage::Rejected { object_id, reason } => {
                let (county, reason) = (county.clone(), reason.clone());
                (
                    *object_id,
                    Box::new(move |f: &mut FeedbackState| {
                        f.reports.remove(&county);
                        f.refused.insert(county, reason);
                    }),
                )
            }
            // A passing refusal (no room, too many objects at once) leaves the county
            // waited for: it takes the object by itself once the condition passes, and its
            // progress reports then drive repairs again. Its stale need drives none meanwhile.
            FeedbackMessage::Refused { object_id, refusal } if refusal.code.is_passing() => {
                let county = county.clone();
                (
                    *object_id,
                    Box::new(move |f: &mut FeedbackState| {
                        f.reports.remove(&county);
                    }),
                )
            }
            FeedbackMessage::Refused { object_id, refusal } => {
                let (county, reason) = (county.clone(), refusal.to_string());
                (
                    *object_id,
                    Box::new(move |f: &mut FeedbackState| {
                        f.reports.remove(&county);
                        f.refused.insert(county, reason);
                    }),
                )
            }
        };
        let Some(airing) = self.objects.iter_mut().find(|a| a.object_id() == object_id) else { return };
        if airing.carousel.is_some() || !airing.feedback.targets.contains(county) {
            return;
        }
        // A report answering the round that last ended counts every symbol aired so far:
        // the county's loss, and the round trip since the marker went out.
        if let FeedbackMessage::Progress { round, symbols_received, .. } = &feedback.message {
            if *round == airing.round {
                if let Phase::AwaitingFeedback { since, .. } = airing.phase {
                    self.losses.observe(now, county, airing.symbols_sent, *symbols_received);
                    let delay = now.saturating_duration_since(since);
                    airing.report_delay = Some(airing.report_delay.map_or(delay, |d| d.min(delay)));
                } else if airing.phase == Phase::Idle {
                    self.losses.observe(now, county, airing.symbols_sent, *symbols_received);
                }
            }
        }
        update(&mut airing.feedback);
        airing.feedback.heard_this_round = true;
        // A need reported while idle (the WAN came back, a county rebooted) wakes the object.
        if airing.phase == Phase::Idle {
            if let Some(counts) = airing.repair_counts(now) {
                let round = airing.round + 1;
                let symbols = airing.start_round(round, counts);
                let object_id = airing.object_id();
                self.push_event(BroadcastEvent::RoundStarted { object_id, round, symbols });
            }
        }
        self.advance(now);
    }

    fn push_event(&mut self, event: BroadcastEvent) {
        if self.events.len() >= EVENTS_MAX {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Queues the manifest of the object at `index` to go out at `at`.
    fn queue_manifest(&mut self, at: Instant, index: usize) {
        let Some(airing) = self.objects.get(index) else { return };
        let mut buf = Vec::new();
        let object_id = airing.object_id();
        for fragment in wire::manifest_fragments(&airing.signed_manifest, self.config.datagram_bytes_max) {
            wire::write_manifest_fragment(&mut buf, &self.network_key, object_id, &fragment);
            self.control.push_back((at, buf.clone(), PacketType::Manifest));
        }
    }

    fn next_list_sequence(&mut self) -> u64 {
        self.list_sequence = self.wall_unix_ms.max(self.list_sequence + 1);
        self.list_sequence
    }

    /// Signs and seals one SYMBOL LIST of `object_id`.
    fn symbol_list(&mut self, object_id: u64, round: Option<u32>, with_certificate: bool, ranges: &[wire::SymbolRange]) -> Vec<u8> {
        let sequence = self.next_list_sequence();
        let certificate = with_certificate.then(|| self.signing_key.certificate().to_bytes());
        let signed = wire::symbol_list_signed_part(self.signing_key.serial(), sequence, round, certificate.as_deref(), ranges);
        let signature = self.signing_key.sign_symbol_list(object_id, &signed);
        let mut buf = Vec::new();
        wire::write_symbol_list(&mut buf, &self.network_key, object_id, &signed, &signature);
        buf
    }

    /// Queues the ROUND markers of `round`, each copy right after a copy of the signed list
    /// that names it: receivers act on no marker the uplink did not sign. The list is small
    /// (no symbols) and its copies cost a receiver a counter each, not a signature check.
    fn queue_round_markers(&mut self, now: Instant, object_id: u64, round: u32) {
        let list = self.symbol_list(object_id, Some(round), true, &[]);
        if let Some(airing) = self.objects.iter_mut().find(|a| a.object_id() == object_id) {
            airing.list_bytes_sent += ((list.len() + wire::IP_UDP_HEADER_BYTES) as u32 * ROUND_MARKER_COPIES) as u64;
        }
        let mut buf = Vec::new();
        wire::write_round(&mut buf, &self.network_key, object_id, round);
        for copy in 0..ROUND_MARKER_COPIES {
            self.control.push_back((now + ROUND_MARKER_SPACING * copy, list.clone(), PacketType::SymbolList));
            self.control.push_back((now + ROUND_MARKER_SPACING * copy, buf.clone(), PacketType::Round));
        }
    }

    /// The next DATA step of the object at `index`: a symbol whose list went out, or, when
    /// none is left, the list of the next batch (built now: as many symbols ahead as one
    /// list datagram names). So every symbol follows its list, and a county checks it on
    /// arrival. One copy of each list: a county that loses it keeps the batch as
    /// unverified symbols (see `reception`), which cost nothing unless an attacker is active.
    fn next_data(&mut self, now: Instant, index: usize) -> std::io::Result<DataStep> {
        let datagram_bytes_max = self.config.datagram_bytes_max;
        let with_certificate = self.lists_built % SYMBOL_LIST_CERTIFICATE_EVERY == 0;
        let Some(airing) = self.objects.get_mut(index) else { return Ok(DataStep::EndOfRound) };
        let object_id = airing.object_id();
        if let Some((sbn, esi, symbol)) = airing.ready.pop_front() {
            airing.symbols_sent += 1;
            let mut buf = Vec::new();
            wire::write_data(&mut buf, &self.network_key, object_id, sbn, esi, &symbol);
            return Ok(DataStep::Send(buf, PacketType::Data));
        }
        let mut ranges: Vec<wire::SymbolRange> = Vec::new();
        let mut list_len = wire::SYMBOL_LIST_DATAGRAM_BASE_LEN + if with_certificate { wire::SYMBOL_LIST_CERTIFICATE_LEN } else { 0 };
        let mut waiting = false;
        if airing.retry_at.is_some_and(|t| now >= t) {
            airing.retry_at = None;
        }
        while airing.ready.len() < wire::SYMBOL_LIST_SYMBOLS_MAX {
            let Some((sbn, esi)) = airing.next_symbol() else { break };
            let growth = wire::range_growth(&ranges, sbn, esi);
            if list_len + growth > datagram_bytes_max.max(wire::SYMBOL_LIST_DATAGRAM_BASE_LEN + wire::SYMBOL_LIST_CERTIFICATE_LEN + 13)
                || (growth > wire::SYMBOL_HASH_LEN && ranges.len() >= wire::SYMBOL_LIST_RANGES_MAX)
            {
                airing.held = Some((sbn, esi));
                break;
            }
            let mut symbol = Vec::new();
            // An encoder asked for and not ready is not asked again before its retry time.
            let too_soon = airing.retry_at.is_some() && !airing.encoders.contains_key(&sbn);
            match if too_soon { None } else { airing.encoder(sbn)? } {
                Some(encoder) => encoder.symbol_into(esi, &mut symbol).map_err(std::io::Error::other)?,
                None => {
                    airing.held = Some((sbn, esi));
                    if !too_soon {
                        airing.retry_at = Some(now + ENCODER_RETRY_INTERVAL);
                    }
                    waiting = true;
                    break;
                }
            }
            list_len += wire::add_to_ranges(&mut ranges, sbn, esi, wire::symbol_hash(&symbol));
            airing.ready.push_back((sbn, esi, symbol));
        }
        if airing.ready.is_empty() {
            return Ok(if waiting { DataStep::Waiting } else { DataStep::EndOfRound });
        }
        self.lists_built += 1;
        let list = self.symbol_list(object_id, None, with_certificate, &ranges);
        if let Some(airing) = self.objects.get_mut(index) {
            airing.list_bytes_sent += (list.len() + wire::IP_UDP_HEADER_BYTES) as u64;
        }
        Ok(DataStep::Send(list, PacketType::SymbolList))
    }

    /// Moves every object through its phases as time and feedback allow.
    fn advance(&mut self, now: Instant) {
        let mut index = 0;
        while index < self.objects.len() {
            let airing = &mut self.objects[index];
            let object_id = airing.object_id();
            let feedback_mode = airing.carousel.is_none();
            // Completion and deadline end an object wherever it is.
            if feedback_mode && airing.feedback.outstanding().next().is_none() {
                let refused = airing.feedback.refused.iter().map(|(c, r)| (c.clone(), r.clone())).collect();
                let symbols_sent = airing.symbols_sent;
                self.objects.remove(index);
                self.live_changed = true;
                self.push_event(BroadcastEvent::Completed { object_id, refused, symbols_sent });
                continue;
            }
            if airing.deadline.is_some_and(|d| now >= d) {
                let incomplete = airing.incomplete();
                let symbols_sent = airing.symbols_sent;
                self.objects.remove(index);
                self.live_changed = true;
                self.push_event(BroadcastEvent::DeadlinePassed { object_id, incomplete, symbols_sent });
                continue;
            }
            match airing.phase {
                Phase::Scheduled if airing.not_before.is_none_or(|t| now >= t) && airing.resume.is_some() => {
                    let Some(checkpoint) = airing.resume.take() else { continue };
                    airing.restore(checkpoint);
                    let round = airing.round;
                    airing.next_manifest_at = now + self.config.manifest_interval;
                    for delay in [Duration::ZERO].iter().chain(&FIRST_MANIFEST_REPEATS) {
                        self.queue_manifest(now + *delay, index);
                    }
                    let airing = &mut self.objects[index];
                    match airing.carousel {
                        // The interrupted pass is aired again, with fresh symbols.
                        Some(plan) => {
                            let counts = airing.blocks.iter().map(|b| symbols_for_loss(b.source_symbols, plan.target_loss)).collect();
                            let symbols = airing.start_round(round, counts);
                            airing.space_manifests_over_pass(now, carousel_pass_manifest_spacing(&self.config, airing.carousel, symbols));
                            self.push_event(BroadcastEvent::RoundStarted { object_id, round, symbols });
                        }
                        // Ask the counties where they stand: end the interrupted round.
                        None => {
                            let until = now + self.feedback_wait();
                            self.objects[index].phase = Phase::AwaitingFeedback { since: now, until };
                            self.queue_round_markers(now, object_id, round);
                            self.push_event(BroadcastEvent::RoundEnded { object_id, round });
                        }
                    }
                }
                Phase::Scheduled if airing.not_before.is_none_or(|t| now >= t) => {
                    let counts = airing.first_pass_counts(now, &self.config, &self.losses);
                    let symbols = airing.start_round(0, counts);
                    let spacing = carousel_pass_manifest_spacing(&self.config, airing.carousel, symbols)
                        .or_else(|| airing.first_pass_manifest_spacing(now, &self.config, &self.losses, symbols));
                    // The manifest opens the object, and a second copy follows shortly so
                    // one lost datagram does not leave a county deaf until the carousel.
                    airing.next_manifest_at = now + self.config.manifest_interval;
                    airing.space_manifests_over_pass(now, spacing);
                    for delay in [Duration::ZERO].iter().chain(&FIRST_MANIFEST_REPEATS) {
                        self.queue_manifest(now + *delay, index);
                    }
                    self.push_event(BroadcastEvent::RoundStarted { object_id, round: 0, symbols });
                }
                Phase::AwaitingFeedback { since, until } => {
                    let everyone_reported =
                        airing.feedback.outstanding().all(|c| airing.feedback.reports.get(c).is_some_and(|r| r.received_at >= since));
                    if now >= until || everyone_reported {
                        if let Some(delay) = airing.report_delay.take() {
                            // Smoothed, so one slow round does not stretch every wait.
                            self.report_delay = Some(self.report_delay.map_or(delay, |d| (d * 3 + delay) / 4));
                        }
                        let airing = &mut self.objects[index];
                        let next = airing.round + 1;
                        if let Some(counts) = airing.repair_counts(since) {
                            let symbols = airing.start_round(next, counts);
                            self.push_event(BroadcastEvent::RoundStarted { object_id, round: next, symbols });
                        } else if !airing.feedback.reports.values().any(|r| r.received_at >= since)
                            && airing.feedback.heard_this_round
                            && airing.feedback.markers_repeated < MARKER_REPEATS_MAX
                        {
                            // The WAN is up (counties spoke during the round) but those still
                            // outstanding are silent: they missed the markers, or learnt the
                            // object from a later manifest after them. Ask again.
                            airing.feedback.markers_repeated += 1;
                            airing.feedback.heard_this_round = false;
                            let round = airing.round;
                            let until = now + self.feedback_wait();
                            self.objects[index].phase = Phase::AwaitingFeedback { since: now, until };
                            self.queue_round_markers(now, object_id, round);
                        } else if airing.feedback.blind_rounds < self.config.blind_rounds_max
                            && !airing.feedback.reports.values().any(|r| r.received_at >= since)
                        {
                            // Nobody spoke at all: the WAN may be down. Send some repair blind.
                            airing.feedback.blind_rounds += 1;
                            let counts = airing.blind_counts(&self.config);
                            let symbols = airing.start_round(next, counts);
                            self.push_event(BroadcastEvent::RoundStarted { object_id, round: next, symbols });
                        } else {
                            airing.phase = Phase::Idle;
                            let incomplete = airing.incomplete();
                            self.push_event(BroadcastEvent::Idle { object_id, incomplete });
                        }
                    }
                }
                _ => {}
            }
            index += 1;
        }
    }

    /// Ends the current round of the object at `index`: markers out, then wait for
    /// feedback, or the next carousel pass, or done.
    fn end_round(&mut self, now: Instant, index: usize) {
        let Some(airing) = self.objects.get_mut(index) else { return };
        let object_id = airing.object_id();
        let round = airing.round;
        match airing.carousel {
            Some(plan) => {
                if round + 1 >= plan.passes {
                    self.objects.remove(index);
                    self.live_changed = true;
                    self.push_event(BroadcastEvent::RoundEnded { object_id, round });
                    self.push_event(BroadcastEvent::CarouselFinished { object_id });
                    return;
                }
                let counts = airing.blocks.iter().map(|b| symbols_for_loss(b.source_symbols, plan.target_loss)).collect();
                let symbols = airing.start_round(round + 1, counts);
                airing.space_manifests_over_pass(now, carousel_pass_manifest_spacing(&self.config, airing.carousel, symbols));
                self.push_event(BroadcastEvent::RoundEnded { object_id, round });
                self.push_event(BroadcastEvent::RoundStarted { object_id, round: round + 1, symbols });
            }
            None => {
                // Counties that said mid-pass they would fall short are repaired at once:
                // the round ends without its marker and the next starts.
                if let Some(counts) = airing.predicted_counts(now, &self.losses) {
                    let symbols = airing.start_round(round + 1, counts);
                    self.push_event(BroadcastEvent::RoundEnded { object_id, round });
                    self.push_event(BroadcastEvent::RoundStarted { object_id, round: round + 1, symbols });
                    return;
                }
                // Reports are counted from when the marker goes out.
                let until = now + self.feedback_wait();
                let Some(airing) = self.objects.get_mut(index) else { return };
                // Nothing of it airs until the reports are in: its encoders' memory goes back.
                airing.encoders.clear();
                airing.phase = Phase::AwaitingFeedback { since: now, until };
                self.push_event(BroadcastEvent::RoundEnded { object_id, round });
            }
        }
        self.queue_round_markers(now, object_id, round);
    }

    /// Builds the next datagram to send, if any is due, without consulting the pacer.
    fn build_next(&mut self, now: Instant, wall_unix_ms: u64) -> Option<(Vec<u8>, PacketType)> {
        self.wall_unix_ms = wall_unix_ms;
        if now >= self.next_heartbeat_at || self.live_changed {
            let regular = now >= self.next_heartbeat_at;
            self.next_heartbeat_at = now + self.config.heartbeat_interval;
            if let Some(revocation) = self.revocation.as_ref().filter(|_| regular) {
                let mut revocation_datagram = Vec::new();
                wire::write_revocation(&mut revocation_datagram, &self.network_key, revocation);
                self.control.push_front((now, revocation_datagram, PacketType::Revocation));
            }
            if let Some(announcement) = self.next_network_key.as_ref().filter(|_| regular) {
                let mut datagram = Vec::new();
                wire::write_network_key(&mut datagram, &self.network_key, announcement);
                self.control.push_back((now, datagram, PacketType::NetworkKey));
            }
            if regular {
                if let Some((previous, announcement)) = &self.handover {
                    let mut datagram = Vec::new();
                    wire::write_network_key(&mut datagram, previous, announcement);
                    self.control.push_back((now, datagram, PacketType::NetworkKey));
                }
                for _ in 0..KEY_WRAPS_PER_HEARTBEAT.min(self.key_wraps.len()) {
                    let index = self.key_wrap_next % self.key_wraps.len();
                    self.key_wrap_next = index + 1;
                    let mut datagram = Vec::new();
                    wire::write_key_wrap(&mut datagram, &self.network_key, &self.key_wraps[index]);
                    self.control.push_back((now, datagram, PacketType::KeyWrap));
                    if let Some((previous, _)) = &self.handover {
                        let mut datagram = Vec::new();
                        wire::write_key_wrap(&mut datagram, previous, &self.key_wraps[index]);
                        self.control.push_back((now, datagram, PacketType::KeyWrap));
                    }
                }
            }
            return Some((self.heartbeat_datagram(wall_unix_ms), PacketType::Heartbeat));
        }
        self.advance(now);
        for index in 0..self.objects.len() {
            let airing = &mut self.objects[index];
            if airing.manifest_due_at().is_some_and(|due| now >= due) {
                let interval = match (airing.phase, airing.pass_manifest_spacing) {
                    (Phase::Idle, _) => self.config.manifest_interval * IDLE_MANIFEST_SLOWDOWN,
                    (Phase::Sending, Some(spacing)) => spacing.min(self.config.manifest_interval),
                    _ => self.config.manifest_interval,
                };
                airing.next_manifest_at = now + interval;
                airing.symbols_sent_at_manifest = airing.symbols_sent;
                self.queue_manifest(now, index);
            }
        }
        if let Some(position) = self.control.iter().position(|(due, _, _)| *due <= now) {
            if let Some((_, buf, kind)) = self.control.remove(position) {
                return Some((buf, kind));
            }
        }
        // The best class with something to send; within it, the fewest symbols left in its
        // round, then the first added (see the module documentation). An object waiting for
        // an encoder lets the next one send meanwhile.
        let mut candidates: Vec<usize> = (0..self.objects.len())
            .filter(|i| {
                let airing = &self.objects[*i];
                airing.phase == Phase::Sending && (!airing.ready.is_empty() || airing.retry_at.is_none_or(|t| now >= t))
            })
            .collect();
        candidates.sort_by_key(|i| {
            let airing = &self.objects[*i];
            (airing.priority, airing.round_left(), airing.seq)
        });
        for index in candidates {
            match self.next_data(now, index) {
                Ok(DataStep::Send(buf, kind)) => {
                    if kind == PacketType::Data && self.objects[index].round_left() <= ENCODER_PREFETCH_SYMBOLS {
                        self.prefetch_next_after(now, index);
                    }
                    return Some((buf, kind));
                }
                Ok(DataStep::Waiting) => {}
                Ok(DataStep::EndOfRound) => {
                    self.end_round(now, index);
                    return self.build_next(now, wall_unix_ms);
                }
                Err(error) => {
                    let object_id = self.objects[index].object_id();
                    self.objects.remove(index);
                    self.live_changed = true;
                    self.push_event(BroadcastEvent::SourceFailed { object_id, error: error.to_string() });
                    return self.build_next(now, wall_unix_ms);
                }
            }
        }
        None
    }

    /// Asks for the first encoder of the object that airs once the one at `index` ends its
    /// round (the same order as [`Broadcaster::build_next`]), so the carrier does not wait
    /// for it to be built.
    fn prefetch_next_after(&mut self, now: Instant, index: usize) {
        let next = (0..self.objects.len()).filter(|i| *i != index && self.objects[*i].phase == Phase::Sending).min_by_key(|i| {
            let airing = &self.objects[*i];
            (airing.priority, airing.round_left(), airing.seq)
        });
        if let Some(next) = next {
            self.objects[next].prefetch(now);
        }
    }

    /// Writes the next datagram into `out` if one is due and the pacer allows it now.
    pub fn poll_transmit(&mut self, now: Instant, wall_unix_ms: u64, out: &mut Vec<u8>) -> bool {
        if self.pending.is_none() {
            self.pending = self.build_next(now, wall_unix_ms);
        }
        let Some((buf, kind)) = self.pending.take() else {
            self.pacer.idle(now);
            return false;
        };
        if !self.pacer.try_send(now, buf.len()) {
            self.pending = Some((buf, kind));
            return false;
        }
        self.stats.bytes_on_air += (buf.len() + wire::IP_UDP_HEADER_BYTES) as u64;
        match kind {
            PacketType::Data => self.stats.data_datagrams += 1,
            PacketType::Manifest => self.stats.manifest_datagrams += 1,
            PacketType::Heartbeat => self.stats.heartbeat_datagrams += 1,
            PacketType::Round => self.stats.round_datagrams += 1,
            PacketType::Revocation => self.stats.revocation_datagrams += 1,
            PacketType::KeyWrap => self.stats.key_wrap_datagrams += 1,
            PacketType::NetworkKey => self.stats.network_key_datagrams += 1,
            PacketType::SymbolList => {
                self.stats.symbol_list_datagrams += 1;
                self.stats.symbol_list_bytes += (buf.len() + wire::IP_UDP_HEADER_BYTES) as u64;
            }
        }
        out.clear();
        out.extend_from_slice(&buf);
        true
    }

    /// When to call [`Broadcaster::poll_transmit`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut wake = self.next_heartbeat_at;
        if let Some((buf, _)) = &self.pending {
            return Some(self.pacer.ready_at(buf.len()).min(wake));
        }
        if self.objects.iter().any(|a| a.phase == Phase::Sending && (a.retry_at.is_none() || !a.ready.is_empty())) {
            return Some(self.pacer.ready_at(self.config.datagram_bytes_max).min(wake));
        }
        for (due, _, _) in &self.control {
            wake = wake.min(*due);
        }
        for airing in &self.objects {
            if let Some(due) = airing.manifest_due_at() {
                wake = wake.min(due);
            }
            match airing.phase {
                Phase::Scheduled => wake = wake.min(airing.not_before.unwrap_or(wake)),
                Phase::AwaitingFeedback { until, .. } => wake = wake.min(until),
                Phase::Sending => wake = wake.min(airing.retry_at.unwrap_or(wake)),
                _ => {}
            }
            if let Some(deadline) = airing.deadline {
                wake = wake.min(deadline);
            }
        }
        Some(wake)
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<BroadcastEvent> {
        self.events.pop_front()
    }
}

/// What the next DATA step of one object gives.
enum DataStep {
    /// A datagram to send (a symbol or a symbol list).
    Send(Vec<u8>, PacketType),
    /// Its encoder is not ready: ask again later.
    Waiting,
    /// Every symbol of the round went out.
    EndOfRound,
}

/// A change to one county's feedback state, decided before the object is looked up.
type FeedbackUpdate = Box<dyn FnOnce(&mut FeedbackState)>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Compression, Kind};
    use crate::trust::RootKey;
    use rand::SeedableRng;

    struct Zeros;
    impl BlockSource for Zeros {
        fn read_at(&mut self, _offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            buf.fill(0);
            Ok(())
        }
    }

    fn machine(start: Instant) -> Broadcaster {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let root = RootKey::generate(&mut rng);
        let signing = SigningKey::generate(&mut rng, &root, 1, 1_800_000_000, 1_800_003_600);
        let config = BroadcastConfig {
            link_rate_bits_per_sec: 10_000_000,
            sizing: SizingConfig { prior_loss: 0.05, ..SizingConfig::default() },
            ..BroadcastConfig::default()
        };
        Broadcaster::new(start, config, NetworkKey::generate(&mut rng), signing)
    }

    fn object(object_id: u64, size_bytes: u64, priority: Priority, targets: Vec<String>) -> NewObject {
        let oti = Oti::new_for_object(size_bytes, 1436, 1 << 20).expect("oti");
        let manifest = Manifest {
            object_id,
            kind: Kind::Policy,
            name: format!("notice-{object_id}.txt"),
            version: 1,
            size_bytes,
            compression: Compression::None,
            oti: oti.encode(),
            object_hash: [0; 32],
            block_hashes: vec![[0; 32]; fec::blocks(&oti).len()],
            targets: vec!["41".into()],
            created_unix_secs: 1_800_000_000,
            expires_unix_secs: 1_800_003_600,
        };
        NewObject {
            manifest,
            signed_manifest: vec![0; 200],
            source: Box::new(Zeros),
            priority,
            not_before: None,
            deadline: None,
            delivery: Delivery::Feedback { targets },
            resume: None,
        }
    }

    /// Runs the machine in virtual time, handing every event to `on_event` with the
    /// machine, until it returns true (or 10 virtual minutes).
    fn drive(uplink: &mut Broadcaster, start: Instant, mut on_event: impl FnMut(&Broadcaster, &BroadcastEvent) -> bool) {
        let mut now = start;
        let mut buf = Vec::new();
        while now < start + Duration::from_secs(600) {
            let sent = uplink.poll_transmit(now, 0, &mut buf);
            while let Some(event) = uplink.poll_event() {
                if on_event(uplink, &event) {
                    return;
                }
            }
            if !sent {
                match uplink.poll_timeout() {
                    Some(t) if t > now => now = t,
                    _ => now += Duration::from_micros(100),
                }
            }
        }
    }

    #[test]
    fn the_wait_for_reports_follows_the_measured_round_trip_and_reports_teach_the_loss() {
        let start = Instant::now();
        let mut uplink = machine(start);
        let county = "410102".to_owned();
        uplink.add_object(start, object(3, 300_000, Priority::Normal, vec![county.clone()])).expect("add");
        assert_eq!(uplink.feedback_wait(), Duration::from_millis(2500), "nothing measured yet: the configured wait");
        let mut ended_at = None;
        let mut now = start;
        let mut buf = Vec::new();
        while ended_at.is_none() {
            let sent = uplink.poll_transmit(now, 0, &mut buf);
            while let Some(event) = uplink.poll_event() {
                if let BroadcastEvent::RoundEnded { round: 0, .. } = event {
                    ended_at = Some(now);
                }
            }
            if !sent && ended_at.is_none() {
                now = uplink.poll_timeout().filter(|t| *t > now).unwrap_or(now + Duration::from_micros(100));
            }
        }
        let sent = uplink.symbols_sent(3).expect("airing");
        // The county answers the marker 350 ms later: it lost a fifth and still needs 10.
        let at = now + Duration::from_millis(350);
        let received = sent * 4 / 5;
        let progress = FeedbackMessage::Progress { object_id: 3, round: 0, needs: vec![10], symbols_received: received };
        uplink.handle_feedback(at, &Feedback { county_code: county.clone(), message: progress });
        // Everyone reported: the repair round starts at once, and the next wait is the
        // round trip plus the report window and slack.
        assert_eq!(uplink.feedback_wait(), Duration::from_millis(350) + Duration::from_secs(1) + FEEDBACK_WAIT_SLACK);
        let loss = uplink.county_loss(at, &county);
        let expected = (sent - received) as f64 / (sent as f64 + sizing::LOSS_PRIOR_WEIGHT_SYMBOLS)
            + 0.05 * sizing::LOSS_PRIOR_WEIGHT_SYMBOLS / (sent as f64 + sizing::LOSS_PRIOR_WEIGHT_SYMBOLS);
        assert!((loss - expected).abs() < 1e-9, "{loss} against {expected}");
        assert!(loss > 0.05, "a county losing a fifth is worse than the prior");
    }

    /// Airs a 700 KB object (one block) to one county, which reports from the middle of
    /// the first pass that it received `received_share` of what it saw; returns the events
    /// from then until the first round after the pass starts (or 10 virtual seconds).
    fn events_after_a_mid_pass_report(received_share: f64) -> (Vec<BroadcastEvent>, AirStats) {
        let start = Instant::now();
        let mut uplink = machine(start);
        let county = "410102".to_owned();
        uplink.add_object(start, object(3, 700_000, Priority::Normal, vec![county.clone()])).expect("add");
        let mut now = start;
        let mut buf = Vec::new();
        let mut reported = false;
        let mut events = Vec::new();
        let source_symbols = 488;
        while now < start + Duration::from_secs(10) {
            let sent = uplink.poll_transmit(now, 0, &mut buf);
            let aired = uplink.symbols_sent(3).unwrap_or(0) as u32;
            if !reported && aired >= source_symbols / 2 {
                reported = true;
                let received = (f64::from(aired) * received_share) as u32;
                let message = FeedbackMessage::PassProgress { object_id: 3, needs: vec![source_symbols - received], seen: vec![aired] };
                uplink.handle_feedback(now, &Feedback { county_code: county.clone(), message });
            }
            while let Some(event) = uplink.poll_event() {
                let done = matches!(event, BroadcastEvent::RoundStarted { round: 1, .. });
                events.push(event);
                if done {
                    return (events, uplink.stats());
                }
            }
            if !sent {
                now = uplink.poll_timeout().filter(|t| *t > now).unwrap_or(now + Duration::from_micros(100));
            }
        }
        (events, uplink.stats())
    }

    #[test]
    fn a_county_silent_after_the_markers_while_others_spoke_is_asked_again_not_sent_a_blind_round() {
        // One county completes during the pass; the other missed every marker (or learnt
        // the object from a later manifest after them) and says nothing. The WAN is up, so
        // a blind round would buy symbols for a county that may need two.
        let start = Instant::now();
        let mut uplink = machine(start);
        let (done, silent) = ("410102".to_owned(), "410103".to_owned());
        uplink.add_object(start, object(3, 300_000, Priority::Normal, vec![done.clone(), silent.clone()])).expect("add");
        let (mut now, mut buf) = (start, Vec::new());
        let mut told_complete = false;
        let mut silent_reported = false;
        while now < start + Duration::from_secs(20) {
            let sent = uplink.poll_transmit(now, 0, &mut buf);
            let aired = uplink.symbols_sent(3).unwrap_or(0);
            if !told_complete && aired >= 100 {
                told_complete = true;
                let message = FeedbackMessage::Complete { object_id: 3, object_hash: [0; 32] };
                uplink.handle_feedback(now, &Feedback { county_code: done.clone(), message });
            }
            // The silent county hears the repeated markers and answers them.
            if !silent_reported && uplink.stats().round_datagrams > u64::from(ROUND_MARKER_COPIES) {
                silent_reported = true;
                let message = FeedbackMessage::Progress { object_id: 3, round: 0, needs: vec![2], symbols_received: aired * 95 / 100 };
                uplink.handle_feedback(now + Duration::from_millis(350), &Feedback { county_code: silent.clone(), message });
            }
            while let Some(event) = uplink.poll_event() {
                if let BroadcastEvent::RoundStarted { round: 1, symbols, .. } = event {
                    assert!(silent_reported, "a blind round of {symbols} symbols went before the markers were repeated");
                    assert!(symbols < 10, "{symbols} symbols repair a need of 2");
                    return;
                }
            }
            if !sent {
                now = uplink.poll_timeout().filter(|t| *t > now).unwrap_or(now + Duration::from_micros(100));
            }
        }
        panic!("no repair round (complete told: {told_complete}, silent county reported: {silent_reported})");
    }

    #[test]
    fn a_county_that_says_mid_pass_it_will_fall_short_is_repaired_without_a_wait() {
        // It lost 40% of what it saw: at the prior's 5% for the rest it ends far short.
        let (events, stats) = events_after_a_mid_pass_report(0.6);
        let Some(BroadcastEvent::RoundStarted { symbols, .. }) = events.last() else { panic!("no repair round: {events:?}") };
        assert_eq!(stats.round_datagrams, 0, "the pass ended with a marker and a wait for reports: {events:?}");
        // 488 - 0.6 * 244 needed, 0.95 * (pass - 244) still coming: about 80 short.
        assert!((60..150).contains(symbols), "{symbols} repair symbols");
    }

    #[test]
    fn a_county_on_track_mid_pass_buys_no_early_repair() {
        let (events, _) = events_after_a_mid_pass_report(0.95);
        assert!(
            events.iter().any(|e| matches!(e, BroadcastEvent::RoundEnded { round: 0, .. })),
            "the pass must end with its marker and the usual wait: {events:?}"
        );
    }

    #[test]
    fn an_emergency_notice_first_pass_is_sized_for_every_county_to_complete() {
        let start = Instant::now();
        let mut uplink = machine(start);
        let counties: Vec<String> = (0..2000).map(|i| format!("{:06}", 110_000 + i)).collect();
        uplink.add_object(start, object(9, 100_000, Priority::Emergency, counties)).expect("add");
        let mut planned = None;
        let mut manifests_in_pass = 0;
        drive(&mut uplink, start, |uplink, event| match event {
            BroadcastEvent::RoundStarted { round: 0, symbols, .. } => {
                planned = Some(*symbols);
                false
            }
            BroadcastEvent::RoundEnded { round: 0, .. } => {
                manifests_in_pass = uplink.stats().manifest_datagrams;
                true
            }
            _ => false,
        });
        let n = u32::try_from(planned.expect("a first pass")).expect("small");
        // K = 70: every county at 5% loss completes from this pass with probability 99.9%.
        let every_county = (1.0 - sizing::decode_failure(n, 70, 0.05)).powi(2000);
        assert!(every_county >= sizing::ALL_COMPLETE_PROBABILITY, "{n} symbols: every county completes with {every_county}");
        // And each county catches one of the manifest's copies in the pass (0.05^5 * 2000
        // is 6e-4): else it would wait a carousel interval for the next.
        assert!(manifests_in_pass >= 5, "{manifests_in_pass} manifest copies in the pass");
    }

    #[test]
    fn the_last_window_of_a_carousel_pass_names_the_next_pass_s_first_window_to_build_ahead() {
        let start = Instant::now();
        let mut carousel = object(1, 3 << 20, Priority::Normal, Vec::new());
        carousel.delivery = Delivery::Carousel(AirPlan { target_loss: 0.05, passes: 2 });
        let mut airing = Airing::new(start, carousel).expect("an airing");
        // Three 1 MiB blocks in two windows (a real object needs over 64 MiB for a second).
        airing.windows = vec![0..1, 1..3];
        let counts = vec![800; 3];
        airing.start_round(0, counts.clone());
        assert_eq!(airing.blocks_after(0).iter().map(|b| b.sbn).collect::<Vec<_>>(), vec![1, 2], "the next window");
        airing.window = 1;
        let after = |airing: &Airing| airing.blocks_after(1).iter().map(|b| b.sbn).collect::<Vec<_>>();
        assert_eq!(after(&airing), vec![2, 0], "the rest of the last window, then the next pass's first");
        airing.start_round(1, counts);
        airing.window = 1;
        assert_eq!(after(&airing), vec![2], "no pass follows the last one");
    }

    #[test]
    fn a_carousel_pass_carries_enough_manifest_copies_for_its_target_loss() {
        assert_eq!(carousel_manifest_copies(0.05), 5, "0.05^5 is about 3e-7");
        assert_eq!(carousel_manifest_copies(0.2), 9, "0.2^9 is about 5e-7");
        assert_eq!(carousel_manifest_copies(0.0), *CAROUSEL_MANIFEST_COPIES.start());
        assert_eq!(carousel_manifest_copies(f64::NAN), *CAROUSEL_MANIFEST_COPIES.start());
        assert_eq!(carousel_manifest_copies(1.0), *CAROUSEL_MANIFEST_COPIES.end());
        for loss in [0.01f64, 0.05, 0.1, 0.3] {
            assert!(loss.powi(carousel_manifest_copies(loss) as i32) <= CAROUSEL_MANIFEST_MISS_MAX);
        }
        // A 1 MB pass at 20 Mbit/s lasts about 0.45 s: five copies, 90 ms apart.
        let config = BroadcastConfig::default();
        let plan = AirPlan { target_loss: 0.05, passes: 2 };
        let spacing = carousel_pass_manifest_spacing(&config, Some(plan), 755).expect("a carousel");
        assert!(spacing > Duration::from_millis(80) && spacing < Duration::from_millis(100), "{spacing:?}");
        assert_eq!(carousel_pass_manifest_spacing(&config, None, 755), None);
    }
}
