//! Rate-limited logging of what the receiver refuses (datagrams, manifests, heartbeats,
//! revocation lists), with the daemons' shared summariser ([`satcast_daemon::summary`]):
//! garbage or forgeries at full link rate cannot flood the log or the disk.

use satcast_protocol::wire::WireError;
use tracing::warn;

pub use satcast_daemon::summary::reason_key;
use satcast_daemon::summary::{Repeated, Summarised};

/// What was refused: says which message a summary line carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refused {
    /// A datagram the wire parser refused.
    Datagram,
    /// A manifest refused without telling the uplink (a forgery, a splice...).
    Manifest,
    /// A heartbeat.
    Heartbeat,
    /// A revocation list.
    Revocation,
}

impl Repeated for Refused {
    fn summary(self) -> &'static str {
        match self {
            Refused::Datagram => "datagrams dropped",
            Refused::Manifest => "manifests rejected",
            Refused::Heartbeat => "heartbeats rejected",
            Refused::Revocation => "revocation lists rejected",
        }
    }
}

/// The receiver's refusals, summarised every window.
pub type DropLog = Summarised<Refused>;

fn wire_reason_key(reason: &WireError) -> String {
    match reason {
        // Group by variant, not by value: lengths and versions vary per datagram.
        WireError::Length(_) => "bad length".into(),
        WireError::Version(_) => "unsupported version".into(),
        WireError::Type(_) => "unknown type".into(),
        WireError::Body { kind, .. } => format!("malformed {kind} body"),
        WireError::Fragment { .. } => "bad manifest fragment".into(),
        other => other.to_string(),
    }
}

/// Records one refused datagram, logging it if it is the first of its kind this window.
pub fn record_datagram(log: &mut DropLog, reason: &WireError) {
    if log.first(Refused::Datagram, wire_reason_key(reason)) {
        warn!(reason = %reason, error = ?reason, "datagram dropped");
    }
}
