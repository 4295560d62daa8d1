//! The broadcast-side state machine: decides which datagram goes on the carrier next.
//!
//! It owns the pacer, the manifest and heartbeat carousel and, per object, the airing
//! schedule: passes over windows of source blocks, each pass interleaving the blocks of a
//! window so that a rain-fade burst costs every block a little instead of one block
//! everything. It performs no I/O: block bytes come from a [`BlockSource`] the driver
//! supplies, time and wall-clock time are passed in.
//!
//! Call order, for a driver:
//! 1. [`Broadcaster::add_object`] / [`Broadcaster::cancel`] as operators ask;
//! 2. [`Broadcaster::poll_transmit`] until it returns `false`, sending each datagram;
//! 3. [`Broadcaster::poll_event`] until `None`;
//! 4. sleep until [`Broadcaster::poll_timeout`] (or until new work arrives), then go to 2.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::fec::{self, Block, BlockEncoder, Oti};
use crate::manifest::Manifest;
use crate::pacer::Pacer;
use crate::trust::{Heartbeat, SigningKey};
use crate::wire::{self, NetworkKey, PacketType};

/// The most source-block bytes interleaved at once. Encoders for one window stay in memory,
/// so this bounds the uplink's memory per object; at 80 Mbit/s it spans about 7 seconds of
/// air time, longer than a typical rain-fade burst.
pub const INTERLEAVE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// The most objects airing at once.
pub const AIRING_OBJECTS_MAX: usize = 1024;
/// The most events held for the driver; older ones are dropped beyond this.
pub const EVENTS_MAX: usize = 4096;

/// Settings of the carrier and the carousel.
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
}

/// How much to air for one object when no feedback is available.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AirPlan {
    /// The loss rate a receiver may suffer and still complete from one pass.
    pub target_loss: f64,
    /// Passes over the whole object, each with fresh repair symbols, for receivers that
    /// joined late or lost a whole pass.
    pub passes: u32,
}

impl AirPlan {
    /// Symbols per block in one pass so that a receiver losing `target_loss` of them still
    /// gets K with high probability: K/q plus three standard deviations, plus two for the
    /// RaptorQ decoding overhead (RFC 6330 section 5.6: K+2 symbols fail about once in 10^6).
    pub fn symbols_per_pass(&self, source_symbols: u32) -> u32 {
        let k = f64::from(source_symbols);
        let p = self.target_loss.clamp(0.0, 0.9);
        let q = 1.0 - p;
        let n = k / q + 3.0 * (k * p).sqrt() / q + 2.0;
        (n.ceil() as u32).max(source_symbols)
    }
}

/// Reads source-block bytes of one object, from wherever the driver keeps them.
pub trait BlockSource: Send {
    /// Fills `buf` with the object's bytes starting at `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

/// One object to air.
pub struct NewObject {
    /// The manifest, already signed into `signed_manifest`.
    pub manifest: Manifest,
    /// Canonical signed-manifest bytes as they go on the carousel.
    pub signed_manifest: Vec<u8>,
    /// How much to air.
    pub plan: AirPlan,
    /// Where the payload bytes come from.
    pub source: Box<dyn BlockSource>,
}

impl std::fmt::Debug for NewObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewObject").field("object_id", &self.manifest.object_id).field("plan", &self.plan).finish()
    }
}

/// Why an object cannot be aired.
#[derive(Debug, Error)]
pub enum BroadcastError {
    /// The manifest's OTI is not valid.
    #[error("invalid oti: {0}")]
    Oti(#[from] fec::FecError),
    /// An object with this id is already airing.
    #[error("object {0:016x} is already airing")]
    Duplicate(u64),
    /// Too many objects are airing.
    #[error("{} objects already airing", AIRING_OBJECTS_MAX)]
    TooMany,
}

/// What the broadcast machine reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BroadcastEvent {
    /// Every planned symbol of the object has been aired.
    Finished {
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
    /// Bytes on the carrier, IP and UDP headers included.
    pub bytes_on_air: u64,
}

struct Airing {
    manifest: Manifest,
    signed_manifest: Vec<u8>,
    oti: Oti,
    blocks: Vec<Block>,
    /// Consecutive SBN ranges interleaved together.
    windows: Vec<std::ops::Range<usize>>,
    plan: AirPlan,
    source: Box<dyn BlockSource>,
    pass: u32,
    window: usize,
    /// The next fresh ESI of each block.
    next_esi: Vec<u32>,
    schedule: fec::Interleaved,
    encoders: HashMap<u8, BlockEncoder>,
}

impl Airing {
    fn new(object: NewObject) -> Result<Self, BroadcastError> {
        let oti = Oti::decode(&object.manifest.oti)?;
        let blocks = fec::blocks(&oti);
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
        let next_esi = vec![0; blocks.len()];
        let mut airing = Airing {
            manifest: object.manifest,
            signed_manifest: object.signed_manifest,
            oti,
            blocks,
            windows,
            plan: object.plan,
            source: object.source,
            pass: 0,
            window: 0,
            next_esi,
            schedule: fec::interleave(&[]),
            encoders: HashMap::new(),
        };
        airing.schedule = airing.window_schedule();
        Ok(airing)
    }

