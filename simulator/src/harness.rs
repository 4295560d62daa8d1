//! An in-memory harness in the style of quinn-proto's test pair: the uplink's node (its
//! broadcast machine inside), N receiver nodes, per-receiver loss, regional fades, scheduled outages, a GEO
//! downlink delay, a WAN for feedback, all in virtual time on one thread. The same seed
//! gives the same run, bit for bit: every datagram and event is folded into
//! [`Harness::digest`].
//!
//! The uplink runs the daemon's own [`UplinkNode`] (admission, targeting, the feedback
//! ledger's decisions, outcomes), every county registered as enrolled; the harness is its
//! executor and completes every request at once (a job is "prepared" from the manifest
//! [`Harness::try_add_object`] signed, records are kept nowhere).
//!
//! Two fidelities drive the same machines ([`HarnessOptions::fidelity`]):
//! Each county runs the daemon's own [`ReceiverNode`]; the harness is its executor, and
//! carries out every request at once, in order, as the daemon's storage worker would:
//! - [`Fidelity::Full`]: each receiver authenticates every datagram itself, keeps symbol
//!   bytes in a [`MemoryStore`], decodes with RaptorQ, and each committed object is
//!   compared byte for byte with the payload;
//! - [`Fidelity::Counting`]: each datagram is authenticated once (one `wire::parse`) and
//!   handed to every receiver through `ReceiverNode::handle_parsed`; the node counts ESIs
//!   itself and its requests carry no bytes; a block "decodes" with the RFC 6330 failure
//!   probability ([`storage::execute_counting`]). This is what makes 2000 receivers and
//!   tens of megabytes run in seconds.
//!
//! Faults are one-line edits of harness state: `harness.receivers[3].offline = true`,
//! `harness.wan_up = false`, `harness.receivers[0].loss = LossState::new(...)`,
//! `harness.receivers[5].outages.push(from..until)`,
//! `harness.receivers[5].wan_outages.push(from..until)`.
//!
//! Cost model: per step the harness does O(receivers) cheap checks (a cached wake-up time
//! each, not a call into every machine), and per datagram one loss draw and one machine
//! call per powered receiver.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast_protocol::broadcast::{AirPlan, BlockSource, BroadcastConfig, BroadcastEvent, Delivery, NewObject, Priority};
use satcast_protocol::fec::{self, FecError, Oti};
use satcast_protocol::feedback::Feedback;
use satcast_protocol::manifest::{Compression, Kind, Manifest};
use satcast_protocol::receiver_node::{Completion, HookRecord, ReceiverNode, ReceiverNodeConfig, Request};
use satcast_protocol::reception::{Fidelity, MemoryStore, ReceptionConfig, ReceptionStore};
use satcast_protocol::storage;
use satcast_protocol::trust::{NetworkKey, RootKey, SigningKey};
use satcast_protocol::uplink_node::{self, UplinkEvent, UplinkJob, UplinkNode, UplinkNodeConfig};
use satcast_protocol::wire::{self, Body};
use thiserror::Error;

use crate::disk::SimDisk;
use crate::loss::{FadeModel, FadeState, LossModel, LossState, SimRng};

/// How often receiver nodes tick (expiry, retries of waiting deliveries), as in the daemon.
pub const RECEIVER_TICK: Duration = Duration::from_secs(1);

/// The wall clock at virtual time zero (2026-11-26), for manifest and key validity.
pub const WALL_CLOCK_START_UNIX_SECS: u64 = 1_795_000_000;

/// Knobs of a harness run.
#[derive(Debug, Clone)]
pub struct HarnessOptions {
    /// Seed of every random choice (keys, loss, report jitter).
    pub seed: u64,
    /// Receivers: county code and loss model.
    pub receivers: Vec<(String, LossModel)>,
    /// One-way downlink delay (GEO: about 270 ms).
    pub downlink_delay: Duration,
    /// One-way WAN delay for feedback.
    pub wan_delay: Duration,
    /// The broadcast machine's settings.
    pub broadcast: BroadcastConfig,
    /// Receivers' progress report window.
    pub report_window: Duration,
    /// Symbol size of objects.
    pub symbol_size: u16,
    /// Largest source block.
    pub block_bytes_max: u64,
    /// Full decoding or symbol counting (see the module documentation).
    pub fidelity: Fidelity,
    /// A rain fade per province (the code's first two digits): one shared state per
    /// province, on top of each county's own loss. None: no fades.
    pub regional_fade: Option<FadeModel>,
    /// Scheduled outages of receivers' power or WAN links.
    pub outages: Vec<Outage>,
    /// Passes of an object added without feedback (carousel mode); each pass is sized for
    /// `broadcast.target_loss`.
    pub carousel_passes: u32,
    /// Each county's storage is a [`SimDisk`] (counting fidelity, the real store's
    /// durability, faults on request, invariants checked), a power outage is a crash and a
    /// restart, and software objects have a post-receive hook: the fault simulation.
    pub disks: bool,
}

