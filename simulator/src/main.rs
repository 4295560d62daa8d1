//! `satcast-sim`: the demo, the UDP impairment relay, and the virtual-time simulation
//! (`run` for one scenario, `bench` for the efficiency table).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use satcast_protocol::reception::Fidelity;
use satcast_sim::ackload;
use satcast_sim::bench::{self, BenchOptions};
use satcast_sim::demo::{self, DemoOptions};
use satcast_sim::harness::OutageKind;
use satcast_sim::plot;
use satcast_sim::relay::{Destination, LossModel, Relay};
use satcast_sim::run::{self, DeliverySpec, LossSpec, OutageSpec, RunOptions};
use satcast_sim::utilisation;
use satcast_sim::vopr;

#[derive(Parser)]
#[command(name = "satcast-sim", version, about = "satcast simulator, impairment relay and demo")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system on loopback: a real uplink, the relay and N real county
    /// receivers; broadcast a policy document, a software update and the code table.
    Demo {
        /// How many county receivers.
        #[arg(long, default_value_t = 20)]
        receivers: usize,
        /// Seed for counties, payloads and loss (default: random, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Highest loss rate a county suffers; each draws its own below it.
        #[arg(long, default_value_t = 0.05)]
        loss: f64,
        /// Carrier rate in Mbit/s.
        #[arg(long, default_value_t = 40)]
        rate_mbps: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 110)]
        timeout_secs: u64,
        /// Keep keys, configs and logs in DIR.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Print a JSON summary instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Load the acknowledgement channel of a real uplink: N counties, each with its own
    /// client certificate from the uplink's CA, connect over QUIC and report (Hello, Progress,
    /// Complete) while the uplink airs a broadcast; with --outage all are then cut off at
    /// once and reconnect. Prints send-to-recorded latencies, the uplink's peak RSS and CPU,
    /// the airing rate per second and what the ledger holds.
    Ackload {
        /// Counties reporting at once.
        #[arg(long, default_value_t = 2000)]
        clients: usize,
        /// After all reported, cut the WAN under every county at once; all reconnect.
        #[arg(long)]
        outage: bool,
        /// Seconds the WAN stays cut.
        #[arg(long, default_value_t = 3)]
        outage_secs: u64,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = satcast_sim::ackload::HANDSHAKES_IN_FLIGHT_DEFAULT)]
        handshakes: usize,
        /// Carrier rate in Mbit/s of the broadcast aired meanwhile.
        #[arg(long, default_value_t = 8)]
        rate_mbps: u64,
        /// Size of the broadcast aired meanwhile, in MB.
        #[arg(long, default_value_t = 16)]
        payload_mb: usize,
        /// Its carousel passes.
        #[arg(long, default_value_t = 8)]
        passes: u32,
        /// Seed for the counties, their figures and the payload (default: random, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Give the load up after this many seconds (counties still at work count as not
        /// reported).
        #[arg(long, default_value_t = 300)]
        time_limit_secs: u64,
        /// Keep the uplink's keys, config, state and log in DIR.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Carrier utilisation of the real daemons: a real uplink with feedback and N real
    /// county receivers behind the relay; M broadcasts queued at once. Prints the air time
    /// of the bytes sent against the wall time from the first DATA burst to the last
    /// delivery.
    Utilisation {
        /// County receivers.
        #[arg(long, default_value_t = 10)]
        counties: usize,
        /// Broadcasts queued at once.
        #[arg(long, default_value_t = 8)]
        objects: usize,
        /// Size of each: 5MB, 500KB (powers of 1000), 1MiB.
        #[arg(long, default_value = "5MB", value_parser = run::parse_size)]
        size: u64,
        /// Independent loss per county.
        #[arg(long, default_value_t = 0.05)]
        loss: f64,
        /// Carrier rate in Mbit/s.
        #[arg(long, default_value_t = 20)]
        rate_mbps: u64,
        /// Seed of payloads and loss (default: random, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        time_limit_secs: u64,
        /// Keep keys, configs and logs in DIR.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Send every broadcast confidential: sealed for the counties (issue 14).
        #[arg(long)]
        confidential: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forward datagrams from LISTEN to each --to address, dropping some.
    Relay {
        /// Address the uplink sends to.
        #[arg(long)]
        listen: SocketAddr,
        /// Receiver addresses (repeat the flag for several).
        #[arg(long = "to", required = true)]
        to: Vec<SocketAddr>,
        /// Independent loss probability per datagram and destination.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Mean loss burst in datagrams: with it, --loss is a Gilbert-Elliott mean loss.
        #[arg(long)]
        burst: Option<f64>,
        /// One-way delay added on the way to every destination, in milliseconds.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Rate limit per destination in bits per second (default: none).
        #[arg(long)]
        rate_bps: Option<u64>,
        /// Seed for the loss draws (default: random, printed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Simulate one uplink and N county receivers in virtual time (the same state
    /// machines as the daemons) and measure delivery efficiency against the lower bound.
    Run(Box<RunArgs>),
    /// Print a table of delivery efficiency and repair rounds over receiver counts and
    /// loss models, plus the carousel mode.
    Bench(BenchArgs),
    /// Bytes on the air for a new version: compressed, as a patch against the previous
    /// version, and airings where a share of the counties hold the base (the others get the
    /// full object afterwards). With no files: the division-code table after a seeded year
    /// of changes.
    Delta(DeltaArgs),
    /// The fault simulation: random seeds of crashes, full and slow disks, lost indexes and
    /// WAN outages against the receiver nodes, with invariants checked throughout; stops at
    /// the first violation and prints the line that replays it.
    Vopr {
        /// Run this one seed (and print what it did) instead of a loop of seeds.
        #[arg(long)]
        seed: Option<u64>,
        /// County receivers per seed.
        #[arg(long, default_value_t = 200)]
        receivers: usize,
        /// Wall-clock seconds to keep running new seeds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModelArg {
    /// Each datagram lost independently (Bernoulli) at each county.
    Independent,
    /// Gilbert-Elliott loss bursts per county.
    Bursts,
    /// A rain fade per province, shared by its counties.
    Fade,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FidelityArg {
    /// Symbol counting with the RFC 6330 decoding-failure probability.
    Fast,
    /// Real RaptorQ decoding and a byte-exact check.
    Full,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Seed of every random choice (default: random, printed with a replay line).
    #[arg(long)]
    seed: Option<u64>,
    /// County receivers, drawn from the national division table (1 to 2978).
    #[arg(long, default_value_t = 200)]
    receivers: usize,
    /// Object size: 50MB, 5MB, 1GiB, 1500...
    #[arg(long, default_value = "5MB", value_parser = run::parse_size)]
    size: u64,
    /// Loss model of every county.
    #[arg(long, value_enum, default_value_t = ModelArg::Independent)]
    model: ModelArg,
    /// Long-run loss rate (for the fade model: the share of time a province is faded).
    #[arg(long, default_value_t = 0.05)]
    loss: f64,
    /// Bursts model: mean burst length in datagrams.
    #[arg(long, default_value_t = 20.0)]
    burst_datagrams: f64,
    /// Fade model: mean fade length in milliseconds.
    #[arg(long, default_value_t = 2000)]
    fade_ms: u64,
    /// Fade model: independent loss per county on top of the fades.
    #[arg(long, default_value_t = 0.0)]
    background_loss: f64,
    /// Power outage FROM..TO[@SHARE] (e.g. 10s..40s@0.05: 5% of the counties are off from
    /// 10 s to 40 s). Repeatable.
    #[arg(long = "outage", value_parser = |s: &str| run::parse_outage(s, OutageKind::Power))]
    outages: Vec<OutageSpec>,
    /// WAN outage FROM..TO[@SHARE]: feedback waits until the link returns. Repeatable.
    #[arg(long = "wan-outage", value_parser = |s: &str| run::parse_outage(s, OutageKind::Wan))]
    wan_outages: Vec<OutageSpec>,
    /// One-way GEO downlink delay, milliseconds.
    #[arg(long, default_value_t = 270)]
    geo_delay_ms: u64,
    /// One-way WAN delay of feedback, milliseconds.
    #[arg(long, default_value_t = 50)]
    wan_delay_ms: u64,
    /// Carrier rate in Mbit/s, IP and UDP headers included (default 20).
    #[arg(long, conflicts_with = "rate_bps")]
    rate_mbps: Option<f64>,
    /// Carrier rate in bit/s (instead of --rate-mbps).
    #[arg(long)]
    rate_bps: Option<u64>,
    /// Bytes per symbol: a DATA datagram carries this plus 34 bytes.
    #[arg(long, default_value_t = 1436)]
    symbol_size: u16,
    /// fast: symbol counting; full: RaptorQ decoding, byte-exact check.
    #[arg(long, value_enum, default_value_t = FidelityArg::Fast)]
    fidelity: FidelityArg,
    /// No feedback: air a carousel (Delivery::Carousel) instead of repair rounds.
    #[arg(long)]
    carousel: bool,
    /// Carousel passes.
    #[arg(long, default_value_t = 2)]
    carousel_passes: u32,
    /// Loss rate each carousel pass is sized for (default: the model's mean loss).
    #[arg(long)]
    carousel_target_loss: Option<f64>,
    /// Loss the uplink assumes for counties it has not heard from, which sizes the first
    /// pass (default: the model's mean loss, as learnt from earlier broadcasts).
    #[arg(long)]
    prior_loss: Option<f64>,
    /// Give up after this many seconds of virtual time.
    #[arg(long, default_value_t = 3600)]
    time_limit_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Leave wall_seconds out of the report, so equal seeds give equal output.
    #[arg(long)]
    no_wall: bool,
    /// Write an SVG plot (completion over time; symbols sent against the bound) to FILE.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DeltaArgs {
    /// The previous version (with --new).
    #[arg(long, requires = "new")]
    base: Option<PathBuf>,
    /// The new version: measured against --base, or compressed alone.
    #[arg(long)]
    new: Option<PathBuf>,
    /// Kind of --new: policy, software or codetable (sets the compression level).
    #[arg(long, default_value = "codetable")]
    kind: String,
    /// Counties targeted by the simulated airings (0: no airing, sizes only).
    #[arg(long, default_value_t = 2000)]
    receivers: usize,
    /// Shares of counties holding the base, comma-separated.
    #[arg(long, default_value = "1,0.95,0.5", value_delimiter = ',')]
    shares: Vec<f64>,
    /// Independent loss per county during the airings.
    #[arg(long, default_value_t = 0.01)]
    loss: f64,
    /// Seed of the year of changes and of the airings (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Seed of every run (default: random, printed with a replay line).
    #[arg(long)]
    seed: Option<u64>,
    /// Object size of every run.
    #[arg(long, default_value = "50MB", value_parser = run::parse_size)]
    size: u64,
    /// Receiver counts, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [20usize, 200, 2000])]
    receivers: Vec<usize>,
    /// Print the table as JSON.
    #[arg(long)]
    json: bool,
}

fn run_options(args: &RunArgs) -> anyhow::Result<RunOptions> {
    let mut options = RunOptions::new(args.seed.unwrap_or_else(rand::random));
    options.receivers = args.receivers;
    options.size_bytes = args.size;
    options.loss = match args.model {
        ModelArg::Independent => LossSpec::Independent { loss: args.loss },
        ModelArg::Bursts => LossSpec::Bursts { loss: args.loss, mean_burst_datagrams: args.burst_datagrams },
        ModelArg::Fade => {
            LossSpec::RegionalFade { share: args.loss, mean_fade: Duration::from_millis(args.fade_ms), background: args.background_loss }
        }
    };
    anyhow::ensure!(args.background_loss == 0.0 || matches!(args.model, ModelArg::Fade), "--background-loss only applies to --model fade");
    options.outages = args.outages.iter().chain(&args.wan_outages).cloned().collect();
    options.geo_delay = Duration::from_millis(args.geo_delay_ms);
    options.wan_delay = Duration::from_millis(args.wan_delay_ms);
    if let Some(mbps) = args.rate_mbps {
        anyhow::ensure!(mbps.is_finite() && mbps > 0.0, "--rate-mbps must be a positive number");
        options.link_rate_bits_per_sec = (mbps * 1e6).round() as u64;
    }
    if let Some(bps) = args.rate_bps {
        options.link_rate_bits_per_sec = bps;
    }
    options.symbol_size = args.symbol_size;
    options.fidelity = match args.fidelity {
        FidelityArg::Fast => Fidelity::Counting,
        FidelityArg::Full => Fidelity::Full,
    };
    if args.carousel {
        let target_loss = args.carousel_target_loss.unwrap_or(options.loss.mean_loss());
        options.delivery = DeliverySpec::Carousel { passes: args.carousel_passes, target_loss };
    }
    options.prior_loss = args.prior_loss;
    options.time_limit = Duration::from_secs(args.time_limit_secs);
    options.validate()?;
    Ok(options)
}

/// Exit status when standard output is a closed pipe (`satcast-sim run | head`): 128 +
/// SIGPIPE, as satcast-uplink and satcast-receiver use (satcast_daemon::cli).
const EXIT_BROKEN_PIPE: i32 = 141;

/// Writes to standard output. Rust ignores SIGPIPE, so `print!` would panic on a closed
/// pipe: end quietly instead, as a C tool killed by SIGPIPE would.
fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(EXIT_BROKEN_PIPE),
        result => result.context("cannot write to standard output"),
    }
}

/// `eprintln!` that ignores a closed or full standard error instead of panicking: progress
/// and replay lines must not change how a run ends.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    match run_command(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            say!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo { receivers, seed, loss, rate_mbps, timeout_secs, keep, json } => {
            anyhow::ensure!(receivers >= 1, "--receivers must be at least 1");
            anyhow::ensure!((0.0..0.5).contains(&loss), "--loss must be in [0, 0.5)");
            let options = DemoOptions {
                receivers,
                seed: seed.unwrap_or_else(rand::random),
                loss_max: loss,
                link_rate_bits_per_sec: rate_mbps.max(1) * 1_000_000,
                timeout: Duration::from_secs(timeout_secs),
                keep,
                progress: !json,
            };
            let summary = demo::run(&options).context("the demo could not run")?;
            if json {
                out(&(serde_json::to_string_pretty(&summary)? + "\n"))?;
            } else {
                out(&demo::table(&summary))?;
            }
            if !summary.success() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Ackload { clients, outage, outage_secs, handshakes, rate_mbps, payload_mb, passes, seed, time_limit_secs, keep, json } => {
            let seed = seed.unwrap_or_else(rand::random);
            let options = ackload::AckLoadOptions {
                load: ackload::LoadOptions {
                    clients,
                    outage,
                    outage_duration: Duration::from_secs(outage_secs),
                    handshakes_in_flight: handshakes,
                    seed,
                    time_limit: Duration::from_secs(time_limit_secs),
                },
                link_rate_bits_per_sec: rate_mbps.max(1) * 1_000_000,
                payload_bytes: payload_mb.max(1) * 1_000_000,
                passes: passes.max(1),
                keep,
            };
            let outage_flag = if outage { " --outage" } else { "" };
            say!("seed {seed}; replay with: satcast-sim ackload --clients {clients} --seed {seed}{outage_flag}");
            let report = ackload::run(&options).context("the load could not run")?;
            if json {
                out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
            } else {
                out(&ackload::summary(&report))?;
            }
            if !report.success() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Utilisation { counties, objects, size, loss, rate_mbps, seed, time_limit_secs, keep, confidential, json } => {
            anyhow::ensure!((0.0..0.5).contains(&loss), "--loss must be in [0, 0.5)");
            let seed = seed.unwrap_or_else(rand::random);
            let size_bytes = usize::try_from(size).ok().filter(|s| *s <= 1 << 30).context("--size must be at most 1 GiB")?;
            let options = utilisation::UtilisationOptions {
                counties,
                objects,
                size_bytes,
                loss,
                link_rate_bits_per_sec: rate_mbps.max(1) * 1_000_000,
                seed,
                time_limit: Duration::from_secs(time_limit_secs),
                keep,
                confidential,
            };
            let sealed = if confidential { " --confidential" } else { "" };
            say!(
                "seed {seed}; replay with: satcast-sim utilisation --counties {counties} --objects {objects} --size {size} --loss {loss} --rate-mbps {rate_mbps} --seed {seed}{sealed}"
            );
            let report = utilisation::run(&options).context("the bench could not run")?;
            if json {
                out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
            } else {
                out(&utilisation::summary(&report))?;
            }
            if !report.success() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Run(args) => {
            let options = run_options(&args)?;
            say!("seed {}; replay with: {}", options.seed, options.replay_command());
            let mut report = run::run(&options).context("the simulation could not run")?;
            if args.no_wall {
                report.wall_seconds = None;
            }
            if let Some(path) = &args.plot {
                std::fs::write(path, plot::svg(&report)).with_context(|| format!("cannot write the plot to {}", path.display()))?;
            }
            if args.json {
                out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
            } else {
                out(&run::summary(&report))?;
            }
            if !report.success() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Vopr { seed, receivers, seconds } => {
            anyhow::ensure!(receivers >= 1, "--receivers must be at least 1");
            let print = |options: &vopr::VoprOptions, report: &vopr::VoprReport| {
                say!(
                    "seed {:>20}: {} objects, {} crashes, {} full and {} slow disks, settled in {:.1} s virtual: {}",
                    options.seed,
                    report.objects,
                    report.crashes,
                    report.full_disks,
                    report.slow_disks,
                    report.virtual_secs,
                    if report.violations.is_empty() { "ok" } else { "VIOLATION" }
                );
            };
            let failure = match seed {
                Some(seed) => {
                    let options = vopr::VoprOptions { seed, receivers };
                    let report = vopr::run_seed(options);
                    print(&options, &report);
                    (!report.violations.is_empty()).then_some((options, report))
                }
                None => {
                    let first = rand::random::<u64>() >> 1;
                    say!("seeds from {first} for {seconds} s; each replays with: satcast-sim vopr --seed S --receivers {receivers}");
                    let (seeds, failure) = vopr::run_for(Duration::from_secs(seconds), receivers, first, print);
                    say!("{seeds} seeds run");
                    failure
                }
            };
            if let Some((options, report)) = failure {
                for violation in report.violations.iter().take(20) {
                    say!("  {violation}");
                }
                say!("invariant violated; replay with: {}", options.replay_line());
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Delta(args) => {
            let seed = args.seed.unwrap_or_else(rand::random);
            let kind: satcast_protocol::manifest::Kind = args.kind.parse()?;
            let read = |path: &PathBuf| std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
            let (name, base, new) = match (&args.base, &args.new) {
                (base, Some(new)) => (new.display().to_string(), base.as_ref().map(read).transpose()?, read(new)?),
                (_, None) => {
                    let table = satcast_sim::delta::division_table();
                    let year = satcast_sim::delta::year_of_changes(&table, seed);
                    ("division-code table, a year of changes".to_owned(), Some(table.into_bytes()), year.into_bytes())
                }
            };
            let shares: Vec<String> = args.shares.iter().map(f64::to_string).collect();
            let files = match (&args.base, &args.new) {
                (Some(b), Some(n)) => format!(" --base {} --new {} --kind {kind}", b.display(), n.display()),
                (None, Some(n)) => format!(" --new {} --kind {kind}", n.display()),
                _ => String::new(),
            };
            say!(
                "seed {seed}; replay with: satcast-sim delta{files} --receivers {} --shares {} --loss {} --seed {seed}",
                args.receivers,
                shares.join(","),
                args.loss
            );
            let measure = satcast_sim::delta::measure(&name, kind, base.as_deref(), &new).context("cannot code the payload")?;
            let mixes = if args.receivers == 0 {
                Vec::new()
            } else {
                satcast_sim::delta::mixes(&measure, args.receivers, &args.shares, args.loss, seed).context("the airing could not run")?
            };
            let report = vec![(measure, mixes)];
            if args.json {
                out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
            } else {
                out(&satcast_sim::delta::summary(&report))?;
            }
            Ok(())
        }
        Command::Bench(args) => {
            let mut options = BenchOptions::new(args.seed.unwrap_or_else(rand::random));
            options.size_bytes = args.size;
            options.receiver_counts = args.receivers.clone();
            say!("seed {}; replay with: {}", options.seed, options.replay_command());
            let report = bench::bench_with_progress(&options, &mut |row| {
                say!(
                    "  {:>5} receivers, {}, {}: efficiency {:.4}, {} repair rounds, {}/{} complete ({:.1} s)",
                    row.receivers,
                    row.model,
                    row.delivery,
                    row.efficiency,
                    row.repair_rounds,
                    row.completed,
                    row.receivers,
                    row.wall_seconds
                );
            })
            .context("the bench could not run")?;
            if args.json {
                out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
            } else {
                out(&bench::table(&report))?;
            }
            Ok(())
        }
        Command::Relay { listen, to, loss, burst, delay_ms, rate_bps, seed } => {
            anyhow::ensure!((0.0..1.0).contains(&loss), "--loss must be in [0, 1)");
            let seed = seed.unwrap_or_else(rand::random);
            say!("relay seed {seed}; replay with --seed {seed}");
            let model = match burst {
                Some(mean_burst) => LossModel::GilbertElliott { mean_loss: loss, mean_burst },
                None => LossModel::Bernoulli(loss),
            };
            let destinations = to
                .into_iter()
                .map(|addr| Destination { addr, loss: model, delay: Duration::from_millis(delay_ms), rate_bits_per_sec: rate_bps })
                .collect();
            let relay = Relay::start(listen, destinations, seed).context("cannot start the relay")?;
            say!("relaying from {}; Ctrl-C to stop", relay.listen);
            loop {
                std::thread::sleep(Duration::from_secs(10));
                let stats = &relay.stats;
                say!(
                    "received {} forwarded {} dropped {}",
                    stats.received.load(std::sync::atomic::Ordering::Relaxed),
                    stats.forwarded.load(std::sync::atomic::Ordering::Relaxed),
                    stats.dropped.load(std::sync::atomic::Ordering::Relaxed)
                );
            }
        }
    }
}
