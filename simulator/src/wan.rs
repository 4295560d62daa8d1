//! A switchable terrestrial WAN for real daemons on loopback: a bidirectional UDP proxy
//! between the counties' acknowledgement clients and the uplink's QUIC server. While it is
//! down every datagram in either direction is dropped, as a cut line would.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The most clients the proxy tracks at once.
pub const CLIENTS_MAX: usize = 10_000;

/// A running proxy. Dropping it stops it.
#[derive(Debug)]
pub struct WanProxy {
    /// Where clients send (their "uplink" address).
    pub listen: SocketAddr,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Datagrams dropped while down.
    pub dropped: Arc<AtomicU64>,
    /// Datagrams forwarded from clients to the upstream server: what counties send.
    pub forwarded: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WanProxy {
    /// Starts forwarding between clients and `upstream`; the WAN starts up.
    pub fn start(upstream: SocketAddr) -> std::io::Result<WanProxy> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        let listen = socket.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let forwarded = Arc::new(AtomicU64::new(0));
        let (thread_up, thread_stop, thread_dropped, thread_forwarded) = (up.clone(), stop.clone(), dropped.clone(), forwarded.clone());
        let thread = std::thread::Builder::new().name("wan".into()).spawn(move || {
            let mut clients: HashMap<SocketAddr, UdpSocket> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            while !thread_stop.load(Ordering::Relaxed) {
                let mut idle = true;
                while let Ok((len, from)) = socket.recv_from(&mut buf) {
                    idle = false;
                    if !thread_up.load(Ordering::Relaxed) {
                        thread_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if !clients.contains_key(&from) && clients.len() < CLIENTS_MAX {
                        if let Ok(upstream_socket) = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.connect(upstream).map(|()| s)) {
                            let _ = upstream_socket.set_nonblocking(true);
                            clients.insert(from, upstream_socket);
                        }
                    }
                    if let Some(upstream_socket) = clients.get(&from) {
                        let _ = upstream_socket.send(&buf[..len]);
                        thread_forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                }
                for (client, upstream_socket) in &clients {
                    while let Ok(len) = upstream_socket.recv(&mut buf) {
                        idle = false;
                        if thread_up.load(Ordering::Relaxed) {
                            let _ = socket.send_to(&buf[..len], client);
                        } else {
                            thread_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })?;
        Ok(WanProxy { listen, up, stop, dropped, forwarded, thread: Some(thread) })
    }

    /// Cuts (false) or restores (true) the WAN.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }
}

impl Drop for WanProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
