//! The receiver's TOML configuration (see examples/receiver.toml for an annotated copy).
//! Relative paths are resolved against the directory of the config file.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Why the configuration could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config {path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The whole receiver configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// This county's six-digit division code.
    pub county_code: String,
    /// Spool, cache and trust state.
    pub state_dir: PathBuf,
    /// Where finished files are delivered, as <kind>/<name>.
    pub deliver_dir: PathBuf,
    /// How datagrams arrive.
    pub downlink: DownlinkConfig,
    /// The acknowledgement path (used from the receiver-daemon issue on).
    pub ack: Option<AckConfig>,
    /// Key material from the county's bundle.
    pub keys: KeysConfig,
    /// Bounds on what this receiver keeps.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// The downlink socket: a multicast group, or a unicast bind for tests and relays.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownlinkConfig {
    /// Multicast group and port to join.
    pub group: Option<SocketAddrV4>,
    /// Local interface address to join the group on.
    #[serde(default = "unspecified")]
    pub interface: Ipv4Addr,
    /// Unicast address to bind instead of joining a group.
    pub bind: Option<SocketAddr>,
    /// Kernel receive buffer, so bursts at link rate are not dropped while a block decodes.
    #[serde(default = "default_receive_buffer")]
    pub receive_buffer_bytes: usize,
}

fn unspecified() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}

fn default_receive_buffer() -> usize {
    8 * 1024 * 1024
}

/// The uplink's QUIC endpoint over the terrestrial WAN.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckConfig {
    /// host:port of the uplink's acknowledgement server.
    pub uplink: String,
    /// The name in the uplink's certificate.
    pub server_name: String,
}

/// Paths of the county's key bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The pinned root public key.
    pub root_public: PathBuf,
    /// The network key that tags datagrams.
    pub network_key: PathBuf,
    /// The private CA that issued the uplink's QUIC certificate.
    pub ca_cert: PathBuf,
    /// This county's QUIC client certificate.
    pub client_cert: PathBuf,
    /// Its private key.
    pub client_key: PathBuf,
}

/// Bounds on what the receiver keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// The most objects received at once.
    #[serde(default = "default_partial_objects")]
    pub partial_objects_max: usize,
    /// Spooled symbols and partial objects together, in bytes.
    #[serde(default = "default_spool_bytes")]
    pub spool_bytes_max: u64,
    /// Finished objects in the cache, in bytes. The latest version of every name is kept
    /// whatever this says; superseded versions are evicted, oldest first, to make room.
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes_max: u64,
}

fn default_partial_objects() -> usize {
    8
}
fn default_spool_bytes() -> u64 {
    satcast_store::ReceiverLimits::default().spool_bytes_max
}
fn default_cache_bytes() -> u64 {
    satcast_store::ReceiverLimits::default().cache_bytes_max
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            partial_objects_max: default_partial_objects(),
            spool_bytes_max: default_spool_bytes(),
            cache_bytes_max: default_cache_bytes(),
        }
    }
}

impl ReceiverConfig {
    /// Reads, parses and checks a config file, resolving relative paths against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config: ReceiverConfig =
            toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })?;
        let invalid = |why: String| ConfigError::Invalid { path: path.to_owned(), why };
        if config.county_code.len() != 6 || !config.county_code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(format!("county_code {:?} is not six digits", config.county_code)));
        }
        match (&config.downlink.group, &config.downlink.bind) {
            (Some(_), Some(_)) => return Err(invalid("downlink: set group or bind, not both".into())),
            (None, None) => return Err(invalid("downlink: set group (multicast) or bind (unicast)".into())),
            (Some(group), None) if !group.ip().is_multicast() => {
                return Err(invalid(format!("downlink.group {group} is not a multicast address")));
            }
            _ => {}
        }
        if config.limits.partial_objects_max == 0 {
            return Err(invalid("limits.partial_objects_max must be at least 1".into()));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.state_dir,
            &mut config.deliver_dir,
            &mut config.keys.root_public,
            &mut config.keys.network_key,
            &mut config.keys.ca_cert,
            &mut config.keys.client_cert,
            &mut config.keys.client_key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }
}
