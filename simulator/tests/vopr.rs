//! The fault simulation in CI: random seeds of crashes, lost indexes, full and slow disks
//! and WAN outages against 200 receiver nodes, for a bounded time (`VOPR_SECONDS`, default
//! 60). A seed that breaks an invariant fails the test with the line that replays it.
//! `VOPR_SEED=S` starts from a given seed.

use std::time::Duration;

use satcast_sim::vopr;

#[test]
fn random_seeds_keep_every_invariant_under_faults() {
    let seconds = std::env::var("VOPR_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let first = std::env::var("VOPR_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::random::<u64>() >> 1);
    println!("seeds from {first} for {seconds} s; replay one with: satcast-sim vopr --seed S --receivers 200");
    let (seeds, failure) = vopr::run_for(Duration::from_secs(seconds), 200, first, |options, report| {
        println!("seed {}: {} objects, {} crashes: {}", options.seed, report.objects, report.crashes, report.violations.len());
    });
    println!("{seeds} seeds run");
    if let Some((options, report)) = failure {
        panic!("invariant violated: {}\nreplay with: {}", report.violations.join("\n"), options.replay_line());
    }
    assert!(seeds > 0, "no seed ran in {seconds} s");
}
