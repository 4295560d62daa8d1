//! The acknowledgement client: drains the durable outbox to the uplink over QUIC with mutual
//! TLS (the county's client certificate, the uplink's CA pinned). A message leaves the
//! outbox only when the uplink answers that it recorded it, so a WAN outage of hours loses
//! nothing: the client reconnects with exponential backoff and carries on where it stopped.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use satcast_daemon::tls::TlsError;
use satcast_protocol::feedback::{ACK_ALPN, AckReply, Feedback, FeedbackMessage};
use satcast_store::Outbox;
use tracing::{debug, info, warn};

use crate::config::{AckConfig, KeysConfig};

/// First wait after a failed connection; doubled after each failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between connection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often a Hello goes out while connected (last seen, free disk, heartbeat age), unless
/// `ack.hello_interval_secs` says otherwise.
pub const HELLO_INTERVAL: Duration = Duration::from_secs(60);
/// Messages sent per batch before the outbox is looked at again.
const BATCH_MAX: usize = 64;
/// How long to wait for the uplink's answer to one message.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the client's TLS configuration from the county's bundle.
pub fn client_config(keys: &KeysConfig) -> Result<quinn::ClientConfig, TlsError> {
    let quic = satcast_daemon::tls::quic_client(&keys.ca_cert, &keys.client_cert, &keys.client_key, ACK_ALPN)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(15)));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// What the client needs to say hello.
pub trait HelloSource: Send + Sync {
    /// A fresh Hello.
    fn hello(&self) -> Feedback;
}

/// The wait before the next connection attempt: [`BACKOFF_MIN`], doubled after each
/// failed session up to [`BACKOFF_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// A session ended in an error: how long to wait before the next attempt. `worked` says
    /// whether the uplink answered anything in it.
    pub fn after_failure(&mut self, worked: bool) -> Duration {
        if worked {
            // The outage that grew the wait is over: a new one starts from the shortest
            // wait, not from a minute (a county would stay silent that long after every
            // blip of its WAN).
            self.next = BACKOFF_MIN;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        wait
    }
}

/// Runs the client until `stop` is set: connect, say hello, drain the outbox, and on any
/// failure wait (exponential backoff) and start again.
pub async fn run(ack: AckConfig, tls: quinn::ClientConfig, outbox: Outbox, hello: Arc<dyn HelloSource>, stop: Arc<AtomicBool>) {
    let mut backoff = Backoff::default();
    let mut pass_reports_refused = false;
    while !stop.load(Ordering::Relaxed) {
        let mut worked = false;
        match session(&ack, &tls, &outbox, hello.as_ref(), &stop, &mut worked, &mut pass_reports_refused).await {
            Ok(()) => backoff = Backoff::default(),
            Err(error) => {
                let wait = backoff.after_failure(worked);
                warn!(uplink = %ack.uplink, %error, retry_in_secs = wait.as_secs(), outbox = outbox.len(), "acknowledgement channel down");
                sleep_unless_stopped(wait, &stop).await;
            }
        }
    }
}

async fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(100);
    let mut slept = Duration::ZERO;
    while slept < duration && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(step).await;
        slept += step;
    }
}

async fn resolve(uplink: &str) -> Result<SocketAddr, String> {
    tokio::net::lookup_host(uplink).await.map_err(|e| e.to_string())?.next().ok_or_else(|| format!("{uplink} resolves to nothing"))
}

