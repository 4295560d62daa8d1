//! A local cluster of real daemons on loopback: one `satcast-uplink`, the impairment relay
//! and N `satcast-receiver` processes, each county in its own folder with its own key
//! bundle. The demo and the end-to-end tests both run on it.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::relay::{Destination, LossModel, Relay};
use crate::wan::WanProxy;

/// Why the cluster could not be set up or driven.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// A satcast binary is not built next to this one.
    #[error("{0} is missing: build the workspace first (cargo build --workspace, or --release)")]
    MissingBinary(PathBuf),
    /// A command ran and failed.
    #[error("{command} failed: {output}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed.
        output: String,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// Finds a workspace binary: beside the running executable, or one folder up (test
/// executables live in target/<profile>/deps/).
pub fn bin(name: &str) -> Result<PathBuf, ClusterError> {
    let exe = std::env::current_exe().map_err(io("locating the running executable"))?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join(name));
        if let Some(up) = dir.parent() {
            candidates.push(up.join(name));
        }
    }
    candidates
        .iter()
        .find(|path| path.exists())
        .cloned()
        .ok_or_else(|| ClusterError::MissingBinary(candidates.into_iter().next().unwrap_or_else(|| PathBuf::from(name))))
}

/// Runs a satcast CLI command to completion in `cwd`; returns its standard output.
pub fn run(program: &str, args: &[&str], cwd: &Path) -> Result<String, ClusterError> {
    let output = Command::new(bin(program)?).args(args).current_dir(cwd).output().map_err(io(format!("running {program}")))?;
    if !output.status.success() {
        return Err(ClusterError::Command {
            command: format!("{program} {}", args.join(" ")),
            output: format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A daemon process; killed when dropped. Its standard error goes to a log file.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// The daemon's log file.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `program` with `args` in `cwd`, logging to `log`.
    pub fn start(program: &str, args: &[&str], cwd: &Path, log: &Path) -> Result<Daemon, ClusterError> {
        let file = std::fs::File::create(log).map_err(io(format!("creating {}", log.display())))?;
        let child = Command::new(bin(program)?)
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(io(format!("starting {program}")))?;
        Ok(Daemon { child, log: log.to_owned() })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far, without terminal colour codes.
    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the daemon with SIGTERM, waits up to five seconds, then kills it.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    /// Kills the daemon at once (SIGKILL), as a power cut would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes terminal colour sequences from a log.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Ports handed to test daemons: below the kernel's ephemeral range (32768 and up by
/// default), so that no socket bound to port 0 (a QUIC client, the WAN proxy, another
/// test's attacker) can take one between the check here and the daemon's own bind. That
/// happened with ports from the ephemeral range: "Address already in use" now and then.
const DAEMON_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// The next candidate port: each process walks [`DAEMON_PORTS`] from its own random start
/// (test binaries running at once start far apart), every thread taking the next one.
fn next_daemon_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: std::sync::OnceLock<AtomicU32> = std::sync::OnceLock::new();
    let span = u32::from(DAEMON_PORTS.end - DAEMON_PORTS.start);
    let next = NEXT.get_or_init(|| AtomicU32::new(rand::random::<u32>() % span));
    let offset = next.fetch_add(1, Ordering::Relaxed) % span;
    DAEMON_PORTS.start + offset as u16
}

/// A loopback port free for both UDP and TCP a moment ago, and handed out by no other call
/// in this process.
fn free_daemon_port() -> Result<u16, ClusterError> {
    for _ in DAEMON_PORTS {
        let port = next_daemon_port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io("finding a free port")(std::io::Error::from(std::io::ErrorKind::AddrInUse)))
}

/// A loopback UDP address that was free a moment ago (see [`DAEMON_PORTS`]).
pub fn free_udp_addr() -> Result<SocketAddr, ClusterError> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_daemon_port()?)))
}

/// A loopback TCP address that was free a moment ago (see [`DAEMON_PORTS`]).
pub fn free_tcp_addr() -> Result<SocketAddr, ClusterError> {
    free_udp_addr()
}

/// Waits until `check` returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// One county receiver of the cluster.
#[derive(Debug)]
pub struct County {
    /// Six-digit division code.
    pub code: String,
    /// Its bundle folder (config, keys, state, deliver).
    pub dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// The unicast address it receives on.
    pub addr: SocketAddr,
    /// The running daemon, if started.
    pub daemon: Option<Daemon>,
}

impl County {
    /// Where a delivered object of this kind and name appears.
    pub fn delivered_path(&self, kind: &str, name: &str) -> PathBuf {
        self.dir.join("deliver").join(kind).join(name)
    }

    /// Starts (or restarts) the receiver daemon.
    pub fn start(&mut self) -> Result<(), ClusterError> {
        let config = self.config.to_string_lossy().into_owned();
        let log = self.dir.join("receiver.log");
        // Keep earlier runs' logs: append a marker rather than truncating.
        if log.exists() {
            let old = std::fs::read(&log).map_err(io("reading the old log"))?;
            std::fs::write(self.dir.join("receiver.previous.log"), old).map_err(io("saving the old log"))?;
        }
        self.daemon = Some(Daemon::start("satcast-receiver", &["run", "--config", &config], &self.dir, &log)?);
        Ok(())
    }
}

