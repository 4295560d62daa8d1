//! The acknowledgement server: QUIC with mutual TLS. Only clients whose certificate the
//! private CA issued get in; each message must be about the county the certificate names
//! (its SAN `<code>.county.satcast`), else it is refused. Accepted messages go to the
//! daemon's datapath, which records them durably before the client is told so.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use satcast_protocol::feedback::{ACK_ALPN, AckReply, FEEDBACK_BYTES_MAX, Feedback, county_dns_name};
use thiserror::Error;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// Feedback waiting for the datapath; beyond this, clients are told to come back later.
pub const PENDING_FEEDBACK_MAX: usize = 4096;
/// Streams one connection may have open at once.
const STREAMS_PER_CONNECTION_MAX: u32 = 16;
/// Connections dropped after this long without a packet.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum AckServerError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {why}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// The TLS configuration was refused.
    #[error("tls configuration: {0}")]
    Tls(String),
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

fn pem_err(path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> AckServerError + '_ {
    move |e| AckServerError::Pem { path: path.display().to_string(), why: e.to_string() }
}

/// Builds the server's TLS configuration: its certificate, and client certificates
/// required and checked against the private CA.
pub fn server_config(ca_cert: &Path, cert: &Path, key: &Path) -> Result<quinn::ServerConfig, AckServerError> {
    let ca = CertificateDer::from_pem_file(ca_cert).map_err(pem_err(ca_cert))?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).map_err(pem_err(cert))?.collect::<Result<_, _>>().map_err(pem_err(cert))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| AckServerError::Tls(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| AckServerError::Tls(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| AckServerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| AckServerError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ACK_ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| AckServerError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
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

/// Binds `addr` and serves until `stop` is set, handing authenticated messages to `tx`.
pub async fn serve(addr: SocketAddr, config: quinn::ServerConfig, tx: SyncSender<AckRequest>, stop: Arc<AtomicBool>) -> Result<(), AckServerError> {
    let endpoint = quinn::Endpoint::server(config, addr).map_err(|source| AckServerError::Bind { addr, source })?;
    info!(local = ?endpoint.local_addr().ok(), "acknowledgement server listening");
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
        let Some(incoming) = incoming else { break };
        let tx = tx.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(connection) => connection_loop(connection, tx).await,
                Err(error) => warn!(%remote, %error, "acknowledgement connection refused"),
            }
        });
    }
    endpoint.close(0u32.into(), b"stopping");
    Ok(())
}

async fn connection_loop(connection: quinn::Connection, tx: SyncSender<AckRequest>) {
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
        let reply = match recv.read_to_end(FEEDBACK_BYTES_MAX).await {
            Err(error) => {
                warn!(%remote, %error, "unreadable feedback stream");
                AckReply::Refused
            }
            Ok(bytes) => match Feedback::from_bytes(&bytes) {
                Err(error) => {
                    warn!(%remote, %error, "malformed feedback refused");
                    AckReply::Refused
                }
                Ok(feedback) => {
                    let proven = county.as_deref() == Some(feedback.county_code.as_str()) || certificate_names(&connection, &feedback.county_code);
                    if !proven {
                        warn!(%remote, claimed = %feedback.county_code, "feedback about a county the client certificate does not name: refused");
                        AckReply::Refused
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
