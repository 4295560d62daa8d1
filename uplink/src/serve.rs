//! The uplink daemon's datapath: the queue, a paced UDP sender and a clock around the
//! broadcast machine. Every airing decision is the machine's; this module moves jobs in,
//! datagrams out, and finished jobs to done/.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use satcast_protocol::broadcast::{AirPlan, BroadcastConfig, BroadcastEvent, Broadcaster, Delivery};
use satcast_protocol::wire;
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tracing::{info, warn};

use crate::config::UplinkConfig;
use crate::keys::{self, KeysError};
use crate::prepare::prepare;
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
    let mut next_scan = Instant::now();
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
                let now_secs = wall_unix_ms() / 1000;
                // Acknowledgements over QUIC come with the receiver-daemon issue; until then
                // every broadcast airs as a carousel sized from the target loss.
                let delivery = Delivery::Carousel(plan);
                let prepared = prepare(&job, &payload, symbol_size, config.fec.block_bytes_max, &signing_key, delivery, now_secs, config.carousel.manifest_lifetime_secs);
                match prepared.map(|object| broadcaster.add_object(Instant::now(), object)) {
                    Ok(Ok(())) => {
                        info!(object = %job.object_id, kind = %job.kind, name = %job.name, version = job.version, targets = ?job.targets, "airing");
                        airing.insert(job.object_id.clone());
                    }
                    Ok(Err(error)) => {
                        warn!(object = %job.object_id, %error, "cannot air job");
                        failed.insert(job.object_id.clone());
                    }
                    Err(error) => {
                        warn!(object = %job.object_id, %error, "cannot prepare job");
                        failed.insert(job.object_id.clone());
                    }
                }
            }
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
                    info!(object = %id, stats = ?broadcaster.stats(), "aired");
                    airing.remove(&id);
                    if let Err(error) = queue.finish(&id) {
                        warn!(object = %id, %error, "cannot move finished job to done/");
                    }
                }
                BroadcastEvent::RoundStarted { object_id, round, symbols } => {
                    info!(object = %format!("{object_id:016x}"), round, symbols, "round started");
                }
                BroadcastEvent::RoundEnded { .. } | BroadcastEvent::Idle { .. } => {}
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
    info!(stats = ?broadcaster.stats(), "uplink stopped");
    Ok(())
}
