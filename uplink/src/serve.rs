//! The uplink daemon: the executor of the uplink node
//! ([`satcast_protocol::uplink_node::UplinkNode`]), which makes every decision (which job
//! to take up, whom to target, what feedback records, when a broadcast ended). This module
//! moves jobs, feedback and operators' commands into the node, datagrams out of it, and
//! carries out its requests.
//!
//! The pacing thread (the loop in [`serve`]) runs the node and the socket, and never waits
//! on a disk: the queue folder is watched by its own thread, jobs are prepared (read,
//! hashed, signed) by the workers of [`Preparers`], and index writes, flushes and queue file
//! moves are done by the storage worker, which flushes once per batch before any completion
//! goes back. All of them hand the loop their [`Input`] through one channel, which the loop
//! sleeps on, so a new job, a prepared one or a durable record is taken up at once.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use satcast_daemon::clock::wall_unix_ms;
use satcast_protocol::ObjectId;
use satcast_protocol::broadcast::{AirPlan, BroadcastConfig, BroadcastEvent, Checkpoint, Delivery, NewObject, Priority};
use satcast_protocol::fec::Oti;
use satcast_protocol::feedback::{AckReply, Feedback, FeedbackMessage};
use satcast_protocol::manifest::Manifest;
use satcast_protocol::network_key::NextNetworkKey;
use satcast_protocol::sizing::SizingConfig;
use satcast_protocol::trust::{NetworkKey, SignedManifest, SigningKey};
use satcast_protocol::uplink_node::{
    CommandAnswer, CommandRefusal, Completion, KnownBroadcast, LedgerDecision, Outcome, PrepareFailure, Request, Resume, UplinkEvent,
    UplinkJob, UplinkNode, UplinkNodeConfig,
};
use satcast_protocol::wire;
use satcast_store::{BroadcastRecord, IndexOpen, LedgerState, UplinkStore};
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tracing::{info, warn};

use crate::acks::{self, AckRequest};
use crate::admit;
use crate::alarms::AlarmKind;
use crate::bases::Bases;
use crate::config::{CodingConfig, UplinkConfig};
use crate::control::{self, Command, LiveStates};
use crate::dashboard::Shared;
use crate::keys::{self, KeysError};
use crate::metrics::{self, UplinkMetrics};
use crate::prepare::{self, Coding, PREPARATIONS_MAX, Prepare, PrepareError, Prepared, Preparers, prepare};
use crate::queue::{Job, Queue, QueueError};
use tokio::sync::oneshot;

/// The longest the loop sleeps, so a stop request, a command or a newly queued job is
/// noticed promptly.
const SLEEP_MAX: Duration = Duration::from_millis(20);
/// Feedback messages handed to the node per loop turn, so the carrier is never starved.
const FEEDBACK_BATCH_MAX: usize = 256;
/// How often the signing certificate's file is checked for a rotation.
const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Inputs from the queue watcher and the preparation workers not yet taken by the loop:
/// room for every answer and a burst of newly queued jobs (the watcher waits beyond that).
const INPUTS_MAX: usize = 64 + PREPARATIONS_MAX;
/// Requests the storage worker writes before one flush: a burst of feedback costs one
/// fsync, not one each.
const STORE_BATCH_MAX: usize = 256;
/// How often the bytes aired and the rate of each broadcast are published for `list`.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long a stopping daemon waits for the storage worker's last checkpoints.
const STOP_WAIT_MAX: Duration = Duration::from_secs(30);

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
    /// The folder of patch bases (state_dir/bases) cannot be created.
    #[error("cannot create the folder of patch bases: {0}")]
    Bases(std::io::Error),
}

/// What the loop's helper threads hand it.
#[derive(Debug)]
enum Input {
    /// The queue watcher found a new job file.
    Queued(Job),
    /// A preparation worker finished with a job (boxed: a manifest is large beside a job).
    Prepared(Box<Prepared>),
    /// The storage worker finished a request.
    Stored(Completion),
}

fn encode_checkpoint(checkpoint: &Checkpoint) -> Option<Vec<u8>> {
    bincode::encode_to_vec(checkpoint, bincode::config::standard()).ok()
}

