//! The uplink daemon: the queue, a paced UDP sender, the acknowledgement server and the
//! control API around the broadcast machine. Every airing decision is the machine's; this
//! module moves jobs in, datagrams out, feedback into the ledger, and operators' commands
//! to the machine.
//!
//! The pacing thread (the loop in [`serve`]) never waits on whole-file work: the queue
//! folder is watched by its own thread, and jobs are prepared (read, hashed, signed,
//! recorded) by the workers of [`Preparers`]. Both hand the loop their [`Input`] through one
//! channel, which the loop sleeps on, so a new job or a prepared one is taken up at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use satcast_daemon::clock::wall_unix_ms;
use satcast_protocol::ObjectId;
use satcast_protocol::broadcast::{AirPlan, BroadcastConfig, BroadcastEvent, Broadcaster, Checkpoint, Delivery, NewObject, Priority};
use satcast_protocol::feedback::{AckReply, Feedback, FeedbackMessage};
use satcast_protocol::manifest::Manifest;
use satcast_protocol::trust::{SignedManifest, SigningKey};
use satcast_protocol::wire;
use satcast_store::{BroadcastRecord, IndexOpen, LedgerState, UplinkStore};
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tracing::{info, warn};

use crate::acks::{self, AckRequest};
use crate::config::UplinkConfig;
use crate::control::{self, Command, LiveStates};
use crate::keys::{self, KeysError};
use crate::prepare::{self, PREPARATIONS_MAX, Prepare, PrepareError, Prepared, Preparers, prepare};
use crate::queue::{Job, Queue, QueueError};

/// The longest the loop sleeps, so a stop request, a command or a newly queued job is
/// noticed promptly.
const SLEEP_MAX: Duration = Duration::from_millis(20);
/// How often where each broadcast stands is written down for a restart.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Feedback messages recorded per loop turn, so the carrier is never starved.
const FEEDBACK_BATCH_MAX: usize = 256;
/// How often the signing certificate's file is checked for a rotation.
const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Inputs from the queue watcher and the preparation workers not yet taken by the loop:
/// room for every answer and a burst of newly queued jobs (the watcher waits beyond that).
const INPUTS_MAX: usize = 64 + PREPARATIONS_MAX;
/// The national division table, so the registry names every county on a fresh machine.
const AREAS_CSV: &str = include_str!("../../data/divisions/areas.csv");

