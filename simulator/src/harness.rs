//! An in-memory harness in the style of quinn-proto's test pair: one broadcast machine,
//! N reception machines, per-receiver loss, a GEO downlink delay, a WAN for feedback, all
//! in virtual time on one thread. The same seed gives the same run, bit for bit: every
//! datagram and event is folded into [`Harness::digest`].
//!
//! Faults are one-line edits of harness state: `harness.receivers[3].offline = true`,
//! `harness.wan_up = false`, `harness.receivers[0].loss = LossState::new(...)`.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast_protocol::broadcast::{BlockSource, BroadcastConfig, BroadcastEvent, Broadcaster, Delivery, NewObject, Priority};
use satcast_protocol::fec::{self, Oti};
use satcast_protocol::feedback::Feedback;
use satcast_protocol::manifest::{Compression, Kind, Manifest};
use satcast_protocol::reception::{MemoryStore, Reception, ReceptionConfig, ReceptionEvent};
use satcast_protocol::trust::{NetworkKey, RootKey, SigningKey};
use satcast_protocol::wire::{self, Body};

use crate::loss::{LossModel, LossState};

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
}

impl HarnessOptions {
    /// Defaults for a GEO link at 20 Mbit/s with `receivers` of the given loss.
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
        }
    }
}

/// One simulated county receiver.
#[derive(Debug)]
pub struct SimReceiver {
    /// Its county code.
    pub code: String,
    /// Its reception machine.
    pub reception: Reception,
    /// Its store.
    pub store: MemoryStore,
    /// Its downlink loss.
    pub loss: LossState,
    /// Powered off: hears nothing, says nothing.
    pub offline: bool,
    /// Objects completed byte-exact, with the virtual time of completion.
    pub completed: BTreeMap<u64, Duration>,
    /// Objects completed with the wrong bytes (must stay empty).
    pub corrupt: Vec<u64>,
}

/// What the harness knows about one object it aired.
#[derive(Debug, Clone)]
pub struct SimObject {
    /// The manifest.
    pub manifest: Manifest,
    /// The payload.
    pub payload: Rc<Vec<u8>>,
    /// Source symbols per block.
    pub source_symbols: Vec<u32>,
    /// Counties targeted.
    pub targets: Vec<String>,
    /// When it was added (virtual).
    pub added_at: Duration,
    /// First and last DATA datagram on the air (virtual).
    pub first_data_at: Option<Duration>,
    /// Last DATA datagram on the air (virtual).
    pub last_data_at: Option<Duration>,
    /// DATA symbols aired.
    pub symbols_sent: u64,
    /// Broadcast events about it, in order, with their time.
    pub events: Vec<(Duration, BroadcastEvent)>,
}

// The harness is single-threaded; BlockSource asks for Send because daemons move sources
// across threads. The bytes are copied out on every read, never shared mutably.
struct SendPayload(Vec<u8>);