fn decode_checkpoint(bytes: &[u8]) -> Option<Checkpoint> {
    bincode::decode_from_slice(bytes, bincode::config::standard().with_limit::<{ 1 << 24 }>()).ok().map(|(c, _)| c)
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
        .spawn(move || match acks::runtime() {
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

/// The daemon's state, owned by the pacing thread: the node, and what executes its
/// requests.
struct Uplink {
    config: UplinkConfig,
    store: Arc<UplinkStore>,
    queue: Queue,
    node: UplinkNode,
    /// Signs new manifests (on the preparation workers).
    signing_key: Arc<SigningKey>,
    socket: UdpSocket,
    preparers: Preparers,
    /// The queue's job files the node was handed, by id: what a preparation worker reads.
    jobs: HashMap<u64, Job>,
    /// The flag that cancels each running preparation.
    cancels: HashMap<u64, Arc<AtomicBool>>,
    /// The storage worker: index writes and flushes, queue file moves, command answers.
    store_work: Sender<StoreWork>,
    /// Counties waiting for the answer to a feedback message, by the node's token.
    ack_replies: HashMap<u64, oneshot::Sender<AckReply>>,
    /// Operators waiting for the answer to a command, by the node's token.
    command_replies: HashMap<u64, CommandReply>,
    next_token: u64,
    /// Feedback answered busy because too much waited for the store, since the last summary.
    busy_feedback: u64,
    live: LiveStates,
    /// Bytes per FEC symbol on the air.
    symbol_size: u16,
    /// Symbols of each broadcast's finished rounds and of its current round, from the
    /// node's round events: what it aired even if it ended between two samples.
    rounds: HashMap<u64, (u64, u64)>,
    /// Bytes per symbol of each airing broadcast (smaller than `symbol_size` for an object
    /// under one symbol), for the bytes aired once it has ended.
    symbol_bytes: HashMap<u64, u64>,
    /// When the bytes aired were last sampled.
    progress_at: Instant,
    /// When signing.cert last changed, to notice a rotation.
    key_modified: Option<SystemTime>,
    /// When revocations.signed last changed, to air a new list.
    revocations_modified: Option<SystemTime>,
    /// When key-tree.state last changed, to air the confidential key tree's new wraps.
    key_tree_modified: Option<SystemTime>,
    /// When the issued and revoked receiver lists last changed, to stop waiting for counties
    /// revoked since.
    receivers_lists_modified: Option<(Option<SystemTime>, Option<SystemTime>)>,
    /// When keys/network.key.next last changed, and the rotation it announces (activation,
    /// key), aired until it takes over.
    next_network_key_modified: Option<SystemTime>,
    next_network_key: Option<(u64, NetworkKey)>,
    /// While a switch's handover lasts (`keys::NETWORK_KEY_HANDOVER_SECS`): when it ends.
    handover_until: Option<u64>,
    /// Each airing broadcast's class (an index of `metrics::CLASSES`), for the bytes on air.
    classes: HashMap<u64, usize>,
    /// Metrics, alarms and the dashboard's samples.
    shared: Shared,
}

type CommandReply = SyncSender<Result<serde_json::Value, (u16, String)>>;

/// Work for the storage worker, in the order the node asked for it.
enum StoreWork {
    /// A store or queue request of the node.
    Node(Request),
    /// An operator's answer, sent once the writes before it are durable.
    Answer { reply: CommandReply, answer: Result<CommandAnswer, CommandRefusal> },
    /// Everything before it is done: say so and stop.
    Stop(SyncSender<()>),
}

/// The node's view of a queued job. The kind is checked here too, so a job no worker can
/// prepare is refused before it takes one.
fn node_job(job: &Job) -> Result<UplinkJob, QueueError> {
    job.kind()?;
    Ok(UplinkJob {
        object_id: job.object_id()?,
        prefixes: job.targets.clone(),
        feedback: job.feedback,
        priority: job.priority()?,
        queued_unix_secs: job.queued_unix_secs,
        not_before_unix_ms: job.not_before_unix_secs.map(|secs| secs.saturating_mul(1000)),
        deadline_unix_ms: job.deadline_unix_secs.map(|secs| secs.saturating_mul(1000)),
    })
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
        let imported = store.import_divisions(crate::divisions::AREAS_CSV)?;
        info!(imported, "receiver registry filled from the national division table");
    }
    let store = Arc::new(store);
    let socket = open_socket(&config).map_err(ServeError::Socket)?;
    let datagram_bytes_max = usize::from(config.downlink.mtu) - wire::IP_UDP_HEADER_BYTES;
    // Checked when the config was loaded.
    let symbol_size = wire::symbol_size_for_mtu(config.downlink.mtu).unwrap_or(1024);
    let plan = AirPlan { target_loss: config.carousel.target_loss, passes: config.carousel.passes };
    let mut node = UplinkNode::new(
        Instant::now(),
        UplinkNodeConfig {
            broadcast: BroadcastConfig {
                link_rate_bits_per_sec: config.downlink.link_rate_bits_per_sec,
                datagram_bytes_max,
                manifest_interval: Duration::from_millis(config.carousel.manifest_interval_ms),
                heartbeat_interval: Duration::from_millis(config.carousel.heartbeat_interval_ms),
                target_loss: config.carousel.target_loss,
                // A county not heard from yet is assumed to lose what a carousel is sized for.
                sizing: SizingConfig { prior_loss: config.carousel.target_loss, ..SizingConfig::default() },
                ..BroadcastConfig::default()
            },
            plan,
            acks: config.acks.is_some(),
            preparations_max: PREPARATIONS_MAX,
        },
        network_key,
        keys::load_signing_key(&config.keys_dir)?,
    );
    for (object_id, record) in store.broadcasts()? {
        let manifest = stored_manifest(&record.signed_manifest).ok();
        if let Some(manifest) = &manifest {
            node.note_aired(manifest);
        }
        let object_hash = manifest.map(|m| m.delivered_hash());
        let outcome = record.outcome.as_deref().map(Outcome::parse);
        node.load_broadcast(object_id, KnownBroadcast { object_hash, targets: record.targets, outcome });
    }
    node.set_enrolled(store.receivers()?.into_iter().filter(|(_, r)| r.last_seen_unix_secs.is_some()).map(|(code, _)| code));
    let live: LiveStates = Arc::new(Mutex::new(BTreeMap::new()));
    let acks = start_acks(&config, stop.clone())?;
    let token = control::ensure_token(&config.state_dir)?;
    let viewer_token = control::ensure_viewer_token(&config)?;
    // The largest object the FEC settings can carry: what `send` may upload.
    let object_bytes_max = u64::from(satcast_protocol::fec::SOURCE_BLOCKS_MAX).saturating_mul(config.fec.block_bytes_max);
    let shared = Shared::new(&config);
    let settings = control::Settings {
        token,
        object_bytes_max,
        listen: config.control.listen.clone(),
        dashboard_listen: config.dashboard.as_ref().map(|d| d.listen.clone()),
        viewer_token,
        body_stall: Duration::from_secs(config.control.body_stall_secs),
    };
    let commands = control::start(settings, store.clone(), queue.clone(), live.clone(), shared.clone(), stop.clone())?;
    let opener = Opener {
        store: store.clone(),
        queue: queue.clone(),
        bases: Bases::open(&config.state_dir).map_err(ServeError::Bases)?,
        coding: config.coding.clone(),
        keys_dir: config.keys_dir.clone(),
        symbol_size,
        block_bytes_max: config.fec.block_bytes_max,
        manifest_lifetime_secs: config.carousel.manifest_lifetime_secs,
    };
    let (input, inputs) = sync_channel(INPUTS_MAX);
    let answer = input.clone();
    let preparers = Preparers::start(move |request| opener.open(request), move |done| answer.send(Input::Prepared(Box::new(done))).is_ok())
        .map_err(ServeError::Thread)?;
    let store_work = start_store_worker(store.clone(), queue.clone(), input.clone(), shared.clone()).map_err(ServeError::Thread)?;
    let refuser = queue.clone();
    queue
        .watch(stop.clone(), move |job| {
            // Admission, on the watcher's thread (the move is disk work): a job file that did
            // not come through the control API, as an older build wrote them, is checked too.
            if let Err(refusal) = admit::check(&job) {
                warn!(object = %job.object_id, reason = %refusal, "refused a queued job: it will not air");
                if let Err(error) = refuser.refuse(&job.object_id, &refusal.0) {
                    warn!(object = %job.object_id, %error, "cannot move the refused job to refused/");
                }
                return true;
            }
            input.send(Input::Queued(job)).is_ok()
        })
        .map_err(ServeError::Thread)?;
    info!(destination = %config.downlink.destination, rate_bits_per_sec = config.downlink.link_rate_bits_per_sec, symbol_size, "uplink started");
    let mut uplink = Uplink {
        config,
        store,
        queue,
        node,
        signing_key: Arc::new(signing_key),
        socket,
        preparers,
        jobs: HashMap::new(),
        cancels: HashMap::new(),
        store_work,
        ack_replies: HashMap::new(),
        command_replies: HashMap::new(),
        next_token: 0,
        busy_feedback: 0,
        key_modified: None,
        revocations_modified: None,
        key_tree_modified: None,
        receivers_lists_modified: None,
        next_network_key_modified: None,
        next_network_key: None,
        handover_until: None,
        live,
        symbol_size,
        rounds: HashMap::new(),
        symbol_bytes: HashMap::new(),
        progress_at: Instant::now(),
        classes: HashMap::new(),
        shared,
    };
    uplink.reload_revocations_if_changed();
    uplink.reload_key_tree_if_changed(false);
    uplink.reload_revoked_counties_if_changed(Instant::now());
    uplink.reload_next_network_key_if_changed(false);
    uplink.reload_network_key_handover();
    uplink.key_modified = uplink.signing_cert_modified();
    let mut next_key_check = Instant::now() + KEY_CHECK_INTERVAL;
    let mut buf = Vec::with_capacity(65_536);
    uplink.shared.metrics.loop_alive(wall_unix_ms());
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while let Ok(input) = inputs.try_recv() {
            uplink.input(input);
        }
        if let Some(acks) = &acks {
            uplink.take_feedback(acks);
        }
        while let Ok(command) = commands.try_recv() {
            uplink.command(command);
        }
        uplink.node.handle_timeout(now);
        if now.saturating_duration_since(uplink.progress_at) >= PROGRESS_INTERVAL {
            uplink.publish_progress(now);
            uplink.shared.metrics.loop_alive(wall_unix_ms());
        }
        if now >= next_key_check {
            next_key_check = now + KEY_CHECK_INTERVAL;
            uplink.reload_signing_key_if_rotated();
            uplink.reload_revocations_if_changed();
            uplink.reload_key_tree_if_changed(false);
            uplink.reload_revoked_counties_if_changed(now);
            uplink.reload_next_network_key_if_changed(false);
            uplink.activate_network_key_if_due();
            if uplink.handover_until.is_some_and(|until| wall_unix_ms() / 1000 >= until) {
                uplink.reload_network_key_handover();
            }
            if uplink.busy_feedback > 0 {
                warn!(messages = std::mem::take(&mut uplink.busy_feedback), "feedback answered busy: too much waits for the index");
            }
        }
        uplink.execute();
        while uplink.node.poll_transmit(Instant::now(), wall_unix_ms(), &mut buf) {
            if let Err(error) = uplink.socket.send_to(&buf, uplink.config.downlink.destination) {
                // The datagram is lost like any other on the carrier; FEC covers it.
                warn!(%error, "send failed");
            }
            uplink.count_aired(&buf);
        }
        uplink.execute();
        let sleep = uplink.node.poll_timeout().saturating_duration_since(Instant::now()).min(SLEEP_MAX);
        // Sleeps on the helper threads' inputs, so a new or prepared job is taken up at once.
        match inputs.recv_timeout(sleep) {
            Ok(input) => {
                uplink.input(input);
                uplink.execute();
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Cannot happen while the loop holds the preparers; do not spin if it does.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(sleep),
        }
    }
    for cancel in uplink.cancels.values() {
        cancel.store(true, Ordering::Relaxed);
    }
    uplink.node.checkpoint_all();
    uplink.execute();
    uplink.wait_for_store(&inputs);
    info!(stats = ?uplink.node.stats(), "uplink stopped");
    Ok(())
}

impl Uplink {
    /// Takes one input from a helper thread to the node.
    fn input(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Queued(job) => match node_job(&job) {
                Ok(node_job) => {
                    self.jobs.insert(node_job.object_id, job);
                    self.node.handle_queued(node_job);
                }
                // The watcher announces a job file once: this is said once.
                Err(error) => warn!(object = %job.object_id, %error, "cannot air job"),
            },
            Input::Prepared(done) => {
                self.preparers.answered();
                let Prepared { job, outcome } = *done;
                let Ok(object_id) = job.object_id() else { return };
                self.cancels.remove(&object_id);
                // Known before the first progress sample: an object that ends before one
                // (a small one) still counts its bytes aired in its own symbol size.
                if let Some(oti) = outcome.as_ref().ok().and_then(|object| Oti::decode(&object.manifest.oti).ok()) {
                    self.symbol_bytes.insert(object_id, u64::from(oti.symbol_size));
                }
                let result = outcome.map(Box::new).map_err(|error| match error {
                    PrepareError::Gone => PrepareFailure::Gone,
                    PrepareError::Cancelled => PrepareFailure::Cancelled,
                    error => PrepareFailure::Failed(error.to_string()),
                });
                self.node.handle_completion(now, wall_unix_ms(), Completion::Prepared { object_id, result });
            }
            Input::Stored(completion) => self.node.handle_completion(now, wall_unix_ms(), completion),
        }
    }

    /// Carries out the node's requests and logs its events, until it has none.
    fn execute(&mut self) {
        loop {
            let mut failed = Vec::new();
            while let Some(request) = self.node.poll_request() {
                match request {
                    Request::Prepare { job, delivery, resume } => {
                        let object_id = job.object_id;
                        let Some(queued) = self.jobs.get(&object_id).cloned() else {
                            failed.push((object_id, "the job was never queued".to_owned()));
                            continue;
                        };
                        let cancel = Arc::new(AtomicBool::new(false));
                        let request =
                            Prepare { job: queued, delivery, resume, signing_key: self.signing_key.clone(), cancel: cancel.clone() };
                        // The node keeps the same count of free workers: a refusal is a bug.
                        if self.preparers.request(request, job.priority == Priority::Emergency).is_err() {
                            failed.push((object_id, "no preparation worker is free".to_owned()));
                            continue;
                        }
                        self.cancels.insert(object_id, cancel);
                    }
                    Request::CancelPreparation { object_id } => {
                        if let Some(cancel) = self.cancels.get(&object_id) {
                            cancel.store(true, Ordering::Relaxed);
                        }
                    }
                    Request::Reply { token, reply } => {
                        if let Some(channel) = self.ack_replies.remove(&token) {
                            let _ = channel.send(reply);
                        }
                    }
                    Request::Answer { token, answer } => {
                        if let Some(reply) = self.command_replies.remove(&token) {
                            self.to_store(StoreWork::Answer { reply, answer });
                        } else if let Err((_, why)) = answer {
                            // The full airing after a patch asks without an operator.
                            warn!(%why, "the full object is not aired after the patch");
                        }
                    }
                    request => {
                        if let Request::FinishJob { object_id } = &request {
                            self.jobs.remove(object_id);
                        }
                        self.to_store(StoreWork::Node(request));
                    }
                }
            }
            // A full airing after a patch asks the node for more: carried out in this loop.
            let asked_more = self.log_events();
            if failed.is_empty() && !asked_more {
                return;
            }
            for (object_id, error) in failed {
                let result = Err(PrepareFailure::Failed(error));
                self.node.handle_completion(Instant::now(), wall_unix_ms(), Completion::Prepared { object_id, result });
            }
        }
    }

    fn to_store(&self, work: StoreWork) {
        if self.store_work.send(work).is_err() {
            warn!("the storage worker is gone: the request is dropped");
        }
    }

    /// Hands the storage worker a stop, once everything asked of it is done, and waits for
    /// it (taking its completions meanwhile, so it never waits on the loop).
    fn wait_for_store(&mut self, inputs: &Receiver<Input>) {
        let (done, finished) = sync_channel(1);
        self.to_store(StoreWork::Stop(done));
        let give_up = Instant::now() + STOP_WAIT_MAX;
        while Instant::now() < give_up {
            match finished.recv_timeout(SLEEP_MAX) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => while inputs.try_recv().is_ok() {},
            }
        }
        warn!("the storage worker did not finish in time: the last checkpoints may be lost");
    }

    /// Logs the node's events; true if handling them asked the node for more (requests to
    /// carry out).
    fn log_events(&mut self) -> bool {
        let mut patches_ended = Vec::new();
        while let Some(event) = self.node.poll_event() {
            match event {
                UplinkEvent::Preparing { object_id } => {
                    self.set_live(object_id, "preparing");
                    info!(object = %ObjectId(object_id), "preparing");
                }
                UplinkEvent::PreparationEnded { object_id } => {
                    if let Some(live) = self.live.lock().ok().as_mut().and_then(|live| live.get_mut(&object_id)) {
                        live.state = None;
                    }
                }
                UplinkEvent::PreparationCancelled { object_id } => info!(object = %ObjectId(object_id), "preparation cancelled"),
                UplinkEvent::NoEnrolledTarget { object_id } => {
                    warn!(object = %ObjectId(object_id), "no enrolled county matches the targets: airing as a carousel")
                }
                UplinkEvent::Airing { object_id } => {
                    if let Some(job) = self.jobs.get(&object_id) {
                        info!(object = %job.object_id, kind = %job.kind, name = %job.name, version = job.version, targets = ?job.targets, priority = %job.priority, "airing");
                    }
                }
                UplinkEvent::CannotAir { object_id, error } => {
                    self.symbol_bytes.remove(&object_id);
                    warn!(object = %ObjectId(object_id), %error, "cannot air job")
                }
                UplinkEvent::Broadcast(BroadcastEvent::RoundStarted { object_id, round, symbols }) => {
                    info!(object = %ObjectId(object_id), round, symbols, "round started");
                    self.shared.metrics.rounds.inc();
                    self.rounds.entry(object_id).or_default().1 = symbols;
                    self.set_live(object_id, "airing");
                }
                UplinkEvent::Broadcast(BroadcastEvent::RoundEnded { object_id, .. }) => {
                    let rounds = self.rounds.entry(object_id).or_default();
                    *rounds = (rounds.0 + rounds.1, 0);
                }
                UplinkEvent::Broadcast(BroadcastEvent::Idle { object_id, incomplete }) => {
                    info!(object = %ObjectId(object_id), incomplete = incomplete.len(), "no county reports a need: idle until one does");
                    self.set_live(object_id, "idle");
                }
                UplinkEvent::Broadcast(BroadcastEvent::SourceFailed { object_id, error }) => {
                    self.symbol_bytes.remove(&object_id);
                    self.rounds.remove(&object_id);
                    warn!(object = %ObjectId(object_id), %error, "payload unreadable; broadcast withdrawn")
                }
                // Its last counties may complete before the round on the air ends: what it
                // aired in all, for the Finished below.
                UplinkEvent::Broadcast(
                    BroadcastEvent::Completed { object_id, symbols_sent, .. }
                    | BroadcastEvent::DeadlinePassed { object_id, symbols_sent, .. },
                ) => {
                    self.rounds.insert(object_id, (symbols_sent, 0));
                }
                UplinkEvent::Broadcast(_) => {}
                UplinkEvent::Finished { object_id, outcome, stats } => {
                    info!(object = %ObjectId(object_id), outcome = outcome.as_str(), ?stats, "broadcast finished");
                    UplinkMetrics::count(&self.shared.metrics.broadcasts_finished, "outcome", outcome.as_str());
                    self.classes.remove(&object_id);
                    if matches!(outcome, Outcome::Deadline) {
                        let what = self.jobs.get(&object_id).map(|j| format!(" ({}/{})", j.kind, j.name)).unwrap_or_default();
                        let text = format!("broadcast {}{what} reached its deadline before every county had it", ObjectId(object_id));
                        self.shared.alarm_event(AlarmKind::DeadlineMissed, ObjectId(object_id).to_string(), text);
                    }
                    if outcome == Outcome::Completed {
                        patches_ended.push(object_id);
                    }
                    // Its last stretch may have aired after the last sample.
                    let ended = self.rounds.remove(&object_id).map_or(0, |(ended, _)| ended);
                    let symbol_bytes = self.symbol_bytes.remove(&object_id).unwrap_or(u64::from(self.symbol_size));
                    if let Some(live) = self.live.lock().ok().as_mut().and_then(|live| live.get_mut(&object_id)) {
                        live.bytes_aired = live.bytes_aired.max(ended.saturating_mul(symbol_bytes));
                        live.rate_bits_per_sec = 0;
                    }
                }
                UplinkEvent::Cancelled { object_id } => {
                    self.rounds.remove(&object_id);
                    self.classes.remove(&object_id);
                    self.symbol_bytes.remove(&object_id);
                    info!(object = %ObjectId(object_id), "cancelled by an operator")
                }
                UplinkEvent::ReairRequested { object_id, counties } => {
                    info!(object = %ObjectId(object_id), counties, "re-air requested")
                }
                UplinkEvent::UnknownBroadcast { object_id, county } => {
                    UplinkMetrics::count(&self.shared.metrics.feedback_refused, "verdict", "unknown_broadcast");
                    warn!(object = %ObjectId(object_id), county, "feedback about an unknown broadcast ignored")
                }
                UplinkEvent::WrongHash { object_id, county } => {
                    UplinkMetrics::count(&self.shared.metrics.feedback_refused, "verdict", "wrong_hash");
                    warn!(object = %ObjectId(object_id), county, "county reports a completion with the wrong hash: not recorded")
                }
                UplinkEvent::FeedbackNotRecorded { error } => warn!(%error, "cannot record feedback"),
                UplinkEvent::FeedbackBusy => {
                    UplinkMetrics::count(&self.shared.metrics.feedback_refused, "verdict", "busy");
                    self.busy_feedback += 1;
                }
            }
        }
        let mut asked_more = false;
        for object_id in patches_ended {
            asked_more |= self.air_full_after_patch(object_id);
        }
        asked_more
    }

    /// A patch broadcast completed: if some counties refused it because they could not apply
    /// it (no base, a corrupted one, a payload that did not decode), the same broadcast airs
    /// again, whole, to exactly those counties, as an operator's re-air would. The operator
    /// sees one broadcast, which completes once they have it too.
    fn air_full_after_patch(&mut self, object_id: u64) -> bool {
        let Ok(Some(record)) = self.store.broadcast(object_id) else { return false };
        if stored_manifest(&record.signed_manifest).ok().and_then(|m| m.base_hash()).is_none() {
            return false;
        }
        let ledger = match self.store.ledger(object_id) {
            Ok(ledger) => ledger,
            Err(error) => {
                warn!(object = %ObjectId(object_id), %error, "cannot read the ledger: the full object is not aired");
                return false;
            }
        };
        let needing: Vec<String> = ledger
            .iter()
            .filter(|(_, e)| matches!(&e.state, LedgerState::Refused { refusal } if refusal.code.wants_full()))
            .map(|(county, _)| county.clone())
            .collect();
        if needing.is_empty() {
            return false;
        }
        let delivered = ledger.into_iter().filter(|(_, e)| matches!(e.state, LedgerState::Delivered { .. })).map(|(c, _)| c).collect();
        info!(object = %ObjectId(object_id), counties = needing.len(), "some counties could not apply the patch: airing the full object to them");
        let id = ObjectId(object_id).to_string();
        let job = self.queue.find(&id).map(|(job, _)| job);
        let node_job = match job.as_ref().map(node_job).transpose() {
            Ok(node_job) => node_job,
            Err(error) => {
                warn!(object = %id, %error, "the job file is invalid: the full object is not aired");
                return false;
            }
        };
        if let Some(job) = job {
            self.jobs.insert(object_id, job);
        }
        // No one waits for the answer: a refusal (the job file gone, say) is logged by the node.
        let token = self.token();
        self.node.handle_reair(object_id, Some(needing), None, node_job, Ok(delivered), token);
        true
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Hands the node a batch of acknowledgements; each is answered once recorded durably.
    fn take_feedback(&mut self, acks: &Receiver<AckRequest>) {
        for _ in 0..FEEDBACK_BATCH_MAX {
            let Ok(request) = acks.try_recv() else { return };
            let token = self.token();
            self.ack_replies.insert(token, request.reply);
            self.observe_feedback(&request.feedback);
            self.node.handle_feedback(request.feedback, token);
        }
    }

    /// Counts a feedback message by type, and keeps a progress report's loss estimate.
    fn observe_feedback(&self, feedback: &Feedback) {
        let kind = match &feedback.message {
            FeedbackMessage::Hello { .. } => "hello",
            FeedbackMessage::Progress { object_id, symbols_received, .. } => {
                let sent = self.node.broadcaster().symbols_sent(*object_id).unwrap_or(0);
                if sent > 0 {
                    self.shared.set_loss(&feedback.county_code, 1.0 - (*symbols_received as f64 / sent as f64));
                }
                "progress"
            }
            FeedbackMessage::PassProgress { .. } => "pass_progress",
            FeedbackMessage::Complete { .. } => "complete",
            FeedbackMessage::Rejected { .. } => "rejected",
            FeedbackMessage::HookResult { .. } => "hook_result",
            FeedbackMessage::Refused { .. } => "refused",
        };
        UplinkMetrics::count(&self.shared.metrics.feedback, "type", kind);
    }

    /// Counts one datagram put on the carrier: its type, and its bytes (headers included)
    /// under its broadcast's class.
    fn count_aired(&mut self, datagram: &[u8]) {
        let counters = &self.shared.metrics;
        let kind = datagram.get(5).map(|&t| usize::from(t)).filter(|t| *t < metrics::DATAGRAM_TYPES.len()).unwrap_or(0);
        counters.datagrams[kind].inc();
        if kind == 1 {
            counters.symbols.inc();
        }
        let object_id = datagram.get(6..14).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_be_bytes);
        let class = if object_id == 0 {
            metrics::CLASSES.len() - 1
        } else {
            let jobs = &self.jobs;
            *self.classes.entry(object_id).or_insert_with(|| {
                jobs.get(&object_id).and_then(|job| job.priority().ok()).map_or(metrics::class_of(Priority::Normal), metrics::class_of)
            })
        };
        counters.air_bytes[class].inc_by((datagram.len() + wire::IP_UDP_HEADER_BYTES) as u64);
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Cancel { object_id, reply } => {
                let token = self.token();
                self.command_replies.insert(token, reply);
                let queued = self.queue.find(&ObjectId(object_id).to_string()).is_some();
                self.node.handle_cancel(object_id, queued, token);
            }
            Command::Reair { object_id, prefixes, deadline_unix_secs, reply } => {
                let id = ObjectId(object_id).to_string();
                // The executor's copy carries the re-air's deadline too, as the job file will.
                let job = self.queue.find(&id).map(|(job, _)| Job { deadline_unix_secs, ..job });
                let node_job = match job.as_ref().map(node_job).transpose() {
                    Ok(node_job) => node_job,
                    Err(error) => {
                        let _ = reply.send(Err((409, format!("the job file of {id} is invalid: {error}"))));
                        return;
                    }
                };
                if let Some(job) = job {
                    self.jobs.insert(object_id, job);
                }
                let delivered = self.store.ledger(object_id).map_err(|e| e.to_string()).map(|ledger| {
                    ledger.into_iter().filter(|(_, e)| matches!(e.state, LedgerState::Delivered { .. })).map(|(c, _)| c).collect()
                });
                let token = self.token();
                self.command_replies.insert(token, reply);
                let deadline_unix_ms = deadline_unix_secs.map(|secs| secs.saturating_mul(1000));
                self.node.handle_reair(object_id, prefixes, deadline_unix_ms, node_job, delivered, token);
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
                self.node.set_signing_key(for_heartbeats);
                self.signing_key = Arc::new(for_manifests);
                // The key wraps carry the signer's certificate too: sign them again.
                self.reload_key_tree_if_changed(true);
            }
            (Err(error), _) | (_, Err(error)) => warn!(%error, "signing key files changed but cannot be loaded yet; keeping the old key"),
        }
    }

    /// Airs the next network key of keys/network.key.next (`keys rotate-network-key`) if it
    /// changed, or `reseal` after the key tree or the signing key changed: sealed for every
    /// county enrolled in the tree now, signed, after every heartbeat.
    fn reload_next_network_key_if_changed(&mut self, reseal: bool) {
        let modified = std::fs::metadata(self.config.keys_dir.join(keys::NEXT_NETWORK_KEY_FILE)).and_then(|m| m.modified()).ok();
        if modified == self.next_network_key_modified && !reseal {
            return;
        }
        let next = match keys::load_next_network_key(&self.config.keys_dir) {
            Ok(next) => next,
            Err(error) => return warn!(%error, "cannot read the next network key; the rotation is not aired"),
        };
        self.next_network_key_modified = modified;
        let Some((activates, key)) = next else {
            self.next_network_key = None;
            return self.node.set_next_network_key(None);
        };
        let signed = keys::load_key_tree(&self.config.keys_dir).and_then(|tree| {
            NextNetworkKey::seal(&mut rand::rng(), &tree, &key, activates, wall_unix_ms() / 1000)
                .and_then(|next| next.sign(&self.signing_key))
                .map_err(|e| keys::KeysError::KeyTree { path: self.config.keys_dir.join(keys::KEY_TREE_FILE), why: e.to_string() })
        });
        match signed {
            Ok(signed) => {
                if self.next_network_key.as_ref().is_none_or(|(a, _)| *a != activates) {
                    info!(activates = %crate::report::utc_text(activates), "airing the next network key after every heartbeat until it takes over");
                }
                self.node.set_next_network_key(Some(signed.to_bytes()));
                self.next_network_key = Some((activates, key));
            }
            Err(error) => warn!(%error, "cannot seal the next network key; the rotation is not aired"),
        }
    }

    /// Switches to the next network key once its activation time has come: every datagram
    /// is tagged with it from now on, and it replaces keys/network.key.
    fn activate_network_key_if_due(&mut self) {
        let Some((activates, key)) = self.next_network_key.clone() else { return };
        if wall_unix_ms() / 1000 < activates {
            return;
        }
        self.node.set_network_key(key.clone());
        self.next_network_key = None;
        match keys::activate_next_network_key(&self.config.keys_dir, &key, activates) {
            Ok(()) => info!("switched to the next network key; counties that heard it switch with the next heartbeat"),
            Err(error) => {
                warn!(%error, "switched to the next network key, but cannot record it in the key folder; a restart would air the old one")
            }
        }
        self.next_network_key_modified = None;
        self.reload_network_key_handover();
    }

    /// During a switch's handover (keys/network.key.previous, until
    /// `keys::NETWORK_KEY_HANDOVER_SECS` after it): airs the current key's announcement,
    /// sealed for every county enrolled now, and the key wraps under the previous key too,
    /// so a county that missed the whole announcement follows. Ends it when the time is up.
    /// Called at start, at a switch, when the key tree or signing key changes (to seal
    /// afresh) and when the handover ends.
    fn reload_network_key_handover(&mut self) {
        let dir = self.config.keys_dir.clone();
        let previous = match keys::load_previous_network_key(&dir) {
            Ok(previous) => previous,
            Err(error) => return warn!(%error, "cannot read the previous network key; counties that missed the switch are not helped"),
        };
        let now_secs = wall_unix_ms() / 1000;
        let Some((activated, previous)) = previous else {
            self.handover_until = None;
            return self.node.set_network_key_handover(None);
        };
        let until = activated.saturating_add(keys::NETWORK_KEY_HANDOVER_SECS);
        if now_secs >= until {
            self.handover_until = None;
            self.node.set_network_key_handover(None);
            return match keys::end_network_key_handover(&dir) {
                Ok(()) => info!("the network key's handover ended: a county still on the previous key needs a new bundle"),
                Err(error) => warn!(%error, "the network key's handover ended, but the previous key cannot be removed"),
            };
        }
        let signed = keys::load_network_key(&dir).and_then(|current| {
            let tree = keys::load_key_tree(&dir)?;
            NextNetworkKey::seal(&mut rand::rng(), &tree, &current, activated, now_secs)
                .and_then(|next| next.sign(&self.signing_key))
                .map_err(|e| keys::KeysError::KeyTree { path: dir.join(keys::KEY_TREE_FILE), why: e.to_string() })
        });
        match signed {
            Ok(signed) => {
                if self.handover_until.is_none() {
                    info!(until = %crate::report::utc_text(until), "airing the network key's announcement under the previous key too, for counties that missed the switch");
                }
                self.handover_until = Some(until);
                self.node.set_network_key_handover(Some((previous, signed.to_bytes())));
            }
            Err(error) => warn!(%error, "cannot seal the network key for the handover; counties that missed the switch are not helped"),
        }
    }

    /// Stops targeting and waiting for counties whose every certificate is revoked, if the
    /// issued or revoked receiver lists changed (`keys receiver`, `keys revoke-receiver`).
    fn reload_revoked_counties_if_changed(&mut self, now: Instant) {
        let modified = |name: &str| std::fs::metadata(self.config.keys_dir.join(name)).and_then(|m| m.modified()).ok();
        let lists = Some((modified(keys::ISSUED_FILE), modified(keys::REVOKED_RECEIVERS_FILE)));
        if lists == self.receivers_lists_modified {
            return;
        }
        match keys::revoked_counties(&self.config.keys_dir) {
            Ok(revoked) => {
                self.receivers_lists_modified = lists;
                if !revoked.is_empty() {
                    info!(counties = revoked.len(), "revoked counties are no longer targeted or waited for");
                }
                self.node.set_revoked(now, revoked);
            }
            Err(error) => warn!(%error, "cannot read the receiver lists; revoked counties may still be waited for"),
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
                self.node.set_revocation(Some(bytes));
            }
            Ok(_) => warn!(path = %path.display(), "revocation list is malformed; not airing it"),
            Err(error) => warn!(path = %path.display(), %error, "cannot read the revocation list"),
        }
    }

    /// Airs the wraps of the confidential key tree in keys/key-tree.state (written by `keys
    /// receiver` and `keys revoke-receiver`) if it changed, or `resign` after a rotation:
    /// every edge sealed afresh and signed, cut to fit the downlink's datagrams.
    fn reload_key_tree_if_changed(&mut self, resign: bool) {
        let path = self.config.keys_dir.join(keys::KEY_TREE_FILE);
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if modified.is_none() || (modified == self.key_tree_modified && !resign) {
            return;
        }
        let tree = match keys::load_key_tree(&self.config.keys_dir) {
            Ok(tree) => tree,
            Err(error) => return warn!(%error, "cannot load the key tree; airing the wraps made before"),
        };
        let datagram_bytes_max = usize::from(self.config.downlink.mtu) - wire::IP_UDP_HEADER_BYTES;
        let per_datagram = satcast_protocol::key_tree::wraps_per_datagram(datagram_bytes_max);
        let signed = tree.edge_wraps(&mut rand::rng()).and_then(|wraps| {
            satcast_protocol::key_tree::KeyWraps::sign_all(&self.signing_key, tree.sequence, wall_unix_ms() / 1000, &wraps, per_datagram)
        });
        match signed {
            Ok(messages) => {
                self.key_tree_modified = modified;
                info!(
                    counties = tree.counties().count(),
                    sequence = tree.sequence,
                    datagrams = messages.len(),
                    "airing the confidential key tree's wraps after every heartbeat"
                );
                self.node.set_key_wraps(messages.iter().map(|m| m.to_bytes()).collect());
                // The next network key is sealed under the tree's keys: seal it afresh.
                self.reload_next_network_key_if_changed(true);
                self.reload_network_key_handover();
            }
            Err(error) => warn!(%error, "cannot make the key tree's wraps; airing the wraps made before"),
        }
    }

    fn set_live(&self, object_id: u64, state: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.entry(object_id).or_default().state = Some(state.to_owned());
        }
    }

    /// Publishes the bytes each airing broadcast has aired, and its rate since the last
    /// sample: the broadcast machine's own count of symbols sent.
    fn publish_progress(&mut self, now: Instant) {
        let elapsed_ms = now.saturating_duration_since(self.progress_at).as_millis().max(1) as u64;
        self.progress_at = now;
        let broadcaster = self.node.broadcaster();
        let airing = broadcaster.airing();
        let Ok(mut live) = self.live.lock() else { return };
        for object_id in &airing {
            let symbol_bytes = broadcaster.symbol_size(*object_id).map_or(u64::from(self.symbol_size), u64::from);
            self.symbol_bytes.insert(*object_id, symbol_bytes);
            let sent = broadcaster.symbols_sent(*object_id).unwrap_or(0);
            let ended = self.rounds.get(object_id).map_or(0, |(ended, _)| *ended);
            let bytes = sent.max(ended).saturating_mul(symbol_bytes);
            let entry = live.entry(*object_id).or_default();
            entry.rate_bits_per_sec = bytes.saturating_sub(entry.bytes_aired).saturating_mul(8_000) / elapsed_ms;
            entry.bytes_aired = bytes;
        }
        for (object_id, entry) in live.iter_mut() {
            if !airing.contains(object_id) {
                entry.rate_bits_per_sec = 0;
            }
        }
    }
}