impl HarnessOptions {
    /// Defaults for a GEO link at 20 Mbit/s with `receivers` of the given loss, full fidelity.
    pub fn new(seed: u64, receivers: Vec<(String, LossModel)>) -> Self {
        HarnessOptions {
            seed,
            receivers,
            downlink_delay: Duration::from_millis(270),
            wan_delay: Duration::from_millis(50),
            broadcast: BroadcastConfig::default(),
            report_window: Duration::from_secs(1),
            symbol_size: 1436,
            block_bytes_max: fec::DEFAULT_BLOCK_BYTES_MAX,
            fidelity: Fidelity::Full,
            regional_fade: None,
            outages: Vec::new(),
            carousel_passes: 2,
            disks: false,
        }
    }
}

/// What an outage takes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageKind {
    /// The receiver is powered off: it hears nothing, says nothing and its timers stop;
    /// what it had spooled survives (as the daemon's durable spool does).
    Power,
    /// The receiver's WAN link is down: it still receives, but its feedback waits in its
    /// outbox until the link returns.
    Wan,
}

/// One scheduled outage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    /// The receiver (index into [`HarnessOptions::receivers`]); None for every receiver.
    pub receiver: Option<usize>,
    /// What goes down.
    pub kind: OutageKind,
    /// Virtual time since the start when it goes down, and when it comes back.
    pub period: Range<Duration>,
}

/// Why the harness could not take an object.
#[derive(Debug, Error)]
pub enum HarnessError {
    /// The payload cannot be split into blocks with the harness's symbol and block sizes.
    #[error("the payload cannot be encoded: {0}")]
    Oti(#[from] FecError),
    /// The manifest could not be signed.
    #[error("the manifest cannot be signed: {0}")]
    Sign(String),
    /// The broadcast machine refused the object.
    #[error("the uplink refused the object: {0}")]
    Refused(String),
}

/// A receiver's storage: symbol bytes in memory (full fidelity), or nothing at all
/// (counting fidelity: the node counts, the executor draws whether a block decodes).
#[derive(Debug)]
pub enum SimStore {
    /// Symbols and decoded blocks in memory.
    Memory(MemoryStore),
    /// Counts only; the generator draws decoding outcomes.
    Counting(ChaCha8Rng),
    /// A disk with durability and faults (see [`HarnessOptions::disks`]).
    Disk(Box<SimDisk>),
}

impl SimStore {
    /// The assembled bytes of an object (full fidelity only).
    pub fn object(&self, object_id: u64) -> Option<&[u8]> {
        match self {
            SimStore::Memory(store) => store.object(object_id),
            SimStore::Counting(_) | SimStore::Disk(_) => None,
        }
    }
}

/// One simulated county receiver.
#[derive(Debug)]
pub struct SimReceiver {
    /// Its county code.
    pub code: String,
    /// Its node: the daemon's decisions, the reception machine inside.
    pub node: ReceiverNode,
    /// What its node was built with, to build it again after a crash.
    node_config: ReceiverNodeConfig,
    /// Whether it was powered at the last step (a disk crashes on the falling edge and the
    /// node restarts on the rising one).
    was_powered: bool,
    /// A crash also loses the index (with it the outbox; the files are rebuilt from).
    pub lose_index_on_crash: bool,
    /// Crashes so far.
    pub crashes: u32,
    /// Its store.
    pub store: SimStore,
    /// Its own downlink loss (on top of its province's fade, if any).
    pub loss: LossState,
    /// Powered off until set back: hears nothing, says nothing.
    pub offline: bool,
    /// Periods (virtual time since the start) when it is powered off.
    pub outages: Vec<Range<Duration>>,
    /// Periods when its WAN link is down: feedback waits in its outbox.
    pub wan_outages: Vec<Range<Duration>>,
    /// Objects completed (byte-exact in full fidelity), with the virtual time of completion.
    pub completed: BTreeMap<u64, Duration>,
    /// Objects completed with the wrong bytes (must stay empty).
    pub corrupt: Vec<u64>,
    /// Per completed object: the object's DATA symbols aired up to the datagram that
    /// completed it (what this county needed aired, with this loss and this sending order).
    pub completed_after_symbols: BTreeMap<u64, u64>,
    /// Datagrams that reached it while powered.
    pub datagrams_heard: u64,
    /// Datagrams lost on its downlink while powered (own loss or its province's fade).
    pub datagrams_lost: u64,
    /// Its province's index in the harness's fade states.
    region: usize,
    /// Feedback waiting for the WAN.
    outbox: Vec<Feedback>,
    /// The machine's wake-up time as last asked; it can only be early (then the machine is
    /// asked again), never late: only ROUND and MANIFEST datagrams and timeouts move it
    /// earlier, and the harness asks again after those.
    wake: Option<Instant>,
}

impl SimReceiver {
    /// The power goes: its disk keeps what was durable; with a lost index, the outbox goes.
    fn crash(&mut self) {
        if let SimStore::Disk(disk) = &mut self.store {
            disk.crash();
            self.crashes += 1;
            if self.lose_index_on_crash {
                self.outbox.clear();
            }
        }
    }