impl BlockSource for SendPayload {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let bytes = self.0.get(start..start + buf.len()).ok_or_else(|| std::io::Error::other("read past the end"))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// The harness. See the module documentation.
pub struct Harness {
    /// Virtual time now.
    pub now: Instant,
    start: Instant,
    /// The broadcast machine.
    pub uplink: Broadcaster,
    /// The receivers.
    pub receivers: Vec<SimReceiver>,
    /// Objects added, by id.
    pub objects: BTreeMap<u64, SimObject>,
    /// Whether feedback crosses the WAN. While it is down, feedback waits in each
    /// receiver's outbox (as the daemon's durable outbox does), newer progress replacing
    /// older for the same object, and goes out when it returns.
    pub wan_up: bool,
    outbox: Vec<Feedback>,
    options: HarnessOptions,
    downlink: VecDeque<(Instant, Rc<Vec<u8>>)>,
    wan: VecDeque<(Instant, Feedback)>,
    rng: ChaCha8Rng,
    signing: SigningKey,
    network_key: NetworkKey,
    next_object_id: u64,
    digest: blake3::Hasher,
    /// Steps taken so far.
    pub steps: u64,
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
        let start = Instant::now();
        let uplink = Broadcaster::new(start, options.broadcast.clone(), network_key.clone(), uplink_signing);
        let receivers = options
            .receivers
            .iter()
            .map(|(code, loss)| {
                let mut config = ReceptionConfig::new(code.clone(), root.public(), network_key.clone());
                config.report_window = options.report_window;
                config.seed = rng.next_u64();
                config.partial_objects_max = 16;
                SimReceiver {
                    code: code.clone(),
                    reception: Reception::new(config),
                    store: MemoryStore::default(),
                    loss: LossState::new(*loss),
                    offline: false,
                    completed: BTreeMap::new(),
                    corrupt: Vec::new(),
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
            outbox: Vec::new(),
            options,
            downlink: VecDeque::new(),
            wan: VecDeque::new(),
            rng,
            signing,
            network_key,
            next_object_id: 1,
            digest: blake3::Hasher::new(),
            steps: 0,
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn wall_unix_secs(&self) -> u64 {
        WALL_CLOCK_START_UNIX_SECS + self.elapsed().as_secs()
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
    /// with one of `prefixes` ("" = all). Returns its object id.
    pub fn add_object(&mut self, payload: Vec<u8>, prefixes: &[&str], priority: Priority, deadline: Option<Duration>, feedback: bool) -> u64 {
        let object_id = self.next_object_id;
        self.next_object_id += 1;
        let oti = match Oti::new_for_object(payload.len() as u64, self.options.symbol_size, self.options.block_bytes_max) {
            Ok(oti) => oti,
            Err(error) => panic!("harness payload cannot be encoded: {error}"),
        };
        let blocks = fec::blocks(&oti);
        let block_hashes = blocks.iter().map(|b| fec::block_hash(&payload[b.offset as usize..(b.offset + b.len) as usize])).collect();
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
            targets: prefixes.iter().map(|p| p.to_string()).collect(),
            created_unix_secs: wall,
            expires_unix_secs: wall + 7 * 86_400,
        };
        let signed_manifest = match self.signing.sign_manifest(&manifest) {
            Ok(signed) => signed.to_bytes(),
            Err(error) => panic!("harness manifest is invalid: {error}"),
        };
        let targets: Vec<String> = self
            .receivers
            .iter()
            .filter(|r| prefixes.iter().any(|p| r.code.starts_with(p)))
            .map(|r| r.code.clone())
            .collect();
        let delivery = if feedback {
            Delivery::Feedback { targets: targets.clone() }
        } else {
            Delivery::Carousel(satcast_protocol::broadcast::AirPlan { target_loss: self.options.broadcast.target_loss, passes: 2 })
        };
        let payload = Rc::new(payload);
        let object = NewObject {
            manifest: manifest.clone(),
            signed_manifest,
            source: Box::new(SendPayload(payload.as_ref().clone())),
            priority,
            not_before: None,
            deadline: deadline.map(|d| self.now + d),
            delivery,
        };
        if let Err(error) = self.uplink.add_object(self.now, object) {
            panic!("uplink refused the object: {error}");
        }
        let source_symbols = blocks.iter().map(|b| b.source_symbols).collect();
        self.objects.insert(
            object_id,
            SimObject {
                manifest,
                payload,
                source_symbols,
                targets,
                added_at: self.elapsed(),
                first_data_at: None,
                last_data_at: None,
                symbols_sent: 0,
                events: Vec::new(),
            },
        );
        object_id
    }

    /// Whether every targeted, online receiver has completed the object.
    pub fn all_complete(&self, object_id: u64) -> bool {
        let Some(object) = self.objects.get(&object_id) else { return false };
        self.receivers.iter().filter(|r| object.targets.contains(&r.code)).all(|r| r.completed.contains_key(&object_id))
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
            self.collect_uplink_events();
            self.advance_clock(limit);
        }
        done(self)
    }

    fn transmit(&mut self, buf: &mut Vec<u8>) {
        let wall_ms = self.wall_unix_secs() * 1000;
        while self.uplink.poll_transmit(self.now, wall_ms, buf) {
            self.digest.update(buf);
            if let Ok(datagram) = wire::parse(buf, &self.network_key) {
                if let (Body::Data { .. }, Some(object)) = (&datagram.body, self.objects.get_mut(&datagram.object_id)) {
                    let at = self.now - self.start;
                    object.first_data_at.get_or_insert(at);
                    object.last_data_at = Some(at);
                    object.symbols_sent += 1;
                }
            }
            self.downlink.push_back((self.now + self.options.downlink_delay, Rc::new(buf.clone())));
        }
    }

    fn deliver_downlink(&mut self) {
        while self.downlink.front().is_some_and(|(at, _)| *at <= self.now) {
            let Some((_, datagram)) = self.downlink.pop_front() else { break };
            let wall = self.wall_unix_secs();
            for receiver in &mut self.receivers {
                if receiver.offline || receiver.loss.lose(&mut self.rng) {
                    continue;
                }
                receiver.reception.handle_datagram(self.now, wall, &datagram, &mut receiver.store);
                drain_reception_events(receiver, &self.objects, self.now - self.start);
            }
        }
    }

    fn drive_receivers(&mut self) {
        for receiver in &mut self.receivers {
            if receiver.offline {
                // Powered off: nothing runs, nothing is said.
                while receiver.reception.poll_feedback().is_some() {}
                continue;
            }
            if receiver.reception.poll_timeout().is_some_and(|t| t <= self.now) {
                receiver.reception.handle_timeout(self.now);
            }
            while let Some(feedback) = receiver.reception.poll_feedback() {
                if self.wan_up {
                    self.wan.push_back((self.now + self.options.wan_delay, feedback));
                } else {
                    hold(&mut self.outbox, feedback);
                }
            }
        }
        if self.wan_up {
            for feedback in self.outbox.drain(..) {
                self.wan.push_back((self.now + self.options.wan_delay, feedback));
            }
        }
    }

    fn deliver_wan(&mut self) {
        while self.wan.front().is_some_and(|(at, _)| *at <= self.now) {
            let Some((_, feedback)) = self.wan.pop_front() else { break };
            self.digest.update(&feedback.to_bytes());
            self.uplink.handle_feedback(self.now, &feedback);
        }
    }

    fn collect_uplink_events(&mut self) {
        while let Some(event) = self.uplink.poll_event() {
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
        if let Some(t) = self.uplink.poll_timeout() {
            next = next.min(t);
        }
        if let Some((t, _)) = self.downlink.front() {
            next = next.min(*t);
        }
        if let Some((t, _)) = self.wan.front() {
            next = next.min(*t);
        }
        for receiver in &self.receivers {
            if !receiver.offline {
                if let Some(t) = receiver.reception.poll_timeout() {
                    next = next.min(t);
                }
            }
        }
        // Always move forward, so a timer that is due but yields nothing cannot spin.
        self.now = next.max(self.now + Duration::from_micros(1));
    }

    /// Whether an object's broadcast events include one matching `predicate`.
    pub fn has_event(&self, object_id: u64, predicate: impl Fn(&BroadcastEvent) -> bool) -> bool {
        self.objects.get(&object_id).is_some_and(|o| o.events.iter().any(|(_, e)| predicate(e)))
    }
}

/// Keeps feedback for later, a newer progress report replacing an older one for the same
/// county and object (an outbox coalesces what the uplink no longer needs).
fn hold(outbox: &mut Vec<Feedback>, feedback: Feedback) {
    use satcast_protocol::feedback::FeedbackMessage::Progress;
    if let Progress { object_id, .. } = &feedback.message {
        let object_id = *object_id;
        outbox.retain(|f| !(f.county_code == feedback.county_code && matches!(&f.message, Progress { object_id: id, .. } if *id == object_id)));
    }
    outbox.push(feedback);
}

/// Handles a receiver's events as a daemon would: a complete object is checked against the
/// payload (byte-exact) and marked delivered, which queues its Complete feedback.
fn drain_reception_events(receiver: &mut SimReceiver, objects: &BTreeMap<u64, SimObject>, at: Duration) {
    while let Some(event) = receiver.reception.poll_event() {
        if let ReceptionEvent::Complete { manifest } = event {
            let object_id = manifest.object_id;
            let exact = match (receiver.store.object(object_id), objects.get(&object_id)) {
                (Some(bytes), Some(object)) => bytes.get(..object.payload.len()) == Some(object.payload.as_slice()),
                _ => false,
            };
            if exact {
                receiver.completed.insert(object_id, at);
            } else {
                receiver.corrupt.push(object_id);
            }
            let _ = receiver.store_discard(object_id);
            receiver.reception.mark_delivered(&manifest);
        }
    }
}

impl SimReceiver {
    /// Frees the memory of a delivered object (the daemon moves it to its cache).
    fn store_discard(&mut self, object_id: u64) -> std::io::Result<()> {
        use satcast_protocol::reception::ReceptionStore;
        self.store.discard(object_id)
    }
}