/// What the storage worker does once a batch's writes are flushed, in order.
enum AfterFlush {
    /// Hand the node this completion (a success becomes the flush's failure, if it failed).
    Complete(Completion),
    /// Move a finished job to done/.
    Finish(u64),
    /// Put a re-aired job back in the queue with this deadline (unix seconds), if its
    /// targets were recorded.
    Requeue(u64, Option<u64>, Result<(), String>),
    /// Answer an operator.
    Answer(CommandReply, Result<CommandAnswer, CommandRefusal>),
    /// Stop, and say so.
    Stop(SyncSender<()>),
}

/// Starts the storage worker: it takes the node's store and queue requests in order, a
/// batch at a time, writes them, flushes the index once per batch, and only then moves
/// queue files, answers and hands completions back to the loop.
fn start_store_worker(
    store: Arc<UplinkStore>,
    queue: Queue,
    input: SyncSender<Input>,
    shared: Shared,
) -> std::io::Result<Sender<StoreWork>> {
    let (work, incoming) = std::sync::mpsc::channel::<StoreWork>();
    std::thread::Builder::new().name("store".into()).spawn(move || {
        while let Ok(first) = incoming.recv() {
            let mut batch = vec![first];
            while batch.len() < STORE_BATCH_MAX {
                let Ok(next) = incoming.try_recv() else { break };
                batch.push(next);
            }
            let after: Vec<AfterFlush> = batch.into_iter().filter_map(|work| write(&store, work, &shared)).collect();
            let flushed = store.flush().map_err(|e| e.to_string());
            if let Err(error) = &flushed {
                warn!(%error, "cannot flush the index");
            }
            for step in after {
                let completion = match step {
                    AfterFlush::Complete(completion) => completion,
                    AfterFlush::Finish(object_id) => {
                        if let Err(error) = queue.finish(&ObjectId(object_id).to_string()) {
                            warn!(object = %ObjectId(object_id), %error, "cannot move finished job to done/");
                        }
                        continue;
                    }
                    AfterFlush::Requeue(object_id, deadline_unix_secs, recorded) => {
                        let result = recorded
                            .and(flushed.clone())
                            .and_then(|()| queue.requeue(&ObjectId(object_id).to_string(), deadline_unix_secs).map_err(|e| e.to_string()));
                        Completion::Requeued { object_id, result }
                    }
                    AfterFlush::Answer(reply, answer) => {
                        let _ = reply.send(answer.map(|answer| match answer {
                            CommandAnswer::Cancelled { object_id } => serde_json::json!({ "cancelled": ObjectId(object_id).to_string() }),
                            CommandAnswer::Reaired { object_id, targets } => {
                                serde_json::json!({ "reaired": ObjectId(object_id).to_string(), "targets": targets })
                            }
                        }));
                        continue;
                    }
                    AfterFlush::Stop(done) => {
                        let _ = done.send(());
                        return;
                    }
                };
                // Durable before the node acts on it: a county is answered only then.
                let completion = match (completion, &flushed) {
                    (Completion::BroadcastRecorded { object_id, result: Ok(()) }, Err(error)) => {
                        Completion::BroadcastRecorded { object_id, result: Err(error.clone()) }
                    }
                    (Completion::FeedbackRecorded { token, result: Ok(()) }, Err(error)) => {
                        Completion::FeedbackRecorded { token, result: Err(error.clone()) }
                    }
                    (completion, _) => completion,
                };
                if input.send(Input::Stored(completion)).is_err() {
                    return;
                }
            }
        }
    })?;
    Ok(work)
}

