//! The acknowledgement server: QUIC with mutual TLS. Only clients whose certificate the
//! private CA issued get in; each message must be about the county the certificate names
//! (its SAN `<code>.county.satcast`), else it is refused. Accepted messages go to the
//! daemon's datapath, which records them durably before the client is told so.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use satcast_daemon::summary::{Repeated, Summarised, reason_key};
use satcast_daemon::tls::TlsError;
use satcast_protocol::feedback::{ACK_ALPN, AckReply, FEEDBACK_BYTES_MAX, Feedback, county_dns_name};
use thiserror::Error;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// Feedback waiting for the datapath; beyond this, clients are told to come back later.
pub const PENDING_FEEDBACK_MAX: usize = 4096;
/// Connections held at once: every county plus room for reconnects.
pub const CONNECTIONS_MAX: usize = 4096;
/// Beyond this many connections, a client must prove its address (a QUIC Retry) before
/// the server spends a handshake on it: a flood of spoofed Initials costs nothing.
pub const UNVALIDATED_CONNECTIONS_MAX: usize = 256;
/// Bytes of datagrams quinn buffers for handshakes not yet accepted, per connection and
/// in total.
const INCOMING_BUFFER_BYTES_MAX: u64 = 64 * 1024;
const INCOMING_BUFFER_BYTES_TOTAL_MAX: u64 = 8 * 1024 * 1024;
/// Feedback messages a county may send per second on average, and in a burst; beyond it
/// the server answers Busy and the county's outbox waits. A county sends a few per round.
pub const FEEDBACK_PER_SEC_MAX: f64 = 20.0;
/// The burst allowance of [`FEEDBACK_PER_SEC_MAX`].
pub const FEEDBACK_BURST_MAX: f64 = 200.0;
/// Streams one connection may have open at once.
const STREAMS_PER_CONNECTION_MAX: u32 = 16;
/// Connections dropped after this long without a packet.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Receive buffer asked of the kernel for the server's socket: when every county
/// reconnects at once (a WAN outage ends), 2000 handshakes' datagrams arrive within
/// milliseconds; the default (about 208 KiB) overflows and each lost Initial costs its
/// county a retransmission timeout of one second or more. The kernel grants at most
/// net.core.rmem_max.
pub const RECV_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// How much lower than the daemon's the server's threads' priority is (a nice increment).
/// Airing is the uplink's real-time job: a pacing thread kept waiting for a CPU for more
/// than a few milliseconds loses carrier time for good (its burst allowance is four
/// datagrams), and 2000 handshakes at once keep every core busy for seconds. Counties wait
/// a little longer instead; the server still has every CPU nothing else wants.
pub const ACKS_NICE_INCREMENT: i32 = 10;
/// The lowest priority (highest nice value) Linux has.
pub const NICE_MAX: i32 = 19;
/// Worker threads of the acknowledgement server's runtime.
pub const WORKER_THREADS: usize = 2;
/// Refusals of the same kind and reason within this window are logged once, then counted
/// in one summary line.
const WARNINGS_WINDOW: Duration = Duration::from_secs(10);

/// What the acknowledgement server refuses, for its summarised warnings: anyone who can
/// reach its port can make it refuse at the rate they like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Refusal {
    /// A handshake that failed (no certificate, another CA, a timeout...).
    Handshake,
    /// A client whose certificate is revoked.
    Revoked,
    /// A stream that could not be read.
    Stream,
    /// Feedback that does not decode.
    Malformed,
    /// Feedback about a county the client's certificate does not name.
    OtherCounty,
}

impl Repeated for Refusal {
    fn summary(self) -> &'static str {
        match self {
            Refusal::Handshake => "acknowledgement connections refused",
            Refusal::Revoked => "connections with a revoked client certificate refused",
            Refusal::Stream => "unreadable feedback streams",
            Refusal::Malformed => "malformed feedback refused",
            Refusal::OtherCounty => "feedback about a county the certificate does not name refused",
        }
    }
}

/// The server's refusals, shared by its connection tasks.
type Warnings = Arc<Mutex<Summarised<Refusal>>>;

