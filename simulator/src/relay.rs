//! A UDP impairment relay for real daemons: takes the uplink's datagrams on one socket and
//! fans each out to every destination, per destination dropping some (a seeded loss
//! model), delaying the rest, and holding a rate limit. It stands in for the satellite hop
//! on loopback, where netem is not available.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use crate::loss::LossModel;
use crate::loss::LossState;

/// Datagrams held per destination (delay line and rate limit), like a router's buffer;
/// beyond it new ones are dropped and counted.
pub const QUEUE_DATAGRAMS_MAX: usize = 20_000;

/// One receiver the relay forwards to.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Where to send.
    pub addr: SocketAddr,
    /// What to lose on the way.
    pub loss: LossModel,
    /// One-way delay added (GEO: about 270 ms).
    pub delay: Duration,
    /// Rate limit in bits per second, IP and UDP headers counted (None: unlimited).
    pub rate_bits_per_sec: Option<u64>,
}

impl Destination {
    /// A destination with this loss, no delay and no rate limit.
    pub fn lossy(addr: SocketAddr, loss: LossModel) -> Self {
        Destination { addr, loss, delay: Duration::ZERO, rate_bits_per_sec: None }
    }
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
    /// Datagrams dropped because a destination's queue was full (rate limit too low).
    pub overflowed: AtomicU64,
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

/// One destination's state on the relay thread.
struct Path {
    destination: Destination,
    loss: LossState,
    queue: VecDeque<(Instant, Vec<u8>)>,
    /// Token bucket in bits, refilled at the rate, capped at a burst of a few datagrams.
    credit_bits: f64,
    refilled: Instant,
}

impl Path {
    /// Sends what is due and within the rate; returns how many went.
    fn drain(&mut self, out: &UdpSocket, now: Instant) -> u64 {
        let mut sent = 0;
        if let Some(rate) = self.destination.rate_bits_per_sec {
            let burst = 8.0 * 4.0 * 1500.0;
            self.credit_bits = (self.credit_bits + now.duration_since(self.refilled).as_secs_f64() * rate as f64).min(burst);
            self.refilled = now;
        }
        while let Some((due, datagram)) = self.queue.front() {
            if *due > now {
                break;
            }
            let cost = ((datagram.len() + 28) * 8) as f64;
            if self.destination.rate_bits_per_sec.is_some() {
                if self.credit_bits < cost {
                    break;
                }
                self.credit_bits -= cost;
            }
            if out.send_to(datagram, self.destination.addr).is_ok() {
                sent += 1;
            }
            self.queue.pop_front();
        }
        sent
    }
}

impl Relay {
    /// Binds `listen` and starts forwarding on a thread. The loss draws come from `seed`.
    pub fn start(listen: SocketAddr, destinations: Vec<Destination>, seed: u64) -> std::io::Result<Relay> {
        let socket = UdpSocket::bind(listen)?;
        socket.set_nonblocking(true)?;
        let listen = socket.local_addr()?;
        let out = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let stats = Arc::new(RelayStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_stats, thread_stop) = (stats.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("relay".into()).spawn(move || {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let start = Instant::now();
            let mut paths: Vec<Path> = destinations
                .into_iter()
                .map(|d| Path { loss: LossState::new(d.loss), destination: d, queue: VecDeque::new(), credit_bits: 0.0, refilled: start })
                .collect();
            let mut buf = vec![0u8; 65_536];
            while !thread_stop.load(Ordering::Relaxed) {
                let mut busy = false;
                while let Ok(len) = socket.recv(&mut buf) {
                    busy = true;
                    thread_stats.received.fetch_add(1, Ordering::Relaxed);
                    thread_stats.bytes_on_air.fetch_add(len as u64 + 28, Ordering::Relaxed);
                    let now = Instant::now();
                    for path in &mut paths {
                        if path.loss.lose(&mut rng) {
                            thread_stats.dropped.fetch_add(1, Ordering::Relaxed);
                        } else if path.queue.len() >= QUEUE_DATAGRAMS_MAX {
                            thread_stats.overflowed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            path.queue.push_back((now + path.destination.delay, buf[..len].to_vec()));
                        }
                    }
                }
                let now = Instant::now();
                for path in &mut paths {
                    let sent = path.drain(&out, now);
                    busy |= sent > 0;
                    thread_stats.forwarded.fetch_add(sent, Ordering::Relaxed);
                }
                if !busy {
                    std::thread::sleep(Duration::from_micros(200));
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