/// Carries out one piece of store work's writes; returns what must wait for the flush.
fn write(store: &UplinkStore, work: StoreWork, shared: &Shared) -> Option<AfterFlush> {
    let now_secs = wall_unix_ms() / 1000;
    let request = match work {
        StoreWork::Node(request) => request,
        StoreWork::Answer { reply, answer } => return Some(AfterFlush::Answer(reply, answer)),
        StoreWork::Stop(done) => return Some(AfterFlush::Stop(done)),
    };
    let hex = |object_id: u64| ObjectId(object_id).to_string();
    match request {
        Request::RecordBroadcast { object_id, signed_manifest, size_bytes, priority, targets } => {
            let result =
                record_broadcast(store, object_id, signed_manifest, size_bytes, priority, targets, now_secs).map_err(|e| e.to_string());
            Some(AfterFlush::Complete(Completion::BroadcastRecorded { object_id, result }))
        }
        Request::RecordFeedback { feedback, ledger, token } => {
            let result = record_feedback(store, &feedback, &ledger, now_secs, shared).map_err(|e| e.to_string());
            Some(AfterFlush::Complete(Completion::FeedbackRecorded { token, result }))
        }
        Request::RecordOutcome { object_id, outcome } => {
            if let Ok(Some(mut record)) = store.broadcast(object_id) {
                record.outcome = Some(outcome.as_str().to_owned());
                if store.put_broadcast(object_id, &record).is_err() {
                    warn!(object = %hex(object_id), "cannot record the outcome");
                }
            }
            None
        }
        Request::FinishJob { object_id } => Some(AfterFlush::Finish(object_id)),
        Request::RecordCheckpoint { object_id, checkpoint } => {
            let checkpoint = encode_checkpoint(&checkpoint)?;
            match store.broadcast(object_id) {
                Ok(Some(mut record)) => {
                    record.checkpoint = Some(checkpoint);
                    if let Err(error) = store.put_broadcast(object_id, &record) {
                        warn!(object = %hex(object_id), %error, "cannot checkpoint");
                    }
                }
                Ok(None) => {}
                Err(error) => warn!(%error, "cannot read a broadcast record"),
            }
            None
        }
        Request::Requeue { object_id, targets, deadline_unix_ms } => {
            let recorded = match store.broadcast(object_id) {
                Ok(Some(mut record)) => {
                    record.targets = targets;
                    store.put_broadcast(object_id, &record).map_err(|e| e.to_string())
                }
                Ok(None) => Err(format!("the record of {} is gone", hex(object_id))),
                Err(error) => Err(error.to_string()),
            };
            // Job files keep seconds; the node's milliseconds came from seconds or a CLI time.
            Some(AfterFlush::Requeue(object_id, deadline_unix_ms.map(|ms| ms / 1000), recorded))
        }
        // Carried out by the loop itself.
        Request::Prepare { .. } | Request::CancelPreparation { .. } | Request::Reply { .. } | Request::Answer { .. } => None,
    }
}

