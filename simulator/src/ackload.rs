//! Load on the acknowledgement channel: N counties at once against a real uplink. Each
//! county has its own client certificate, issued in memory by the uplink's private CA the
//! way `satcast-uplink keys receiver` issues one (subject CN the county code, SAN
//! `<code>.county.satcast`), and speaks as the receiver's ack client does: one connection,
//! each message on its own stream, the next one only once the uplink answered that it
//! recorded the last (Hello, a few Progress reports, then Complete). A busy answer or a
//! broken connection is met the way the receiver meets it: back off, reconnect, resend.
//!
//! In outage mode, once every county has reported, the WAN is cut under all of them at
//! once (their datagrams vanish in both directions, so the uplink hears no close and keeps
//! the dead connections until its idle timeout); when it returns, every county reconnects
//! at once and reports again: a Hello and its Complete, which the uplink has already
//! recorded (a county whose answer was lost in the outage sends it again). The ledger must
//! still hold each county's delivery exactly once.
//!
//! [`run`] does the whole measurement: a real `satcast-uplink serve` airing a broadcast to
//! a UDP socket this process counts (its rate in 1 s windows), the load, the uplink's
//! peak RSS and CPU time from /proc, and the ledger read back with `satcast-uplink status`.

use std::collections::BTreeMap;
use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime as _, TokioRuntime, UdpPoller};
use rand::seq::SliceRandom as _;
use rand::{Rng as _, RngCore as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use satcast_protocol::feedback::{ACK_ALPN, AckReply, Feedback, FeedbackMessage, county_dns_name};
use serde::Serialize;
use thiserror::Error;

use crate::cluster::{ClusterError, Daemon, control_listen, free_udp_addr, wait_until, write_uplink_config};
use crate::divisions;

/// The most clients one run drives: every county in the division table fits.
pub const CLIENTS_MAX: usize = 4096;
/// Progress reports each county sends before its Complete.
pub const PROGRESS_REPORTS: u32 = 3;
/// Handshakes in flight at once unless told otherwise: enough that 2000 counties connect
/// within seconds, few enough that the load generator's own CPU does not decide the figures.
pub const HANDSHAKES_IN_FLIGHT_DEFAULT: usize = 256;
/// How long the WAN stays cut in outage mode: longer than a few round trips, so every
/// county's old connection is dead (its close lost) before it reconnects.
pub const OUTAGE_DEFAULT: Duration = Duration::from_secs(3);
/// The lowest priority (highest nice value) on Linux: the load generator's threads.
const NICE_LOWEST: i32 = 19;
/// Tolerance of the concurrent broadcast's rate in each 1 s window.
pub const RATE_DEVIATION_MAX: f64 = 0.01;
/// Bytes of IPv4 and UDP header the uplink's pacer counts on top of each datagram.
pub const IP_UDP_HEADER_BYTES: u64 = 28;
/// Connection attempts (with back-off) a county makes per round before it gives up.
const ATTEMPTS_MAX: u32 = 8;
/// First wait after a failed attempt, doubled after each: the receiver's back-off, capped
/// lower so a run stays bounded.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// How long a handshake may take, and an answer to one message (the receiver's timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The keep-alive the receiver's ack client uses.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The private CA's common name: the issuer name the uplink's `keys` module gives it
/// (satcast_uplink::keys::CA_COMMON_NAME), rebuilt here to sign with its key.
const CA_COMMON_NAME: &str = "satcast private CA";
/// The CA's files in the uplink's key folder.
const CA_CERT_FILE: &str = "ca.cert.pem";
const CA_KEY_FILE: &str = "ca.key.pem";
/// The name the uplink's server certificate carries.
const UPLINK_SERVER_NAME: &str = "satcast-uplink";
/// Datagrams the air meter remembers (timestamps and sizes): over ten minutes at 8 Mbit/s.
const AIR_DATAGRAMS_MAX: usize = 1_000_000;
/// The air meter thread's nice value, if the process may raise its priority.
const METER_NICE: i32 = -10;
/// Receive buffer of the air meter's socket.
const AIR_RECV_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Clock ticks per second of /proc/PID/stat's utime and stime (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;
/// How long the uplink may take to start airing the broadcast after `send`.
const AIRING_START_MAX: Duration = Duration::from_secs(60);
/// Time after the broadcast starts before rate windows count: the pacer's first burst.
const AIRING_SETTLE: Duration = Duration::from_secs(2);

/// Why the load could not be run (what it measured is in the report, failures included).
#[derive(Debug, Error)]
pub enum AckLoadError {
    /// Starting or driving the uplink failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA key could not be read, or a certificate could not be made.
    #[error("county certificate: {0}")]
    Certificate(String),
    /// More clients than [`CLIENTS_MAX`] or than the division table has counties.
    #[error("{0} clients: expected 1 to {max}", max = CLIENTS_MAX.min(divisions::counties().len()))]
    Clients(usize),
    /// The uplink said something this run cannot read.
    #[error("uplink: {0}")]
    Uplink(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AckLoadError {
    let what = what.into();
    move |source| AckLoadError::Io { what, source }
}

/// What the load does.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Counties reporting at once.
    pub clients: usize,
    /// After all reported, cut the WAN under every county at once, restore it, and have
    /// all reconnect and report again.
    pub outage: bool,
    /// How long the WAN stays cut.
    pub outage_duration: Duration,
    /// Handshakes in flight at once.
    pub handshakes_in_flight: usize,
    /// Picks the counties (from the division table) and their Progress figures.
    pub seed: u64,
    /// The whole load gives up after this long: counties still at work then count as not
    /// reported, so a run stays bounded whatever the uplink does.
    pub time_limit: Duration,
}

/// The uplink the load goes to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its acknowledgement server.
    pub server: SocketAddr,
    /// Its key folder (the private CA that issues the counties' certificates).
    pub keys_dir: PathBuf,
    /// The broadcast the counties report about, and its payload's BLAKE3.
    pub object_id: u64,
    /// BLAKE3 of the broadcast's payload, as Complete carries it.
    pub object_hash: [u8; 32],
    /// The uplink's process, for its CPU time per round.
    pub pid: Option<u32>,
}

/// One round of the load: every county connects and reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundReport {
    /// "initial", or "after the outage".
    pub name: String,
    /// Counties that took part.
    pub clients: usize,
    /// Counties whose connection came up.
    pub connected: usize,
    /// Counties whose every message was answered "recorded".
    pub reported: usize,
    /// Messages answered "recorded".
    pub recorded: usize,
    /// From a message's first send to the uplink's "recorded", over every message: median,
    /// 99th percentile and largest, in milliseconds.
    pub recorded_p50_ms: f64,
    /// See [`RoundReport::recorded_p50_ms`].
    pub recorded_p99_ms: f64,
    /// See [`RoundReport::recorded_p50_ms`].
    pub recorded_max_ms: f64,
    /// The same for Complete messages alone.
    pub complete_p50_ms: f64,
    /// See [`RoundReport::complete_p50_ms`].
    pub complete_p99_ms: f64,
    /// Handshake time (from connect to established): median and 99th percentile.
    pub handshake_p50_ms: f64,
    /// See [`RoundReport::handshake_p50_ms`].
    pub handshake_p99_ms: f64,
    /// "busy" answers (each costs the county a back-off and a reconnect).
    pub busy: u64,
    /// Failures by kind, with the first message of each.
    pub errors: BTreeMap<String, ErrorCount>,
    /// From the round's start until the last county reported, in seconds.
    pub seconds: f64,
    /// The uplink's CPU time (user + system) during the round, in seconds.
    pub uplink_cpu_secs: f64,
}