/// Settings for a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// County codes to run receivers for.
    pub counties: Vec<String>,
    /// Loss on the relay's way to each county (same order), or one value for all.
    pub loss: Vec<LossModel>,
    /// The carrier rate the uplink holds.
    pub link_rate_bits_per_sec: u64,
    /// Carousel passes per object.
    pub passes: u32,
    /// Seed for the relay's loss draws.
    pub seed: u64,
    /// Extra TOML appended to the uplink's config (for example a `[fec]` section).
    pub extra_uplink_config: String,
    /// Run the QUIC acknowledgement channel, through a switchable WAN proxy.
    pub acks: bool,
}

/// A running cluster. Dropping it kills every daemon.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster's folder (uplink keys, config, state, logs; one folder per county).
    pub dir: PathBuf,
    /// The uplink's config file.
    pub uplink_config: PathBuf,
    /// The running uplink.
    pub uplink: Option<Daemon>,
    /// The relay between uplink and counties.
    pub relay: Relay,
    /// The counties.
    pub counties: Vec<County>,
    /// The WAN between the counties and the uplink's acknowledgement server, if any.
    pub wan: Option<WanProxy>,
}

impl Cluster {
    /// Creates keys, bundles and configs under `dir` and starts every daemon.
    pub fn start(dir: &Path, options: &ClusterOptions) -> Result<Cluster, ClusterError> {
        run("satcast-uplink", &["keys", "init", "--dir", "keys"], dir)?;
        let (ack_server, wan) = if options.acks {
            let server = free_udp_addr()?;
            let wan = WanProxy::start(server).map_err(io("starting the WAN proxy"))?;
            (Some(server), Some(wan))
        } else {
            (None, None)
        };
        let mut counties = Vec::new();
        let mut destinations = Vec::new();
        for (i, code) in options.counties.iter().enumerate() {
            let addr = free_udp_addr()?;
            let config = make_county(dir, code, addr, wan.as_ref().map(|w| w.listen))?;
            let loss = options.loss.get(i).or(options.loss.last()).copied().unwrap_or(LossModel::None);
            destinations.push(Destination::lossy(addr, loss));
            let county_dir = config.parent().map(Path::to_owned).unwrap_or_else(|| dir.to_owned());
            counties.push(County { code: code.clone(), dir: county_dir, config, addr, daemon: None });
        }
        let relay = Relay::start(SocketAddr::from(([127, 0, 0, 1], 0)), destinations, options.seed).map_err(io("starting the relay"))?;
        let uplink_config = write_uplink_config(dir, relay.listen, options.link_rate_bits_per_sec, options.passes)?;
        let mut extra = options.extra_uplink_config.clone();
        if let Some(server) = ack_server {
            extra.push_str(&format!("\n[acks]\nlisten = \"{server}\"\n"));
        }
        if !extra.is_empty() {
            let mut text = std::fs::read_to_string(&uplink_config).map_err(io("reading the uplink config"))?;
            text.push_str(&extra);
            std::fs::write(&uplink_config, text).map_err(io("writing the uplink config"))?;
        }
        let mut cluster = Cluster { dir: dir.to_owned(), uplink_config, uplink: None, relay, counties, wan };
        for county in &mut cluster.counties {
            county.start()?;
        }
        cluster.start_uplink()?;
        let ready = wait_until(Duration::from_secs(20), || {
            cluster.counties.iter().all(|c| {
                c.daemon.as_ref().is_some_and(|d| {
                    let log = d.log_text();
                    log.contains("receiver started") && (!options.acks || log.contains("acknowledgement channel up"))
                })
            })
        });
        if !ready {
            let logs: Vec<String> = cluster.counties.iter().filter_map(|c| c.daemon.as_ref().map(|d| d.log_text())).collect();
            return Err(ClusterError::Command { command: "satcast-receiver run".into(), output: logs.join("\n") });
        }
        Ok(cluster)
    }

    /// Starts (or restarts) the uplink daemon and waits until its control API answers, so
    /// `send` (which goes through it) can follow at once.
    pub fn start_uplink(&mut self) -> Result<(), ClusterError> {
        let config = self.uplink_config.to_string_lossy().into_owned();
        let mut daemon = Daemon::start("satcast-uplink", &["serve", "--config", &config], &self.dir, &self.dir.join("uplink.log"))?;
        let text = std::fs::read_to_string(&self.uplink_config).map_err(io("reading the uplink config"))?;
        let control = control_listen(&text);
        let answers =
            wait_until(UPLINK_START_MAX, || !daemon.is_running() || control.is_none_or(|addr| std::net::TcpStream::connect(addr).is_ok()));
        if !answers || !daemon.is_running() {
            let output = daemon.log_text();
            return Err(ClusterError::Command { command: format!("satcast-uplink serve --config {config}"), output });
        }
        self.uplink = Some(daemon);
        Ok(())
    }

