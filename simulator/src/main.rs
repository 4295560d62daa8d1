//! `satcast-sim`: the demo and the UDP impairment relay.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use satcast_sim::demo::{self, DemoOptions};
use satcast_sim::relay::{Destination, LossModel, Relay};

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
        /// Seed for the loss draws (default: random, printed).
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
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
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", demo::table(&summary));
            }
            if !summary.success() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Relay { listen, to, loss, seed } => {
            let seed = seed.unwrap_or_else(rand::random);
            eprintln!("relay seed {seed}; replay with --seed {seed}");
            let destinations = to.into_iter().map(|addr| Destination { addr, loss: LossModel::Bernoulli(loss) }).collect();
            let relay = Relay::start(listen, destinations, seed).context("cannot start the relay")?;
            eprintln!("relaying from {}; Ctrl-C to stop", relay.listen);
            loop {
                std::thread::sleep(Duration::from_secs(10));
                let stats = &relay.stats;
                eprintln!(
                    "received {} forwarded {} dropped {}",
                    stats.received.load(std::sync::atomic::Ordering::Relaxed),
                    stats.forwarded.load(std::sync::atomic::Ordering::Relaxed),
                    stats.dropped.load(std::sync::atomic::Ordering::Relaxed)
                );
            }
        }
    }
}
