//! The uplink's TOML configuration (see examples/uplink.toml for an annotated copy).
//! Relative paths are resolved against the directory of the config file.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub use satcast_daemon::config::ConfigError;
use satcast_daemon::config::{load_toml, resolve_relative};
use serde::Deserialize;

/// The whole uplink configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// The broadcast queue and payload copies.
    pub state_dir: PathBuf,
    /// The key directory made by `satcast-uplink keys init`.
    pub keys_dir: PathBuf,
    /// The satellite carrier.
    pub downlink: DownlinkConfig,
    /// Carousel and airing settings.
    #[serde(default)]
    pub carousel: CarouselConfig,
    /// FEC settings.
    #[serde(default)]
    pub fec: FecConfig,
    /// How payloads are coded for the air: compression and patches.
    #[serde(default)]
    pub coding: CodingConfig,
    /// The QUIC acknowledgement server; without it every broadcast is a carousel.
    pub acks: Option<AcksConfig>,
    /// The control API the CLI talks to.
    #[serde(default)]
    pub control: ControlConfig,
}

/// The control API: HTTP and JSON, on loopback only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Address to listen on; keep it on loopback (the token is the only protection).
    #[serde(default = "default_control_listen")]
    pub listen: String,
}

fn default_control_listen() -> String {
    "127.0.0.1:5710".into()
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig { listen: default_control_listen() }
    }
}

/// The QUIC acknowledgement server over the terrestrial WAN.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcksConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
}

/// FEC settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FecConfig {
    /// Largest source block in bytes: what a receiver must hold in memory to decode one.
    #[serde(default = "default_block_bytes")]
    pub block_bytes_max: u64,
}

fn default_block_bytes() -> u64 {
    satcast_protocol::fec::DEFAULT_BLOCK_BYTES_MAX
}

impl Default for FecConfig {
    fn default() -> Self {
        FecConfig { block_bytes_max: default_block_bytes() }
    }
}

/// How payloads are coded for the air (docs/protocol.md section 8.4).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodingConfig {
    /// Compress payloads with zstd when it saves at least 5%. Counties must run a build
    /// that decodes coded payloads (issue 16 and later): turn this off to air the upgrade
    /// that brings them one.
    #[serde(default = "yes")]
    pub compress: bool,
    /// Air a new version of a name as a patch against the previous version when that is
    /// smaller (needs `compress`; counties without the base get the full object afterwards,
    /// which needs feedback: a carousel airs whole).
    #[serde(default = "yes")]
    pub patches: bool,
}

fn yes() -> bool {
    true
}

impl Default for CodingConfig {
    fn default() -> Self {
        CodingConfig { compress: true, patches: true }
    }
}

/// Where and how fast datagrams go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownlinkConfig {
    /// Multicast group and port (or a unicast address, for tests and relays).
    pub destination: SocketAddr,
    /// Local interface address multicast leaves from.
    #[serde(default = "unspecified")]
    pub interface: Ipv4Addr,
    /// Multicast time to live.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// The carrier's rate, IP and UDP headers included.
    pub link_rate_bits_per_sec: u64,
    /// The carrier's IP MTU; datagrams are sized to fit it.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
}

fn unspecified() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}
fn default_ttl() -> u32 {
    8
}
fn default_mtu() -> u16 {
    1500
}

/// Carousel and airing settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarouselConfig {
    /// How often manifests are repeated.
    #[serde(default = "default_manifest_interval")]
    pub manifest_interval_ms: u64,
    /// How often a signed heartbeat goes out.
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval_ms: u64,
    /// Loss rate a receiver may suffer and still complete from one pass.
    #[serde(default = "default_target_loss")]
    pub target_loss: f64,
    /// Passes over each object, each with fresh repair symbols.
    #[serde(default = "default_passes")]
    pub passes: u32,
    /// How long receivers accept a manifest after it was created.
    #[serde(default = "default_manifest_lifetime")]
    pub manifest_lifetime_secs: u64,
}

fn default_manifest_interval() -> u64 {
    1000
}
fn default_heartbeat_interval() -> u64 {
    5000
}
fn default_target_loss() -> f64 {
    0.1
}
fn default_passes() -> u32 {
    2
}
fn default_manifest_lifetime() -> u64 {
    7 * 24 * 3600
}

impl Default for CarouselConfig {
    fn default() -> Self {
        CarouselConfig {
            manifest_interval_ms: default_manifest_interval(),
            heartbeat_interval_ms: default_heartbeat_interval(),
            target_loss: default_target_loss(),
            passes: default_passes(),
            manifest_lifetime_secs: default_manifest_lifetime(),
        }
    }
}

impl UplinkConfig {
    /// Reads, parses and checks a config file, resolving relative paths against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: UplinkConfig = load_toml(path)?;
        let invalid = |why: &str| ConfigError::invalid(path, why);
        if config.downlink.link_rate_bits_per_sec < 10_000 {
            return Err(invalid("downlink.link_rate_bits_per_sec must be at least 10000"));
        }
        if satcast_protocol::wire::symbol_size_for_mtu(config.downlink.mtu).is_none() {
            return Err(invalid("downlink.mtu is too small for a useful symbol"));
        }
        if !(0.0..0.9).contains(&config.carousel.target_loss) {
            return Err(invalid("carousel.target_loss must be in [0, 0.9)"));
        }
        if !(64 * 1024..=satcast_protocol::fec::BLOCK_BYTES_MAX_LIMIT).contains(&config.fec.block_bytes_max) {
            return Err(invalid("fec.block_bytes_max must be between 64 KiB and 64 MiB"));
        }
        if config.carousel.passes == 0 {
            return Err(invalid("carousel.passes must be at least 1"));
        }
        if config.carousel.manifest_interval_ms == 0 || config.carousel.heartbeat_interval_ms == 0 {
            return Err(invalid("carousel intervals must be positive"));
        }
        match config.control.listen.parse::<SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() => {}
            _ => return Err(invalid("control.listen must be a loopback address and port, like 127.0.0.1:5710")),
        }
        resolve_relative(path, [&mut config.state_dir, &mut config.keys_dir]);
        Ok(config)
    }
}