/// One connection: lasts until an error or a stop. Sets `worked` once the uplink has
/// recorded a message in it (and clears it if the uplink then says it is busy). Sets
/// `pass_reports_refused` once the uplink refuses a PassProgress (a build from before
/// them): from then on they are dropped unsent, so that one warning says it all.
async fn session(
    ack: &AckConfig,
    tls: &quinn::ClientConfig,
    outbox: &Outbox,
    hello: &dyn HelloSource,
    stop: &AtomicBool,
    worked: &mut bool,
    pass_reports_refused: &mut bool,
) -> Result<(), String> {
    let addr = resolve(&ack.uplink).await?;
    let bind: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(tls.clone());
    let connecting = endpoint.connect(addr, &ack.server_name).map_err(|e| e.to_string())?;
    let connection = tokio::time::timeout(REPLY_TIMEOUT, connecting)
        .await
        .map_err(|_| "connection timed out".to_string())?
        .map_err(|e| e.to_string())?;
    info!(uplink = %addr, outbox = outbox.len(), "acknowledgement channel up");
    match send(&connection, &hello.hello()).await? {
        AckReply::Recorded => *worked = true,
        other => return Err(format!("hello answered {other:?}")),
    }
    let mut last_hello = tokio::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if last_hello.elapsed() >= ack.hello_interval() {
            send(&connection, &hello.hello()).await?;
            last_hello = tokio::time::Instant::now();
        }
        let batch = outbox.peek(BATCH_MAX).map_err(|e| e.to_string())?;
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        for (seq, feedback) in batch {
            let pass_report = matches!(feedback.message, FeedbackMessage::PassProgress { .. });
            if pass_report && *pass_reports_refused {
                outbox.ack(seq).map_err(|e| e.to_string())?;
                continue;
            }
            match send(&connection, &feedback).await? {
                AckReply::Recorded => {
                    debug!(seq, message = ?feedback.message, "acknowledged");
                    outbox.ack(seq).map_err(|e| e.to_string())?;
                }
                AckReply::Refused if pass_report => {
                    *pass_reports_refused = true;
                    warn!(
                        "the uplink refuses reports from the middle of a pass (a build from before them?): no more are sent until restart"
                    );
                    outbox.ack(seq).map_err(|e| e.to_string())?;
                }
                AckReply::Refused => {
                    warn!(seq, message = ?feedback.message, "the uplink refused this message; dropping it");
                    outbox.ack(seq).map_err(|e| e.to_string())?;
                }
                AckReply::Busy => {
                    // Asked to wait: the backoff grows, as after a failure to connect.
                    *worked = false;
                    return Err("the uplink is busy".into());
                }
            }
        }
    }
    connection.close(0u32.into(), b"stopping");
    endpoint.wait_idle().await;
    Ok(())
}

/// Sends one message on its own stream and waits for the uplink's answer.
async fn send(connection: &quinn::Connection, feedback: &Feedback) -> Result<AckReply, String> {
    let exchange = async {
        let (mut tx, mut rx) = connection.open_bi().await.map_err(|e| e.to_string())?;
        tx.write_all(&feedback.to_bytes()).await.map_err(|e| e.to_string())?;
        tx.finish().map_err(|e| e.to_string())?;
        let reply = rx.read_to_end(16).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(reply.first().map_or(AckReply::Busy, |b| AckReply::from_byte(*b)))
    };
    tokio::time::timeout(REPLY_TIMEOUT, exchange).await.map_err(|_| "no answer from the uplink".to_string())?
}

/// Says hello with what the datapath last saw.
#[derive(Debug)]
pub struct ReceiverHello {
    /// This county.
    pub county_code: String,
    /// Where free disk is measured.
    pub state_dir: std::path::PathBuf,
    /// When the last valid heartbeat arrived, as the datapath records it.
    pub last_heartbeat: std::sync::Mutex<Option<std::time::Instant>>,
}

impl HelloSource for ReceiverHello {
    fn hello(&self) -> Feedback {
        let age = self.last_heartbeat.lock().ok().and_then(|at| at.map(|at| at.elapsed()));
        hello(&self.county_code, &self.state_dir, age)
    }
}

/// A Hello built from the receiver's current state.
pub fn hello(county_code: &str, state_dir: &Path, heartbeat_age: Option<Duration>) -> Feedback {
    Feedback {
        county_code: county_code.to_owned(),
        message: FeedbackMessage::Hello {
            software_version: crate::upgrade::software_version().to_owned(),
            free_disk_bytes: fs4::available_space(state_dir).unwrap_or(0),
            heartbeat_age_ms: heartbeat_age.map(|d| d.as_millis() as u64),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After one long outage the wait has grown to its maximum; a session that worked
    /// starts the count again, so the next outage is retried within seconds, not a minute.
    #[test]
    fn the_backoff_starts_again_after_a_session_that_worked() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| backoff.after_failure(false).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60], "a long outage");
        assert_eq!(backoff.after_failure(true), BACKOFF_MIN, "connected, recorded, then lost: retry soon");
        assert_eq!(backoff.after_failure(false), BACKOFF_MIN * 2, "and grow again from there");
    }
}
