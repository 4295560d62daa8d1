//! `satcast-receiver`: the county receiver daemon.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use satcast_daemon::{logging, signals};
use satcast_receiver::status;
use satcast_receiver::{ReceiverConfig, daemon};

const EXIT_CODES: &str = "Exit codes:
  0  run: stopped cleanly (SIGTERM, Ctrl-C); status: the daemon is running
  1  an error (unreadable config, keys or trust state; the message says which)
  2  bad command-line arguments
  3  status: the daemon is not running (nothing holds state/daemon.lock); what is on
     disk is printed anyway. A running daemon whose state/status.json is stale (a full
     disk) is still running: exit 0, and the staleness is said";

#[derive(Parser)]
#[command(name = "satcast-receiver", version, about = "satcast county receiver daemon", after_help = EXIT_CODES)]
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
    /// Show what the running daemon is doing: objects being received (blocks verified),
    /// cached and delivered objects, heartbeat age, outbox, disk use, hook results.
    #[command(after_help = EXIT_CODES)]
    Status {
        /// The receiver's TOML config (status is read from its state_dir).
        #[arg(long)]
        config: PathBuf,
        /// Print JSON (for scripts and monitoring) instead of tables.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_json);
    match cli.command {
        Command::Status { config, json } => {
            let config = ReceiverConfig::load(&config)?;
            let code = print_status(&config, json)?;
            std::process::exit(code);
        }
        Command::Run { config } => {
            let config = ReceiverConfig::load(&config)?;
            let stop = signals::stop_on_signals()?;
            if let Err(error) = daemon::run(config, stop) {
                // One line, as satcast-uplink prints its errors (anyhow's report takes four).
                eprintln!("error: receiver stopped with an error: {error}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// Prints the status; returns the exit code.
fn print_status(config: &ReceiverConfig, json: bool) -> anyhow::Result<i32> {
    let now = std::time::SystemTime::now();
    let liveness = status::liveness(&config.state_dir, now);
    let offline = liveness.needs_offline_state().then(|| status::offline_state(&config.state_dir));
    let text = if json {
        serde_json::to_string_pretty(&status::json_report(&liveness, offline.as_ref()))? + "\n"
    } else {
        status::human_report(&liveness, offline.as_ref(), now)
    };
    // `status | head` closes the pipe early: not an error worth a panic.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => return Err(error.into()),
        _ => {}
    }
    Ok(liveness.exit_code())
}