/// Counts a refusal; true if it is the first of its kind and reason this window (log it).
fn first(warnings: &Warnings, kind: Refusal, reason: &str) -> bool {
    warnings.lock().map(|mut w| w.first(kind, reason_key(reason))).unwrap_or(true)
}

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum AckServerError {
    /// A certificate or key file could not be read, or the TLS configuration was refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One authenticated message for the datapath, with the channel to answer on.
#[derive(Debug)]
pub struct AckRequest {
    /// The message; its county is the one the client certificate names.
    pub feedback: Feedback,
    /// Where the datapath answers once the message is recorded (or not).
    pub reply: oneshot::Sender<AckReply>,
}

/// Builds the server's TLS configuration: its certificate, and client certificates
/// required and checked against the private CA.
pub fn server_config(ca_cert: &Path, cert: &Path, key: &Path) -> Result<quinn::ServerConfig, AckServerError> {
    let quic = satcast_daemon::tls::quic_server(ca_cert, cert, key, ACK_ALPN)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.max_incoming(CONNECTIONS_MAX);
    config.incoming_buffer_size(INCOMING_BUFFER_BYTES_MAX);
    config.incoming_buffer_size_total(INCOMING_BUFFER_BYTES_TOTAL_MAX);
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(STREAMS_PER_CONNECTION_MAX.into());
    transport.max_concurrent_uni_streams(0u32.into());
    transport.max_idle_timeout(IDLE_TIMEOUT.try_into().ok());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Whether the peer's certificate names this county (its SAN `<code>.county.satcast`).
/// The chain itself was checked against the CA during the handshake.
fn certificate_names(connection: &quinn::Connection, county_code: &str) -> bool {
    let Some(identity) = connection.peer_identity() else { return false };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else { return false };
    let Some(leaf) = chain.first() else { return false };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else { return false };
    let Ok(name) = ServerName::try_from(county_dns_name(county_code)) else { return false };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// Fingerprints of revoked client certificates, reread when the file changes.
#[derive(Debug)]
pub struct RevokedClients {
    path: std::path::PathBuf,
    state: std::sync::Mutex<(Option<std::time::SystemTime>, std::collections::HashSet<String>)>,
}

impl RevokedClients {
    /// Watches `path` (a missing file revokes nothing).
    pub fn new(path: std::path::PathBuf) -> RevokedClients {
        RevokedClients { path, state: std::sync::Mutex::new((None, std::collections::HashSet::new())) }
    }

    /// Whether this leaf certificate (DER) is revoked.
    fn contains(&self, der: &[u8]) -> bool {
        let Ok(mut state) = self.state.lock() else { return true };
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified != state.0 {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            *state = (modified, text.lines().filter_map(|l| l.split_whitespace().next().map(str::to_owned)).collect());
        }
        state.1.contains(&blake3::hash(der).to_hex().to_string())
    }
}

/// Whether the peer's leaf certificate is on the revoked list.
fn revoked(connection: &quinn::Connection, revoked: &RevokedClients) -> bool {
    let Some(identity) = connection.peer_identity() else { return true };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else { return true };
    chain.first().is_none_or(|leaf| revoked.contains(leaf))
}

/// Per-county token buckets: (tokens, last refill).
type Limits = Arc<std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>>;

/// Takes one token from the county's bucket; false if it has none left.
fn allow(limits: &Limits, county: &str) -> bool {
    let Ok(mut limits) = limits.lock() else { return true };
    let now = std::time::Instant::now();
    let (tokens, last) = limits.entry(county.to_owned()).or_insert((FEEDBACK_BURST_MAX, now));
    *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * FEEDBACK_PER_SEC_MAX).min(FEEDBACK_BURST_MAX);
    *last = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        true
    } else {
        false
    }
}

/// The server's UDP socket, bound to `addr`, with a receive buffer of up to
/// [`RECV_BUFFER_BYTES`].
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Linux caps this at net.core.rmem_max without an error; serve() says what it got.
    socket.set_recv_buffer_size(RECV_BUFFER_BYTES)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The runtime the server runs on: [`WORKER_THREADS`] threads at a priority
/// [`ACKS_NICE_INCREMENT`] below the daemon's.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(WORKER_THREADS).on_thread_start(lower_priority).enable_all().build()
}

/// Lowers the calling thread's priority by [`ACKS_NICE_INCREMENT`] (Linux nice values are
/// per thread; raising one's own nice value needs no privilege). On failure the thread
/// keeps the daemon's priority: the server still works, airing may only lose time to it.
fn lower_priority() {
    let result = rustix::process::getpriority_process(None)
        .and_then(|nice| rustix::process::setpriority_process(Some(rustix::thread::gettid()), (nice + ACKS_NICE_INCREMENT).min(NICE_MAX)));
    if let Err(error) = result {
        debug!(%error, "cannot lower the acknowledgement thread's priority");
    }
}

