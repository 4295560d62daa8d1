//! Helpers for the end-to-end tests in tests/. The cluster of real daemons lives in
//! satcast-sim (the demo runs on it too); this adds what only tests need.
#![warn(missing_docs)]

pub use satcast_sim::cluster::*;

/// A seed from `var` if set, else a fresh one; printed with the line that replays it.
pub fn seed(var: &str, test: &str) -> u64 {
    let seed = std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed}; replay with {var}={seed} cargo test --test {test}");
    seed
}
