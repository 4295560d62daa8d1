//! The receiver daemon's datapath: a socket, a clock and the durable store around the
//! reception machine. All protocol decisions are the machine's; this module only moves
//! bytes, makes finished objects durable, delivers them and logs what happened.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use satcast_protocol::manifest::{Kind, Manifest};
use satcast_protocol::reception::{Reception, ReceptionConfig, ReceptionEvent};
use satcast_protocol::trust::{Accepted, NetworkKey, RootPublicKey};
use satcast_store::{IndexOpen, Outbox, ReceiverLimits, ReceiverStore, TrustState};
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tracing::{debug, info, info_span, warn};

use crate::acks::{self, ReceiverHello};
use crate::config::ReceiverConfig;
use crate::droplog::DropLog;
use crate::heartbeat::HeartbeatWatch;
use crate::hooks::{self, HookBook, Prepared};
use crate::status::{self, CachedStatus, DaemonStatus, DiskStatus, HeartbeatStatus, OutboxStatus, PartialStatus, ReceptionStatus};

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
    Acks(#[from] crate::acks::AckSetupError),
    /// The hook records cannot be opened.
    #[error(transparent)]
    Hooks(#[from] crate::hooks::HookError),
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

fn wall_unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
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

/// How often the datapath ticks: expiry, spool sync, retries, heartbeat watch, status file.
const TICK: Duration = Duration::from_secs(1);
/// The largest datagram read (the UDP maximum; the wire parser bounds what it accepts).
const DATAGRAM_BUFFER_BYTES: usize = 65_536;
/// Receive calls between looks at the clock: under a flood the socket never times out, so
/// the tick must not depend on it, but `Instant::now` per datagram is wasted work.
const DATAGRAMS_PER_CLOCK_CHECK_MAX: u32 = 64;

/// Everything the datapath holds besides the socket.
struct Datapath {
    config: ReceiverConfig,
    reception: Reception,
    store: ReceiverStore,
    trust_state: TrustState,
    drops: DropLog,
    /// Completed objects whose delivery failed (full disk, cache limit, hook queue), retried
    /// every tick. At most one per partial object.
    pending_commits: Vec<Manifest>,
    hooks: HookBook,
    /// Delivered objects whose hook could not be marked ready yet (retried every tick).
    unready_hooks: Vec<u64>,
    heartbeat: HeartbeatWatch,
    hello: Arc<ReceiverHello>,
    /// Version and size of the objects being received, for status (the machine's progress
    /// has their names and blocks).
    receiving: HashMap<u64, (u64, u64)>,
    started_unix_ms: u64,
}

/// Runs the receiver until `stop` is set. Returns an error only for conditions it cannot
/// run through (keys, socket, unreadable trust state).
pub fn run(config: ReceiverConfig, stop: Arc<AtomicBool>) -> Result<(), RunError> {
    let root = RootPublicKey::from_text(&read_key_text(&config.keys.root_public)?)
        .map_err(|e| RunError::Key { path: config.keys.root_public.clone(), why: e.to_string() })?;
    let network_key = NetworkKey::from_text(&read_key_text(&config.keys.network_key)?)
        .map_err(|e| RunError::Key { path: config.keys.network_key.clone(), why: e.to_string() })?;
    let limits = ReceiverLimits { spool_bytes_max: config.limits.spool_bytes_max, cache_bytes_max: config.limits.cache_bytes_max };
    let (store, report) = ReceiverStore::open(&config.state_dir, &config.deliver_dir, limits, wall_unix_secs())?;
    if let IndexOpen::Quarantined { moved_to, why } = &report.index {
        warn!(moved_to = %moved_to.display(), %why, cache_entries_rebuilt = report.cache_entries_rebuilt, "index would not open: quarantined it and rebuilt it from the files");
    }
    let trust_state = TrustState::load(&config.state_dir.join("trust.state"))?;
    let socket = open_downlink(&config).map_err(RunError::Socket)?;
    let _span = info_span!("receiver", county = %config.county_code).entered();
    info!(local = ?socket.local_addr().ok(), "receiver started");

    let mut reception_config = ReceptionConfig::new(config.county_code.clone(), root, network_key);
    reception_config.partial_objects_max = config.limits.partial_objects_max;
    reception_config.seed = rand::random();
    let mut reception = Reception::new(reception_config);
    for (kind, name, accepted) in trust_state.delivered() {
        reception.set_delivered(kind, name, accepted);
    }
    let (revocation_sequence, revoked_serials) = trust_state.revocations();
    reception.set_revocations(revocation_sequence, revoked_serials);
    let hooks = HookBook::open(&config.state_dir)?;
    // Hooks recorded before a stop: settled against what was delivered, before the worker
    // looks at them.
    hooks.reconcile(|kind, name| trust_state.delivered().find(|(k, n, _)| *k == kind && *n == name).map(|(_, _, a)| a), wall_unix_secs());
    let hello = Arc::new(ReceiverHello {
        county_code: config.county_code.clone(),
        state_dir: config.state_dir.clone(),
        last_heartbeat: Mutex::new(None),
    });
    let mut datapath = Datapath {
        heartbeat: HeartbeatWatch::new(Duration::from_secs(config.heartbeat_warn_after_secs), Instant::now()),
        reception,
        store,
        trust_state,
        drops: DropLog::new(Duration::from_secs(10)),
        pending_commits: Vec::new(),
        hooks,
        unready_hooks: Vec::new(),
        hello,
        receiving: HashMap::new(),
        started_unix_ms: wall_unix_ms(),
        config,
    };
    // Objects that were arriving when the daemon stopped: verified again, then resumed
    // from their spool.
    for (object_id, signed) in datapath.store.resumable() {
        datapath.reception.resume(Instant::now(), wall_unix_secs(), object_id, &signed, &mut datapath.store);
        if let Some((symbols_spooled, blocks_verified)) = datapath.reception.held(object_id) {
            info!(object = %format!("{object_id:016x}"), symbols_spooled, blocks_verified, "resumed partial object");
        }
    }
    info!(partial_objects = report.partial_objects, orphans_removed = report.orphans_removed, "store opened");
    let acks = start_acks(&datapath.config, datapath.store.outbox(), datapath.hello.clone(), stop.clone())?;
    let hook_worker = start_hook_worker(&datapath, stop.clone())?;
    let outbox = datapath.store.outbox();
    let mut buf = vec![0u8; DATAGRAM_BUFFER_BYTES];
    let mut last_tick = Instant::now();
    datapath.write_status(false);
    let mut since_clock_check = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let mut now = None;
        match socket.recv_from(&mut buf) {
            Ok((len, _from)) => {
                let Some(datagram) = buf.get(..len) else { continue };
                let at = Instant::now();
                now = Some(at);
                datapath.reception.handle_datagram(at, wall_unix_secs(), datagram, &mut datapath.store);
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
                datapath.tick();
            }
            let at = now.unwrap_or_else(Instant::now);
            if datapath.reception.poll_timeout().is_some_and(|t| t <= at) {
                datapath.reception.handle_timeout(at);
            }
        }
        while let Some(event) = datapath.reception.poll_event() {
            datapath.handle_event(event);
        }
        while let Some(feedback) = datapath.reception.poll_feedback() {
            if let Err(error) = outbox.push(&feedback) {
                warn!(%error, "cannot queue feedback");
            }
        }
    }
    if let Some(acks) = acks {
        let _ = acks.join();
    }
    // Waits for a running hook for up to hooks::STOP_GRACE.
    let _ = hook_worker.join();
    if let Err(error) = datapath.store.sync() {
        warn!(%error, "cannot sync the spool at stop");
    }
    datapath.drops.flush();
    datapath.write_status(true);
    info!(stats = ?datapath.reception.stats(), "receiver stopped");
    Ok(())
}

/// Starts the hook worker. It runs even without hooks configured: records left from a
/// time when one was are settled (and reported), not left hanging; idle, it wakes once a second.
fn start_hook_worker(datapath: &Datapath, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>, RunError> {
    let book = datapath.hooks.clone();
    let hooks = datapath.config.hooks.clone();
    let outbox = datapath.store.outbox();
    let county = datapath.config.county_code.clone();
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("hooks".into())
        .spawn(move || span.in_scope(|| hooks::run_worker(book, hooks, outbox, county, stop)))
        .map_err(|e| RunError::Socket(std::io::Error::other(e)))
}

fn wall_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Datapath {
    /// Once a second: expiry, spool sync, retries, the heartbeat watch, the status file.
    fn tick(&mut self) {
        self.reception.handle_tick(wall_unix_secs(), &mut self.store);
        self.drops.flush();
        if let Err(error) = self.store.sync() {
            warn!(%error, "cannot sync the spool");
        }
        // A commit that failed (full disk, cache limit, hook queue) is retried: room may
        // have returned.
        for manifest in std::mem::take(&mut self.pending_commits) {
            self.deliver(manifest);
        }
        for object_id in std::mem::take(&mut self.unready_hooks) {
            self.mark_hook_ready(object_id);
        }
        let now = Instant::now();
        self.heartbeat.observe_and_log(now, self.reception.heartbeat_age(now));
        self.write_status(false);
    }

    fn mark_hook_ready(&mut self, object_id: u64) {
        if let Err(error) = self.hooks.mark_ready(object_id) {
            warn!(object = %format!("{object_id:016x}"), %error, "cannot mark the hook ready; retrying");
            self.unready_hooks.push(object_id);
        }
    }

    /// Makes a completed object durable, delivers it and records its version; on failure it
    /// goes back to `pending_commits` to be retried. A configured hook is recorded as due
    /// before the delivery and released to the worker after it.
    fn deliver(&mut self, manifest: Manifest) {
        let object = format!("{:016x}", manifest.object_id);
        let path = self.store.delivered_path(&manifest);
        let hook_due = match self.config.hooks.for_kind(manifest.kind) {
            None => false,
            Some(_) => match self.hooks.prepare(&manifest, &path) {
                Ok(Prepared::Due) => true,
                Ok(Prepared::AlreadyHandled) => false,
                Err(error) => {
                    // Delivering without the record could lose the hook in a crash: the
                    // delivery waits, like one that found the disk full.
                    warn!(object = %object, %error, "cannot record the post-receive hook as due; delivery waits and is retried");
                    self.pending_commits.push(manifest);
                    return;
                }
            },
        };
        match self.store.commit(&manifest) {
            Ok(path) => {
                let accepted = Accepted { version: manifest.version, object_id: manifest.object_id };
                if let Err(error) = self.trust_state.record(manifest.kind, &manifest.name, accepted) {
                    // Without the version on disk a restart would lose rollback protection
                    // for it: not acknowledged yet, retried (the commit is idempotent).
                    warn!(object = %object, error = %error, "cannot record the delivered version; will retry before acknowledging");
                    self.pending_commits.push(manifest);
                    return;
                }
                self.reception.mark_delivered(&manifest);
                self.receiving.remove(&manifest.object_id);
                info!(
                    object = %object,
                    kind = %manifest.kind,
                    name = %manifest.name,
                    version = manifest.version,
                    path = %path.display(),
                    hash = %hex::encode(manifest.object_hash),
                    "delivered"
                );
                if hook_due {
                    self.mark_hook_ready(manifest.object_id);
                }
            }
            Err(error) => {
                warn!(object = %object, error = %error, "cannot deliver completed object yet; will retry");
                self.pending_commits.push(manifest);
            }
        }
    }

    fn handle_event(&mut self, event: ReceptionEvent) {
        match event {
            ReceptionEvent::Dropped { reason } => self.drops.record(&reason),
            ReceptionEvent::Rejected { object_id, reason } => {
                warn!(object = %format!("{object_id:016x}"), reason = %reason, error = ?reason, "manifest rejected");
            }
            ReceptionEvent::Accepted { manifest } => {
                info!(
                    object = %format!("{:016x}", manifest.object_id),
                    kind = %manifest.kind,
                    name = %manifest.name,
                    version = manifest.version,
                    size_bytes = manifest.size_bytes,
                    "manifest accepted, receiving"
                );
                // Bounded: entries go when the object completes or expires, and the status
                // write drops any the machine no longer lists.
                self.receiving.insert(manifest.object_id, (manifest.version, manifest.size_bytes));
            }
            ReceptionEvent::BlockVerified { object_id, sbn } => {
                debug!(object = %format!("{object_id:016x}"), sbn, "block verified");
            }
            ReceptionEvent::BlockPoisoned { object_id, sbn } => {
                warn!(object = %format!("{object_id:016x}"), sbn, "block failed its hash; collecting it again");
            }
            ReceptionEvent::ObjectPoisoned { object_id } => {
                warn!(object = %format!("{object_id:016x}"), "object failed its hash; collecting it again");
            }
            ReceptionEvent::Expired { object_id } => {
                self.receiving.remove(&object_id);
                info!(object = %format!("{object_id:016x}"), "manifest expired; partial object discarded");
            }
            ReceptionEvent::StoreFailed { object_id, error } => {
                warn!(object = %format!("{object_id:016x}"), error = %error, "store failed");
            }
            ReceptionEvent::Heartbeat { sequence, uplink_time_unix_ms } => {
                if let Ok(mut last) = self.hello.last_heartbeat.lock() {
                    *last = Some(Instant::now());
                }
                debug!(sequence, uplink_time_unix_ms, "heartbeat");
            }
            ReceptionEvent::HeartbeatRejected { reason } => warn!(reason = %reason, "heartbeat rejected"),
            ReceptionEvent::RevocationsUpdated { sequence, revoked_serials } => {
                match self.trust_state.record_revocations(sequence, &revoked_serials) {
                    Ok(()) => warn!(sequence, ?revoked_serials, "signing keys revoked by the root; objects they signed are refused"),
                    // The machine enforces it until the next restart, after which the
                    // carousel's copy is accepted and recorded again.
                    Err(error) => warn!(sequence, %error, "cannot record the revocation list durably"),
                }
            }
            ReceptionEvent::RevocationRejected { reason } => warn!(reason = %reason, "revocation list rejected"),
            ReceptionEvent::Complete { manifest } => self.deliver(*manifest),
        }
    }

    /// Writes state/status.json for `satcast-receiver status`.
    fn write_status(&mut self, stopped: bool) {
        let now = Instant::now();
        let progress = self.reception.progress();
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
                    symbols_held: self.reception.held(p.object_id).map(|h| h.0),
                }
            })
            .collect();
        let delivered: Vec<(Kind, &str, Accepted)> = self.trust_state.delivered().collect();
        let mut cached: Vec<CachedStatus> = self
            .store
            .cached()
            .into_iter()
            .map(|e| CachedStatus {
                object_id: e.object_id,
                delivered: delivered.iter().any(|(k, n, a)| k.as_str() == e.kind && *n == e.name && a.object_id == e.object_id),
                kind: e.kind,
                name: e.name,
                version: e.version,
                size_bytes: e.size_bytes,
                hash: hex::encode(e.hash),
            })
            .collect();
        let cached_total = cached.len();
        let cache_bytes = cached.iter().map(|c| c.size_bytes).sum();
        status::sort_cached(&mut cached);
        cached.truncate(status::STATUS_CACHED_MAX);
        let disk = self.store.disk_use();
        let stats = self.reception.stats();
        let status = DaemonStatus {
            format: status::STATUS_FORMAT,
            pid: std::process::id(),
            county_code: self.config.county_code.clone(),
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            started_unix_ms: self.started_unix_ms,
            updated_unix_ms: wall_unix_ms(),
            stopped,
            heartbeat: HeartbeatStatus {
                age_ms: self.reception.heartbeat_age(now).map(|a| a.as_millis() as u64),
                warn_after_secs: self.heartbeat.warn_after().as_secs(),
                stale: self.heartbeat.is_stale(),
            },
            outbox: OutboxStatus { messages: self.store.outbox().len() },
            disk: DiskStatus {
                spool_bytes: disk.spool_bytes,
                spool_bytes_max: disk.limits.spool_bytes_max,
                cache_bytes,
                cache_bytes_max: disk.limits.cache_bytes_max,
                free_bytes: fs4::available_space(&self.config.state_dir).ok(),
            },
            reception: ReceptionStatus {
                datagrams: stats.datagrams,
                dropped: stats.dropped,
                symbols_kept: stats.symbols_kept,
                symbols_ignored: stats.symbols_ignored,
                events_lost: stats.events_lost,
            },
            partial,
            deliveries_waiting: self.pending_commits.len(),
            cached,
            cached_total,
            hooks: self.hooks.status(),
        };
        if let Err(error) = status::write(&self.config.state_dir, &status) {
            debug!(%error, "cannot write the status file");
        }
    }
}