/// Why the daemon stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The key directory is incomplete or unreadable.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// The queue directory cannot be used.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The downlink socket could not be opened.
    #[error("cannot open downlink socket: {0}")]
    Socket(std::io::Error),
    /// The state folder belongs to another process, or the uplink's index could not be
    /// opened, even fresh.
    #[error(transparent)]
    Index(#[from] satcast_store::IndexError),
    /// The acknowledgement server could not start.
    #[error(transparent)]
    Acks(#[from] acks::AckServerError),
    /// The control API could not start.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// A worker thread (queue watcher, preparation) could not start.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// What the loop's helper threads hand it.
#[derive(Debug)]
enum Input {
    /// The queue watcher found a new job file.
    Queued(Job),
    /// A preparation worker finished with a job (boxed: a manifest is large beside a job).
    Prepared(Box<Prepared>),
}

fn encode_checkpoint(checkpoint: &Checkpoint) -> Option<Vec<u8>> {
    bincode::encode_to_vec(checkpoint, bincode::config::standard()).ok()
}

fn decode_checkpoint(bytes: &[u8]) -> Option<Checkpoint> {
    bincode::decode_from_slice(bytes, bincode::config::standard().with_limit::<{ 1 << 24 }>()).ok().map(|(c, _)| c)
}

/// An instant for a wall-clock time (in the past: now).
fn instant_at(unix_secs: u64) -> Instant {
    let now = wall_unix_ms() / 1000;
    Instant::now() + Duration::from_secs(unix_secs.saturating_sub(now))
}

fn open_socket(config: &UplinkConfig) -> std::io::Result<UdpSocket> {
    let destination = config.downlink.destination;
    let socket = Socket::new(Domain::for_address(destination), Type::DGRAM, Some(Protocol::UDP))?;
    if let SocketAddr::V4(v4) = destination {
        if v4.ip().is_multicast() {
            socket.set_multicast_ttl_v4(config.downlink.ttl)?;
            socket.set_multicast_if_v4(&config.downlink.interface)?;
            // Receivers on the uplink host itself (tests, monitoring) see the stream too.
            socket.set_multicast_loop_v4(true)?;
        }
    }
    let _ = socket.set_send_buffer_size(4 * 1024 * 1024);
    let bind: SocketAddr = if destination.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    socket.bind(&bind.into())?;
    Ok(socket.into())
}

/// Starts the QUIC acknowledgement server on its own thread, if configured.
fn start_acks(config: &UplinkConfig, stop: Arc<AtomicBool>) -> Result<Option<Receiver<AckRequest>>, ServeError> {
    let Some(acks) = config.acks.clone() else { return Ok(None) };
    let keys = &config.keys_dir;
    let tls = acks::server_config(&keys.join(keys::CA_CERT_FILE), &keys.join(keys::UPLINK_CERT_FILE), &keys.join(keys::UPLINK_KEY_FILE))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(acks::PENDING_FEEDBACK_MAX);
    let revoked = Arc::new(acks::RevokedClients::new(keys.join(keys::REVOKED_RECEIVERS_FILE)));
    std::thread::Builder::new()
        .name("acks".into())
        .spawn(move || match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => {
                if let Err(error) = runtime.block_on(acks::serve(acks.listen, tls, tx, revoked, stop)) {
                    warn!(%error, "acknowledgement server stopped");
                }
            }
            Err(error) => warn!(%error, "cannot start the acknowledgement runtime"),
        })
        .map_err(|e| ServeError::Socket(std::io::Error::other(e)))?;
    Ok(Some(rx))
}

/// The daemon's state, owned by the datapath thread.
struct Uplink {
    config: UplinkConfig,
    store: Arc<UplinkStore>,
    queue: Queue,
    broadcaster: Broadcaster,
    /// Signs new manifests (on the preparation workers).
    signing_key: Arc<SigningKey>,
    socket: UdpSocket,
    /// Jobs waiting for a preparation worker, by id; bounded by the queue listing
    /// ([`crate::queue::QUEUED_JOBS_MAX`]).
    waiting: BTreeMap<String, Job>,
    /// Jobs being prepared, with the flag that cancels each.
    preparing: HashMap<String, Arc<AtomicBool>>,
    preparers: Preparers,
    airing: HashSet<String>,
    failed: HashSet<String>,
    live: LiveStates,
    /// When signing.cert last changed, to notice a rotation.
    key_modified: Option<SystemTime>,
    /// When revocations.signed last changed, to air a new list.
    revocations_modified: Option<SystemTime>,
}

/// Runs the uplink until `stop` is set.
pub fn serve(config: UplinkConfig, stop: Arc<AtomicBool>) -> Result<(), ServeError> {
    let signing_key = keys::load_signing_key(&config.keys_dir)?;
    let network_key = keys::load_network_key(&config.keys_dir)?;
    // The store first: it takes the state folder for this process, or refuses.
    let (store, how) = UplinkStore::open(&config.state_dir, wall_unix_ms() / 1000)?;
    let queue = Queue::open(&config.state_dir)?;
    if let IndexOpen::Quarantined { moved_to, why } = &how {
        warn!(moved_to = %moved_to.display(), %why, "index would not open: quarantined it; interrupted broadcasts restart with fresh signatures");
    }
    if store.receivers()?.is_empty() {
        let imported = store.import_divisions(AREAS_CSV)?;
        info!(imported, "receiver registry filled from the national division table");
    }
    let store = Arc::new(store);
    let socket = open_socket(&config).map_err(ServeError::Socket)?;
    let datagram_bytes_max = usize::from(config.downlink.mtu) - wire::IP_UDP_HEADER_BYTES;
    // Checked when the config was loaded.
    let symbol_size = wire::symbol_size_for_mtu(config.downlink.mtu).unwrap_or(1024);
    let plan = AirPlan { target_loss: config.carousel.target_loss, passes: config.carousel.passes };
    let broadcaster = Broadcaster::new(
        Instant::now(),
        BroadcastConfig {
            link_rate_bits_per_sec: config.downlink.link_rate_bits_per_sec,
            datagram_bytes_max,
            manifest_interval: Duration::from_millis(config.carousel.manifest_interval_ms),
            heartbeat_interval: Duration::from_millis(config.carousel.heartbeat_interval_ms),
            target_loss: config.carousel.target_loss,
            ..BroadcastConfig::default()
        },
        network_key,
        keys::load_signing_key(&config.keys_dir)?,
    );
    let live: LiveStates = Arc::new(Mutex::new(BTreeMap::new()));
    let acks = start_acks(&config, stop.clone())?;
    let token = control::ensure_token(&config.state_dir)?;
    let commands = control::start(&config.control.listen, store.clone(), queue.clone(), live.clone(), token, stop.clone())?;
    let opener = Opener {
        store: store.clone(),
        queue: queue.clone(),
        symbol_size,
        block_bytes_max: config.fec.block_bytes_max,
        manifest_lifetime_secs: config.carousel.manifest_lifetime_secs,
        plan,
        acks: config.acks.is_some(),
    };
    let (input, inputs) = sync_channel(INPUTS_MAX);
    let answer = input.clone();
    let preparers = Preparers::start(move |request| opener.open(request), move |done| answer.send(Input::Prepared(Box::new(done))).is_ok())
        .map_err(ServeError::Thread)?;
    queue.watch(stop.clone(), move |job| input.send(Input::Queued(job)).is_ok()).map_err(ServeError::Thread)?;
    info!(destination = %config.downlink.destination, rate_bits_per_sec = config.downlink.link_rate_bits_per_sec, symbol_size, "uplink started");
    let mut uplink = Uplink {
        config,
        store,
        queue,
        broadcaster,
        signing_key: Arc::new(signing_key),
        socket,
        waiting: BTreeMap::new(),
        preparing: HashMap::new(),
        preparers,
        airing: HashSet::new(),
        failed: HashSet::new(),
        key_modified: None,
        revocations_modified: None,
        live,
    };
    uplink.reload_revocations_if_changed();
    uplink.key_modified = uplink.signing_cert_modified();
    let mut next_key_check = Instant::now() + KEY_CHECK_INTERVAL;
    let mut next_checkpoint = Instant::now() + CHECKPOINT_INTERVAL;
    let mut buf = Vec::with_capacity(65_536);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let mut taken = false;
        while let Ok(input) = inputs.try_recv() {
            uplink.input(input);
            taken = true;
        }
        if taken {
            uplink.dispatch();
        }
        if let Some(acks) = &acks {
            uplink.record_feedback_batch(acks);
        }
        while let Ok(command) = commands.try_recv() {
            uplink.command(command);
        }
        if now >= next_checkpoint {
            next_checkpoint = now + CHECKPOINT_INTERVAL;
            uplink.checkpoint_all();
        }
        if now >= next_key_check {
            next_key_check = now + KEY_CHECK_INTERVAL;
            uplink.reload_signing_key_if_rotated();
            uplink.reload_revocations_if_changed();
        }
        while uplink.broadcaster.poll_transmit(Instant::now(), wall_unix_ms(), &mut buf) {
            if let Err(error) = uplink.socket.send_to(&buf, uplink.config.downlink.destination) {
                // The datagram is lost like any other on the carrier; FEC covers it.
                warn!(%error, "send failed");
            }
        }
        uplink.handle_events();
        let wake = uplink.broadcaster.poll_timeout().unwrap_or(now + SLEEP_MAX);
        let sleep = wake.saturating_duration_since(Instant::now()).min(SLEEP_MAX);
        // Sleeps on the helper threads' inputs, so a new or prepared job is taken up at once.
        match inputs.recv_timeout(sleep) {
            Ok(input) => {
                uplink.input(input);
                uplink.dispatch();
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Cannot happen while the loop holds the preparers; do not spin if it does.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(sleep),
        }
    }
    for cancel in uplink.preparing.values() {
        cancel.store(true, Ordering::Relaxed);
    }
    uplink.checkpoint_all();
    info!(stats = ?uplink.broadcaster.stats(), "uplink stopped");
    Ok(())
}

impl Uplink {
    /// Takes one input from a helper thread. New jobs and freed workers take effect at the
    /// next [`Uplink::dispatch`], once per batch of inputs.
    fn input(&mut self, input: Input) {
        match input {
            Input::Queued(job) => {
                let id = &job.object_id;
                if !(self.airing.contains(id) || self.failed.contains(id) || self.preparing.contains_key(id)) {
                    self.waiting.insert(id.clone(), job);
                }
            }
            Input::Prepared(done) => {
                self.preparers.answered();
                self.prepared(*done);
            }
        }
    }

    /// Hands waiting jobs to free preparation workers: emergencies first, then by class,
    /// then oldest first.
    fn dispatch(&mut self) {
        loop {
            let rank = |job: &Job| (job.priority().unwrap_or(Priority::Normal), job.queued_unix_secs);
            let Some(id) = self.waiting.values().min_by_key(|job| rank(job)).map(|job| job.object_id.clone()) else { return };
            let Some(job) = self.waiting.remove(&id) else { return };
            let emergency = job.priority().is_ok_and(|p| p == Priority::Emergency);
            let cancel = Arc::new(AtomicBool::new(false));
            let request = Prepare { job, signing_key: self.signing_key.clone(), cancel: cancel.clone() };
            if let Err(request) = self.preparers.request(request, emergency) {
                // Every worker this job may use is busy: it waits for the next answer.
                self.waiting.insert(id, request.job);
                return;
            }
            if let Ok(id) = id.parse::<ObjectId>() {
                self.set_live(id.into(), "preparing");
            }
            info!(object = %id, "preparing");
            self.preparing.insert(id, cancel);
        }
    }

    /// Takes a preparation worker's answer: airs the job, or reports why not.
    fn prepared(&mut self, done: Prepared) {
        let Prepared { job, outcome } = done;
        let id = job.object_id.clone();
        let cancelled = self.preparing.remove(&id).is_some_and(|cancel| cancel.load(Ordering::Relaxed));
        if let Ok(object_id) = job.object_id() {
            if let Ok(mut live) = self.live.lock() {
                live.remove(&object_id);
            }
            if cancelled {
                // The record may have been written just before the cancel was seen.
                set_outcome(&self.store, object_id, "cancelled");
            }
        }
        let added = match outcome {
            _ if cancelled => {
                info!(object = %id, "preparation cancelled");
                Ok(false)
            }
            // It left the queue (finished, cancelled) before a worker took it up.
            Err(PrepareError::Gone) => Ok(false),
            Err(error) => Err(error.to_string()),
            Ok(object) => self.broadcaster.add_object(Instant::now(), object).map(|()| true).map_err(|e| e.to_string()),
        };
        match added {
            Ok(true) => {
                info!(object = %id, kind = %job.kind, name = %job.name, version = job.version, targets = ?job.targets, priority = %job.priority, "airing");
                self.airing.insert(id);
            }
            Ok(false) => {}
            Err(error) => {
                warn!(object = %id, %error, "cannot air job");
                self.failed.insert(id);
            }
        }
    }

    /// Records a batch of acknowledgements durably, then answers them.
    fn record_feedback_batch(&mut self, acks: &Receiver<AckRequest>) {
        let mut replies = Vec::new();
        while let Ok(request) = acks.try_recv() {
            let reply = match record_feedback(&self.store, &mut self.broadcaster, &request.feedback) {
                Ok(()) => AckReply::Recorded,
                Err(error) => {
                    warn!(%error, "cannot record feedback");
                    AckReply::Busy
                }
            };
            replies.push((request.reply, reply));
            if replies.len() >= FEEDBACK_BATCH_MAX {
                break;
            }
        }
        if !replies.is_empty() {
            // Durable before the county is told, so an acknowledged message is never lost.
            let flushed = self.store.flush().is_ok();
            for (channel, reply) in replies {
                let _ = channel.send(if flushed { reply } else { AckReply::Busy });
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Cancel { object_id, reply } => {
                let id = ObjectId(object_id).to_string();
                // Being prepared: the worker stops at its next block, and what it hands back
                // is dropped (see `prepared`).
                let preparing = self.preparing.get(&id).map(|cancel| cancel.store(true, Ordering::Relaxed)).is_some();
                let answer = if self.broadcaster.cancel(object_id)
                    || preparing
                    || self.waiting.remove(&id).is_some()
                    || self
                        .queue
                        .find(&id)
                        .is_some_and(|_| !self.airing.contains(&id) && self.store.broadcast(object_id).ok().flatten().is_none())
                {
                    self.airing.remove(&id);
                    set_outcome(&self.store, object_id, "cancelled");
                    if let Err(error) = self.queue.finish(&id) {
                        warn!(object = %id, %error, "cannot move the cancelled job to done/");
                    }
                    info!(object = %id, "cancelled by an operator");
                    Ok(serde_json::json!({ "cancelled": id }))
                } else if self.store.broadcast(object_id).ok().flatten().is_some() {
                    Err((409, format!("broadcast {id} is not airing")))
                } else {
                    Err((404, format!("unknown broadcast {id}")))
                };
                let _ = reply.send(answer);
            }
            Command::Reair { object_id, prefixes, reply } => {
                let _ = reply.send(self.reair(object_id, prefixes));
            }
        }
    }

    /// Queues a finished broadcast again for the counties (under `prefixes`) that lack it.
    fn reair(&mut self, object_id: u64, prefixes: Option<Vec<String>>) -> Result<serde_json::Value, (u16, String)> {
        let id = ObjectId(object_id).to_string();
        let Some(mut record) = self.store.broadcast(object_id).map_err(|e| (503, e.to_string()))? else {
            return Err((404, format!("unknown broadcast {id}")));
        };
        if record.outcome.is_none() {
            return Err((409, format!("broadcast {id} is still airing")));
        }
        let Some((job, _)) = self.queue.find(&id) else { return Err((404, format!("the job file of {id} is gone"))) };
        let delivered: HashSet<String> = self
            .store
            .ledger(object_id)
            .map_err(|e| (503, e.to_string()))?
            .into_iter()
            .filter(|(_, e)| matches!(e.state, LedgerState::Delivered { .. }))
            .map(|(c, _)| c)
            .collect();
        let candidates: Vec<String> = if record.targets.is_empty() {
            self.store
                .receivers()
                .map_err(|e| (503, e.to_string()))?
                .into_iter()
                .filter(|(code, r)| r.last_seen_unix_secs.is_some() && job.targets.iter().any(|p| code.starts_with(p.as_str())))
                .map(|(code, _)| code)
                .collect()
        } else {
            record.targets.clone()
        };
        let targets: Vec<String> = candidates
            .into_iter()
            .filter(|c| !delivered.contains(c))
            .filter(|c| prefixes.as_ref().is_none_or(|p| p.iter().any(|p| c.starts_with(p.as_str()))))
            .collect();
        if targets.is_empty() {
            return Err((409, format!("every targeted county under those prefixes already has {id}")));
        }
        record.targets = targets.clone();
        self.store.put_broadcast(object_id, &record).and_then(|()| self.store.flush()).map_err(|e| (503, e.to_string()))?;
        self.queue.requeue(&id).map_err(|e| (503, e.to_string()))?;
        self.failed.remove(&id);
        info!(object = %id, counties = targets.len(), "re-air requested");
        self.waiting.insert(id.clone(), job);
        self.dispatch();
        Ok(serde_json::json!({ "reaired": id, "targets": targets.len() }))
    }

    fn handle_events(&mut self) {
        while let Some(event) = self.broadcaster.poll_event() {
            match event {
                BroadcastEvent::CarouselFinished { object_id }
                | BroadcastEvent::Completed { object_id, .. }
                | BroadcastEvent::DeadlinePassed { object_id, .. } => {
                    let id = ObjectId(object_id).to_string();
                    let outcome = match event {
                        BroadcastEvent::Completed { .. } => "completed",
                        BroadcastEvent::DeadlinePassed { .. } => "deadline",
                        _ => "aired",
                    };
                    info!(object = %id, outcome, stats = ?self.broadcaster.stats(), "broadcast finished");
                    set_outcome(&self.store, object_id, outcome);
                    self.airing.remove(&id);
                    if let Err(error) = self.queue.finish(&id) {
                        warn!(object = %id, %error, "cannot move finished job to done/");
                    }
                }
                BroadcastEvent::RoundStarted { object_id, round, symbols } => {
                    info!(object = %ObjectId(object_id), round, symbols, "round started");
                    self.set_live(object_id, "airing");
                }
                BroadcastEvent::RoundEnded { .. } => {}
                BroadcastEvent::Idle { object_id, incomplete } => {
                    info!(object = %ObjectId(object_id), incomplete = incomplete.len(), "no county reports a need: idle until one does");
                    self.set_live(object_id, "idle");
                }
                BroadcastEvent::SourceFailed { object_id, error } => {
                    let id = ObjectId(object_id).to_string();
                    warn!(object = %id, %error, "payload unreadable; broadcast withdrawn");
                    self.airing.remove(&id);
                    self.failed.insert(id);
                }
            }
        }
    }

    fn signing_cert_modified(&self) -> Option<SystemTime> {
        std::fs::metadata(self.config.keys_dir.join(keys::SIGNING_CERT_FILE)).and_then(|m| m.modified()).ok()
    }

    /// After `keys rotate`, signs with the new key: new broadcasts' manifests and every
    /// heartbeat carry its certificate, which chains to the root counties pin.
    fn reload_signing_key_if_rotated(&mut self) {
        let modified = self.signing_cert_modified();
        if modified.is_none() || modified == self.key_modified {
            return;
        }
        match (keys::load_signing_key(&self.config.keys_dir), keys::load_signing_key(&self.config.keys_dir)) {
            (Ok(for_heartbeats), Ok(for_manifests)) => {
                self.key_modified = modified;
                info!(serial = for_manifests.certificate().body.serial, "signing key rotated: airing its certificate from now on");
                self.broadcaster.set_signing_key(for_heartbeats);
                self.signing_key = Arc::new(for_manifests);
            }
            (Err(error), _) | (_, Err(error)) => warn!(%error, "signing key files changed but cannot be loaded yet; keeping the old key"),
        }
    }

    /// Airs the root-signed revocation list from keys/revocations.signed, if it changed.
    fn reload_revocations_if_changed(&mut self) {
        let path = self.config.keys_dir.join(keys::REVOCATIONS_FILE);
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if modified.is_none() || modified == self.revocations_modified {
            return;
        }
        match std::fs::read(&path) {
            Ok(bytes) if satcast_protocol::trust::SignedRevocation::from_bytes(&bytes).is_ok() => {
                self.revocations_modified = modified;
                info!(path = %path.display(), "airing the revocation list after every heartbeat");
                self.broadcaster.set_revocation(Some(bytes));
            }
            Ok(_) => warn!(path = %path.display(), "revocation list is malformed; not airing it"),
            Err(error) => warn!(path = %path.display(), %error, "cannot read the revocation list"),
        }
    }

    fn set_live(&self, object_id: u64, state: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.insert(object_id, state.to_owned());
        }
    }

    /// Writes down where every airing broadcast stands.
    fn checkpoint_all(&self) {
        for object_id in self.broadcaster.airing() {
            let Some(checkpoint) = self.broadcaster.checkpoint(object_id).as_ref().and_then(encode_checkpoint) else { continue };
            match self.store.broadcast(object_id) {
                Ok(Some(mut record)) => {
                    record.checkpoint = Some(checkpoint);
                    if let Err(error) = self.store.put_broadcast(object_id, &record) {
                        warn!(object = %ObjectId(object_id), %error, "cannot checkpoint");
                    }
                }
                Ok(None) => {}
                Err(error) => warn!(%error, "cannot read a broadcast record"),
            }
        }
        if let Err(error) = self.store.flush() {
            warn!(%error, "cannot flush the index");
        }
    }
}

/// What a preparation worker needs to open a job: the index, the queue and the settings.
struct Opener {
    store: Arc<UplinkStore>,
    queue: Queue,
    symbol_size: u16,
    block_bytes_max: u64,
    manifest_lifetime_secs: u64,
    plan: AirPlan,
    /// Whether the acknowledgement server runs.
    acks: bool,
}

impl Opener {
    /// Feedback-driven repair for the enrolled counties the job targets (those that have
    /// ever said hello), or a carousel when there is no acknowledgement server, the job
    /// asks for none, or no targeted county is enrolled yet.
    fn delivery_for(&self, job: &Job, only: Option<&[String]>) -> (Delivery, Vec<String>) {
        if !self.acks || !job.feedback {
            return (Delivery::Carousel(self.plan), Vec::new());
        }
        let targets: Vec<String> = match only {
            Some(only) => only.to_vec(),
            None => self
                .store
                .receivers()
                .unwrap_or_default()
                .into_iter()
                .filter(|(code, record)| record.last_seen_unix_secs.is_some() && job.targets.iter().any(|p| code.starts_with(p.as_str())))
                .map(|(code, _)| code)
                .collect(),
        };
        if targets.is_empty() {
            warn!(object = %job.object_id, "no enrolled county matches the targets: airing as a carousel");
            return (Delivery::Carousel(self.plan), Vec::new());
        }
        (Delivery::Feedback { targets: targets.clone() }, targets)
    }

    /// Opens a queued job as a new broadcast; continues it if it had started airing (a
    /// restart); re-signs it with a fresh lifetime if an operator asked to re-air it.
    fn open(&self, request: &Prepare) -> Result<NewObject, PrepareError> {
        let (job, cancel) = (&request.job, request.cancel.as_ref());
        if !self.queue.is_queued(&job.object_id) {
            return Err(PrepareError::Gone);
        }
        let object_id = job.object_id()?;
        let payload = self.queue.payload_path(&job.object_id);
        let now_secs = wall_unix_ms() / 1000;
        let priority = job.priority()?;
        let schedule = |mut object: NewObject| {
            object.priority = priority;
            object.not_before = job.not_before_unix_secs.map(instant_at);
            object.deadline = job.deadline_unix_secs.map(instant_at);
            object
        };
        if let Some(mut record) = self.store.broadcast(object_id)? {
            let checkpoint = record.checkpoint.as_deref().and_then(decode_checkpoint);
            let only = (!record.targets.is_empty()).then(|| record.targets.clone());
            let (delivery, targets) = self.delivery_for(job, only.as_deref());
            if record.outcome.is_some() {
                // Re-aired by an operator: same broadcast, a fresh lifetime.
                let manifest = stored_manifest(&record.signed_manifest).map_err(PrepareError::Stored)?;
                let manifest =
                    Manifest { created_unix_secs: now_secs, expires_unix_secs: now_secs + self.manifest_lifetime_secs, ..manifest };
                record.signed_manifest = request.signing_key.sign_manifest(&manifest)?.to_bytes();
                record.outcome = None;
            }
            record.targets = targets;
            if cancel.load(Ordering::Relaxed) {
                return Err(PrepareError::Cancelled);
            }
            self.store.put_broadcast(object_id, &record).and_then(|()| self.store.flush())?;
            info!(object = %job.object_id, round = checkpoint.as_ref().map(|c| c.round), "resuming interrupted broadcast");
            return prepare::resume(record.signed_manifest, &payload, delivery, checkpoint).map(schedule);
        }
        let (delivery, targets) = self.delivery_for(job, None);
        let object = prepare(
            job,
            &payload,
            self.symbol_size,
            self.block_bytes_max,
            &request.signing_key,
            delivery,
            now_secs,
            self.manifest_lifetime_secs,
            cancel,
        )?;
        // A record would make the cancelled job look like an interrupted broadcast.
        if cancel.load(Ordering::Relaxed) {
            return Err(PrepareError::Cancelled);
        }
        // Written before the first symbol airs, so a restart never signs it anew.
        let record = BroadcastRecord {
            signed_manifest: object.signed_manifest.clone(),
            kind: job.kind.clone(),
            name: job.name.clone(),
            version: job.version,
            size_bytes: object.manifest.size_bytes,
            prefixes: job.targets.clone(),
            targets,
            priority: job.priority.clone(),
            started_unix_secs: now_secs,
            ..BroadcastRecord::default()
        };
        self.store.put_broadcast(object_id, &record).and_then(|()| self.store.flush())?;
        Ok(schedule(object))
    }
}

fn stored_manifest(signed: &[u8]) -> Result<Manifest, String> {
    let signed = SignedManifest::from_bytes(signed).map_err(|e| e.to_string())?;
    Manifest::from_bytes(&signed.manifest).map_err(|e| e.to_string())
}

/// Records one authenticated feedback message: registry, ledger and the broadcast machine.
fn record_feedback(store: &UplinkStore, broadcaster: &mut Broadcaster, feedback: &Feedback) -> Result<(), satcast_store::IndexError> {
    let now_secs = wall_unix_ms() / 1000;
    let county = feedback.county_code.as_str();
    let mut record = store.receiver(county)?.unwrap_or_default();
    record.last_seen_unix_secs = Some(now_secs);
    if let FeedbackMessage::Hello { software_version, free_disk_bytes, heartbeat_age_ms } = &feedback.message {
        record.software_version = Some(software_version.clone());
        record.free_disk_bytes = Some(*free_disk_bytes);
        record.heartbeat_age_secs = heartbeat_age_ms.map(|ms| ms / 1000);
    }
    store.put_receiver(county, &record)?;
    // Reports about broadcasts this uplink never aired do not grow the ledger.
    let known = |object_id: u64| store.broadcast(object_id).map(|r| r.is_some());
    match &feedback.message {
        FeedbackMessage::Progress { object_id, .. }
        | FeedbackMessage::Complete { object_id, .. }
        | FeedbackMessage::Rejected { object_id, .. }
        | FeedbackMessage::HookResult { object_id, .. }
            if !known(*object_id)? =>
        {
            warn!(object = %ObjectId(*object_id), county, "feedback about an unknown broadcast ignored");
            return Ok(());
        }
        _ => {}
    }
    match &feedback.message {
        FeedbackMessage::Hello { .. } => {}
        FeedbackMessage::Progress { object_id, needs, .. } => {
            let needed = needs.iter().map(|n| u64::from(*n)).sum();
            store.record(*object_id, county, LedgerState::InProgress { needed }, now_secs)?;
        }
        FeedbackMessage::Complete { object_id, object_hash } => {
            let expected = store.broadcast(*object_id)?.and_then(|r| stored_manifest(&r.signed_manifest).ok()).map(|m| m.object_hash);
            if expected.is_some_and(|hash| hash != *object_hash) {
                warn!(object = %ObjectId(*object_id), county, "county reports a completion with the wrong hash: not recorded");
                return Ok(());
            }
            if store.record(*object_id, county, LedgerState::Delivered { hash: *object_hash }, now_secs)? {
                info!(object = %ObjectId(*object_id), county, "county complete");
            }
        }
        FeedbackMessage::HookResult { object_id, success, detail } => {
            if *success {
                info!(object = %ObjectId(*object_id), county, %detail, "post-receive hook succeeded");
            } else {
                warn!(object = %ObjectId(*object_id), county, %detail, "post-receive hook failed");
            }
            store.record_hook(*object_id, county, *success, detail, now_secs)?;
        }
        FeedbackMessage::Rejected { object_id, reason } => {
            if store.record(*object_id, county, LedgerState::Rejected { reason: reason.clone() }, now_secs)? {
                warn!(object = %ObjectId(*object_id), county, %reason, "county refused the broadcast");
            }
        }
    }
    broadcaster.handle_feedback(Instant::now(), feedback);
    Ok(())
}

fn set_outcome(store: &UplinkStore, object_id: u64, outcome: &str) {
    if let Ok(Some(mut record)) = store.broadcast(object_id) {
        record.outcome = Some(outcome.to_owned());
        if store.put_broadcast(object_id, &record).and_then(|()| store.flush()).is_err() {
            warn!(object = %ObjectId(object_id), "cannot record the outcome");
        }
    }
}
