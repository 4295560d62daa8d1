//! A UDP impairment relay for real daemons: takes the uplink's datagrams on one socket and
//! fans each out to every destination, dropping some per a seeded loss model. It stands
//! in for the satellite hop on loopback, where netem is not available.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use crate::loss::LossModel;
use crate::loss::LossState;

/// One receiver the relay forwards to.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Where to send.
    pub addr: SocketAddr,
    /// What to lose on the way.
    pub loss: LossModel,
}

/// Counters of what the relay did, shared with whoever started it.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams received from the uplink.
    pub received: AtomicU64,
    /// Datagrams forwarded (summed over destinations).
    pub forwarded: AtomicU64,
    /// Datagrams dropped by a loss model (summed over destinations).
    pub dropped: AtomicU64,
    /// Bytes received from the uplink, IP and UDP headers included: what the carrier carried.
    pub bytes_on_air: AtomicU64,
}

/// A running relay's handle.
#[derive(Debug)]
pub struct Relay {
    /// The address the uplink should send to.
    pub listen: SocketAddr,
    /// Counters.
    pub stats: Arc<RelayStats>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Binds `listen` and starts forwarding on a thread. The loss draws come from `seed`.
    pub fn start(listen: SocketAddr, destinations: Vec<Destination>, seed: u64) -> std::io::Result<Relay> {
        let socket = UdpSocket::bind(listen)?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let listen = socket.local_addr()?;
        let out = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let stats = Arc::new(RelayStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_stats, thread_stop) = (stats.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("relay".into()).spawn(move || {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut paths: Vec<LossState> = destinations.iter().map(|d| LossState::new(d.loss)).collect();
            let mut buf = vec![0u8; 65_536];
            while !thread_stop.load(Ordering::Relaxed) {
                let Ok(len) = socket.recv(&mut buf) else { continue };
                thread_stats.received.fetch_add(1, Ordering::Relaxed);
                thread_stats.bytes_on_air.fetch_add(len as u64 + 28, Ordering::Relaxed);
                for (destination, path) in destinations.iter().zip(&mut paths) {
                    if path.lose(&mut rng) {
                        thread_stats.dropped.fetch_add(1, Ordering::Relaxed);
                    } else if out.send_to(&buf[..len], destination.addr).is_ok() {
                        thread_stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })?;
        Ok(Relay { listen, stats, stop, thread: Some(thread) })
    }

    /// Stops the relay and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown();
    }
}
