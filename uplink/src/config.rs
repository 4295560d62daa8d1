//! The uplink's TOML configuration (see examples/uplink.toml for an annotated copy).
//! Relative paths are resolved against the directory of the config file.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub use satcast_daemon::config::ConfigError;
use satcast_daemon::config::{config_dir, load_toml, resolve_relative};
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
    /// The read-only web dashboard; without this section it is not served.
    pub dashboard: Option<DashboardConfig>,
    /// Alarm thresholds and the command run once per alarm.
    #[serde(default)]
    pub alarms: AlarmsConfig,
}

/// The longest `control.body_stall_secs` accepted.
pub const BODY_STALL_SECS_MAX: u64 = 3600;
/// The longest `alarms.check_interval_secs` accepted.
pub const ALARM_CHECK_INTERVAL_SECS_MAX: u64 = 600;

/// The read-only dashboard (and `/metrics` for a Prometheus elsewhere), behind the viewer
/// credential.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Address to listen on, e.g. "127.0.0.1:5711", or the operations room's network.
    pub listen: String,
    /// The viewer credential's file (created, random, on first start); default
    /// `<state_dir>/viewer.token`. `satcast-uplink dashboard` prints the address with it.
    pub viewer_token_file: Option<PathBuf>,
}

/// Alarm thresholds, and what runs once per alarm.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmsConfig {
    /// An enrolled county not heard from for this long is an alarm.
    #[serde(default = "default_silent_after")]
    pub county_silent_after_secs: u64,
    /// A county that says it has had no valid heartbeat for this long is an alarm.
    #[serde(default = "default_heartbeat_age_max")]
    pub county_heartbeat_age_max_secs: u64,
    /// A county whose state disk has less free than this is an alarm.
    #[serde(default = "default_free_disk_min")]
    pub county_free_disk_bytes_min: u64,
    /// The active signing key ending within this many days is an alarm.
    #[serde(default = "default_key_expiry_warn_days")]
    pub key_expiry_warn_days: u64,
    /// How often the conditions are looked at.
    #[serde(default = "default_alarm_check_interval")]
    pub check_interval_secs: u64,
    /// A program and its arguments, run without a shell once per alarm, with the alarm's
    /// text appended and SATCAST_ALARM_KIND, SATCAST_ALARM_SUBJECT and SATCAST_ALARM_TEXT
    /// set (an SMS gateway, a mail). Relative paths are against the config's folder.
    pub command: Option<Vec<String>>,
    /// The config file's folder, where the command runs.
    #[serde(skip)]
    pub base: Option<PathBuf>,
}

fn default_silent_after() -> u64 {
    900
}
fn default_heartbeat_age_max() -> u64 {
    600
}
fn default_free_disk_min() -> u64 {
    1_000_000_000
}
fn default_key_expiry_warn_days() -> u64 {
    14
}
fn default_alarm_check_interval() -> u64 {
    5
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        AlarmsConfig {
            county_silent_after_secs: default_silent_after(),
            county_heartbeat_age_max_secs: default_heartbeat_age_max(),
            county_free_disk_bytes_min: default_free_disk_min(),
            key_expiry_warn_days: default_key_expiry_warn_days(),
            check_interval_secs: default_alarm_check_interval(),
            command: None,
            base: None,
        }
    }
}

/// The control API: HTTP and JSON, on loopback only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Address to listen on; keep it on loopback (the token is the only protection).
    #[serde(default = "default_control_listen")]
    pub listen: String,
    /// A request body (an upload) that sends nothing for this long is abandoned, so a
    /// stalled client does not hold one of the upload slots forever.
    #[serde(default = "default_body_stall")]
    pub body_stall_secs: u64,
}

fn default_control_listen() -> String {
    "127.0.0.1:5710".into()
}

fn default_body_stall() -> u64 {
    60
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig { listen: default_control_listen(), body_stall_secs: default_body_stall() }
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
    /// Kinds aired confidential (sealed for the targeted counties) unless `send` says
    /// `--no-confidential`: "policy", "software", "codetable". Empty by default: receivers
    /// do not decrypt sealed objects yet (docs/protocol.md 8.5), so a sealed object is
    /// delivered nowhere until they do.
    #[serde(default)]
    pub confidential_kinds: Vec<String>,
}

impl CodingConfig {
    /// Whether a job of `kind` that does not say is aired confidential.
    pub fn confidential_by_default(&self, kind: satcast_protocol::manifest::Kind) -> bool {
        self.confidential_kinds.iter().any(|k| k == kind.as_str())
    }
}

fn yes() -> bool {
    true
}

impl Default for CodingConfig {
    fn default() -> Self {
        CodingConfig { compress: true, patches: true, confidential_kinds: Vec::new() }
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
        if let Some(kind) = config.coding.confidential_kinds.iter().find(|k| k.parse::<satcast_protocol::manifest::Kind>().is_err()) {
            let kind: String = kind.chars().take(satcast_protocol::manifest::ECHO_CHARS_MAX).collect();
            return Err(invalid(&format!("coding.confidential_kinds: unknown kind {kind:?} (policy, software or codetable)")));
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
        if !(1..=BODY_STALL_SECS_MAX).contains(&config.control.body_stall_secs) {
            return Err(invalid(&format!("control.body_stall_secs must be between 1 and {BODY_STALL_SECS_MAX}")));
        }
        if let Some(dashboard) = &config.dashboard {
            if dashboard.listen.parse::<SocketAddr>().is_err() {
                return Err(invalid("dashboard.listen must be an address and port, like 127.0.0.1:5711"));
            }
            if dashboard.listen == config.control.listen {
                return Err(invalid("dashboard.listen must differ from control.listen"));
            }
        }
        if !(1..=ALARM_CHECK_INTERVAL_SECS_MAX).contains(&config.alarms.check_interval_secs) {
            return Err(invalid(&format!("alarms.check_interval_secs must be between 1 and {ALARM_CHECK_INTERVAL_SECS_MAX}")));
        }
        if config.alarms.command.as_ref().is_some_and(|c| c.first().is_none_or(|p| p.is_empty())) {
            return Err(invalid("alarms.command must name a program"));
        }
        let dir = config_dir(path);
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        config.alarms.base = std::path::absolute(dir).ok();
        // "./notify.sh" means next to the config, like every other path in it; "mail" the
        // one in PATH.
        if let (Some(program), Some(base)) = (config.alarms.command.as_mut().and_then(|c| c.first_mut()), &config.alarms.base) {
            if Path::new(program.as_str()).is_relative() && program.contains('/') {
                *program = base.join(program.as_str()).to_string_lossy().into_owned();
            }
        }
        let mut paths = vec![&mut config.state_dir, &mut config.keys_dir];
        if let Some(file) = config.dashboard.as_mut().and_then(|d| d.viewer_token_file.as_mut()) {
            paths.push(file);
        }
        resolve_relative(path, paths);
        Ok(config)
    }
}
