//! The receiver daemon: an executor for the receiver node. The receive thread owns the
//! socket and the node and never waits on a disk: every storage request goes to the
//! storage worker (`worker`), which owns the durable store, trust state and hook records,
//! and hands completions back. All decisions are the node's; this module moves bytes,
//! carries requests out and logs what happened.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use satcast_daemon::clock::{wall_unix_ms, wall_unix_secs};
use satcast_protocol::ObjectId;
use satcast_protocol::key_tree::CountySecret;
use satcast_protocol::manifest::Kind;
use satcast_protocol::receiver_node::{Completion, NodeEvent, NodeStuck, ReceiverNode, ReceiverNodeConfig, Request};
use satcast_protocol::reception::{ReceptionConfig, ReceptionEvent, Stuck, StuckReason};
use satcast_protocol::storage::{self, NotKept, StoreCompletion, StoreRequest};
use satcast_protocol::trust::{Accepted, NetworkKey, RootPublicKey};
use satcast_store::{IndexOpen, Outbox, ReceiverLimits, ReceiverStore, TrustState};
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tracing::{debug, info, info_span, warn};

use crate::acks::{self, ReceiverHello};
use crate::config::ReceiverConfig;
use crate::droplog::{DropLog, Refused, reason_key, record_datagram};
use crate::heartbeat::HeartbeatWatch;
use crate::hooks::{self, HookBook};
use crate::network_keys::{NetworkKeys, NetworkKeysFile};
use crate::status::{HeartbeatStatus, PartialStatus, ReceptionStatus, StuckState, StuckStatus};
use crate::upgrade::Executable;
use crate::worker::{self, Job, NodeView};

/// Why the daemon stopped with an error.
#[derive(Debug, Error)]
pub enum RunError {
    /// A key file from the bundle could not be read or parsed.
    #[error("cannot load {path}: {why}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The downlink socket could not be opened.
    #[error("cannot open downlink socket: {0}")]
    Socket(std::io::Error),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] satcast_store::StoreError),
    /// Trust state is unreadable: fail closed.
    #[error(transparent)]
    TrustState(#[from] satcast_store::TrustStateError),
    /// The acknowledgement channel's TLS material is unusable.
    #[error(transparent)]
    Acks(#[from] satcast_daemon::tls::TlsError),
    /// The hook records cannot be opened.
    #[error(transparent)]
    Hooks(#[from] crate::hooks::HookError),
    /// The storage worker stopped (it panicked): nothing could be made durable any more.
    #[error("the storage worker stopped unexpectedly; restarting resumes from what is on disk")]
    StorageWorker,
}

/// Starts the acknowledgement client on its own thread (QUIC runs on tokio), if the config
/// names an uplink.
fn start_acks(
    config: &ReceiverConfig,
    outbox: Outbox,
    hello: Arc<ReceiverHello>,
    stop: Arc<AtomicBool>,
) -> Result<Option<std::thread::JoinHandle<()>>, RunError> {
    let Some(ack) = config.ack.clone() else {
        warn!("no [ack] section: acknowledgements stay in the outbox until one is configured");
        return Ok(None);
    };
    let tls = acks::client_config(&config.keys)?;
    let thread = std::thread::Builder::new()
        .name("acks".into())
        .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(acks::run(ack, tls, outbox, hello, stop)),
            Err(error) => warn!(%error, "cannot start the acknowledgement runtime"),
        })
        .map_err(|e| RunError::Socket(std::io::Error::other(e)))?;
    Ok(Some(thread))
}

fn read_key_text(path: &PathBuf) -> Result<String, RunError> {
    std::fs::read_to_string(path).map_err(|e| RunError::Key { path: path.clone(), why: e.to_string() })
}

/// Opens the downlink socket: a unicast bind, or the multicast group joined on the
/// configured interface with SO_REUSEADDR so several receivers can share a host in tests.
pub fn open_downlink(config: &ReceiverConfig) -> std::io::Result<UdpSocket> {
    let (bind, group) = match (config.downlink.bind, config.downlink.group) {
        (Some(bind), _) => (bind, None),
        (None, Some(group)) => (SocketAddr::from((Ipv4Addr::UNSPECIFIED, group.port())), Some(group)),
        (None, None) => return Err(std::io::Error::other("no downlink address configured")),
    };
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    // Best effort: the kernel caps this at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(config.downlink.receive_buffer_bytes);
    socket.bind(&bind.into())?;
    if let Some(group) = group {
        socket.join_multicast_v4(group.ip(), &config.downlink.interface)?;
    }
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_millis(250)))?;
    Ok(socket)
}