    /// The interleaved (sbn, esi) order for the current pass over the current window.
    fn window_schedule(&mut self) -> fec::Interleaved {
        let mut plan = Vec::new();
        for index in self.windows[self.window].clone() {
            let block = &self.blocks[index];
            let count = self.plan.symbols_per_pass(block.source_symbols);
            let first = self.next_esi[index];
            let count = count.min(wire::ESI_MAX.saturating_sub(first));
            self.next_esi[index] = first + count;
            plan.push((block.sbn, first, count));
        }
        fec::interleave(&plan)
    }

    /// The next (sbn, esi) to send, moving to the next window or pass as each runs out.
    fn next_symbol(&mut self) -> Option<(u8, u32)> {
        loop {
            if let Some(next) = self.schedule.next() {
                return Some(next);
            }
            self.encoders.clear();
            self.window += 1;
            if self.window == self.windows.len() {
                self.window = 0;
                self.pass += 1;
                if self.pass >= self.plan.passes {
                    return None;
                }
            }
            self.schedule = self.window_schedule();
        }
    }

    fn encoder(&mut self, sbn: u8) -> std::io::Result<&BlockEncoder> {
        if !self.encoders.contains_key(&sbn) {
            let block = self.blocks[usize::from(sbn)].clone();
            let mut data = vec![0u8; block.len as usize];
            self.source.read_at(block.offset, &mut data)?;
            let encoder = BlockEncoder::new(&self.oti, sbn, &data).map_err(std::io::Error::other)?;
            self.encoders.insert(sbn, encoder);
        }
        self.encoders.get(&sbn).ok_or_else(|| std::io::Error::other("encoder vanished"))
    }
}

/// The broadcast-side machine. See the module documentation for the call order.
pub struct Broadcaster {
    config: BroadcastConfig,
    network_key: NetworkKey,
    signing_key: SigningKey,
    pacer: Pacer,
    objects: VecDeque<Airing>,
    /// Control datagrams (manifest fragments) waiting to go before any data.
    control: VecDeque<Vec<u8>>,
    /// A datagram built but held back by the pacer.
    pending: Option<(Vec<u8>, PacketType)>,
    next_manifest_at: Instant,
    next_heartbeat_at: Instant,
    heartbeat_sequence: u64,
    events: VecDeque<BroadcastEvent>,
    stats: AirStats,
    symbol: Vec<u8>,
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
        let burst_bytes = (config.datagram_bytes_max as u64 + 28) * 4;
        Broadcaster {
            pacer: Pacer::new(now, config.link_rate_bits_per_sec, burst_bytes),
            config,
            network_key,
            signing_key,
            objects: VecDeque::new(),
            control: VecDeque::new(),
            pending: None,
            next_manifest_at: now,
            next_heartbeat_at: now,
            heartbeat_sequence: 0,
            events: VecDeque::new(),
            stats: AirStats::default(),
            symbol: Vec::new(),
        }
    }

    /// Starts airing an object: its manifest goes out at once, then its symbols.
    pub fn add_object(&mut self, object: NewObject) -> Result<(), BroadcastError> {
        let object_id = object.manifest.object_id;
        if self.objects.iter().any(|a| a.manifest.object_id == object_id) {
            return Err(BroadcastError::Duplicate(object_id));
        }
        if self.objects.len() >= AIRING_OBJECTS_MAX {
            return Err(BroadcastError::TooMany);
        }
        let airing = Airing::new(object)?;
        self.queue_manifest(&airing);
        self.objects.push_back(airing);
        Ok(())
    }

    /// Stops airing an object at once. False if it was not airing.
    pub fn cancel(&mut self, object_id: u64) -> bool {
        let before = self.objects.len();
        self.objects.retain(|a| a.manifest.object_id != object_id);
        before != self.objects.len()
    }