/// How often one kind of failure happened, and what the first one said.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorCount {
    /// How many.
    pub count: u64,
    /// The first one's message.
    pub first: String,
}

/// What went wrong for one county once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ErrorKind {
    /// A socket or endpoint could not be made, or the connect call refused.
    Connect,
    /// The handshake failed.
    Handshake,
    /// The handshake took longer than [`CONNECT_TIMEOUT`].
    HandshakeTimeout,
    /// Opening, writing or reading a stream failed.
    Stream,
    /// No answer within [`REPLY_TIMEOUT`].
    NoAnswer,
    /// The uplink refused a message for good.
    Refused,
    /// Every attempt of the round failed.
    GaveUp,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Handshake => "handshake",
            ErrorKind::HandshakeTimeout => "handshake timeout",
            ErrorKind::Stream => "stream",
            ErrorKind::NoAnswer => "no answer",
            ErrorKind::Refused => "refused",
            ErrorKind::GaveUp => "gave up",
        }
    }
}

/// What the counties of one round saw, merged.
#[derive(Debug, Default)]
struct Tally {
    connected: usize,
    reported: usize,
    latencies: Vec<Duration>,
    complete_latencies: Vec<Duration>,
    handshakes: Vec<Duration>,
    busy: u64,
    errors: BTreeMap<ErrorKind, ErrorCount>,
}

impl Tally {
    fn error(&mut self, kind: ErrorKind, message: impl FnOnce() -> String) {
        let entry = self.errors.entry(kind).or_default();
        if entry.count == 0 {
            entry.first = message();
        }
        entry.count += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.connected += other.connected;
        self.reported += other.reported;
        self.latencies.extend(other.latencies);
        self.complete_latencies.extend(other.complete_latencies);
        self.handshakes.extend(other.handshakes);
        self.busy += other.busy;
        for (kind, count) in other.errors {
            let entry = self.errors.entry(kind).or_default();
            if entry.count == 0 {
                entry.first = count.first;
            }
            entry.count += count.count;
        }
    }
}

/// The `q` quantile (0 to 1) of `values`, in milliseconds; 0 for none.
pub fn quantile_ms(values: &mut [Duration], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let index = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
    values[index].as_secs_f64() * 1000.0
}

/// A UDP socket whose traffic a shared switch can cut in both directions, as a WAN outage
/// would: while cut, what quinn sends is dropped and what arrives is thrown away.
#[derive(Debug)]
struct WanSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    cut: Arc<AtomicBool>,
}

