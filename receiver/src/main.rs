//! `satcast-receiver`: the county receiver daemon.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Parser, Subcommand};
use satcast_receiver::{ReceiverConfig, daemon, logging};

#[derive(Parser)]
#[command(name = "satcast-receiver", version, about = "satcast county receiver daemon")]
struct Cli {
    /// Log as JSON lines instead of human text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive, verify and deliver broadcasts until stopped (SIGTERM or Ctrl-C).
    Run {
        /// The receiver's TOML config.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_json);
    match cli.command {
        Command::Run { config } => {
            let config = ReceiverConfig::load(&config)?;
            let stop = Arc::new(AtomicBool::new(false));
            spawn_signal_watcher(stop.clone())?;
            daemon::run(config, stop).context("receiver stopped with an error")
        }
    }
}

/// Sets `stop` on SIGTERM or SIGINT so the datapath finishes its current datagram and exits.
fn spawn_signal_watcher(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        runtime.block_on(async {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return,
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            stop.store(true, Ordering::Relaxed);
        });
    })?;
    Ok(())
}