    /// The daemon starts again on what its disk kept: a new node, told the delivered
    /// versions and what the cache holds, resuming every partial object (a node without a disk model was only
    /// suspended, as before).
    fn restart(&mut self, now: Instant, wall_unix_secs: u64) {
        let SimStore::Disk(disk) = &mut self.store else { return };
        disk.restart();
        self.node_config.reception.seed = self.node_config.reception.seed.wrapping_add(1);
        let mut node = ReceiverNode::new(self.node_config.clone());
        for (kind, name, accepted) in disk.versions() {
            node.set_delivered(kind, name, accepted);
        }
        for (kind, name, accepted) in disk.cached() {
            node.set_cached(kind, name, accepted);
        }
        for (object_id, signed, held) in disk.resumable() {
            node.resume(now, wall_unix_secs, object_id, &signed, &held);
        }
        self.node = node;
    }

    /// Its disk, in the fault simulation.
    pub fn disk(&self) -> Option<&SimDisk> {
        match &self.store {
            SimStore::Disk(disk) => Some(disk),
            _ => None,
        }
    }

    /// Its disk, to inject faults.
    pub fn disk_mut(&mut self) -> Option<&mut SimDisk> {
        match &mut self.store {
            SimStore::Disk(disk) => Some(disk),
            _ => None,
        }
    }

    /// Whether it is powered at `at` (virtual time since the start).
    pub fn powered(&self, at: Duration) -> bool {
        !self.offline && !self.outages.iter().any(|o| o.contains(&at))
    }

    fn wan_link_up(&self, at: Duration) -> bool {
        !self.wan_outages.iter().any(|o| o.contains(&at))
    }

