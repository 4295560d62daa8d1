//! The uplink daemon's datapath: the queue, a paced UDP sender and a clock around the
//! broadcast machine. Every airing decision is the machine's; this module moves jobs in,
//! datagrams out, and finished jobs to done/.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use satcast_protocol::broadcast::{AirPlan, BroadcastConfig, BroadcastEvent, Broadcaster, Checkpoint, Delivery, NewObject};
use satcast_protocol::feedback::{AckReply, Feedback, FeedbackMessage};
use satcast_protocol::wire;
use satcast_store::{BroadcastRecord, IndexOpen, LedgerState, UplinkStore};
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tracing::{info, warn};

use crate::acks::{self, AckRequest};
use crate::config::UplinkConfig;
use crate::keys::{self, KeysError};
use crate::prepare::{self, prepare};
use crate::queue::{Queue, QueueError};

/// How often the queue directory is scanned for new jobs.
const QUEUE_SCAN_INTERVAL: Duration = Duration::from_millis(250);
/// The longest the loop sleeps, so a stop request is noticed promptly.
const SLEEP_MAX: Duration = Duration::from_millis(50);

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
    /// The uplink's index could not be opened, even fresh.
    #[error(transparent)]
    Index(#[from] satcast_store::IndexError),
    /// The acknowledgement server could not start.
    #[error(transparent)]
    Acks(#[from] acks::AckServerError),
}

/// How often where each broadcast stands is written down for a restart.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// The national division table, so the registry names every county on a fresh machine.
const AREAS_CSV: &str = include_str!("../../data/divisions/areas.csv");

fn encode_checkpoint(checkpoint: &Checkpoint) -> Option<Vec<u8>> {
    bincode::encode_to_vec(checkpoint, bincode::config::standard()).ok()
}

fn decode_checkpoint(bytes: &[u8]) -> Option<Checkpoint> {
    bincode::decode_from_slice(bytes, bincode::config::standard().with_limit::<{ 1 << 24 }>()).ok().map(|(c, _)| c)
}

/// Feedback-driven repair for the enrolled counties the job targets (those that have ever
/// said hello), or a carousel when there is no acknowledgement server, the job asks for
/// none, or no targeted county is enrolled yet.
fn delivery_for(store: &UplinkStore, job: &crate::queue::Job, config: &UplinkConfig, plan: AirPlan) -> Delivery {
    if config.acks.is_none() || !job.feedback {
        return Delivery::Carousel(plan);
    }
    let targets: Vec<String> = store
        .receivers()
        .unwrap_or_default()
        .into_iter()
        .filter(|(code, record)| record.last_seen_unix_secs.is_some() && job.targets.iter().any(|p| code.starts_with(p.as_str())))
        .map(|(code, _)| code)
        .collect();
    if targets.is_empty() {
        warn!(object = %job.object_id, "no enrolled county matches the targets yet: airing as a carousel");
        return Delivery::Carousel(plan);
    }
    Delivery::Feedback { targets }
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
    match &feedback.message {
        FeedbackMessage::Hello { .. } => {}
        FeedbackMessage::Progress { object_id, needs, .. } => {
            let needed = needs.iter().map(|n| u64::from(*n)).sum();
            store.record(*object_id, county, LedgerState::InProgress { needed }, now_secs)?;
        }
        FeedbackMessage::Complete { object_id, object_hash } => {
            if store.record(*object_id, county, LedgerState::Delivered { hash: *object_hash }, now_secs)? {
                info!(object = %format!("{object_id:016x}"), county, "county complete");
            }
        }
        FeedbackMessage::HookResult { object_id, success, detail } => {
            if *success {
                info!(object = %format!("{object_id:016x}"), county, %detail, "post-receive hook succeeded");
            } else {
                warn!(object = %format!("{object_id:016x}"), county, %detail, "post-receive hook failed");
            }
            store.record_hook(*object_id, county, *success, detail, now_secs)?;
        }
        FeedbackMessage::Rejected { object_id, reason } => {
            if store.record(*object_id, county, LedgerState::Rejected { reason: reason.clone() }, now_secs)? {
                warn!(object = %format!("{object_id:016x}"), county, %reason, "county refused the broadcast");
            }
        }
    }
    broadcaster.handle_feedback(Instant::now(), feedback);
    Ok(())
}

/// Starts the QUIC acknowledgement server on its own thread, if configured.
fn start_acks(config: &UplinkConfig, stop: Arc<AtomicBool>) -> Result<Option<Receiver<AckRequest>>, ServeError> {
    let Some(acks) = config.acks.clone() else { return Ok(None) };
    let keys = &config.keys_dir;
    let tls = acks::server_config(&keys.join(keys::CA_CERT_FILE), &keys.join(keys::UPLINK_CERT_FILE), &keys.join(keys::UPLINK_KEY_FILE))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(acks::PENDING_FEEDBACK_MAX);
    std::thread::Builder::new()
        .name("acks".into())
        .spawn(move || match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => {
                if let Err(error) = runtime.block_on(acks::serve(acks.listen, tls, tx, stop)) {
                    warn!(%error, "acknowledgement server stopped");
                }
            }
            Err(error) => warn!(%error, "cannot start the acknowledgement runtime"),
        })
        .map_err(|e| ServeError::Socket(std::io::Error::other(e)))?;
    Ok(Some(rx))
}

