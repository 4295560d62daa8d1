//! Helpers for the end-to-end tests in tests/: they start the real `satcast-uplink` and
//! `satcast-receiver` binaries on loopback, each in its own temporary directory.
#![warn(missing_docs)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where cargo put the workspace's binaries: next to the test executable's deps/ folder.
/// `cargo test --workspace` builds them because their packages have integration tests.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe.parent().and_then(Path::parent).expect("tests run from target/<profile>/deps");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo test --workspace` (or `cargo build --workspace`) first", path.display());
    path
}

/// Runs a CLI command to completion, panicking with its output if it fails.
pub fn run_ok(program: &str, args: &[&str], cwd: &Path) -> String {
    let output = Command::new(bin(program)).args(args).current_dir(cwd).output().expect("spawn");
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A daemon started for a test; killed when dropped. Its log goes to a file.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// The daemon's log file (stderr).
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `program` with `args`, logging to `log`.
    pub fn start(program: &str, args: &[&str], cwd: &Path, log: &Path) -> Daemon {
        let file = std::fs::File::create(log).expect("log file");
        let child = Command::new(bin(program))
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn daemon");
        Daemon { child, log: log.to_owned() }
    }

    /// The log so far, without colour codes.
    pub fn log_text(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        strip_ansi(&raw)
    }

    /// Stops the daemon with SIGTERM and waits up to five seconds, then kills it.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// A loopback UDP address that was free a moment ago.
pub fn free_udp_addr() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr")
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

/// A seed from `var` if set, else a fresh one; printed with the line that replays it.
pub fn seed(var: &str, test: &str) -> u64 {
    let seed = std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed}; replay with {var}={seed} cargo test --test {test}");
    seed
}

/// Writes an uplink config airing to `destination` at `rate_bits_per_sec`.
pub fn write_uplink_config(dir: &Path, destination: SocketAddr, rate_bits_per_sec: u64) -> PathBuf {
    let path = dir.join("uplink.toml");
    let text = format!(
        "state_dir = \"state\"\nkeys_dir = \"keys\"\n\n[downlink]\ndestination = \"{destination}\"\nlink_rate_bits_per_sec = {rate_bits_per_sec}\n\n[carousel]\nmanifest_interval_ms = 500\nheartbeat_interval_ms = 1000\ntarget_loss = 0.15\npasses = 3\n"
    );
    std::fs::write(&path, text).expect("write uplink config");
    path
}

/// Makes a county bundle with `satcast-uplink keys receiver` and points its config at a
/// unicast `bind` address. Returns the config path.
pub fn make_county(dir: &Path, county_code: &str, bind: SocketAddr) -> PathBuf {
    let out = dir.join(format!("county-{county_code}"));
    run_ok("satcast-uplink", &["keys", "receiver", "--dir", "keys", "--id", county_code, "--out", out.to_str().expect("utf-8 path")], dir);
    let config = out.join("receiver.toml");
    let text = std::fs::read_to_string(&config).expect("read receiver config");
    let text: String = text
        .lines()
        .map(|line| {
            if line.starts_with("group = ") {
                format!("bind = \"{bind}\"")
            } else if line.starts_with("interface = ") {
                String::new()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, text).expect("write receiver config");
    config
}