    /// Share of the datagrams that reached it that were lost.
    pub fn observed_loss(&self) -> f64 {
        let offered = self.datagrams_heard + self.datagrams_lost;
        if offered == 0 { 0.0 } else { self.datagrams_lost as f64 / offered as f64 }
    }
}

/// What the harness knows about one object it aired.
#[derive(Debug, Clone)]
pub struct SimObject {
    /// The manifest.
    pub manifest: Manifest,
    /// The payload.
    pub payload: Arc<Vec<u8>>,
    /// Source symbols per block.
    pub source_symbols: Vec<u32>,
    /// Counties targeted.
    pub targets: Vec<String>,
    /// Per receiver index: whether it is targeted.
    pub targeted: Vec<bool>,
    /// Targeted receivers that have completed it.
    pub completions: usize,
    /// When it was added (virtual).
    pub added_at: Duration,
    /// First and last DATA datagram on the air (virtual).
    pub first_data_at: Option<Duration>,
    /// Last DATA datagram on the air (virtual).
    pub last_data_at: Option<Duration>,
    /// DATA symbols aired.
    pub symbols_sent: u64,
    /// Bytes of its SYMBOL LIST datagrams aired (IP and UDP included): source
    /// authentication's cost, counted in efficiency.
    pub list_bytes: u64,
    /// Broadcast events about it, in order, with their time.
    pub events: Vec<(Duration, BroadcastEvent)>,
}

impl SimObject {
    /// Rounds started (round 0, the first pass or first carousel pass, included).
    pub fn rounds(&self) -> usize {
        self.events.iter().filter(|(_, e)| matches!(e, BroadcastEvent::RoundStarted { .. })).count()
    }
}

// BlockSource asks for Send because daemons move sources across threads; the payload is
// shared read-only, so an Arc serves both the uplink and the byte-exact check.
struct SharedPayload(Arc<Vec<u8>>);

impl BlockSource for SharedPayload {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let end = start.checked_add(buf.len()).ok_or_else(|| std::io::Error::other("read past the end"))?;
        let bytes = self.0.get(start..end).ok_or_else(|| std::io::Error::other("read past the end"))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// How to air an object (see [`Harness::try_add_object`]).
#[derive(Debug, Clone)]
pub struct ObjectOptions {
    /// Division-code prefixes targeted ("" = every receiver).
    pub prefixes: Vec<String>,
    /// Scheduling class.
    pub priority: Priority,
    /// Stop airing this long after it is added.
    pub deadline: Option<Duration>,
    /// Feedback-driven repair, or a carousel of this plan.
    pub carousel: Option<AirPlan>,
}

/// The harness. See the module documentation.
pub struct Harness {
    /// Virtual time now.
    pub now: Instant,
    start: Instant,
    /// The uplink's node (its broadcast machine: [`UplinkNode::broadcaster`]).
    pub uplink: UplinkNode,
    /// The receivers.
    pub receivers: Vec<SimReceiver>,
    /// Objects added, by id.
    pub objects: BTreeMap<u64, SimObject>,
    /// Whether feedback crosses the WAN at all. While it is down, feedback waits in each
    /// receiver's outbox (as the daemon's durable outbox does), newer progress replacing
    /// older for the same object, and goes out when it returns.
    pub wan_up: bool,
    options: HarnessOptions,
    /// Datagrams on their way down: arrival, bytes, and how many DATA symbols of the
    /// datagram's object had been aired when it was sent.
    downlink: VecDeque<(Instant, Rc<Vec<u8>>, u64)>,
    wan: VecDeque<(Instant, Feedback)>,
    rng: ChaCha8Rng,
    /// Loss and fade draws: cheap, and separate from the key and payload stream.
    loss_rng: SimRng,
    /// One fade state per province (all clear-forever when there is no fade model).
    fades: Vec<FadeState>,
    signing: SigningKey,
    network_key: NetworkKey,
    next_object_id: u64,
    digest: blake3::Hasher,
    /// The receivers' earliest timer or outage edge, as of the last step.
    receivers_next: Option<Instant>,
    /// Steps taken so far.
    pub steps: u64,
    /// (county, object) completions the uplink has heard.
    pub acked: std::collections::BTreeSet<(String, u64)>,
    /// When the receivers' nodes next tick (once a second, as the daemon does).
    next_tick: Instant,
    /// Objects signed and handed to the uplink node as jobs, until it asks to prepare
    /// them, with the carousel plan each asked for.
    signed: BTreeMap<u64, (NewObject, Option<AirPlan>)>,
    /// Why the uplink node could not air an object, by id.
    refused: BTreeMap<u64, String>,
    /// The token of the next feedback message handed to the uplink node.
    next_token: u64,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").field("elapsed", &self.elapsed()).field("receivers", &self.receivers.len()).finish()
    }
}

impl Harness {
    /// Builds the uplink and receivers with keys drawn from the seed.
    pub fn new(options: HarnessOptions) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let root = RootKey::generate(&mut rng);
        let wall = WALL_CLOCK_START_UNIX_SECS;
        let signing = SigningKey::generate(&mut rng, &root, 1, wall - 3600, wall + 365 * 86_400);
        let uplink_signing = SigningKey::generate(&mut rng, &root, 2, wall - 3600, wall + 365 * 86_400);
        let network_key = NetworkKey::generate(&mut rng);
        let mut loss_rng = SimRng::seed_from_u64(rng.next_u64());
        let start = Instant::now();
        let node_config = UplinkNodeConfig {
            broadcast: BroadcastConfig { report_window: options.report_window, ..options.broadcast.clone() },
            plan: AirPlan { target_loss: options.broadcast.target_loss, passes: options.carousel_passes },
            acks: true,
            // Preparations complete at once here: a slot is always free.
            preparations_max: 2,
        };
        let mut uplink = UplinkNode::new(start, node_config, network_key.clone(), uplink_signing);
        // Every simulated county has reported: all are enrolled, as in a running network.
        uplink.set_enrolled(options.receivers.iter().map(|(code, _)| code.clone()));
        // Provinces in code order, so region indices (and their draws) are deterministic.
        let mut regions: BTreeMap<&str, usize> = BTreeMap::new();
        for (code, _) in &options.receivers {
            let next = regions.len();
            regions.entry(code.get(..2).unwrap_or(code)).or_insert(next);
        }
        let fade_model = options.regional_fade.unwrap_or(FadeModel { share: 0.0, mean_fade: Duration::from_secs(1) });
        let fades = (0..regions.len()).map(|_| FadeState::new(fade_model, &mut loss_rng)).collect();
        let receivers = options
            .receivers
            .iter()
            .enumerate()
            .map(|(index, (code, loss))| {
                let mut config = ReceptionConfig::new(code.clone(), root.public(), network_key.clone());
                config.report_window = options.report_window;
                config.seed = rng.next_u64();
                config.partial_objects_max = 16;
                config.fidelity = options.fidelity;
                let store = match (options.disks, options.fidelity) {
                    (true, _) => SimStore::Disk(Box::new(SimDisk::new(rng.next_u64()))),
                    (false, Fidelity::Full) => SimStore::Memory(MemoryStore::default()),
                    (false, Fidelity::Counting) => SimStore::Counting(ChaCha8Rng::seed_from_u64(rng.next_u64())),
                };
                let hook_kinds = if options.disks { vec![Kind::Software] } else { Vec::new() };
                let node_config = ReceiverNodeConfig { reception: config, hook_kinds };
                let scheduled = |kind: OutageKind| {
                    options
                        .outages
                        .iter()
                        .filter(|o| o.kind == kind && o.receiver.is_none_or(|r| r == index))
                        .map(|o| o.period.clone())
                        .collect()
                };
                SimReceiver {
                    code: code.clone(),
                    node: ReceiverNode::new(node_config.clone()),
                    node_config,
                    was_powered: true,
                    lose_index_on_crash: false,
                    crashes: 0,
                    store,
                    loss: LossState::new(*loss),
                    offline: false,
                    outages: scheduled(OutageKind::Power),
                    wan_outages: scheduled(OutageKind::Wan),
                    completed: BTreeMap::new(),
                    corrupt: Vec::new(),
                    completed_after_symbols: BTreeMap::new(),
                    datagrams_heard: 0,
                    datagrams_lost: 0,
                    region: regions.get(code.get(..2).unwrap_or(code)).copied().unwrap_or(0),
                    outbox: Vec::new(),
                    wake: None,
                }
            })
            .collect();
        Harness {
            now: start,
            start,
            uplink,
            receivers,
            objects: BTreeMap::new(),
            wan_up: true,
            options,
            downlink: VecDeque::new(),
            wan: VecDeque::new(),
            rng,
            loss_rng,
            fades,
            signing,
            network_key,
            next_object_id: 1,
            digest: blake3::Hasher::new(),
            receivers_next: None,
            steps: 0,
            acked: std::collections::BTreeSet::new(),
            next_tick: start + RECEIVER_TICK,
            signed: BTreeMap::new(),
            refused: BTreeMap::new(),
            next_token: 0,
        }
    }

