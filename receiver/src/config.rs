//! The receiver's TOML configuration (see examples/receiver.toml for an annotated copy).
//! Relative paths are resolved against the directory of the config file.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use satcast_protocol::manifest::Kind;

pub use satcast_daemon::config::ConfigError;
use satcast_daemon::config::{config_dir, load_toml, resolve_relative};
use serde::Deserialize;

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
    /// A warning is logged once no valid heartbeat has arrived for this long (and once at
    /// start if none arrives within it); an info line when heartbeats return.
    #[serde(default = "default_heartbeat_warn_after_secs")]
    pub heartbeat_warn_after_secs: u64,
    /// Programs run after a delivery, per kind.
    #[serde(default)]
    pub hooks: HooksConfig,
    /// `/metrics` (Prometheus) and `/health`.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// Where `/metrics` and `/health` are served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address and port; loopback by default (a Prometheus on the county's own machine, or
    /// a tunnel). A port already taken is a warning: receiving goes on without them.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
    /// Set false to serve neither.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_metrics_listen() -> String {
    "127.0.0.1:5720".into()
}

fn default_true() -> bool {
    true
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: default_metrics_listen(), enabled: true }
    }
}

/// The longest `heartbeat_warn_after_secs` accepted: a day. Longer is a typo, and would
/// hide a dead link for longer than anyone wants.
pub const HEARTBEAT_WARN_AFTER_SECS_MAX: u64 = 86_400;
/// The longest hook timeout accepted: six hours (a software installation may be slow, but
/// one hook holds every later one in the queue).
pub const HOOK_TIMEOUT_SECS_MAX: u64 = 6 * 3600;
/// The most arguments in a hook command, program included.
pub const HOOK_ARGS_MAX: usize = 64;

fn default_heartbeat_warn_after_secs() -> u64 {
    60
}

/// Post-receive hooks, one optional table per kind: `[hooks.policy]`, `[hooks.software]`,
/// `[hooks.codetable]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// Run after a policy document is delivered.
    pub policy: Option<HookConfig>,
    /// Run after a software update is delivered.
    pub software: Option<HookConfig>,
    /// Run after a code table is delivered.
    pub codetable: Option<HookConfig>,
}

impl HooksConfig {
    /// The hook for a kind, if one is configured.
    pub fn for_kind(&self, kind: Kind) -> Option<&HookConfig> {
        match kind {
            Kind::Policy => self.policy.as_ref(),
            Kind::Software => self.software.as_ref(),
            Kind::CodeTable => self.codetable.as_ref(),
        }
    }
}

/// One post-receive hook: a program run without a shell after each delivery of its kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The program and its arguments, e.g. `["/usr/local/bin/reload-policy", "--quiet"]`.
    /// No shell is involved. A program named with a relative path containing a slash is
    /// resolved against the config file's folder; a bare name is looked up in PATH.
    pub command: Vec<String>,
    /// The hook is killed (its whole process group) after this many seconds and reported
    /// as failed.
    #[serde(default = "default_hook_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_hook_timeout_secs() -> u64 {
    300
}

impl HookConfig {
    /// How long the hook may run.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
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
    /// How often a hello goes to the uplink while connected: what its dashboard shows as
    /// last contact, and what its silent-county alarm waits on.
    #[serde(default = "default_hello_interval")]
    pub hello_interval_secs: u64,
}

/// The longest `ack.hello_interval_secs` accepted: an hour.
pub const HELLO_INTERVAL_SECS_MAX: u64 = 3600;

fn default_hello_interval() -> u64 {
    crate::acks::HELLO_INTERVAL.as_secs()
}

impl AckConfig {
    /// How often a hello goes out.
    pub fn hello_interval(&self) -> Duration {
        Duration::from_secs(self.hello_interval_secs)
    }
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
    /// This county's X25519 secret for confidential broadcasts (docs/protocol.md 8.5).
    /// Bundles made before confidential broadcasts have none: they receive clear objects only.
    #[serde(default)]
    pub county_secret: Option<PathBuf>,
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
        let mut config: ReceiverConfig = load_toml(path)?;
        // Resolve against the absolute folder: a hook runs in its delivery folder, where a
        // path relative to the daemon's working folder (`--config conf/receiver.toml`)
        // would name nothing, and a bare "hook.sh" (`--config receiver.toml`) would be
        // looked up in PATH.
        let absolute = std::path::absolute(path).map_err(|e| ConfigError::invalid(path, format!("cannot make the path absolute: {e}")))?;
        let path = absolute.as_path();
        let invalid = |why: String| ConfigError::invalid(path, why);
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
        if !(1..=HEARTBEAT_WARN_AFTER_SECS_MAX).contains(&config.heartbeat_warn_after_secs) {
            return Err(invalid(format!("heartbeat_warn_after_secs must be between 1 and {HEARTBEAT_WARN_AFTER_SECS_MAX}")));
        }
        if config.ack.as_ref().is_some_and(|ack| !(1..=HELLO_INTERVAL_SECS_MAX).contains(&ack.hello_interval_secs)) {
            return Err(invalid(format!("ack.hello_interval_secs must be between 1 and {HELLO_INTERVAL_SECS_MAX}")));
        }
        if config.metrics.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(format!("metrics.listen {:?} is not an address and port, like 127.0.0.1:5720", config.metrics.listen)));
        }
        let base = config_dir(path);
        for kind in Kind::ALL {
            let hook = match kind {
                Kind::Policy => config.hooks.policy.as_mut(),
                Kind::Software => config.hooks.software.as_mut(),
                Kind::CodeTable => config.hooks.codetable.as_mut(),
            };
            let Some(hook) = hook else { continue };
            if hook.command.is_empty() || hook.command.first().is_some_and(|p| p.is_empty()) {
                return Err(invalid(format!("hooks.{kind}.command must name a program")));
            }
            if hook.command.len() > HOOK_ARGS_MAX {
                return Err(invalid(format!("hooks.{kind}.command has more than {HOOK_ARGS_MAX} arguments")));
            }
            if !(1..=HOOK_TIMEOUT_SECS_MAX).contains(&hook.timeout_secs) {
                return Err(invalid(format!("hooks.{kind}.timeout_secs must be between 1 and {HOOK_TIMEOUT_SECS_MAX}")));
            }
            if let Some(program) = hook.command.first_mut() {
                // "./reload.sh" and "bin/reload" mean next to the config, like every other
                // path in it; "systemctl" means the one in PATH.
                let as_path = Path::new(program.as_str());
                if as_path.is_relative() && program.contains('/') {
                    let relative: PathBuf = as_path.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect();
                    *program = base.join(relative).to_string_lossy().into_owned();
                }
            }
        }
        resolve_relative(
            path,
            [
                &mut config.state_dir,
                &mut config.deliver_dir,
                &mut config.keys.root_public,
                &mut config.keys.network_key,
                &mut config.keys.ca_cert,
                &mut config.keys.client_cert,
                &mut config.keys.client_key,
            ],
        );
        if let Some(county_secret) = config.keys.county_secret.as_mut() {
            resolve_relative(path, [county_secret]);
        }
        Ok(config)
    }
}