/// Opens the queued job as a new broadcast, or continues it if it had started airing.
fn open_job(
    store: &UplinkStore,
    job: &crate::queue::Job,
    payload: &std::path::Path,
    config: &UplinkConfig,
    signing_key: &satcast_protocol::trust::SigningKey,
    symbol_size: u16,
    plan: AirPlan,
) -> Result<NewObject, String> {
    let object_id = job.object_id().map_err(|e| e.to_string())?;
    let delivery = delivery_for(store, job, config, plan);
    if let Some(record) = store.broadcast(object_id).map_err(|e| e.to_string())? {
        if record.outcome.is_none() {
            let checkpoint = record.checkpoint.as_deref().and_then(decode_checkpoint);
            info!(object = %job.object_id, round = checkpoint.as_ref().map(|c| c.round), "resuming interrupted broadcast");
            return prepare::resume(record.signed_manifest, payload, delivery, checkpoint).map_err(|e| e.to_string());
        }
    }
    let now_secs = wall_unix_ms() / 1000;
    let object = prepare(job, payload, symbol_size, config.fec.block_bytes_max, signing_key, delivery, now_secs, config.carousel.manifest_lifetime_secs)
        .map_err(|e| e.to_string())?;
    // Written before the first symbol airs, so a restart never signs it anew.
    let record = BroadcastRecord { signed_manifest: object.signed_manifest.clone(), checkpoint: None, outcome: None };
    store.put_broadcast(object_id, &record).and_then(|()| store.flush()).map_err(|e| e.to_string())?;
    Ok(object)
}

pub(crate) fn wall_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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

