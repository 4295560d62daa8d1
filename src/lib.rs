//! Helpers for the end-to-end tests in tests/. The cluster of real daemons lives in
//! satcast-sim (the demo runs on it too); this adds what only tests need.
#![warn(missing_docs)]

pub use satcast_sim::cluster::*;

/// A seed from `var` if set, else a fresh one; printed with the line that replays this
/// test: the binary and the test's name are read from the running test itself, so the
/// line cannot name the wrong one.
pub fn seed(var: &str) -> u64 {
    let seed = std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed}; replay with {var}={seed} {}", replay_command());
    seed
}

/// `cargo test --test BINARY -- --exact TEST` for the test running on this thread (the
/// test harness names each test's thread after it; cargo names the binary `BINARY-HASH`).
fn replay_command() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| stem.rsplit_once('-').map_or(stem.clone(), |(name, _hash)| name.to_owned()))
        .unwrap_or_default();
    let test = std::thread::current().name().unwrap_or_default().to_owned();
    format!("cargo test --test {binary} -- --exact {test} --include-ignored")
}
