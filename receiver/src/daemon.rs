//! The receiver daemon's datapath: a socket, a clock and the durable store around the
//! reception machine. All protocol decisions are the machine's; this module only moves
//! bytes, makes finished objects durable, delivers them and logs what happened.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use satcast_protocol::manifest::Manifest;
use satcast_protocol::reception::{Reception, ReceptionConfig, ReceptionEvent};
use satcast_protocol::trust::{Accepted, NetworkKey, RootPublicKey};
use satcast_store::{IndexOpen, Outbox, ReceiverLimits, ReceiverStore, TrustState};
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tracing::{debug, info, info_span, warn};

use crate::acks::{self, ReceiverHello};
use crate::config::ReceiverConfig;
use crate::droplog::DropLog;

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
}

/// Starts the acknowledgement client on its own thread (QUIC runs on tokio), if the config
/// names an uplink.
fn start_acks(config: &ReceiverConfig, outbox: Outbox, hello: Arc<ReceiverHello>, stop: Arc<AtomicBool>) -> Result<Option<std::thread::JoinHandle<()>>, RunError> {
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

/// Runs the receiver until `stop` is set. Returns an error only for conditions it cannot
/// run through (keys, socket, unreadable trust state).
pub fn run(config: ReceiverConfig, stop: Arc<AtomicBool>) -> Result<(), RunError> {
    let root = RootPublicKey::from_text(&read_key_text(&config.keys.root_public)?)
        .map_err(|e| RunError::Key { path: config.keys.root_public.clone(), why: e.to_string() })?;
    let network_key = NetworkKey::from_text(&read_key_text(&config.keys.network_key)?)
        .map_err(|e| RunError::Key { path: config.keys.network_key.clone(), why: e.to_string() })?;
    let limits = ReceiverLimits { spool_bytes_max: config.limits.spool_bytes_max, cache_bytes_max: config.limits.cache_bytes_max };
    let (mut store, report) = ReceiverStore::open(&config.state_dir, &config.deliver_dir, limits, wall_unix_secs())?;
    if let IndexOpen::Quarantined { moved_to, why } = &report.index {
        warn!(moved_to = %moved_to.display(), %why, cache_entries_rebuilt = report.cache_entries_rebuilt, "index would not open: quarantined it and rebuilt it from the files");
    }
    let mut trust_state = TrustState::load(&config.state_dir.join("trust.state"))?;
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
    // Objects that were arriving when the daemon stopped: verified again, then resumed
    // from their spool.
    for (object_id, signed) in store.resumable() {
        reception.resume(Instant::now(), wall_unix_secs(), object_id, &signed, &mut store);
        if let Some((symbols_spooled, blocks_verified)) = reception.held(object_id) {
            info!(object = %format!("{object_id:016x}"), symbols_spooled, blocks_verified, "resumed partial object");
        }
    }
    info!(partial_objects = report.partial_objects, orphans_removed = report.orphans_removed, "store opened");
    let mut pending_commits: Vec<Manifest> = Vec::new();
    let hello = Arc::new(ReceiverHello { county_code: config.county_code.clone(), state_dir: config.state_dir.clone(), last_heartbeat: Mutex::new(None) });
    let acks = start_acks(&config, store.outbox(), hello.clone(), stop.clone())?;
    let outbox = store.outbox();
    let mut buf = vec![0u8; 65_536];
    let mut drops = DropLog::new(Duration::from_secs(10));
    let mut last_tick = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((len, _from)) => {
                let Some(datagram) = buf.get(..len) else { continue };
                reception.handle_datagram(Instant::now(), wall_unix_secs(), datagram, &mut store);
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => {
                warn!(error = %e, "downlink receive failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            reception.handle_tick(wall_unix_secs(), &mut store);
            drops.flush();
            if let Err(error) = store.sync() {
                warn!(%error, "cannot sync the spool");
            }
            // A commit that failed (full disk, cache limit) is retried: room may have returned.
            for manifest in std::mem::take(&mut pending_commits) {
                deliver(manifest, &mut reception, &mut store, &mut trust_state, &mut pending_commits);
            }
        }
        if reception.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            reception.handle_timeout(Instant::now());
        }
        while let Some(event) = reception.poll_event() {
            if matches!(event, ReceptionEvent::Heartbeat { .. }) {
                if let Ok(mut last) = hello.last_heartbeat.lock() {
                    *last = Some(Instant::now());
                }
            }
            handle_event(event, &mut reception, &mut store, &mut trust_state, &mut drops, &mut pending_commits);
        }
        while let Some(feedback) = reception.poll_feedback() {
            if let Err(error) = outbox.push(&feedback) {
                warn!(%error, "cannot queue feedback");
            }
        }
    }
    if let Some(acks) = acks {
        let _ = acks.join();
    }
    if let Err(error) = store.sync() {
        warn!(%error, "cannot sync the spool at stop");
    }
    drops.flush();
    info!(stats = ?reception.stats(), "receiver stopped");
    Ok(())
}

/// Makes a completed object durable, delivers it and records its version; on failure it
/// goes back to `pending` to be retried.
fn deliver(manifest: Manifest, reception: &mut Reception, store: &mut ReceiverStore, trust_state: &mut TrustState, pending: &mut Vec<Manifest>) {
    let object = format!("{:016x}", manifest.object_id);
    match store.commit(&manifest) {
        Ok(path) => {
            let accepted = Accepted { version: manifest.version, object_id: manifest.object_id };
            if let Err(error) = trust_state.record(manifest.kind, &manifest.name, accepted) {
                warn!(object = %object, error = %error, "cannot record delivered version");
            }
            reception.mark_delivered(&manifest);
            info!(
                object = %object,
                kind = %manifest.kind,
                name = %manifest.name,
                version = manifest.version,
                path = %path.display(),
                hash = %hex::encode(manifest.object_hash),
                "delivered"
            );
        }
        Err(error) => {
            warn!(object = %object, error = %error, "cannot deliver completed object yet; will retry");
            pending.push(manifest);
        }
    }
}

fn handle_event(
    event: ReceptionEvent,
    reception: &mut Reception,
    store: &mut ReceiverStore,
    trust_state: &mut TrustState,
    drops: &mut DropLog,
    pending: &mut Vec<Manifest>,
) {
    match event {
        ReceptionEvent::Dropped { reason } => drops.record(&reason),
        ReceptionEvent::Rejected { object_id, reason } => {
            warn!(object = %format!("{object_id:016x}"), reason = %reason, error = ?reason, "manifest rejected");
        }
        ReceptionEvent::Accepted { manifest } => info!(
            object = %format!("{:016x}", manifest.object_id),
            kind = %manifest.kind,
            name = %manifest.name,
            version = manifest.version,
            size_bytes = manifest.size_bytes,
            "manifest accepted, receiving"
        ),
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
            info!(object = %format!("{object_id:016x}"), "manifest expired; partial object discarded");
        }
        ReceptionEvent::StoreFailed { object_id, error } => {
            warn!(object = %format!("{object_id:016x}"), error = %error, "store failed");
        }
        ReceptionEvent::Heartbeat { sequence, uplink_time_unix_ms } => {
            debug!(sequence, uplink_time_unix_ms, "heartbeat");
        }
        ReceptionEvent::HeartbeatRejected { reason } => warn!(reason = %reason, "heartbeat rejected"),
        ReceptionEvent::Complete { manifest } => deliver(*manifest, reception, store, trust_state, pending),
    }
}