/// Runs the uplink until `stop` is set.
pub fn serve(config: UplinkConfig, stop: Arc<AtomicBool>) -> Result<(), ServeError> {
    let signing_key = keys::load_signing_key(&config.keys_dir)?;
    let network_key = keys::load_network_key(&config.keys_dir)?;
    let queue = Queue::open(&config.state_dir)?;
    let (store, how) = UplinkStore::open(&config.state_dir, wall_unix_ms() / 1000)?;
    if let IndexOpen::Quarantined { moved_to, why } = &how {
        warn!(moved_to = %moved_to.display(), %why, "index would not open: quarantined it; interrupted broadcasts restart with fresh signatures");
    }
    if store.receivers()?.is_empty() {
        let imported = store.import_divisions(AREAS_CSV)?;
        info!(imported, "receiver registry filled from the national division table");
    }
    let socket = open_socket(&config).map_err(ServeError::Socket)?;
    let destination = config.downlink.destination;
    let datagram_bytes_max = usize::from(config.downlink.mtu) - wire::IP_UDP_HEADER_BYTES;
    // Checked when the config was loaded.
    let symbol_size = wire::symbol_size_for_mtu(config.downlink.mtu).unwrap_or(1024);
    let plan = AirPlan { target_loss: config.carousel.target_loss, passes: config.carousel.passes };
    let mut broadcaster = Broadcaster::new(
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
    info!(%destination, rate_bits_per_sec = config.downlink.link_rate_bits_per_sec, symbol_size, "uplink started");

    let mut airing: HashSet<String> = HashSet::new();
    let mut failed: HashSet<String> = HashSet::new();
    let acks = start_acks(&config, stop.clone())?;
    let mut next_scan = Instant::now();
    let mut next_checkpoint = Instant::now() + CHECKPOINT_INTERVAL;
    let mut buf = Vec::with_capacity(65_536);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_scan {
            next_scan = now + QUEUE_SCAN_INTERVAL;
            for job in queue.pending()? {
                let job = match job {
                    Ok(job) => job,
                    Err(error) => {
                        if failed.insert(error.to_string()) {
                            warn!(%error, "skipping unreadable job");
                        }
                        continue;
                    }
                };
                if airing.contains(&job.object_id) || failed.contains(&job.object_id) {
                    continue;
                }
                let payload = queue.payload_path(&job.object_id);
                let added = open_job(&store, &job, &payload, &config, &signing_key, symbol_size, plan)
                    .and_then(|object| broadcaster.add_object(Instant::now(), object).map_err(|e| e.to_string()));
                match added {
                    Ok(()) => {
                        info!(object = %job.object_id, kind = %job.kind, name = %job.name, version = job.version, targets = ?job.targets, "airing");
                        airing.insert(job.object_id.clone());
                    }
                    Err(error) => {
                        warn!(object = %job.object_id, %error, "cannot air job");
                        failed.insert(job.object_id.clone());
                    }
                }
            }
        }
        if let Some(acks) = &acks {
            let mut replies = Vec::new();
            while let Ok(request) = acks.try_recv() {
                let reply = match record_feedback(&store, &mut broadcaster, &request.feedback) {
                    Ok(()) => AckReply::Recorded,
                    Err(error) => {
                        warn!(%error, "cannot record feedback");
                        AckReply::Busy
                    }
                };
                replies.push((request.reply, reply));
                if replies.len() >= 256 {
                    break;
                }
            }
            if !replies.is_empty() {
                // Durable before the county is told, so an acknowledged message is never lost.
                let flushed = store.flush().is_ok();
                for (channel, reply) in replies {
                    let _ = channel.send(if flushed { reply } else { AckReply::Busy });
                }
            }
        }
        if now >= next_checkpoint {
            next_checkpoint = now + CHECKPOINT_INTERVAL;
            checkpoint_all(&store, &broadcaster);
        }
        while broadcaster.poll_transmit(Instant::now(), wall_unix_ms(), &mut buf) {
            if let Err(error) = socket.send_to(&buf, destination) {
                // The datagram is lost like any other on the carrier; FEC covers it.
                warn!(%error, "send failed");
            }
        }
        while let Some(event) = broadcaster.poll_event() {
            match event {
                BroadcastEvent::CarouselFinished { object_id }
                | BroadcastEvent::Completed { object_id, .. }
                | BroadcastEvent::DeadlinePassed { object_id, .. } => {
                    let id = format!("{object_id:016x}");
                    let outcome = match event {
                        BroadcastEvent::Completed { .. } => "completed",
                        BroadcastEvent::DeadlinePassed { .. } => "deadline",
                        _ => "aired",
                    };
                    info!(object = %id, outcome, stats = ?broadcaster.stats(), "broadcast finished");
                    set_outcome(&store, object_id, outcome);
                    airing.remove(&id);
                    if let Err(error) = queue.finish(&id) {
                        warn!(object = %id, %error, "cannot move finished job to done/");
                    }
                }
                BroadcastEvent::RoundStarted { object_id, round, symbols } => {
                    info!(object = %format!("{object_id:016x}"), round, symbols, "round started");
                }
                BroadcastEvent::RoundEnded { .. } => {}
                BroadcastEvent::Idle { object_id, incomplete } => {
                    info!(object = %format!("{object_id:016x}"), incomplete = incomplete.len(), "no county reports a need: idle until one does");
                }
                BroadcastEvent::SourceFailed { object_id, error } => {
                    let id = format!("{object_id:016x}");
                    warn!(object = %id, %error, "payload unreadable; broadcast withdrawn");
                    airing.remove(&id);
                    failed.insert(id);
                }
            }
        }
        let wake = broadcaster.poll_timeout().unwrap_or(next_scan).min(next_scan);
        let sleep = wake.saturating_duration_since(Instant::now()).min(SLEEP_MAX);
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
    }
    checkpoint_all(&store, &broadcaster);
    info!(stats = ?broadcaster.stats(), "uplink stopped");
    Ok(())
}

/// Writes down where every airing broadcast stands.
fn checkpoint_all(store: &UplinkStore, broadcaster: &Broadcaster) {
    for object_id in broadcaster.airing() {
        let Some(checkpoint) = broadcaster.checkpoint(object_id).as_ref().and_then(encode_checkpoint) else { continue };
        match store.broadcast(object_id) {
            Ok(Some(mut record)) => {
                record.checkpoint = Some(checkpoint);
                if let Err(error) = store.put_broadcast(object_id, &record) {
                    warn!(object = %format!("{object_id:016x}"), %error, "cannot checkpoint");
                }
            }
            Ok(None) => {}
            Err(error) => warn!(%error, "cannot read a broadcast record"),
        }
    }
    if let Err(error) = store.flush() {
        warn!(%error, "cannot flush the index");
    }
}

fn set_outcome(store: &UplinkStore, object_id: u64, outcome: &str) {
    if let Ok(Some(mut record)) = store.broadcast(object_id) {
        record.outcome = Some(outcome.to_owned());
        if store.put_broadcast(object_id, &record).and_then(|()| store.flush()).is_err() {
            warn!(object = %format!("{object_id:016x}"), "cannot record the outcome");
        }
    }
}