    /// The options it was built with.
    pub fn options(&self) -> &HarnessOptions {
        &self.options
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn wall_unix_secs(&self) -> u64 {
        WALL_CLOCK_START_UNIX_SECS + self.elapsed().as_secs()
    }

    fn wall_unix_ms(&self) -> u64 {
        WALL_CLOCK_START_UNIX_SECS * 1000 + u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A digest of every datagram aired and every event so far: equal digests, equal runs.
    pub fn digest(&self) -> String {
        self.digest.finalize().to_hex().to_string()
    }

    /// Random payload bytes drawn from the harness seed.
    pub fn random_payload(&mut self, len: usize) -> Vec<u8> {
        let mut payload = vec![0u8; len];
        self.rng.fill_bytes(&mut payload);
        payload
    }

    /// Signs and hands an object to the uplink, aimed at every receiver whose code starts
    /// with one of `prefixes` ("" = all). Without feedback it airs as a carousel of
    /// [`HarnessOptions::carousel_passes`] passes. Returns its object id. Panics if the
    /// payload cannot be aired (tests); see [`Harness::try_add_object`].
    pub fn add_object(
        &mut self,
        payload: Vec<u8>,
        prefixes: &[&str],
        priority: Priority,
        deadline: Option<Duration>,
        feedback: bool,
    ) -> u64 {
        let carousel =
            (!feedback).then_some(AirPlan { target_loss: self.options.broadcast.target_loss, passes: self.options.carousel_passes });
        let options = ObjectOptions { prefixes: prefixes.iter().map(|p| p.to_string()).collect(), priority, deadline, carousel };
        match self.try_add_object(payload, &options) {
            Ok(object_id) => object_id,
            Err(error) => panic!("harness object refused: {error}"),
        }
    }

    /// Signs and hands an object to the uplink. Returns its object id.
    pub fn try_add_object(&mut self, payload: Vec<u8>, options: &ObjectOptions) -> Result<u64, HarnessError> {
        let oti = Oti::new_for_object(payload.len() as u64, self.options.symbol_size, self.options.block_bytes_max)?;
        let object_id = self.next_object_id;
        let blocks = fec::blocks(&oti);
        let block_hashes = blocks
            .iter()
            .map(|b| payload.get(b.offset as usize..(b.offset + b.len) as usize).map(fec::block_hash))
            .collect::<Option<Vec<_>>>()
            .ok_or(HarnessError::Refused("blocks do not cover the payload".into()))?;
        let wall = self.wall_unix_secs();
        let manifest = Manifest {
            object_id,
            kind: Kind::Software,
            name: format!("object-{object_id}.bin"),
            version: object_id,
            size_bytes: payload.len() as u64,
            compression: Compression::None,
            oti: oti.encode(),
            object_hash: *blake3::hash(&payload).as_bytes(),
            block_hashes,
            targets: options.prefixes.clone(),
            created_unix_secs: wall,
            expires_unix_secs: wall + 7 * 86_400,
        };
        let signed_manifest = self.signing.sign_manifest(&manifest).map_err(|e| HarnessError::Sign(e.to_string()))?.to_bytes();
        let targeted: Vec<bool> = self.receivers.iter().map(|r| options.prefixes.iter().any(|p| r.code.starts_with(p.as_str()))).collect();
        let targets: Vec<String> = self.receivers.iter().zip(&targeted).filter(|(_, t)| **t).map(|(r, _)| r.code.clone()).collect();
        let payload = Arc::new(payload);
        // The node sets the delivery, priority and schedule from the job.
        let object = NewObject {
            manifest: manifest.clone(),
            signed_manifest,
            source: Box::new(SharedPayload(payload.clone())),
            priority: options.priority,
            not_before: None,
            deadline: None,
            delivery: Delivery::Feedback { targets: Vec::new() },
            resume: None,
        };
        let wall_ms = self.wall_unix_ms();
        let job = UplinkJob {
            object_id,
            prefixes: options.prefixes.clone(),
            feedback: options.carousel.is_none(),
            priority: options.priority,
            queued_unix_secs: self.wall_unix_secs(),
            not_before_unix_ms: None,
            deadline_unix_ms: options.deadline.map(|d| wall_ms + u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        let source_symbols = blocks.iter().map(|b| b.source_symbols).collect();
        // Known before the node airs it, so its first round is counted.
        self.objects.insert(
            object_id,
            SimObject {
                manifest,
                payload,
                source_symbols,
                targets,
                targeted,
                completions: 0,
                added_at: self.elapsed(),
                first_data_at: None,
                last_data_at: None,
                symbols_sent: 0,
                list_bytes: 0,
                events: Vec::new(),
            },
        );
        self.signed.insert(object_id, (object, options.carousel));
        self.uplink.handle_queued(job);
        self.execute_uplink();
        self.signed.remove(&object_id);
        if let Some(error) = self.refused.remove(&object_id) {
            self.objects.remove(&object_id);
            return Err(HarnessError::Refused(error));
        }
        self.next_object_id += 1;
        Ok(object_id)
    }

    /// Whether every targeted receiver has completed the object.
    pub fn all_complete(&self, object_id: u64) -> bool {
        self.objects.get(&object_id).is_some_and(|o| o.completions == o.targets.len())
    }

    /// Runs until `done` holds, `virtual_limit` of virtual time passes, or `steps_max`
    /// steps; returns whether `done` held.
    pub fn run_until(&mut self, virtual_limit: Duration, steps_max: u64, mut done: impl FnMut(&Harness) -> bool) -> bool {
        let limit = self.now + virtual_limit;
        let mut buf = Vec::new();
        for _ in 0..steps_max {
            if done(self) {
                return true;
            }
            if self.now >= limit {
                return false;
            }
            self.steps += 1;
            self.transmit(&mut buf);
            self.deliver_downlink();
            self.drive_receivers();
            self.deliver_wan();
            self.uplink.handle_timeout(self.now);
            self.execute_uplink();
            self.advance_clock(limit);
        }
        done(self)
    }

    fn transmit(&mut self, buf: &mut Vec<u8>) {
        let wall_ms = self.wall_unix_secs() * 1000;
        while self.uplink.poll_transmit(self.now, wall_ms, buf) {
            self.digest.update(buf);
            let mut aired = 0;
            if let Ok(datagram) = wire::parse(buf, &self.network_key) {
                if let Some(object) = self.objects.get_mut(&datagram.object_id) {
                    if let Body::Data { .. } = datagram.body {
                        let at = self.now - self.start;
                        object.first_data_at.get_or_insert(at);
                        object.last_data_at = Some(at);
                        object.symbols_sent += 1;
                    }
                    if let Body::SymbolList(_) = datagram.body {
                        object.list_bytes += (buf.len() + wire::IP_UDP_HEADER_BYTES) as u64;
                    }
                    aired = object.symbols_sent;
                }
            }
            self.downlink.push_back((self.now + self.options.downlink_delay, Rc::new(buf.clone()), aired));
        }
    }

    fn deliver_downlink(&mut self) {
        let at = self.elapsed();
        let wall = self.wall_unix_secs();
        let fade = self.options.regional_fade.is_some();
        let arrives = self.now + self.options.wan_delay;
        let mut faded = vec![false; self.fades.len()];
        while self.downlink.front().is_some_and(|(due, _, _)| *due <= self.now) {
            let Some((_, bytes, aired)) = self.downlink.pop_front() else { break };
            // Counting fidelity authenticates once for everyone; full fidelity lets each
            // receiver do it, as the daemon does.
            let parsed = match self.options.fidelity {
                Fidelity::Counting => wire::parse(&bytes, &self.network_key).ok(),
                Fidelity::Full => None,
            };
            let moves_timers = match &parsed {
                Some(d) => !matches!(d.body, Body::Data { .. }),
                None => true,
            };
            if fade {
                for (state, f) in self.fades.iter_mut().zip(faded.iter_mut()) {
                    *f = state.faded_at(at, &mut self.loss_rng);
                }
            }
            for (index, receiver) in self.receivers.iter_mut().enumerate() {
                if !receiver.powered(at) {
                    continue;
                }
                // Draw the county's own loss even in a fade, so its burst state keeps going.
                let lost = receiver.loss.lose(&mut self.loss_rng) || faded.get(receiver.region).copied().unwrap_or(false);
                if lost {
                    receiver.datagrams_lost += 1;
                    continue;
                }
                receiver.datagrams_heard += 1;
                match (&parsed, self.options.fidelity) {
                    (Some(datagram), _) => receiver.node.handle_parsed(self.now, wall, datagram),
                    (None, Fidelity::Counting) => continue,
                    (None, Fidelity::Full) => receiver.node.handle_datagram(self.now, wall, &bytes),
                }
                execute_requests(index, receiver, &mut self.objects, self.now, at, aired);
                if moves_timers {
                    receiver.wake = receiver.node.poll_timeout();
                }
                let wan_up = self.wan_up && receiver.wan_link_up(at);
                route_feedback(receiver, wan_up, &mut self.wan, arrives);
            }
        }
    }

    /// Runs due receiver timers and routes feedback; notes the receivers' next event (a
    /// timer or an outage edge) for [`Harness::advance_clock`], in the same pass.
    fn drive_receivers(&mut self) {
        let at = self.elapsed();
        let arrives = self.now + self.options.wan_delay;
        let tick = self.now >= self.next_tick;
        if tick {
            self.next_tick = self.now + RECEIVER_TICK;
        }
        let mut next: Option<Instant> = Some(self.next_tick);
        for receiver in &mut self.receivers {
            // Outage edges are events too: a receiver coming back acts at once.
            for period in receiver.outages.iter().chain(&receiver.wan_outages) {
                for edge in [period.start, period.end] {
                    if edge > at {
                        next = Some(next.map_or(self.start + edge, |n| n.min(self.start + edge)));
                    }
                }
            }
            let powered = receiver.powered(at);
            if powered != receiver.was_powered {
                receiver.was_powered = powered;
                if powered {
                    receiver.restart(self.now, WALL_CLOCK_START_UNIX_SECS + at.as_secs());
                    execute_requests(usize::MAX, receiver, &mut self.objects, self.now, at, 0);
                    receiver.wake = receiver.node.poll_timeout();
                } else {
                    receiver.crash();
                }
            }
            if !powered {
                // Powered off: nothing runs, nothing is said.
                continue;
            }
            if let SimStore::Disk(disk) = &mut receiver.store {
                let due = disk.due(self.now);
                let ready = !due.is_empty();
                for completion in due {
                    receiver.node.handle_completion(completion);
                }
                if ready {
                    execute_requests(usize::MAX, receiver, &mut self.objects, self.now, at, 0);
                    receiver.wake = receiver.node.poll_timeout();
                }
            }
            if tick {
                receiver.node.handle_tick(WALL_CLOCK_START_UNIX_SECS + at.as_secs());
                execute_requests(usize::MAX, receiver, &mut self.objects, self.now, at, 0);
                receiver.wake = receiver.node.poll_timeout();
            }
            if receiver.wake.is_some_and(|t| t <= self.now) {
                receiver.node.handle_timeout(self.now);
                execute_requests(usize::MAX, receiver, &mut self.objects, self.now, at, 0);
                receiver.wake = receiver.node.poll_timeout();
            }
            if let SimStore::Disk(disk) = &receiver.store {
                if let Some(due) = disk.next_due() {
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
            }
            let wan_up = self.wan_up && receiver.wan_link_up(at);
            route_feedback(receiver, wan_up, &mut self.wan, arrives);
            if let Some(wake) = receiver.wake {
                next = Some(next.map_or(wake, |n| n.min(wake)));
            }
        }
        self.receivers_next = next;
    }

    fn deliver_wan(&mut self) {
        while self.wan.front().is_some_and(|(at, _)| *at <= self.now) {
            let Some((_, feedback)) = self.wan.pop_front() else { break };
            self.digest.update(&feedback.to_bytes());
            if let satcast_protocol::feedback::FeedbackMessage::Complete { object_id, .. } = feedback.message {
                self.acked.insert((feedback.county_code.clone(), object_id));
            }
            self.next_token += 1;
            self.uplink.handle_feedback(feedback, self.next_token);
            self.execute_uplink();
        }
    }

    /// Carries out the uplink node's requests at once, in order: a job is prepared from the
    /// object signed for it, records are durable at once, nothing else is kept.
    fn execute_uplink(&mut self) {
        let wall_ms = self.wall_unix_ms();
        while let Some(request) = self.uplink.poll_request() {
            let completion = match request {
                uplink_node::Request::Prepare { job, delivery, .. } => {
                    let object_id = job.object_id;
                    let result = match self.signed.remove(&object_id) {
                        Some((mut object, carousel)) => {
                            // The node chose a carousel; the run's options say how many passes.
                            object.delivery = match (delivery, carousel) {
                                (Delivery::Carousel(_), Some(plan)) => Delivery::Carousel(plan),
                                (delivery, _) => delivery,
                            };
                            Ok(Box::new(object))
                        }
                        None => Err(uplink_node::PrepareFailure::Gone),
                    };
                    uplink_node::Completion::Prepared { object_id, result }
                }
                uplink_node::Request::RecordBroadcast { object_id, .. } => {
                    uplink_node::Completion::BroadcastRecorded { object_id, result: Ok(()) }
                }
                uplink_node::Request::RecordFeedback { token, .. } => uplink_node::Completion::FeedbackRecorded { token, result: Ok(()) },
                uplink_node::Request::Requeue { object_id, .. } => uplink_node::Completion::Requeued { object_id, result: Ok(()) },
                uplink_node::Request::CancelPreparation { .. }
                | uplink_node::Request::Reply { .. }
                | uplink_node::Request::RecordOutcome { .. }
                | uplink_node::Request::FinishJob { .. }
                | uplink_node::Request::RecordCheckpoint { .. }
                | uplink_node::Request::Answer { .. } => continue,
            };
            self.uplink.handle_completion(self.now, wall_ms, completion);
        }
        self.collect_uplink_events();
    }

    fn collect_uplink_events(&mut self) {
        while let Some(event) = self.uplink.poll_event() {
            let event = match event {
                UplinkEvent::Broadcast(event) => event,
                UplinkEvent::CannotAir { object_id, error } => {
                    self.refused.insert(object_id, error);
                    continue;
                }
                _ => continue,
            };
            self.digest.update(format!("{event:?}").as_bytes());
            let object_id = match &event {
                BroadcastEvent::RoundStarted { object_id, .. }
                | BroadcastEvent::RoundEnded { object_id, .. }
                | BroadcastEvent::Completed { object_id, .. }
                | BroadcastEvent::Idle { object_id, .. }
                | BroadcastEvent::DeadlinePassed { object_id, .. }
                | BroadcastEvent::CarouselFinished { object_id }
                | BroadcastEvent::SourceFailed { object_id, .. } => *object_id,
            };
            let at = self.elapsed();
            if let Some(object) = self.objects.get_mut(&object_id) {
                object.events.push((at, event));
            }
        }
    }

    fn advance_clock(&mut self, limit: Instant) {
        let mut next = limit;
        next = next.min(self.uplink.poll_timeout());
        if let Some((t, _, _)) = self.downlink.front() {
            next = next.min(*t);
        }
        if let Some((t, _)) = self.wan.front() {
            next = next.min(*t);
        }
        if let Some(t) = self.receivers_next {
            next = next.min(t);
        }
        // Always move forward, so a timer that is due but yields nothing cannot spin.
        self.now = next.max(self.now + Duration::from_micros(1));
    }

    /// Whether an object's broadcast events include one matching `predicate`.
    pub fn has_event(&self, object_id: u64, predicate: impl Fn(&BroadcastEvent) -> bool) -> bool {
        self.objects.get(&object_id).is_some_and(|o| o.events.iter().any(|(_, e)| predicate(e)))
    }

    /// Datagrams on their way down (aired, not yet arrived).
    pub fn downlink_in_flight(&self) -> usize {
        self.downlink.len()
    }
}

/// Sends a receiver's new feedback over the WAN, or holds it while its link is down; sends
/// what it held once the link is back.
fn route_feedback(receiver: &mut SimReceiver, wan_up: bool, wan: &mut VecDeque<(Instant, Feedback)>, arrives: Instant) {
    if wan_up && !receiver.outbox.is_empty() {
        for feedback in receiver.outbox.drain(..) {
            wan.push_back((arrives, feedback));
        }
    }
}

/// Keeps feedback for later, a newer progress report replacing an older one for the same
/// object (an outbox coalesces what the uplink no longer needs).
pub(crate) fn hold(outbox: &mut Vec<Feedback>, feedback: Feedback) {
    use satcast_protocol::feedback::FeedbackMessage::Progress;
    if let Progress { object_id, .. } = &feedback.message {
        let object_id = *object_id;
        outbox.retain(|f| !matches!(&f.message, Progress { object_id: id, .. } if *id == object_id));
    }
    outbox.push(feedback);
}

/// Carries out a receiver node's requests at once and in order, as the daemon's storage
/// worker does, handing completions straight back. A committed object is checked against
/// the payload (byte-exact, in full fidelity) and counted as delivered; feedback goes to
/// the county's outbox, which `route_feedback` sends when the WAN is up.
/// `aired` is the completing datagram's object's DATA symbols aired when it was sent (a
/// datagram that completes an object is always that object's: a symbol, or the manifest
/// that lets buffered symbols count). `index` is usize::MAX for a call without a datagram.
fn execute_requests(
    index: usize,
    receiver: &mut SimReceiver,
    objects: &mut BTreeMap<u64, SimObject>,
    now: Instant,
    at: Duration,
    aired: u64,
) {
    while let Some(request) = receiver.node.poll_request() {
        if let SimStore::Disk(disk) = &mut receiver.store {
            let committed = match &request {
                Request::Commit { manifest } if !disk.full => Some(manifest.object_id),
                _ => None,
            };
            let completion = disk.execute(now, request, &mut receiver.outbox);
            if let Some(object_id) = committed {
                commit(index, receiver, objects, at, aired, object_id);
            }
            if let Some(completion) = completion {
                receiver.node.handle_completion(completion);
            }
            continue;
        }
        let completion = match request {
            Request::Store(request) => match &mut receiver.store {
                SimStore::Memory(store) => storage::execute(request, store),
                SimStore::Counting(rng) => storage::execute_counting(request, || rng.random::<f64>()),
                SimStore::Disk(_) => None,
            }
            .map(Completion::Store),
            Request::RecordHookDue { manifest } => {
                Some(Completion::HookRecorded { object_id: manifest.object_id, result: Ok(HookRecord::AlreadyHandled) })
            }
            Request::Commit { manifest } => {
                commit(index, receiver, objects, at, aired, manifest.object_id);
                Some(Completion::Committed { object_id: manifest.object_id, result: Ok(()) })
            }
            Request::RecordVersion { manifest } => Some(Completion::VersionRecorded { object_id: manifest.object_id, result: Ok(()) }),
            Request::ReleaseHook { object_id } => Some(Completion::HookReleased { object_id, result: Ok(()) }),
            Request::RecordRevocations { .. } => None,
            Request::PushOutbox { feedback } => {
                hold(&mut receiver.outbox, feedback);
                None
            }
        };
        if let Some(completion) = completion {
            receiver.node.handle_completion(completion);
        }
    }
    // Events are for a daemon's logs; the harness judges by deliveries.
    while receiver.node.poll_event().is_some() {}
}

/// A county commits a verified object: byte-exact against the payload, or counted corrupt.
fn commit(index: usize, receiver: &mut SimReceiver, objects: &mut BTreeMap<u64, SimObject>, at: Duration, aired: u64, object_id: u64) {
    let exact = match (&receiver.store, objects.get(&object_id)) {
        (SimStore::Counting(_) | SimStore::Disk(_), Some(_)) => true,
        (store, Some(object)) => {
            store.object(object_id).and_then(|bytes| bytes.get(..object.payload.len())) == Some(object.payload.as_slice())
        }
        (_, None) => false,
    };
    if !exact {
        return receiver.corrupt.push(object_id);
    }
    if receiver.completed.insert(object_id, at).is_none() {
        receiver.completed_after_symbols.insert(object_id, aired);
        if let Some(object) = objects.get_mut(&object_id) {
            if object.targeted.get(index).copied().unwrap_or(false) {
                object.completions += 1;
            }
        }
    }
    // Frees the memory of a delivered object (the daemon moves it to its cache).
    if let SimStore::Memory(store) = &mut receiver.store {
        let _ = store.discard(object_id);
    }
}