/// Writes a broadcast's record as it goes on the air: a new one, or the stored one (an
/// interrupted or re-aired broadcast, keeping its checkpoint) with this manifest, these
/// targets and no outcome. The manifest names the rest.
fn record_broadcast(
    store: &UplinkStore,
    object_id: u64,
    signed_manifest: Vec<u8>,
    size_bytes: u64,
    priority: Priority,
    targets: Vec<String>,
    now_secs: u64,
) -> Result<(), satcast_store::IndexError> {
    let mut record = match store.broadcast(object_id)? {
        Some(record) => record,
        None => {
            let manifest = stored_manifest(&signed_manifest).ok();
            BroadcastRecord {
                kind: manifest.as_ref().map(|m| m.kind.to_string()).unwrap_or_default(),
                name: manifest.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
                version: manifest.as_ref().map_or(0, |m| m.version),
                prefixes: manifest.map(|m| m.targets).unwrap_or_default(),
                priority: priority.to_string(),
                started_unix_secs: now_secs,
                ..BroadcastRecord::default()
            }
        }
    };
    record.signed_manifest = signed_manifest;
    record.size_bytes = size_bytes;
    record.targets = targets;
    record.outcome = None;
    store.put_broadcast(object_id, &record)
}

/// What a preparation worker needs to open a job: the index, the queue and the settings.
struct Opener {
    store: Arc<UplinkStore>,
    queue: Queue,
    bases: Bases,
    coding: CodingConfig,
    keys_dir: std::path::PathBuf,
    symbol_size: u16,
    block_bytes_max: u64,
    manifest_lifetime_secs: u64,
}