impl AsyncUdpSocket for WanSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> std::io::Result<()> {
        if self.cut.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(&self, cx: &mut Context<'_>, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> Poll<std::io::Result<usize>> {
        loop {
            match self.inner.poll_recv(cx, bufs, meta) {
                // Read and dropped; polling again registers the waker for the next one.
                Poll::Ready(Ok(_)) if self.cut.load(Ordering::Relaxed) => continue,
                other => return other,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// One county's client identity.
struct Identity {
    code: String,
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// Issues a client certificate for each county with the private CA in `keys_dir`, as
/// `satcast-uplink keys receiver` does but in memory (no bundle files, no fsyncs).
fn issue(keys_dir: &Path, codes: &[String]) -> Result<Vec<Identity>, AckLoadError> {
    let certificate = |e: rcgen::Error| AckLoadError::Certificate(e.to_string());
    let ca_key_pem = std::fs::read_to_string(keys_dir.join(CA_KEY_FILE)).map_err(io(format!("reading {CA_KEY_FILE}")))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(certificate)?;
    // The issuer's name and key are all that reach a client certificate (the key identifier
    // is derived from the key), so this stands in for the CA certificate on disk.
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = common_name(CA_COMMON_NAME);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let issuer = ca_params.self_signed(&ca_key).map_err(certificate)?;
    codes
        .iter()
        .map(|code| {
            let key = KeyPair::generate().map_err(certificate)?;
            let mut params = CertificateParams::new(vec![county_dns_name(code)]).map_err(certificate)?;
            params.distinguished_name = common_name(code);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.use_authority_key_identifier_extension = true;
            let cert = params.signed_by(&key, &issuer, &ca_key).map_err(certificate)?;
            Ok(Identity { code: code.clone(), cert: cert.der().clone(), key: PrivatePkcs8KeyDer::from(key.serialize_der()) })
        })
        .collect()
}

/// A county's QUIC client configuration: its certificate, the CA pinned, the ack ALPN and
/// the receiver's keep-alive.
fn client_config(roots: &Arc<rustls::RootCertStore>, identity: &Identity) -> Result<quinn::ClientConfig, AckLoadError> {
    let tls_error = |e: rustls::Error| AckLoadError::Certificate(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(vec![identity.cert.clone()], PrivateKeyDer::Pkcs8(identity.key.clone_key()))
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![ACK_ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| AckLoadError::Certificate(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// What every county task of a round shares.
struct Shared {
    server: SocketAddr,
    handshakes: tokio::sync::Semaphore,
    tally: Mutex<Tally>,
}

/// A county's open connection, held until the round's end (or the outage).
type Held = (quinn::Endpoint, quinn::Connection);

/// Connects through a fresh socket behind `cut`; returns the connection and how long the
/// handshake took.
async fn connect(shared: &Shared, tls: &quinn::ClientConfig, cut: &Arc<AtomicBool>) -> Result<(Held, Duration), (ErrorKind, String)> {
    let connect_error = |e: &dyn std::fmt::Display| (ErrorKind::Connect, e.to_string());
    let _permit = shared.handshakes.acquire().await.map_err(|e| connect_error(&e))?;
    let bind: SocketAddr = if shared.server.is_ipv4() { ([127, 0, 0, 1], 0).into() } else { ([0u16, 0, 0, 0, 0, 0, 0, 1], 0).into() };
    let socket = UdpSocket::bind(bind).map_err(|e| connect_error(&e))?;
    let inner = TokioRuntime.wrap_udp_socket(socket).map_err(|e| connect_error(&e))?;
    let socket = Arc::new(WanSocket { inner, cut: cut.clone() });
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(quinn::EndpointConfig::default(), None, socket, Arc::new(TokioRuntime))
        .map_err(|e| connect_error(&e))?;
    endpoint.set_default_client_config(tls.clone());
    let started = Instant::now();
    let connecting = endpoint.connect(shared.server, UPLINK_SERVER_NAME).map_err(|e| connect_error(&e))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => Err((ErrorKind::HandshakeTimeout, format!("no handshake within {} s", CONNECT_TIMEOUT.as_secs()))),
        Ok(Err(error)) => Err((ErrorKind::Handshake, error.to_string())),
        Ok(Ok(connection)) => Ok(((endpoint, connection), started.elapsed())),
    }
}

/// Sends one message on its own stream and waits for the answer, as the receiver does.
async fn exchange(connection: &quinn::Connection, feedback: &Feedback) -> Result<AckReply, (ErrorKind, String)> {
    let stream = |e: &dyn std::fmt::Display| (ErrorKind::Stream, e.to_string());
    let exchange = async {
        let (mut tx, mut rx) = connection.open_bi().await.map_err(|e| stream(&e))?;
        tx.write_all(&feedback.to_bytes()).await.map_err(|e| stream(&e))?;
        tx.finish().map_err(|e| stream(&e))?;
        let reply = rx.read_to_end(16).await.map_err(|e| stream(&e))?;
        Ok(reply.first().map_or(AckReply::Busy, |b| AckReply::from_byte(*b)))
    };
    tokio::time::timeout(REPLY_TIMEOUT, exchange)
        .await
        .map_err(|_| (ErrorKind::NoAnswer, format!("no answer within {} s", REPLY_TIMEOUT.as_secs())))?
}

/// One county's round: connect, send `messages` in order (each once recorded), and hand
/// back the open connection. Failures back off and reconnect, up to [`ATTEMPTS_MAX`].
async fn county(shared: Arc<Shared>, tls: quinn::ClientConfig, messages: Vec<Feedback>, cut: Arc<AtomicBool>) -> Option<Held> {
    let mut tally = Tally::default();
    let mut next = 0;
    let mut first_sent: Option<Instant> = None;
    let mut backoff = BACKOFF_MIN;
    let mut connected = false;
    let mut held = None;
    for _ in 0..ATTEMPTS_MAX {
        let (endpoint, connection) = match connect(&shared, &tls, &cut).await {
            Ok((held, took)) => {
                tally.handshakes.push(took);
                held
            }
            Err((kind, message)) => {
                tally.error(kind, || message);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        connected = true;
        while let Some(feedback) = messages.get(next) {
            let started = *first_sent.get_or_insert_with(Instant::now);
            match exchange(&connection, feedback).await {
                Ok(AckReply::Recorded) => {
                    let took = started.elapsed();
                    tally.latencies.push(took);
                    if matches!(feedback.message, FeedbackMessage::Complete { .. }) {
                        tally.complete_latencies.push(took);
                    }
                    first_sent = None;
                    next += 1;
                }
                Ok(AckReply::Refused) => {
                    // The receiver drops a refused message for good; so does this county.
                    tally.error(ErrorKind::Refused, || format!("{:?} refused", feedback.message));
                    first_sent = None;
                    next += 1;
                }
                Ok(AckReply::Busy) => {
                    tally.busy += 1;
                    break;
                }
                Err((kind, message)) => {
                    tally.error(kind, || message);
                    break;
                }
            }
        }
        if next == messages.len() {
            held = Some((endpoint, connection));
            break;
        }
        connection.close(0u32.into(), b"retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    if held.is_some() {
        tally.reported = 1;
    } else {
        tally.error(ErrorKind::GaveUp, || format!("{ATTEMPTS_MAX} attempts failed"));
    }
    tally.connected = usize::from(connected);
    if let Ok(mut shared_tally) = shared.tally.lock() {
        shared_tally.merge(tally);
    }
    held
}

/// Runs one round: every county at once; returns its report and the open connections.
async fn round(
    name: &str,
    options: &LoadOptions,
    target: &Target,
    configs: &[quinn::ClientConfig],
    messages: Vec<Vec<Feedback>>,
    cut: &Arc<AtomicBool>,
    deadline: tokio::time::Instant,
) -> (RoundReport, Vec<Held>) {
    let pid = target.pid;
    let shared = Arc::new(Shared {
        server: target.server,
        handshakes: tokio::sync::Semaphore::new(options.handshakes_in_flight.max(1)),
        tally: Mutex::new(Tally::default()),
    });
    let cpu_before = pid.and_then(cpu_secs);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (tls, messages) in configs.iter().zip(messages) {
        tasks.spawn(county(shared.clone(), tls.clone(), messages, cut.clone()));
    }
    let mut held = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(done)) => held.extend(done.ok().flatten()),
            Ok(None) => break,
            Err(_) => {
                // Out of time: the counties still at work have not reported.
                tasks.abort_all();
                break;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let uplink_cpu_secs = match (cpu_before, pid.and_then(cpu_secs)) {
        (Some(before), Some(after)) => after - before,
        _ => 0.0,
    };
    let mut tally = shared.tally.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
    let report = RoundReport {
        name: name.to_owned(),
        clients: configs.len(),
        connected: tally.connected,
        reported: tally.reported,
        recorded: tally.latencies.len(),
        recorded_p50_ms: quantile_ms(&mut tally.latencies, 0.5),
        recorded_p99_ms: quantile_ms(&mut tally.latencies, 0.99),
        recorded_max_ms: quantile_ms(&mut tally.latencies, 1.0),
        complete_p50_ms: quantile_ms(&mut tally.complete_latencies, 0.5),
        complete_p99_ms: quantile_ms(&mut tally.complete_latencies, 0.99),
        handshake_p50_ms: quantile_ms(&mut tally.handshakes, 0.5),
        handshake_p99_ms: quantile_ms(&mut tally.handshakes, 0.99),
        busy: tally.busy,
        errors: tally.errors.into_iter().map(|(kind, count)| (kind.as_str().to_owned(), count)).collect(),
        seconds,
        uplink_cpu_secs,
    };
    (report, held)
}

/// The counties a seed picks from the division table, in a seeded order.
pub fn pick_counties(seed: u64, clients: usize) -> Result<Vec<String>, AckLoadError> {
    let mut codes: Vec<String> = divisions::counties().into_iter().map(|d| d.code).collect();
    if clients == 0 || clients > CLIENTS_MAX || clients > codes.len() {
        return Err(AckLoadError::Clients(clients));
    }
    codes.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    codes.truncate(clients);
    Ok(codes)
}

fn hello(code: &str) -> Feedback {
    Feedback {
        county_code: code.to_owned(),
        message: FeedbackMessage::Hello { software_version: "ackload".into(), free_disk_bytes: 1 << 40, heartbeat_age_ms: Some(500) },
    }
}

/// Hello, [`PROGRESS_REPORTS`] Progress reports with shrinking needs, Complete.
fn first_messages(code: &str, target: &Target, rng: &mut ChaCha8Rng) -> Vec<Feedback> {
    let mut messages = vec![hello(code)];
    let blocks = rng.random_range(1..=8usize);
    let mut needs: Vec<u32> = (0..blocks).map(|_| rng.random_range(0..2000)).collect();
    for round in 0..PROGRESS_REPORTS {
        let symbols_received = u64::from(round + 1) * 10_000;
        let message = FeedbackMessage::Progress { object_id: target.object_id, round, needs: needs.clone(), symbols_received };
        messages.push(Feedback { county_code: code.to_owned(), message });
        needs.iter_mut().for_each(|n| *n /= 2);
    }
    let complete = FeedbackMessage::Complete { object_id: target.object_id, object_hash: target.object_hash };
    messages.push(Feedback { county_code: code.to_owned(), message: complete });
    messages
}

/// Everything a load needs made before it starts: the counties' certificates and TLS
/// configurations (seconds of CPU for 2000, which must not fall inside the measurement).
#[derive(Debug)]
pub struct PreparedLoad {
    options: LoadOptions,
    target: Target,
    configs: Vec<quinn::ClientConfig>,
    first: Vec<Vec<Feedback>>,
    again: Vec<Vec<Feedback>>,
}

/// Issues the counties' certificates and builds their messages.
pub fn prepare(options: &LoadOptions, target: &Target) -> Result<PreparedLoad, AckLoadError> {
    let codes = pick_counties(options.seed, options.clients)?;
    let identities = issue(&target.keys_dir, &codes)?;
    let ca = CertificateDer::from_pem_file(target.keys_dir.join(CA_CERT_FILE)).map_err(|e| AckLoadError::Certificate(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| AckLoadError::Certificate(e.to_string()))?;
    let roots = Arc::new(roots);
    let configs = identities.iter().map(|identity| client_config(&roots, identity)).collect::<Result<Vec<_>, _>>()?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x5eed);
    let first: Vec<Vec<Feedback>> = identities.iter().map(|i| first_messages(&i.code, target, &mut rng)).collect();
    let again: Vec<Vec<Feedback>> = identities
        .iter()
        .map(|i| {
            let complete = FeedbackMessage::Complete { object_id: target.object_id, object_hash: target.object_hash };
            vec![hello(&i.code), Feedback { county_code: i.code.clone(), message: complete }]
        })
        .collect();
    Ok(PreparedLoad { options: options.clone(), target: target.clone(), configs, first, again })
}

/// Drives a prepared load; returns one report per round.
pub fn drive(prepared: PreparedLoad) -> Result<Vec<RoundReport>, AckLoadError> {
    let PreparedLoad { options, target, configs, first, again } = prepared;
    let options = &options;
    let target = &target;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(lowest_priority)
        .enable_all()
        .build()
        .map_err(io("starting the runtime"))?;
    runtime.block_on(async {
        let mut reports = Vec::new();
        let deadline = tokio::time::Instant::now() + options.time_limit;
        let wan = Arc::new(AtomicBool::new(false));
        let (report, held) = round("initial", options, target, &configs, first, &wan, deadline).await;
        reports.push(report);
        if options.outage {
            // Cut under every county at once: what they send now (their closes too) is lost.
            wan.store(true, Ordering::Relaxed);
            drop(held);
            tokio::time::sleep(options.outage_duration).await;
            // The WAN is back: new sockets (new ports, as after a line reset), all at once.
            let wan = Arc::new(AtomicBool::new(false));
            let (report, held) = round("after the outage", options, target, &configs, again, &wan, deadline).await;
            reports.push(report);
            close(held).await;
        } else {
            close(held).await;
        }
        Ok(reports)
    })
}

/// Puts the calling thread at the lowest priority: the counties run on machines of their
/// own, so on a shared one their CPU must not come out of the uplink's (whose pacing
/// thread is what the airing rate measures). Failing that, the load runs at normal priority.
fn lowest_priority() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE_LOWEST);
}

/// Closes every connection and gives the closes a moment to leave.
async fn close(held: Vec<Held>) {
    for (_, connection) in &held {
        connection.close(0u32.into(), b"done");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// User plus system CPU time of a process so far, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    cpu_secs_of(Path::new(&format!("/proc/{pid}/stat")))
}

/// User plus system CPU time from a /proc stat file, in seconds.
fn cpu_secs_of(path: &Path) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// CPU time (user + system, seconds) of each thread of a process, summed per thread name
/// ("main" for the process's first thread: the uplink's pacing thread).
pub fn thread_cpu_secs(pid: u32) -> BTreeMap<String, f64> {
    let mut threads = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return threads };
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let Ok(tid) = tid.parse::<u32>() else { continue };
        let name = if tid == pid {
            "main".to_owned()
        } else {
            std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_owned()
        };
        if let Some(secs) = cpu_secs_of(&task.path().join("stat")) {
            *threads.entry(name).or_default() += secs;
        }
    }
    threads
}

/// A field of /proc/PID/status in KiB (VmHWM: peak resident set; VmRSS: current).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse().ok())
}

/// Counts what the uplink airs: the arrival time and on-air size (datagram plus IP and UDP
/// headers) of every datagram sent to its socket.
#[derive(Debug)]
pub struct AirMeter {
    /// Where the uplink airs to.
    pub addr: SocketAddr,
    heard: Arc<Mutex<Vec<(Instant, u64)>>>,
    /// The receiving thread's id, once it runs (0 before).
    tid: Arc<std::sync::atomic::AtomicU32>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AirMeter {
    /// Binds a loopback socket and starts counting.
    pub fn start() -> std::io::Result<AirMeter> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        // Seconds of the carrier, so a moment this thread waits for a CPU loses nothing.
        socket.set_recv_buffer_size(AIR_RECV_BUFFER_BYTES)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        let socket: UdpSocket = socket.into();
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let addr = socket.local_addr()?;
        let heard = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (thread_heard, thread_stop, thread_tid) = (heard.clone(), stop.clone(), tid.clone());
        let thread = std::thread::Builder::new().name("air-meter".into()).spawn(move || {
            let me = rustix::thread::gettid();
            thread_tid.store(me.as_raw_nonzero().get().unsigned_abs(), Ordering::Relaxed);
            // A datagram is stamped when this thread reads it: a higher priority keeps the
            // stamps close to the arrivals. Only a privileged process may raise it; without,
            // the thread's CPU wait is measured and bounds the error instead.
            let _ = rustix::process::setpriority_process(Some(me), METER_NICE);
            let mut buf = vec![0u8; 65_536];
            while !thread_stop.load(Ordering::Relaxed) {
                if let Ok(len) = socket.recv(&mut buf) {
                    let at = Instant::now();
                    if let Ok(mut heard) = thread_heard.lock() {
                        if heard.len() < AIR_DATAGRAMS_MAX {
                            heard.push((at, len as u64 + IP_UDP_HEADER_BYTES));
                        }
                    }
                }
            }
        })?;
        Ok(AirMeter { addr, heard, tid, stop, thread: Some(thread) })
    }

    /// The receiving thread's id in this process, once it runs.
    pub fn tid(&self) -> Option<u32> {
        wait_until(Duration::from_secs(1), || self.tid.load(Ordering::Relaxed) != 0);
        Some(self.tid.load(Ordering::Relaxed)).filter(|tid| *tid != 0)
    }

    /// Bits on the air in each whole 1 s window from `from` until `to`.
    pub fn windows_bits(&self, from: Instant, to: Instant) -> Vec<u64> {
        let windows = to.saturating_duration_since(from).as_secs() as usize;
        let mut bits = vec![0u64; windows];
        if let Ok(heard) = self.heard.lock() {
            for (at, bytes) in heard.iter().filter(|(at, _)| *at >= from) {
                if let Some(window) = bits.get_mut(at.duration_since(from).as_secs() as usize) {
                    *window += bytes * 8;
                }
            }
        }
        bits
    }

    /// Bytes heard so far.
    pub fn bytes(&self) -> u64 {
        self.heard.lock().map(|h| h.iter().map(|(_, b)| b).sum()).unwrap_or(0)
    }
}

impl Drop for AirMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Samples how long a thread has waited, ready to run, for a CPU (the kernel's
/// /proc/PID/task/TID/schedstat), so a rate window the pacing thread lost to other work on
/// a shared machine can be told from one the uplink lost itself.
#[derive(Debug)]
pub struct WaitSampler {
    samples: Arc<Mutex<Vec<(Instant, Duration, Duration)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often [`WaitSampler`] reads the counter.
const WAIT_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);
/// Samples [`WaitSampler`] keeps: over an hour at its interval.
const WAIT_SAMPLES_MAX: usize = 100_000;

impl WaitSampler {
    /// Starts sampling thread `tid` of process `pid`.
    pub fn start(pid: u32, tid: u32) -> std::io::Result<WaitSampler> {
        let path = PathBuf::from(format!("/proc/{pid}/task/{tid}/schedstat"));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_samples, thread_stop) = (samples.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("wait-sampler".into()).spawn(move || {
            while !thread_stop.load(Ordering::Relaxed) {
                // Fields: time on a CPU, time waiting for one (nanoseconds), timeslices.
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
                if let (Some(Some(run)), Some(Some(wait))) = (fields.next(), fields.next()) {
                    if let Ok(mut samples) = thread_samples.lock() {
                        if samples.len() < WAIT_SAMPLES_MAX {
                            samples.push((Instant::now(), Duration::from_nanos(wait), Duration::from_nanos(run)));
                        }
                    }
                }
                std::thread::sleep(WAIT_SAMPLE_INTERVAL);
            }
        })?;
        Ok(WaitSampler { samples, stop, thread: Some(thread) })
    }

    /// The CPU wait and the time on a CPU in each whole 1 s window from `from` until `to`
    /// (to the sampling interval).
    pub fn windows(&self, from: Instant, to: Instant) -> Vec<(Duration, Duration)> {
        let windows = to.saturating_duration_since(from).as_secs() as u32;
        let Ok(samples) = self.samples.lock() else { return vec![(Duration::ZERO, Duration::ZERO); windows as usize] };
        // The counters at `at`: the last sample taken by then.
        let at = |at: Instant| {
            samples.iter().take_while(|(t, _, _)| *t <= at).last().map_or((Duration::ZERO, Duration::ZERO), |(_, wait, run)| (*wait, *run))
        };
        (0..windows)
            .map(|w| {
                let start = from + Duration::from_secs(u64::from(w));
                let (end, begin) = (at(start + Duration::from_secs(1)), at(start));
                (end.0.saturating_sub(begin.0), end.1.saturating_sub(begin.1))
            })
            .collect()
    }
}

impl Drop for WaitSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Settings of a whole measurement ([`run`]).
#[derive(Debug, Clone)]
pub struct AckLoadOptions {
    /// The load.
    pub load: LoadOptions,
    /// The carrier rate the uplink holds while the counties report.
    pub link_rate_bits_per_sec: u64,
    /// Size of the concurrent broadcast's payload; with [`AckLoadOptions::passes`] it must
    /// keep the carrier busy for the whole load.
    pub payload_bytes: usize,
    /// Carousel passes of the concurrent broadcast.
    pub passes: u32,
    /// Keep the uplink's folder (keys, config, state, log) here instead of a temporary one.
    pub keep: Option<PathBuf>,
}

/// The airing of the concurrent broadcast while the counties reported.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AirReport {
    /// The configured carrier rate.
    pub configured_bits_per_sec: u64,
    /// Bits on the air in each whole second of the load.
    pub windows_bits_per_sec: Vec<u64>,
    /// The largest relative deviation of a window from the configured rate.
    pub worst_deviation: f64,
    /// How long the uplink's pacing thread waited, ready, for a CPU in each window, in
    /// milliseconds: carrier time other work on the machine took from it.
    pub pacing_cpu_wait_ms: Vec<u64>,
    /// How long the pacing thread ran on a CPU in each window, in milliseconds.
    pub pacing_cpu_run_ms: Vec<u64>,
    /// How long this process's meter thread waited for a CPU in each window, in milliseconds:
    /// the most its stamps are late by.
    pub meter_cpu_wait_ms: Vec<u64>,
    /// The largest deviation of a window once the time the pacing thread and the meter
    /// spent waiting for a CPU is forgiven ([`own_deviation`]): what the uplink itself lost.
    pub worst_own_deviation: f64,
    /// When a carousel pass of the broadcast started during the load, in seconds from the
    /// load's start (the uplink log's "round started"): the windows to look at for a
    /// shortfall at a pass boundary.
    pub pass_starts_secs: Vec<f64>,
}

/// Seconds since the Unix epoch of a log line's leading UTC time stamp
/// (`2026-11-30T16:27:52.456304Z`, as the daemons' logs start), if it has one.
pub fn log_line_unix_secs(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(|f| f.parse::<i64>().ok());
    let (year, month, day) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let mut hms = time.splitn(3, ':');
    let (hour, minute) = (hms.next()?.parse::<i64>().ok()?, hms.next()?.parse::<i64>().ok()?);
    let second: f64 = hms.next()?.parse().ok()?;
    // Days from the civil date (H. Hinnant's algorithm), so no calendar crate is needed.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hour * 3600 + minute * 60) as f64 + second)
}

/// The deviation of `bits` aired in 1 s from `rate`, after forgiving what the machine, not
/// the uplink, decided: a shortfall of up to `pacer_wait` of carrier time (the pacing
/// thread waiting for a CPU), and a shortfall or excess of up to `meter_wait` (the meter
/// stamping datagrams late, moving bits across a window's edge).
pub fn own_deviation(bits: u64, rate: u64, pacer_wait: Duration, meter_wait: Duration) -> f64 {
    let (bits, rate) = (bits as f64, rate as f64);
    let meter = meter_wait.as_secs_f64() * rate;
    if bits >= rate {
        (bits - rate - meter).max(0.0) / rate
    } else {
        (rate - bits - meter - pacer_wait.as_secs_f64() * rate).max(0.0) / rate
    }
}

/// What the ledger holds for the broadcast once the load is over.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LedgerReport {
    /// Counties `satcast-uplink status` lists as delivered.
    pub delivered: usize,
    /// Distinct counties among them.
    pub distinct: usize,
    /// Counties of the load missing from the list.
    pub missing: Vec<String>,
    /// Counties listed that the load never drove.
    pub unexpected: Vec<String>,
    /// Counties whose completion the uplink logged ("county complete") more than once.
    pub logged_twice: Vec<String>,
}

/// The whole measurement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AckLoadReport {
    /// The seed (counties and their figures, the payload).
    pub seed: u64,
    /// The line that replays this run.
    pub replay: String,
    /// The broadcast the counties reported about, aired meanwhile.
    pub object_id: String,
    /// Each round.
    pub rounds: Vec<RoundReport>,
    /// The uplink's peak resident set (VmHWM), in KiB.
    pub uplink_peak_rss_kib: u64,
    /// The uplink's CPU time (user + system) from the load's start to its end, in seconds.
    pub uplink_cpu_secs: f64,
    /// The same per uplink thread (by name; "main" is the pacing thread).
    pub uplink_cpu_secs_by_thread: BTreeMap<String, f64>,
    /// Wall time of the load, in seconds.
    pub load_seconds: f64,
    /// The concurrent broadcast.
    pub air: AirReport,
    /// The ledger afterwards.
    pub ledger: LedgerReport,
}

impl AckLoadReport {
    /// Whether every county connected and reported in every round, the ledger holds each
    /// exactly once, and the airing held its rate.
    pub fn success(&self) -> bool {
        self.rounds.iter().all(|r| r.connected == r.clients && r.reported == r.clients)
            && self.rounds.first().is_some_and(|r| self.ledger.delivered == r.clients && self.ledger.distinct == r.clients)
            && self.ledger.missing.is_empty()
            && self.ledger.unexpected.is_empty()
            && self.ledger.logged_twice.is_empty()
            && !self.air.windows_bits_per_sec.is_empty()
            && self.air.worst_own_deviation <= RATE_DEVIATION_MAX
    }
}

/// The report as a table.
pub fn summary(report: &AckLoadReport) -> String {
    let mut out = format!("seed {}; replay with: {}\nbroadcast {}\n", report.seed, report.replay, report.object_id);
    out.push_str("round             clients connected reported  p50 ms  p99 ms  max ms  hs p50  hs p99  busy  seconds  uplink cpu s\n");
    for r in &report.rounds {
        out.push_str(&format!(
            "{:<17} {:>7} {:>9} {:>8} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>5} {:>8.1} {:>13.2}\n",
            r.name,
            r.clients,
            r.connected,
            r.reported,
            r.recorded_p50_ms,
            r.recorded_p99_ms,
            r.recorded_max_ms,
            r.handshake_p50_ms,
            r.handshake_p99_ms,
            r.busy,
            r.seconds,
            r.uplink_cpu_secs
        ));
        for (kind, count) in &r.errors {
            out.push_str(&format!("  error {kind}: {} (first: {})\n", count.count, count.first));
        }
    }
    out.push_str(&format!(
        "uplink: peak RSS {:.1} MiB, CPU {:.2} s over {:.1} s of load\n",
        report.uplink_peak_rss_kib as f64 / 1024.0,
        report.uplink_cpu_secs,
        report.load_seconds
    ));
    let threads: Vec<String> = report.uplink_cpu_secs_by_thread.iter().map(|(name, secs)| format!("{name} {secs:.2}")).collect();
    out.push_str(&format!("uplink CPU s by thread: {}\n", threads.join(", ")));
    let windows: Vec<String> = report.air.windows_bits_per_sec.iter().map(|b| format!("{:.3}", *b as f64 / 1e6)).collect();
    out.push_str(&format!("airing Mbit/s per second: {}\n", windows.join(" ")));
    let waits: Vec<String> = report.air.pacing_cpu_wait_ms.iter().map(u64::to_string).collect();
    out.push_str(&format!("pacing thread's CPU wait, ms per second: {}\n", waits.join(" ")));
    let runs: Vec<String> = report.air.pacing_cpu_run_ms.iter().map(u64::to_string).collect();
    out.push_str(&format!("pacing thread's CPU time, ms per second: {}\n", runs.join(" ")));
    let meter: Vec<String> = report.air.meter_cpu_wait_ms.iter().map(u64::to_string).collect();
    out.push_str(&format!("air meter's CPU wait, ms per second: {}\n", meter.join(" ")));
    let passes: Vec<String> = report.air.pass_starts_secs.iter().map(|s| format!("{s:.2}")).collect();
    out.push_str(&format!("carousel passes started at, s into the load: {}\n", passes.join(" ")));
    let (low, high) = (report.air.windows_bits_per_sec.iter().min(), report.air.windows_bits_per_sec.iter().max());
    out.push_str(&format!(
        "airing: {} windows of 1 s, {} to {} bit/s against {} configured, worst deviation {:.3}%, {:.3}% once the pacing thread's and the meter's CPU waits are forgiven (bound {:.0}%)\n",
        report.air.windows_bits_per_sec.len(),
        low.copied().unwrap_or(0),
        high.copied().unwrap_or(0),
        report.air.configured_bits_per_sec,
        report.air.worst_deviation * 100.0,
        report.air.worst_own_deviation * 100.0,
        RATE_DEVIATION_MAX * 100.0
    ));
    let l = &report.ledger;
    out.push_str(&format!(
        "ledger: {} delivered, {} distinct, {} missing, {} unexpected, {} logged twice\n",
        l.delivered,
        l.distinct,
        l.missing.len(),
        l.unexpected.len(),
        l.logged_twice.len()
    ));
    out.push_str(if report.success() { "ok\n" } else { "FAILED\n" });
    out
}

/// Starts a real uplink in its own folder airing a broadcast at the configured rate to an
/// [`AirMeter`], drives the load against its acknowledgement server, and reports.
pub fn run(options: &AckLoadOptions) -> Result<AckLoadReport, AckLoadError> {
    let temp;
    let dir = match &options.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir().map_err(io("creating a temporary folder"))?;
            temp.path().to_owned()
        }
    };
    crate::cluster::run("satcast-uplink", &["keys", "init", "--dir", "keys"], &dir)?;
    let meter = AirMeter::start().map_err(io("binding the air meter"))?;
    let ack_server = free_udp_addr()?;
    let config = write_uplink_config(&dir, meter.addr, options.link_rate_bits_per_sec, options.passes)?;
    let mut text = std::fs::read_to_string(&config).map_err(io("reading the uplink config"))?;
    text.push_str(&format!("\n[acks]\nlisten = \"{ack_server}\"\n"));
    std::fs::write(&config, &text).map_err(io("writing the uplink config"))?;
    let config_arg = config.to_string_lossy().into_owned();
    let mut uplink = Daemon::start("satcast-uplink", &["serve", "--config", &config_arg], &dir, &dir.join("uplink.log"))?;
    let control = control_listen(&text);
    let up = wait_until(Duration::from_secs(20), || {
        !uplink.is_running() || control.is_some_and(|addr| std::net::TcpStream::connect(addr).is_ok())
    });
    if !up || !uplink.is_running() {
        return Err(AckLoadError::Uplink(format!("did not start: {}", uplink.log_text())));
    }

    let mut payload = vec![0u8; options.payload_bytes];
    ChaCha8Rng::seed_from_u64(options.load.seed).fill_bytes(&mut payload);
    let payload_path = dir.join("bulletin.bin");
    std::fs::write(&payload_path, &payload).map_err(io("writing the payload"))?;
    let object_hash = *blake3::hash(&payload).as_bytes();
    let payload_arg = payload_path.to_string_lossy().into_owned();
    let sent = crate::cluster::run(
        "satcast-uplink",
        &["send", &payload_arg, "--config", &config_arg, "--kind", "policy", "--to", "all", "--version", "1"],
        &dir,
    )?;
    let object_id_text = sent.trim().to_owned();
    let object_id = u64::from_str_radix(&object_id_text, 16).map_err(|_| AckLoadError::Uplink(format!("send printed {sent:?}")))?;
    if !wait_until(AIRING_START_MAX, || uplink.log_text().contains("round started")) {
        return Err(AckLoadError::Uplink(format!("the broadcast did not go on the air: {}", uplink.log_text())));
    }
    std::thread::sleep(AIRING_SETTLE);

    let pid = uplink.pid();
    let target = Target { server: ack_server, keys_dir: dir.join("keys"), object_id, object_hash, pid: Some(pid) };
    let prepared = prepare(&options.load, &target)?;
    // The pacing thread is the daemon's main thread.
    let sampler = WaitSampler::start(pid, pid).map_err(io("sampling the pacing thread"))?;
    let meter_sampler = match meter.tid() {
        Some(tid) => Some(WaitSampler::start(std::process::id(), tid).map_err(io("sampling the air meter"))?),
        None => None,
    };
    let cpu_before = cpu_secs(pid).unwrap_or(0.0);
    let threads_before = thread_cpu_secs(pid);
    let started = Instant::now();
    let started_unix_secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let rounds = drive(prepared)?;
    let ended = Instant::now();
    let uplink_cpu_secs = cpu_secs(pid).unwrap_or(0.0) - cpu_before;
    let uplink_peak_rss_kib = status_kib(pid, "VmHWM:").unwrap_or(0);
    let uplink_cpu_secs_by_thread = thread_cpu_secs(pid)
        .into_iter()
        .map(|(name, secs)| {
            let before = threads_before.get(&name).copied().unwrap_or(0.0);
            (name, secs - before)
        })
        .filter(|(_, secs)| *secs > 0.0)
        .collect();

    let windows = meter.windows_bits(started, ended);
    let waits = sampler.windows(started, ended);
    let rate = options.link_rate_bits_per_sec;
    let worst_deviation = windows.iter().map(|bits| (*bits as f64 - rate as f64).abs() / rate as f64).fold(0.0, f64::max);
    let meter_waits: Vec<Duration> = match &meter_sampler {
        Some(sampler) => sampler.windows(started, ended).into_iter().map(|(wait, _)| wait).collect(),
        None => vec![Duration::ZERO; windows.len()],
    };
    let worst_own_deviation = windows
        .iter()
        .zip(&waits)
        .zip(&meter_waits)
        .map(|((bits, (pacer_wait, _)), meter_wait)| own_deviation(*bits, rate, *pacer_wait, *meter_wait))
        .fold(0.0, f64::max);
    let air = AirReport {
        configured_bits_per_sec: rate,
        windows_bits_per_sec: windows,
        worst_deviation,
        pacing_cpu_wait_ms: waits.iter().map(|(w, _)| w.as_millis() as u64).collect(),
        pacing_cpu_run_ms: waits.iter().map(|(_, r)| r.as_millis() as u64).collect(),
        meter_cpu_wait_ms: meter_waits.iter().map(|w| w.as_millis() as u64).collect(),
        worst_own_deviation,
        pass_starts_secs: uplink
            .log_text()
            .lines()
            .filter(|line| line.contains("round started"))
            .filter_map(log_line_unix_secs)
            .map(|at| at - started_unix_secs)
            .filter(|at| (0.0..ended.duration_since(started).as_secs_f64()).contains(at))
            .collect(),
    };

    let status = crate::cluster::run("satcast-uplink", &["status", &object_id_text, "--json", "--config", &config_arg], &dir)?;
    let status: serde_json::Value = serde_json::from_str(&status).map_err(|e| AckLoadError::Uplink(format!("status: {e}")))?;
    let delivered: Vec<String> = status["delivered"]
        .as_array()
        .ok_or_else(|| AckLoadError::Uplink(format!("status has no delivered list: {status}")))?
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    let log = uplink.log_text();
    uplink.stop();
    let codes = pick_counties(options.load.seed, options.load.clients)?;
    let mut completions: BTreeMap<&str, usize> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("county complete") && l.contains(&object_id_text)) {
        // The county is the `county=` field; other digits on the line (the time) are not.
        let county = line.split_whitespace().find_map(|field| field.strip_prefix("county="));
        if let Some(code) = county.and_then(|county| codes.iter().find(|c| c.as_str() == county.trim_matches('"'))) {
            *completions.entry(code).or_default() += 1;
        }
    }
    let distinct: std::collections::BTreeSet<&String> = delivered.iter().collect();
    let ledger = LedgerReport {
        delivered: delivered.len(),
        distinct: distinct.len(),
        missing: codes.iter().filter(|c| !distinct.contains(c)).cloned().collect(),
        unexpected: delivered.iter().filter(|c| !codes.contains(c)).cloned().collect(),
        logged_twice: completions.iter().filter(|(_, n)| **n > 1).map(|(c, _)| (*c).to_owned()).collect(),
    };
    let mut replay = format!("satcast-sim ackload --clients {} --seed {}", options.load.clients, options.load.seed);
    if options.load.outage {
        replay.push_str(" --outage");
    }
    Ok(AckLoadReport {
        seed: options.load.seed,
        replay,
        object_id: object_id_text,
        rounds,
        uplink_peak_rss_kib,
        uplink_cpu_secs,
        uplink_cpu_secs_by_thread,
        load_seconds: ended.duration_since(started).as_secs_f64(),
        air,
        ledger,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_waits_forgive_what_the_machine_took() {
        let (rate, ms) = (8_000_000, Duration::from_millis);
        assert_eq!(own_deviation(8_000_000, rate, ms(0), ms(0)), 0.0);
        assert!((own_deviation(7_600_000, rate, ms(0), ms(0)) - 0.05).abs() < 1e-9);
        // 50 ms of waiting at 8 Mbit/s is 400 kbit of carrier time.
        assert_eq!(own_deviation(7_600_000, rate, ms(50), ms(0)), 0.0);
        assert_eq!(own_deviation(7_600_000, rate, ms(25), ms(25)), 0.0);
        assert!((own_deviation(7_600_000, rate, ms(25), ms(0)) - 0.025).abs() < 1e-9);
        // An excess is the meter's late stamps at most; the pacer's wait never explains one.
        assert!((own_deviation(8_400_000, rate, ms(50), ms(0)) - 0.05).abs() < 1e-9);
        assert_eq!(own_deviation(8_400_000, rate, ms(0), ms(50)), 0.0);
    }

    #[test]
    fn a_log_line_s_utc_stamp_is_read_as_unix_seconds() {
        let at = log_line_unix_secs("2026-11-30T16:27:52.456304Z  INFO satcast_uplink::serve: round started").expect("a stamp");
        assert!((at - 1_796_056_072.456_304).abs() < 1e-6, "{at}");
        assert_eq!(log_line_unix_secs("1970-01-01T00:00:00Z x"), Some(0.0));
        assert_eq!(log_line_unix_secs("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        assert_eq!(log_line_unix_secs("round started"), None);
        assert_eq!(log_line_unix_secs(""), None);
    }

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let mut values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&mut values, 0.5), 50.0);
        assert_eq!(quantile_ms(&mut values, 0.99), 99.0);
        assert_eq!(quantile_ms(&mut values, 1.0), 100.0);
        assert_eq!(quantile_ms(&mut [], 0.5), 0.0);
    }

    #[test]
    fn a_seed_picks_distinct_counties_and_the_same_ones_again() {
        let codes = pick_counties(7, 2000).expect("2000 counties");
        let distinct: std::collections::BTreeSet<&String> = codes.iter().collect();
        assert_eq!(distinct.len(), 2000);
        assert_eq!(codes, pick_counties(7, 2000).expect("again"));
        assert!(pick_counties(7, 0).is_err());
        assert!(pick_counties(7, CLIENTS_MAX + 1).is_err());
    }
}