    /// Queues a file for broadcast with `satcast-uplink send`; returns the broadcast id.
    pub fn send(&self, file: &Path, kind: &str, to: &str, version: u64) -> Result<String, ClusterError> {
        let config = self.uplink_config.to_string_lossy().into_owned();
        let file = file.to_string_lossy().into_owned();
        let version = version.to_string();
        let out =
            run("satcast-uplink", &["send", &file, "--config", &config, "--kind", kind, "--to", to, "--version", &version], &self.dir)?;
        Ok(out.trim().to_owned())
    }

    /// Runs `satcast-uplink <args> --config <the cluster's uplink config>`; returns its
    /// standard output, or its exit code and output.
    pub fn uplink_cli(&self, args: &[&str]) -> Result<String, (i32, String)> {
        let binary = bin("satcast-uplink").map_err(|e| (-1, e.to_string()))?;
        let output = Command::new(binary)
            .args(args)
            .arg("--config")
            .arg(&self.uplink_config)
            .current_dir(&self.dir)
            .output()
            .map_err(|e| (-1, e.to_string()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err((output.status.code().unwrap_or(-1), format!("{stdout}{}", String::from_utf8_lossy(&output.stderr))))
        }
    }

    /// Stops every daemon gracefully.
    pub fn stop(&mut self) {
        if let Some(uplink) = &mut self.uplink {
            uplink.stop();
        }
        for county in &mut self.counties {
            if let Some(daemon) = &mut county.daemon {
                daemon.stop();
            }
        }
    }
}

/// How long an uplink may take to start answering on its control address.
const UPLINK_START_MAX: Duration = Duration::from_secs(20);

/// The `listen` address of an uplink config's `[control]` section.
pub fn control_listen(config: &str) -> Option<SocketAddr> {
    section_listen(config, "[control]")
}

/// The `listen` address of a config's `section` ("[dashboard]", "[metrics]").
pub fn section_listen(config: &str, section: &str) -> Option<SocketAddr> {
    let mut inside = false;
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == section;
        } else if let Some(value) = line.strip_prefix("listen").filter(|_| inside) {
            return value.trim_start().strip_prefix('=')?.trim().trim_matches('"').parse().ok();
        }
    }
    None
}

/// Writes an uplink config airing to `destination`.
pub fn write_uplink_config(dir: &Path, destination: SocketAddr, rate_bits_per_sec: u64, passes: u32) -> Result<PathBuf, ClusterError> {
    let path = dir.join("uplink.toml");
    let control = free_tcp_addr()?;
    let dashboard = free_tcp_addr()?;
    let text = format!(
        "state_dir = \"state\"\nkeys_dir = \"keys\"\n\n[downlink]\ndestination = \"{destination}\"\nlink_rate_bits_per_sec = {rate_bits_per_sec}\n\n[carousel]\nmanifest_interval_ms = 500\nheartbeat_interval_ms = 1000\ntarget_loss = 0.15\npasses = {passes}\n\n[control]\nlisten = \"{control}\"\n\n[dashboard]\nlisten = \"{dashboard}\"\n"
    );
    std::fs::write(&path, text).map_err(io("writing the uplink config"))?;
    Ok(path)
}

/// Makes a county bundle with `satcast-uplink keys receiver` and points its config at a
/// unicast `bind` address instead of the multicast group, and at `ack` for
/// acknowledgements (without one, the `[ack]` section is left out). Returns the config path.
pub fn make_county(dir: &Path, county_code: &str, bind: SocketAddr, ack: Option<SocketAddr>) -> Result<PathBuf, ClusterError> {
    let out = dir.join(format!("county-{county_code}"));
    let out_arg = out.to_string_lossy().into_owned();
    // State and deliveries inside the county's folder, beside its config.
    let folders = ["--state-dir", "state", "--deliver-dir", "deliver"];
    run("satcast-uplink", &[&["keys", "receiver", "--dir", "keys", "--id", county_code, "--out", &out_arg][..], &folders].concat(), dir)?;
    let config = out.join("receiver.toml");
    let text = std::fs::read_to_string(&config).map_err(io("reading the county config"))?;
    let mut in_ack = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.starts_with('[') {
            in_ack = line == "[ack]";
        }
        if in_ack && ack.is_none() || line.starts_with("interface = ") {
            continue;
        }
        lines.push(match (line.starts_with("group = "), line.starts_with("uplink = "), ack) {
            (true, _, _) => format!("bind = \"{bind}\""),
            (_, true, Some(ack)) => format!("uplink = \"{ack}\""),
            _ => line.to_owned(),
        });
    }
    // Each county's /metrics on a port of its own (the default one is shared by them all).
    let metrics = free_tcp_addr()?;
    lines.push(String::new());
    lines.push("[metrics]".into());
    lines.push(format!("listen = \"{metrics}\""));
    let text = lines;
    std::fs::write(&config, text.join("\n") + "\n").map_err(io("writing the county config"))?;
    Ok(config)
}