    /// Ids of the objects airing now, in airing order.
    pub fn airing(&self) -> Vec<u64> {
        self.objects.iter().map(|a| a.manifest.object_id).collect()
    }

    /// What has gone on the air so far.
    pub fn stats(&self) -> AirStats {
        self.stats
    }

    fn queue_manifest(&mut self, airing: &Airing) {
        let mut buf = Vec::new();
        for fragment in wire::manifest_fragments(&airing.signed_manifest, self.config.datagram_bytes_max) {
            wire::write_manifest_fragment(&mut buf, &self.network_key, airing.manifest.object_id, &fragment);
            self.control.push_back(buf.clone());
        }
    }

    fn push_event(&mut self, event: BroadcastEvent) {
        if self.events.len() >= EVENTS_MAX {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Builds the next datagram to send, if any is due, without consulting the pacer.
    fn build_next(&mut self, now: Instant, wall_unix_ms: u64) -> Option<(Vec<u8>, PacketType)> {
        if now >= self.next_heartbeat_at {
            self.next_heartbeat_at = now + self.config.heartbeat_interval;
            self.heartbeat_sequence += 1;
            let heartbeat = Heartbeat { sequence: self.heartbeat_sequence, uplink_time_unix_ms: wall_unix_ms };
            let signed = self.signing_key.sign_heartbeat(heartbeat).to_bytes();
            let mut buf = Vec::new();
            wire::write_heartbeat(&mut buf, &self.network_key, &signed);
            return Some((buf, PacketType::Heartbeat));
        }
        if now >= self.next_manifest_at {
            self.next_manifest_at = now + self.config.manifest_interval;
            let objects = std::mem::take(&mut self.objects);
            for airing in &objects {
                self.queue_manifest(airing);
            }
            self.objects = objects;
        }
        if let Some(buf) = self.control.pop_front() {
            return Some((buf, PacketType::Manifest));
        }
        while let Some(airing) = self.objects.front_mut() {
            let object_id = airing.manifest.object_id;
            let Some((sbn, esi)) = airing.next_symbol() else {
                self.objects.pop_front();
                self.push_event(BroadcastEvent::Finished { object_id });
                continue;
            };
            let mut symbol = std::mem::take(&mut self.symbol);
            symbol.clear();
            let built = airing.encoder(sbn).and_then(|e| e.symbol_into(esi, &mut symbol).map_err(std::io::Error::other));
            if let Err(error) = built {
                self.objects.pop_front();
                self.symbol = symbol;
                self.push_event(BroadcastEvent::SourceFailed { object_id, error: error.to_string() });
                continue;
            }
            let mut buf = Vec::new();
            wire::write_data(&mut buf, &self.network_key, object_id, sbn, esi, &symbol);
            self.symbol = symbol;
            // Round-robin between airing objects of equal standing: rotate after each symbol.
            self.objects.rotate_left(1);
            return Some((buf, PacketType::Data));
        }
        None
    }

    /// Writes the next datagram into `out` if one is due and the pacer allows it now.
    pub fn poll_transmit(&mut self, now: Instant, wall_unix_ms: u64, out: &mut Vec<u8>) -> bool {
        if self.pending.is_none() {
            self.pending = self.build_next(now, wall_unix_ms);
        }
        let Some((buf, kind)) = self.pending.take() else { return false };
        if !self.pacer.try_send(now, buf.len()) {
            self.pending = Some((buf, kind));
            return false;
        }
        self.stats.bytes_on_air += (buf.len() + wire::IP_UDP_HEADER_BYTES) as u64;
        match kind {
            PacketType::Data => self.stats.data_datagrams += 1,
            PacketType::Manifest => self.stats.manifest_datagrams += 1,
            PacketType::Heartbeat => self.stats.heartbeat_datagrams += 1,
        }
        out.clear();
        out.extend_from_slice(&buf);
        true
    }

    /// When to call [`Broadcaster::poll_transmit`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = self.next_heartbeat_at;
        let timers = if self.objects.is_empty() { timers } else { timers.min(self.next_manifest_at) };
        match &self.pending {
            Some((buf, _)) => Some(self.pacer.ready_at(buf.len()).min(timers)),
            None if !self.objects.is_empty() || !self.control.is_empty() => {
                Some(self.pacer.ready_at(self.config.datagram_bytes_max))
            }
            None => Some(timers),
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<BroadcastEvent> {
        self.events.pop_front()
    }
}