/// How often the receive thread ticks: expiry, retries, heartbeat watch, status.
const TICK: Duration = Duration::from_secs(1);
/// The largest datagram read (the UDP maximum; the wire parser bounds what it accepts).
const DATAGRAM_BUFFER_BYTES: usize = 65_536;
/// Receive calls between looks at the clock: under a flood the socket never times out, so
/// the tick must not depend on it, but `Instant::now` per datagram is wasted work.
const DATAGRAMS_PER_CLOCK_CHECK_MAX: u32 = 64;
/// The most jobs queued for the storage worker: about 16 MB of symbols at 1 KB each. When
/// it is full (a slow disk) symbols are dropped like symbols lost on the air, and other
/// requests wait in the backlog in order.
pub const STORAGE_JOBS_QUEUED_MAX: usize = 16_384;
/// The most non-symbol requests held while the storage worker is behind (deliveries,
/// records, feedback): each is small, and there are a few per object.
pub const STORAGE_BACKLOG_MAX: usize = 65_536;

/// The receive thread's side: the node, and the channels to the storage worker.
struct Datapath {
    config: ReceiverConfig,
    node: ReceiverNode,
    jobs: SyncSender<Job>,
    completions: Receiver<Completion>,
    /// Requests that found the worker's queue full, sent first when it has room.
    backlog: VecDeque<Request>,
    drops: DropLog,
    heartbeat: HeartbeatWatch,
    hello: Arc<ReceiverHello>,
    /// Version and size of the objects being received, for status (the node's progress
    /// has their names and blocks).
    receiving: HashMap<u64, (u64, u64)>,
    started_unix_ms: u64,
    /// The network keys in force, and where they are kept.
    network_keys: (NetworkKeysFile, NetworkKeys),
}

/// Why [`run`] returned.
#[derive(Debug)]
pub enum Stopped {
    /// `stop` was set (SIGTERM, Ctrl-C).
    Asked,
    /// A new build was installed over this one (crate::upgrade): the caller executes it.
    NewBuildInstalled(Executable),
}