/// Binds `addr` and serves until `stop` is set, handing authenticated messages to `tx`.
pub async fn serve(
    addr: SocketAddr,
    config: quinn::ServerConfig,
    tx: SyncSender<AckRequest>,
    revoked_clients: Arc<RevokedClients>,
    stop: Arc<AtomicBool>,
) -> Result<(), AckServerError> {
    let socket = bind(addr).map_err(|source| AckServerError::Bind { addr, source })?;
    if let Ok(granted) = socket2::SockRef::from(&socket).recv_buffer_size() {
        // Linux reports twice what it grants, for its bookkeeping.
        if granted / 2 < RECV_BUFFER_BYTES {
            warn!(
                granted_bytes = granted / 2,
                wanted_bytes = RECV_BUFFER_BYTES,
                "the kernel limits the acknowledgement socket's receive buffer (raise net.core.rmem_max): a reconnect storm may lose handshakes"
            );
        }
    }
    let runtime = Arc::new(quinn::TokioRuntime);
    let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(config), socket, runtime)
        .map_err(|source| AckServerError::Bind { addr, source })?;
    info!(local = ?endpoint.local_addr().ok(), "acknowledgement server listening");
    let limits: Limits = Arc::default();
    let warnings: Warnings = Arc::new(Mutex::new(Summarised::new(WARNINGS_WINDOW)));
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Ok(mut warnings) = warnings.lock() {
            warnings.flush();
        }
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
        let Some(incoming) = incoming else { break };
        let open = connections.load(Ordering::Relaxed);
        if open >= CONNECTIONS_MAX {
            incoming.refuse();
            continue;
        }
        if open >= UNVALIDATED_CONNECTIONS_MAX && !incoming.remote_address_validated() {
            let _ = incoming.retry();
            continue;
        }
        let (tx, limits, connections, revoked_clients) = (tx.clone(), limits.clone(), connections.clone(), revoked_clients.clone());
        let warnings = warnings.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            connections.fetch_add(1, Ordering::Relaxed);
            match incoming.await {
                Ok(connection) if revoked(&connection, &revoked_clients) => {
                    if first(&warnings, Refusal::Revoked, "") {
                        warn!(%remote, "client certificate is revoked: connection refused");
                    }
                    connection.close(1u32.into(), b"certificate revoked");
                }
                Ok(connection) => connection_loop(connection, tx, limits, revoked_clients, warnings).await,
                Err(error) => {
                    if first(&warnings, Refusal::Handshake, &error.to_string()) {
                        warn!(%remote, %error, "acknowledgement connection refused");
                    }
                }
            }
            connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
    endpoint.close(0u32.into(), b"stopping");
    Ok(())
}

async fn connection_loop(
    connection: quinn::Connection,
    tx: SyncSender<AckRequest>,
    limits: Limits,
    revoked_clients: Arc<RevokedClients>,
    warnings: Warnings,
) {
    let remote = connection.remote_address();
    // The county this connection speaks for, once its first message proved it.
    let mut county: Option<String> = None;
    loop {
        let (mut send, mut recv) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                debug!(%remote, %error, "acknowledgement connection closed");
                return;
            }
        };
        // A certificate revoked while its connection is open is shut out at its next message.
        if revoked(&connection, &revoked_clients) {
            if first(&warnings, Refusal::Revoked, "") {
                warn!(%remote, "client certificate is revoked: connection closed");
            }
            connection.close(1u32.into(), b"certificate revoked");
            return;
        }
        let reply = match recv.read_to_end(FEEDBACK_BYTES_MAX).await {
            Err(error) => {
                if first(&warnings, Refusal::Stream, &error.to_string()) {
                    warn!(%remote, %error, "unreadable feedback stream");
                }
                AckReply::Refused
            }
            Ok(bytes) => match Feedback::from_bytes(&bytes) {
                Err(error) => {
                    if first(&warnings, Refusal::Malformed, &error.to_string()) {
                        warn!(%remote, %error, "malformed feedback refused");
                    }
                    AckReply::Refused
                }
                Ok(feedback) => {
                    let proven =
                        county.as_deref() == Some(feedback.county_code.as_str()) || certificate_names(&connection, &feedback.county_code);
                    if !proven {
                        if first(&warnings, Refusal::OtherCounty, "") {
                            warn!(%remote, claimed = %feedback.county_code, "feedback about a county the client certificate does not name: refused");
                        }
                        AckReply::Refused
                    } else if !allow(&limits, &feedback.county_code) {
                        debug!(%remote, county = %feedback.county_code, "feedback rate limit: busy");
                        county = Some(feedback.county_code.clone());
                        AckReply::Busy
                    } else {
                        county = Some(feedback.county_code.clone());
                        forward(&tx, feedback).await
                    }
                }
            },
        };
        let _ = send.write_all(&[reply as u8]).await;
        let _ = send.finish();
    }
}

async fn forward(tx: &SyncSender<AckRequest>, feedback: Feedback) -> AckReply {
    let (reply, answer) = oneshot::channel();
    if tx.try_send(AckRequest { feedback, reply }).is_err() {
        return AckReply::Busy;
    }
    answer.await.unwrap_or(AckReply::Busy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rmem_max() -> usize {
        std::fs::read_to_string("/proc/sys/net/core/rmem_max").ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
    }

    #[test]
    fn the_server_socket_asks_for_a_receive_buffer_that_holds_a_reconnect_storm() {
        let socket = bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let granted = socket2::SockRef::from(&socket).recv_buffer_size().expect("recv buffer size");
        // The kernel grants at most rmem_max (and reports twice what it grants).
        let expected = RECV_BUFFER_BYTES.min(rmem_max());
        assert!(granted >= expected, "receive buffer {granted} bytes, expected at least {expected}");
    }

    /// The nice value of the calling thread.
    fn thread_nice() -> i32 {
        rustix::process::getpriority_process(None).expect("getpriority")
    }

    #[test]
    fn the_server_threads_yield_the_cpu_to_the_pacing_thread() {
        let base = thread_nice();
        let runtime = runtime().expect("runtime");
        let nice = runtime.block_on(async { tokio::spawn(async { thread_nice() }).await.expect("task") });
        assert_eq!(nice, (base + ACKS_NICE_INCREMENT).min(NICE_MAX), "the worker threads run at a lower priority");
    }
}
