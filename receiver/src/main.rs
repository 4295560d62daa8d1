//! `satcast-receiver`: the county receiver daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use satcast_daemon::{cli, logging, signals};
use satcast_receiver::status;
use satcast_receiver::upgrade;
use satcast_receiver::{ReceiverConfig, daemon};

/// This build's version: the package version packaging/build-debs.sh stamps, else the crate's.
const SOFTWARE_VERSION: &str = match option_env!("SATCAST_VERSION") {
    Some(version) if !version.is_empty() => version,
    _ => env!("CARGO_PKG_VERSION"),
};

/// An error (the message says which).
const EXIT_ERROR: u8 = 1;

const EXIT_CODES: &str = "Exit codes:
  0  run: stopped cleanly (SIGTERM, Ctrl-C); status: the daemon is running; check: no
     problems found
  1  an error (unreadable config, keys or trust state; the message says which); check:
     a problem found (each is one `problem:` line)
  2  bad command-line arguments
  3  status: the daemon is not running (nothing holds state/daemon.lock); what is on
     disk is printed anyway. A running daemon whose state/status.json is stale (a full
     disk) is still running: exit 0, and the staleness is said
  141  standard output was a closed pipe (`status | head`): stopped quietly
Errors are one line on standard error; with --json also {\"error\": ..., \"exit_code\": N}
on standard output";

#[derive(Parser)]
#[command(name = "satcast-receiver", version = SOFTWARE_VERSION, about = "satcast county receiver daemon", after_help = EXIT_CODES)]
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
    /// Check a config and the key files and folders it names, without starting: what
    /// `run` would refuse, one `problem:` line each (run it as the daemon's user).
    #[command(after_help = EXIT_CODES)]
    Check {
        /// The receiver's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write shell completions and man pages into OUT (for packaging).
    #[command(hide = true)]
    GenerateAssets {
        /// The folder to write completions/ and man/ into.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    upgrade::set_software_version(SOFTWARE_VERSION);
    let cli: Cli = cli::parse();
    logging::init(cli.log_json);
    let json = matches!(cli.command, Command::Status { json: true, .. } | Command::Check { json: true, .. });
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            cli::report(error.as_ref(), EXIT_ERROR, json);
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Status { config, json } => {
            let config = ReceiverConfig::load(&config)?;
            print_status(&config, json)
        }
        Command::Check { config, json } => Ok(ExitCode::from(satcast_receiver::check::check(&config).print(json)?)),
        Command::GenerateAssets { out } => {
            satcast_daemon::assets::write(<Cli as clap::CommandFactory>::command(), &out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            let config = ReceiverConfig::load(&config)?;
            let stop = signals::stop_on_signals()?;
            match daemon::run(config, stop).context("receiver stopped with an error")? {
                daemon::Stopped::Asked => Ok(ExitCode::SUCCESS),
                daemon::Stopped::NewBuildInstalled(executable) => {
                    let error = executable.exec_again();
                    // Still the old build: exit with an error, and the service manager's
                    // restart starts the new file (or says why it cannot).
                    anyhow::bail!("cannot start the new build at {}: {error}", executable.path().display())
                }
            }
        }
    }
}

/// Prints the status; returns the exit code.
fn print_status(config: &ReceiverConfig, json: bool) -> anyhow::Result<ExitCode> {
    let now = std::time::SystemTime::now();
    let liveness = status::liveness(&config.state_dir, now);
    let offline = liveness.needs_offline_state().then(|| status::offline_state(&config.state_dir));
    let text = if json {
        serde_json::to_string_pretty(&status::json_report(&liveness, offline.as_ref()))? + "\n"
    } else {
        status::human_report(&liveness, offline.as_ref(), now)
    };
    // `status | head` closes the pipe early: that ends the process quietly (exit 141).
    cli::print(&text)?;
    Ok(ExitCode::from(u8::try_from(liveness.exit_code()).unwrap_or(EXIT_ERROR)))
}