/// Runs the receiver until `stop` is set or a new build of it is installed. Returns an
/// error only for conditions it cannot run through (keys, socket, unreadable trust state).
pub fn run(config: ReceiverConfig, stop: Arc<AtomicBool>) -> Result<Stopped, RunError> {
    // Before anything else: the file started from, not one installed while starting.
    let executable = Executable::current()
        .inspect_err(|error| warn!(%error, "cannot identify the running executable; a new build installed over it is not restarted into"))
        .ok();
    let root = RootPublicKey::from_text(&read_key_text(&config.keys.root_public)?)
        .map_err(|e| RunError::Key { path: config.keys.root_public.clone(), why: e.to_string() })?;
    let bundle_network_key = NetworkKey::from_text(&read_key_text(&config.keys.network_key)?)
        .map_err(|e| RunError::Key { path: config.keys.network_key.clone(), why: e.to_string() })?;
    // A key learned over the air since the bundle was installed takes its place.
    let network_keys_file = NetworkKeysFile::new(&config.state_dir, &bundle_network_key);
    let network_keys = network_keys_file
        .load()
        .map_err(|why| RunError::Key { path: config.state_dir.join(crate::network_keys::NETWORK_KEYS_FILE), why })?;
    let limits = ReceiverLimits { spool_bytes_max: config.limits.spool_bytes_max, cache_bytes_max: config.limits.cache_bytes_max };
    let (store, report) = ReceiverStore::open(&config.state_dir, &config.deliver_dir, limits, wall_unix_secs())?;
    if let IndexOpen::Quarantined { moved_to, why } = &report.index {
        warn!(moved_to = %moved_to.display(), %why, cache_entries_rebuilt = report.cache_entries_rebuilt, "index would not open: quarantined it and rebuilt it from the files");
    }
    let trust_state = TrustState::load(&config.state_dir.join("trust.state"))?;
    let socket = open_downlink(&config).map_err(RunError::Socket)?;
    let _span = info_span!("receiver", county = %config.county_code).entered();
    info!(local = ?socket.local_addr().ok(), "receiver started");

    let mut reception = ReceptionConfig::new(config.county_code.clone(), root, network_keys.current.1.clone());
    reception.network_key_activates_unix_secs = network_keys.current.0;
    reception.next_network_key = network_keys.next.clone();
    if network_keys.current.0 > 0 {
        info!(activated_unix_secs = network_keys.current.0, "using the network key learned over the air");
    }
    reception.partial_objects_max = config.limits.partial_objects_max;
    reception.seed = rand::random();
    let hook_kinds = Kind::ALL.into_iter().filter(|kind| config.hooks.for_kind(*kind).is_some()).collect();
    let mut node = ReceiverNode::new(ReceiverNodeConfig { reception, hook_kinds });
    for (kind, name, accepted) in trust_state.delivered() {
        node.set_delivered(kind, name, accepted);
    }
    // The cache takes an object only after every check a delivery passes: its versions are
    // rollback floors even when their record in trust state was lost.
    for entry in store.cached() {
        match entry.kind.parse::<Kind>() {
            Ok(kind) => node.set_cached(kind, &entry.name, Accepted { version: entry.version, object_id: entry.object_id }),
            Err(error) => {
                warn!(object = %ObjectId(entry.object_id), %error, "a cache entry names an unknown kind: it is not a rollback floor")
            }
        }
    }
    let unrecorded = node.unrecorded_versions();
    if unrecorded > 0 {
        warn!(
            unrecorded,
            "the cache holds versions trust state does not record as delivered (stopped during a delivery, or trust state could not be written): older versions of them are refused, and each is delivered from the cache when it is aired again"
        );
    }
    let (revocation_sequence, revoked_serials) = trust_state.revocations();
    node.set_revocations(revocation_sequence, revoked_serials);
    load_county_secret(&config, &mut node)?;
    let hooks = HookBook::open(&config.state_dir)?;
    // Hooks recorded before a stop: settled against what was delivered, before the worker
    // looks at them.
    hooks.reconcile(|kind, name| trust_state.delivered().find(|(k, n, _)| *k == kind && *n == name).map(|(_, _, a)| a), wall_unix_secs());
    // Objects that were arriving when the daemon stopped: verified again, then resumed
    // from what the store kept (or delivered from the cache, if they reached it).
    for (object_id, signed) in store.resumable() {
        let held = storage::held(&store, object_id, &worker::kept_object_hash(&signed));
        node.resume(Instant::now(), wall_unix_secs(), object_id, &signed, &held);
        if let Some((symbols_spooled, blocks_verified)) = node.held(object_id) {
            info!(object = %ObjectId(object_id), symbols_spooled, blocks_verified, in_cache = held.in_cache, "resumed partial object");
        }
    }
    info!(partial_objects = report.partial_objects, orphans_removed = report.orphans_removed, "store opened");
    if report.claims_dropped > 0 || report.partials_cached > 0 {
        warn!(
            claims_dropped = report.claims_dropped,
            partials_cached = report.partials_cached,
            "the store found work a crash interrupted: blocks it cannot back are collected again, objects already cached are delivered from the cache"
        );
    }
    let hello = Arc::new(ReceiverHello {
        county_code: config.county_code.clone(),
        state_dir: config.state_dir.clone(),
        last_heartbeat: Mutex::new(None),
    });
    let outbox = store.outbox();
    let acks = start_acks(&config, outbox.clone(), hello.clone(), stop.clone())?;
    let hook_worker = start_hook_worker(&config, &hooks, outbox, executable.clone(), stop.clone())?;
    let (jobs, jobs_rx) = mpsc::sync_channel(STORAGE_JOBS_QUEUED_MAX);
    let latest = crate::metrics::Latest::default();
    if config.metrics.enabled {
        crate::metrics::start(&config.metrics.listen, latest.clone(), stop.clone());
    }
    let (completions_tx, completions) = mpsc::channel();
    let storage_worker = worker::start(
        worker::Storage { store, trust_state, hooks, state_dir: config.state_dir.clone(), latest: latest.clone() },
        jobs_rx,
        completions_tx,
    )
    .map_err(|e| RunError::Socket(std::io::Error::other(e)))?;
    let mut datapath = Datapath {
        heartbeat: HeartbeatWatch::new(Duration::from_secs(config.heartbeat_warn_after_secs), Instant::now()),
        node,
        jobs,
        completions,
        backlog: VecDeque::new(),
        drops: DropLog::new(Duration::from_secs(10)),
        hello,
        receiving: HashMap::new(),
        started_unix_ms: wall_unix_ms(),
        network_keys: (network_keys_file, network_keys),
        config,
    };
    datapath.pump();
    datapath.send_status(false);
    let mut buf = vec![0u8; DATAGRAM_BUFFER_BYTES];
    let mut last_tick = Instant::now();
    let mut since_clock_check = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let mut now = None;
        match socket.recv_from(&mut buf) {
            Ok((len, _from)) => {
                let Some(datagram) = buf.get(..len) else { continue };
                let at = Instant::now();
                now = Some(at);
                datapath.node.handle_datagram(at, wall_unix_secs(), datagram);
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => {
                warn!(error = %e, "downlink receive failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        since_clock_check += 1;
        if now.is_none() || since_clock_check >= DATAGRAMS_PER_CLOCK_CHECK_MAX {
            since_clock_check = 0;
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                if storage_worker.is_finished() {
                    // Only a panic ends it early; run on and nothing is ever durable again.
                    stop.store(true, Ordering::Relaxed);
                    return Err(RunError::StorageWorker);
                }
                datapath.tick();
            }
            let at = now.unwrap_or_else(Instant::now);
            if datapath.node.poll_timeout().is_some_and(|t| t <= at) {
                datapath.node.handle_timeout(at);
            }
        }
        datapath.pump();
    }
    if let Some(acks) = acks {
        let _ = acks.join();
    }
    // Waits for a running hook for up to hooks::STOP_GRACE.
    let new_build_installed = hook_worker.join().unwrap_or(false);
    datapath.drops.flush();
    datapath.send_status(true);
    // Hands over what is left in order (the worker syncs the spool when its queue ends).
    for request in std::mem::take(&mut datapath.backlog) {
        let _ = datapath.jobs.send(Job::Request(request));
    }
    let Datapath { jobs, node, .. } = datapath;
    drop(jobs);
    let _ = storage_worker.join();
    info!(stats = ?node.stats(), "receiver stopped");
    Ok(match executable {
        Some(executable) if new_build_installed => Stopped::NewBuildInstalled(executable),
        _ => Stopped::Asked,
    })
}

/// Starts the hook worker. It runs even without hooks configured: records left from a
/// time when one was are settled (and reported), not left hanging; idle, it wakes once a second.
fn start_hook_worker(
    config: &ReceiverConfig,
    book: &HookBook,
    outbox: Outbox,
    executable: Option<Executable>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<bool>, RunError> {
    let book = book.clone();
    let hooks = config.hooks.clone();
    let county = config.county_code.clone();
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("hooks".into())
        .spawn(move || span.in_scope(|| hooks::run_worker(book, hooks, outbox, county, executable, stop)))
        .map_err(|e| RunError::Socket(std::io::Error::other(e)))
}

impl Datapath {
    /// Moves the node's requests to the storage worker, its completions back, and logs its
    /// events; never waits on the worker.
    fn pump(&mut self) {
        loop {
            while let Ok(completion) = self.completions.try_recv() {
                self.node.handle_completion(completion);
            }
            let mut sent = false;
            while let Some(request) = self.backlog.pop_front() {
                match self.jobs.try_send(Job::Request(request)) {
                    Ok(()) => sent = true,
                    Err(TrySendError::Full(Job::Request(request)) | TrySendError::Disconnected(Job::Request(request))) => {
                        self.backlog.push_front(request);
                        break;
                    }
                    Err(_) => break,
                }
            }
            while let Some(request) = self.node.poll_request() {
                sent = true;
                self.submit(request);
            }
            while let Some(event) = self.node.poll_event() {
                self.log(event);
            }
            // Completions that came back meanwhile may have produced more requests; stop
            // once a pass moved nothing new.
            if !sent {
                break;
            }
        }
        self.keep_network_keys();
    }

    /// Keeps the node's network keys durably when they change (a next key learned, or the
    /// switch to it). Read from the node, not from its events: a flood of refusals can push
    /// an event out of the bounded queue, and a county that lost the next key before the
    /// switch would hear nothing after it.
    fn keep_network_keys(&mut self) {
        let ((activated, current), next) = self.node.network_keys();
        let held = &self.network_keys.1;
        if held.current.0 == activated && held.next.as_ref().map(|n| n.0) == next.map(|n| n.0) {
            return;
        }
        self.network_keys.1 = NetworkKeys { current: (activated, current.clone()), next: next.cloned() };
        self.save_network_keys();
    }

    fn submit(&mut self, request: Request) {
        if let Request::Store(StoreRequest::AppendSymbol { object_id, sbn, esi, .. }) = &request {
            if !self.backlog.is_empty() {
                let (object_id, sbn, esi) = (*object_id, *sbn, *esi);
                return self.not_kept(object_id, sbn, esi);
            }
        }
        if !self.backlog.is_empty() {
            return self.hold(request);
        }
        match self.jobs.try_send(Job::Request(request)) {
            Ok(()) => {}
            Err(TrySendError::Full(Job::Request(request)) | TrySendError::Disconnected(Job::Request(request))) => match request {
                // A symbol the disk cannot take now is like one lost on the air.
                Request::Store(StoreRequest::AppendSymbol { object_id, sbn, esi, .. }) => self.not_kept(object_id, sbn, esi),
                request => self.hold(request),
            },
            Err(_) => {}
        }
    }

    fn not_kept(&mut self, object_id: u64, sbn: u8, esi: u32) {
        let why = NotKept::Failed("the storage worker is behind".into());
        self.node.handle_completion(Completion::Store(StoreCompletion::SymbolNotKept { object_id, sbn, esi, why }));
    }

    fn hold(&mut self, request: Request) {
        if self.backlog.len() >= STORAGE_BACKLOG_MAX {
            // Never reached unless the disk stalls for minutes under a flood of objects:
            // the oldest request goes; its delivery is retried at the next tick.
            warn!(backlog = self.backlog.len(), "storage worker stalled: dropping its oldest waiting request");
            self.backlog.pop_front();
        }
        self.backlog.push_back(request);
    }

    /// Once a second: the node's tick (expiry, retries, summaries), the heartbeat watch,
    /// the status file.
    fn tick(&mut self) {
        self.node.handle_tick(wall_unix_secs());
        self.drops.flush();
        let now = Instant::now();
        self.heartbeat.observe_and_log(now, self.node.heartbeat_age(now));
        self.send_status(false);
    }

    fn log(&mut self, event: NodeEvent) {
        match event {
            NodeEvent::Reception(event) => self.log_reception(event),
            NodeEvent::Delivered { manifest } => {
                self.receiving.remove(&manifest.object_id);
                info!(
                    object = %ObjectId(manifest.object_id),
                    kind = %manifest.kind,
                    name = %manifest.name,
                    version = manifest.version,
                    path = %self.config.deliver_dir.join(manifest.kind.to_string()).join(&manifest.name).display(),
                    hash = %hex::encode(manifest.delivered_hash()),
                    compression = manifest.compression.as_str(),
                    "delivered"
                );
            }
            NodeEvent::DeliveryWaiting { object_id, step, error } => {
                warn!(object = %ObjectId(object_id), %step, %error, "delivery waits; retried every second");
            }
            NodeEvent::StoreFailures { failures, last_error } => {
                warn!(failures, last_error = %last_error, "storage failed (summary of the last second)");
            }
            NodeEvent::RecordFailed { error } => warn!(%error, "cannot record durably"),
        }
    }

    /// Keeps the network keys durably; a failure is said, and the keys stay in use until
    /// the next restart (which starts from the bundle's key or the last one kept).
    fn save_network_keys(&mut self) {
        let (file, keys) = &self.network_keys;
        if let Err(error) = file.save(keys) {
            warn!(%error, "cannot keep the network keys durably; a restart would start from the last ones kept");
        }
    }

    fn log_reception(&mut self, event: ReceptionEvent) {
        match event {
            // Kept durably by `keep_network_keys`; the events are for the log.
            ReceptionEvent::NextNetworkKey { activates_unix_secs, .. } => {
                info!(activates_unix_secs, "learned the next network key; the uplink switches to it then");
            }
            ReceptionEvent::NetworkKeyActivated { activates_unix_secs, .. } => {
                info!(activates_unix_secs, "the uplink switched to the next network key; using it from now on");
            }
            ReceptionEvent::Dropped { reason } => record_datagram(&mut self.drops, &reason),
            // Forgeries can come at any rate: the first of each reason is logged, the rest
            // summarised (a genuine refusal for this county is Refused, said once per object).
            ReceptionEvent::Rejected { object_id, reason } => {
                if self.drops.first(Refused::Manifest, reason_key(&reason.to_string())) {
                    warn!(object = %ObjectId(object_id), reason = %reason, error = ?reason, "manifest rejected");
                }
            }
            // Said once per object and reason; the uplink is told the same.
            ReceptionEvent::Refused { object_id, name, refusal } => {
                warn!(object = %ObjectId(object_id), %name, reason = %refusal, code = refusal.code.name(), "object refused; the uplink is told why");
            }
            ReceptionEvent::Accepted { manifest } => {
                info!(
                    object = %ObjectId(manifest.object_id),
                    kind = %manifest.kind,
                    name = %manifest.name,
                    version = manifest.version,
                    size_bytes = manifest.size_bytes,
                    "manifest accepted, receiving"
                );
                // Bounded: entries go when the object completes or expires, and the status
                // update drops any the node no longer lists.
                self.receiving.insert(manifest.object_id, (manifest.version, manifest.size_bytes));
            }
            ReceptionEvent::BlockVerified { object_id, sbn } => {
                debug!(object = %ObjectId(object_id), sbn, "block verified");
            }
            ReceptionEvent::BlockPoisoned { object_id, sbn } => {
                warn!(object = %ObjectId(object_id), sbn, "block failed its hash; collecting it again");
            }
            ReceptionEvent::ObjectPoisoned { object_id } => {
                warn!(object = %ObjectId(object_id), "object failed its hash; collecting it again");
            }
            ReceptionEvent::Expired { object_id } => {
                self.receiving.remove(&object_id);
                info!(object = %ObjectId(object_id), "manifest expired; discarding the partial object");
            }
            // Once per object: its manifest, replayed, is dropped unlogged from then on.
            ReceptionEvent::Ended { object_id } => {
                self.receiving.remove(&object_id);
                info!(object = %ObjectId(object_id), "no longer aired by the uplink; partial object discarded to make room");
            }
            // The node summarises storage failures and runs deliveries itself.
            ReceptionEvent::StoreFailed { .. } | ReceptionEvent::Complete { .. } => {}
            ReceptionEvent::Heartbeat { sequence, uplink_time_unix_ms } => {
                if let Ok(mut last) = self.hello.last_heartbeat.lock() {
                    *last = Some(Instant::now());
                }
                debug!(sequence, uplink_time_unix_ms, "heartbeat");
            }
            ReceptionEvent::HeartbeatRejected { reason } => {
                if self.drops.first(Refused::Heartbeat, reason_key(&reason)) {
                    warn!(reason = %reason, "heartbeat rejected");
                }
            }
            ReceptionEvent::RevocationsUpdated { sequence, revoked_serials } => {
                warn!(sequence, ?revoked_serials, "signing keys revoked by the root; objects they signed are refused");
            }
            ReceptionEvent::RevocationRejected { reason } => {
                if self.drops.first(Refused::Revocation, reason_key(&reason)) {
                    warn!(reason = %reason, "revocation list rejected");
                }
            }
        }
    }

    /// Hands the node's part of status.json to the storage worker, which adds the store's
    /// part and writes the file (off this thread).
    fn send_status(&mut self, stopped: bool) {
        let now = Instant::now();
        let progress = self.node.progress();
        self.receiving.retain(|id, _| progress.iter().any(|p| p.object_id == *id));
        let partial = progress
            .iter()
            .map(|p| {
                let known = self.receiving.get(&p.object_id);
                PartialStatus {
                    object_id: p.object_id,
                    name: p.name.clone(),
                    version: known.map(|k| k.0),
                    size_bytes: known.map(|k| k.1),
                    blocks_verified: Some(p.blocks_verified),
                    blocks: Some(p.blocks),
                    symbols_held: self.node.held(p.object_id).map(|h| h.0),
                }
            })
            .collect();
        let stats = self.node.stats();
        let view = NodeView {
            county_code: self.config.county_code.clone(),
            started_unix_ms: self.started_unix_ms,
            stopped,
            heartbeat: HeartbeatStatus {
                age_ms: self.node.heartbeat_age(now).map(|a| a.as_millis() as u64),
                warn_after_secs: self.heartbeat.warn_after().as_secs(),
                stale: self.heartbeat.is_stale(),
            },
            reception: ReceptionStatus {
                datagrams: stats.datagrams,
                dropped: stats.dropped,
                symbols_kept: stats.symbols_kept,
                symbols_ignored: stats.symbols_ignored,
                events_lost: stats.events_lost,
                signatures_checked: stats.signatures_checked,
                heartbeats_replayed: stats.heartbeats_replayed,
                revocations_replayed: stats.revocations_replayed,
                round_markers_repeated: stats.round_markers_repeated,
                completes_repeated: stats.completes_repeated,
                key_wraps: stats.key_wraps,
                key_wraps_unwanted: stats.key_wraps_unwanted,
                key_wraps_refused: stats.key_wraps_refused,
                group_keys_learned: stats.group_keys_learned,
                network_key_announcements: stats.network_key_announcements,
                network_key_refused: stats.network_key_refused,
                network_keys_learned: stats.network_keys_learned,
                network_keys_activated: stats.network_keys_activated,
                sealed_not_targeted: stats.sealed_not_targeted,
                sealed_pending: stats.sealed_pending,
                sealed_opened: stats.sealed_opened,
                symbol_lists_accepted: stats.symbol_lists_accepted,
                symbol_lists_replayed: stats.symbol_lists_replayed,
                symbol_lists_refused: stats.symbol_lists_refused,
                symbol_lists_unknown_signer: stats.symbol_lists_unknown_signer,
                symbol_lists_held: stats.symbol_lists_held,
                symbol_lists_held_accepted: stats.symbol_lists_held_accepted,
                symbol_lists_unchecked: stats.symbol_lists_unchecked,
                symbols_forged: stats.symbols_forged,
                symbols_unverified: stats.symbols_unverified,
                symbols_unverified_dropped: stats.symbols_unverified_dropped,
                unverified_decodes: stats.unverified_decodes,
                unverified_decodes_failed: stats.unverified_decodes_failed,
                round_markers_unlisted: stats.round_markers_unlisted,
                manifests_ended: stats.manifests_ended,
                partials_ended: stats.partials_ended,
            },
            partial,
            deliveries_waiting: self.node.deliveries_waiting(),
            // All of them (bounded by the node's memories), so the worker counts them before
            // it cuts the list to STATUS_STUCK_MAX.
            stuck: self.node.stuck(now, usize::MAX).into_iter().map(stuck_status).collect(),
        };
        // A full queue skips one status update; the next tick sends another.
        let _ = self.jobs.try_send(Job::Status(Box::new(view)));
    }
}

/// How the node's view of an object not delivered yet reads in status.json.
fn stuck_status(stuck: NodeStuck) -> StuckStatus {
    match stuck {
        NodeStuck::Delivery { object_id, name, step, error } => {
            StuckStatus { object_id, name, state: StuckState::DeliveryFailing, detail: format!("{step}: {error}"), reason: None }
        }
        NodeStuck::Reception(Stuck { object_id, name, reason }) => {
            let (state, detail, reason) = match reason {
                StuckReason::WaitingForSymbols { needed } => (StuckState::WaitingForSymbols, format!("needs {needed} more symbols"), None),
                StuckReason::Refused(refusal) => (StuckState::Refused, refusal.to_string(), Some(refusal.code.name().to_owned())),
                StuckReason::StorageFailing(error) => (StuckState::StorageFailing, error, None),
            };
            StuckStatus { object_id, name, state, detail, reason }
        }
    }
}

/// Gives the node this county's key for confidential broadcasts, if its bundle has one. A
/// bundle from before them has none: the county receives clear broadcasts only. A key
/// file named but damaged stops the daemon, like any other key.
fn load_county_secret(config: &ReceiverConfig, node: &mut ReceiverNode) -> Result<(), RunError> {
    let Some(path) = &config.keys.county_secret else {
        info!("no county key (keys.county_secret): confidential broadcasts cannot be read here");
        return Ok(());
    };
    if !path.exists() {
        warn!(path = %path.display(), "the county key file is missing: confidential broadcasts cannot be read here");
        return Ok(());
    }
    let secret = CountySecret::from_text(&read_key_text(path)?).map_err(|e| RunError::Key { path: path.clone(), why: e.to_string() })?;
    node.set_county_secret(secret).map_err(|e| RunError::Key { path: path.clone(), why: e.to_string() })
}
