//! `satcast-sim run` and `bench` end to end: fast fidelity at 2000 receivers, full fidelity
//! byte-exact at 200, same seed same JSON, regional fades, outages, the carousel, and the
//! command line's errors. Sizes are small so each test stays well under a minute in a
//! debug build; the 50 MB measurements are `satcast-sim run` and `bench` in release.

use std::process::Command;
use std::time::Duration;

use satcast_protocol::reception::Fidelity;
use satcast_sim::bench::{self, BenchOptions};
use satcast_sim::harness::OutageKind;
use satcast_sim::run::{self, DeliverySpec, LossSpec, OutageSpec, RunOptions, RunReport};

fn seed(test: &str) -> u64 {
    let seed = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed}; replay with SIM_SEED={seed} cargo test -p satcast-sim --test run {test}");
    seed
}

fn run_and_print(options: &RunOptions) -> RunReport {
    let report = match run::run(options) {
        Ok(report) => report,
        Err(error) => panic!("the run could not start: {error}"),
    };
    print!("{}", run::summary(&report));
    report
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn fast_fidelity_two_thousand_receivers_all_complete() {
    let mut options = RunOptions::new(seed("fast_fidelity"));
    options.receivers = 2000;
    options.size_bytes = 2_000_000;
    options.fidelity = Fidelity::Counting;
    let report = run_and_print(&options);
    assert!(report.success(), "{} of 2000 completed", report.completed);
    assert_eq!(report.source_symbols_per_block.iter().map(|k| u64::from(*k)).sum::<u64>(), report.source_symbols);
    // A 2 MB object has one small block, where the bound's sqrt term is loose; 50 MB is
    // measured by the release run.
    assert!(report.efficiency <= 1.10, "efficiency {}", report.efficiency);
}

#[test]
fn full_fidelity_two_hundred_receivers_complete_byte_exact() {
    let mut options = RunOptions::new(seed("full_fidelity"));
    options.receivers = 200;
    options.size_bytes = 1_000_000;
    options.fidelity = Fidelity::Full;
    let report = run_and_print(&options);
    assert_eq!(report.corrupt, 0, "corrupt bytes assembled");
    assert_eq!(report.completed, 200, "every receiver completes byte-exact");
}

#[test]
fn the_same_seed_gives_identical_json_on_the_command_line() {
    let seed = seed("same_seed");
    let seed_arg = seed.to_string();
    let args = [
        "run",
        "--seed",
        &seed_arg,
        "--receivers",
        "300",
        "--size",
        "1MB",
        "--model",
        "bursts",
        "--loss",
        "0.08",
        "--burst-datagrams",
        "10",
        "--wan-outage",
        "1s..6s@0.3",
        "--json",
        "--no-wall",
    ];
    let first = satcast_sim(&args);
    let second = satcast_sim(&args);
    assert!(first.status.success(), "run failed: {}", String::from_utf8_lossy(&first.stderr));
    let json = String::from_utf8_lossy(&first.stdout);
    println!("{json}");
    assert!(!json.contains("wall_seconds"), "--no-wall leaves wall_seconds out");
    for key in [
        "\"receivers\"",
        "\"completed\"",
        "\"symbols_sent\"",
        "\"source_symbols_per_block\"",
        "\"lower_bound_symbols\"",
        "\"efficiency\"",
        "\"repair_rounds\"",
        "\"p50\"",
        "\"p90\"",
        "\"p99\"",
        "\"max\"",
    ] {
        assert!(json.contains(key), "{key} missing");
    }
    assert_eq!(first.stdout, second.stdout, "the same seed must print the same JSON");

    // And through the library, with wall_seconds present, last, and the only difference.
    let mut options = RunOptions::new(seed);
    options.receivers = 100;
    options.size_bytes = 500_000;
    let strip = |report: &RunReport| {
        let text = serde_json::to_string(report).unwrap_or_default();
        let at = text.find(",\"wall_seconds\"").unwrap_or(text.len());
        assert!(text[at..].matches(',').count() <= 1, "wall_seconds must be the last key: {text}");
        text[..at].to_owned()
    };
    assert_eq!(strip(&run_and_print(&options)), strip(&run_and_print(&options)));
}

#[test]
fn a_regional_fade_hits_whole_provinces_and_everyone_completes() {
    let mut options = RunOptions::new(seed("regional_fade"));
    options.receivers = 600;
    options.size_bytes = 3_000_000;
    options.loss = LossSpec::RegionalFade { share: 0.1, mean_fade: Duration::from_millis(800), background: 0.01 };
    let report = run_and_print(&options);
    assert!(report.success(), "{} of 600 completed", report.completed);
    // A faded province loses everything together, so the worst county sees far more than
    // its 11% mean.
    assert!(report.worst_observed_loss > 0.11, "worst loss {}", report.worst_observed_loss);
}

#[test]
fn power_and_wan_outages_delay_but_do_not_prevent_completion() {
    let mut options = RunOptions::new(seed("outages"));
    options.receivers = 400;
    options.size_bytes = 2_000_000;
    options.outages = vec![
        OutageSpec { kind: OutageKind::Power, period: secs(0)..secs(20), share: 0.1 },
        OutageSpec { kind: OutageKind::Wan, period: secs(1)..secs(30), share: 0.2 },
    ];
    let report = run_and_print(&options);
    assert!(report.success(), "{} of 400 completed", report.completed);
    // The counties that were off until 20 s complete after it, from repair rounds.
    let last = report.completion_seconds.max.unwrap_or(0.0);
    assert!(last > 20.0, "the powered-off counties finish after their outage (last at {last} s)");
    assert!(report.repair_rounds >= 2, "repair follows the outages");
}

#[test]
fn the_carousel_completes_without_any_feedback() {
    let mut options = RunOptions::new(seed("carousel"));
    options.receivers = 300;
    options.size_bytes = 1_000_000;
    options.delivery = DeliverySpec::Carousel { passes: 2, target_loss: 0.05 };
    // The WAN is down for the whole run: the carousel must not need it.
    options.outages = vec![OutageSpec { kind: OutageKind::Wan, period: secs(0)..secs(3600), share: 1.0 }];
    let report = run_and_print(&options);
    assert!(report.success(), "{} of 300 completed", report.completed);
    assert_eq!(report.repair_rounds, 1, "two passes");
    assert!(report.efficiency > 1.8, "two full passes cost about twice the bound ({})", report.efficiency);
}

/// A short carousel aired its manifest three times: a county that lost all three (one run
/// in about thirty, at 300 counties and 5% loss) never completed. Seed 4338286223383768469
/// did; so may others among these.
#[test]
fn every_county_of_a_short_carousel_gets_its_manifest() {
    for seed in [4338286223383768469].into_iter().chain(0..40) {
        let mut options = RunOptions::new(seed);
        options.receivers = 300;
        options.size_bytes = 1_000_000;
        options.delivery = DeliverySpec::Carousel { passes: 2, target_loss: 0.05 };
        options.outages = vec![OutageSpec { kind: OutageKind::Wan, period: secs(0)..secs(3600), share: 1.0 }];
        let report = match run::run(&options) {
            Ok(report) => report,
            Err(error) => panic!("seed {seed}: the run could not start: {error}"),
        };
        assert!(
            report.success(),
            "seed {seed}: {} of 300 completed; replay with satcast-sim run --seed {seed} --receivers 300 --size 1000000 --carousel --carousel-passes 2 --carousel-target-loss 0.05 --wan-outage 0ms..3600000ms@1",
            report.completed
        );
    }
}

#[test]
fn the_bench_prints_every_scenario() {
    let mut options = BenchOptions::new(seed("bench"));
    options.size_bytes = 300_000;
    options.receiver_counts = vec![20];
    let report = match bench::bench(&options) {
        Ok(report) => report,
        Err(error) => panic!("bench failed: {error}"),
    };
    let table = bench::table(&report);
    print!("{table}");
    assert_eq!(report.rows.len(), bench::scenarios().len());
    assert!(table.contains("regional fade") && table.contains("bursts") && table.contains("carousel"));
}

#[test]
fn the_command_line_explains_bad_input_and_writes_the_plot() {
    for (args, expect) in [
        (vec!["run", "--size", "50parsecs"], "not a size"),
        (vec!["run", "--receivers", "5000"], "receivers must be 1 to 2978"),
        (vec!["run", "--loss", "1.5"], "loss must be in"),
        (vec!["run", "--outage", "40s..10s"], "not an outage"),
        (vec!["run", "--fidelity", "full", "--receivers", "2000", "--size", "1GiB"], "full fidelity"),
    ] {
        let out = satcast_sim(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("no temporary directory: {error}"),
    };
    let plot = dir.path().join("run.svg");
    let plot_arg = plot.to_string_lossy().to_string();
    let seed = seed("command_line").to_string();
    let out = satcast_sim(&["run", "--seed", &seed, "--receivers", "50", "--size", "300KB", "--plot", &plot_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("efficiency") && stdout.contains("replay with: satcast-sim run --seed"));
    let svg = std::fs::read_to_string(&plot).unwrap_or_default();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.trim_end().ends_with("</svg>"), "plot: {svg:.200}");
}

fn satcast_sim(args: &[&str]) -> std::process::Output {
    match Command::new(env!("CARGO_BIN_EXE_satcast-sim")).args(args).output() {
        Ok(output) => output,
        Err(error) => panic!("cannot start satcast-sim: {error}"),
    }
}