impl Opener {
    /// Opens a queued job as the node decided: a new broadcast; the stored one, continued
    /// (a restart); or the stored one re-signed with a fresh lifetime (a re-air).
    fn open(&self, request: &Prepare) -> Result<NewObject, PrepareError> {
        let (job, cancel) = (&request.job, request.cancel.as_ref());
        if !self.queue.is_queued(&job.object_id) {
            return Err(PrepareError::Gone);
        }
        let object_id = job.object_id()?;
        let payload = self.queue.payload_path(&job.object_id);
        let now_secs = wall_unix_ms() / 1000;
        let confidential = job.confidential.unwrap_or(self.coding.confidential_by_default(job.kind()?));
        // Read when the object is prepared: a county enrolled or revoked just before is
        // covered (or not) by this object's content-key wraps.
        let tree = match confidential {
            true => Some(keys::load_key_tree(&self.keys_dir).map_err(|e| PrepareError::Seal(e.to_string()))?),
            false => None,
        };
        let prepare_fresh = |coding| {
            prepare(
                job,
                &payload,
                self.symbol_size,
                self.block_bytes_max,
                &request.signing_key,
                request.delivery.clone(),
                now_secs,
                self.manifest_lifetime_secs,
                cancel,
                coding,
                tree.as_ref(),
            )
        };
        // A patch needs feedback: in a carousel no county can say it lacks the base.
        let feedback = matches!(request.delivery, Delivery::Feedback { .. });
        // A sealed object is never a patch: its base would be known by its public delivered hash.
        let (fresh, whole) = match (self.coding.compress, self.coding.patches && feedback && !confidential) {
            (false, _) => (Coding::Plain, Coding::Plain),
            (true, false) => (Coding::Compress, Coding::Compress),
            (true, true) => (Coding::Delta(&self.bases), Coding::Compress),
        };
        if request.resume == Resume::Fresh {
            let object = prepare_fresh(fresh)?;
            let manifest = &object.manifest;
            info!(
                object = %job.object_id,
                compression = manifest.compression.as_str(),
                delivered_bytes = manifest.delivered_size(),
                aired_bytes = manifest.size_bytes,
                "coded for the air"
            );
            // The next version of this name is patched against this one (a sealed one is no base).
            if !confidential {
                if let Err(error) = self.bases.record(manifest.kind, &manifest.name, manifest.version, &payload, &manifest.delivered_hash())
                {
                    warn!(object = %job.object_id, %error, "cannot keep the payload as the next version's base; it airs without a patch");
                }
            }
            return Ok(object);
        }
        let record = self.store.broadcast(object_id)?.ok_or_else(|| PrepareError::Stored("the broadcast record is gone".into()))?;
        let stored = stored_manifest(&record.signed_manifest).map_err(PrepareError::Stored)?;
        if request.resume == Resume::Reair && stored.base_hash().is_some() {
            // A patch airs again whole: those it is aired to again are the counties that
            // could not apply it (no base, a corrupted one) or never heard it. Same object,
            // same version, same delivered bytes, so counties that applied the patch take
            // this manifest as the object they hold.
            let object = prepare_fresh(whole)?;
            let manifest = &object.manifest;
            info!(
                object = %job.object_id,
                compression = manifest.compression.as_str(),
                delivered_bytes = manifest.delivered_size(),
                aired_bytes = manifest.size_bytes,
                "coded for the air, whole, for the counties the patch did not serve"
            );
            return Ok(object);
        }
        let checkpoint = record.checkpoint.as_deref().and_then(decode_checkpoint);
        let mut signed_manifest = record.signed_manifest;
        if request.resume == Resume::Reair {
            // Re-aired by an operator: same broadcast, a fresh lifetime.
            let manifest = stored_manifest(&signed_manifest).map_err(PrepareError::Stored)?;
            let manifest = Manifest { created_unix_secs: now_secs, expires_unix_secs: now_secs + self.manifest_lifetime_secs, ..manifest };
            signed_manifest = request.signing_key.sign_manifest(&manifest)?.to_bytes();
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(PrepareError::Cancelled);
        }
        info!(object = %job.object_id, round = checkpoint.as_ref().map(|c| c.round), "resuming interrupted broadcast");
        prepare::resume(signed_manifest, &payload, request.delivery.clone(), checkpoint)
    }
}

fn stored_manifest(signed: &[u8]) -> Result<Manifest, String> {
    let signed = SignedManifest::from_bytes(signed).map_err(|e| e.to_string())?;
    Manifest::from_bytes(&signed.manifest).map_err(|e| e.to_string())
}

/// Records one authenticated feedback message: the county's registry entry, then the
/// ledger as the node decided (not yet flushed).
fn record_feedback(
    store: &UplinkStore,
    feedback: &Feedback,
    ledger: &LedgerDecision,
    now_secs: u64,
    shared: &Shared,
) -> Result<(), satcast_store::IndexError> {
    let county = feedback.county_code.as_str();
    let mut record = store.receiver(county)?.unwrap_or_default();
    record.last_seen_unix_secs = Some(now_secs);
    if let FeedbackMessage::Hello { software_version, free_disk_bytes, heartbeat_age_ms } = &feedback.message {
        record.software_version = Some(software_version.clone());
        record.free_disk_bytes = Some(*free_disk_bytes);
        record.heartbeat_age_secs = heartbeat_age_ms.map(|ms| ms / 1000);
    }
    store.put_receiver(county, &record)?;
    match ledger {
        LedgerDecision::Nothing => {}
        LedgerDecision::InProgress { object_id, needed } => {
            store.record(*object_id, county, LedgerState::InProgress { needed: *needed }, now_secs)?;
        }
        LedgerDecision::Delivered { object_id, hash } => {
            if store.record(*object_id, county, LedgerState::Delivered { hash: *hash }, now_secs)? {
                shared.metrics.deliveries.inc();
                info!(object = %ObjectId(*object_id), county, "county complete");
            }
        }
        LedgerDecision::Hook { object_id, success, detail } => {
            if *success {
                info!(object = %ObjectId(*object_id), county, %detail, "post-receive hook succeeded");
            } else {
                warn!(object = %ObjectId(*object_id), county, %detail, "post-receive hook failed");
                let text = format!("the post-receive hook of broadcast {} failed at county {county}: {detail}", ObjectId(*object_id));
                shared.alarm_event(AlarmKind::HookFailed, format!("{}/{county}", ObjectId(*object_id)), text);
            }
            UplinkMetrics::count(&shared.metrics.hooks, "outcome", if *success { "succeeded" } else { "failed" });
            store.record_hook(*object_id, county, *success, detail, now_secs)?;
        }
        LedgerDecision::Refused { object_id, refusal } => {
            // Once per (county, reason): the county tells each reason once, and a repeat
            // (a resend after a lost reply) changes nothing.
            if store.record(*object_id, county, LedgerState::Refused { refusal: refusal.clone() }, now_secs)? {
                shared.metrics.refusals.inc();
                warn!(object = %ObjectId(*object_id), county, reason = %refusal, code = refusal.code.name(), "county refused the broadcast");
            }
        }
    }
    Ok(())
}
