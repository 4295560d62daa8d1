//! `satcast-uplink`: the uplink daemon and the operators' CLI.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use satcast_protocol::manifest::{Kind, parse_targets};
use satcast_uplink::queue::{Job, Queue};
use satcast_uplink::{UplinkConfig, keys, serve};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "satcast-uplink", version, about = "satcast uplink daemon and operators' CLI")]
struct Cli {
    /// Log as JSON lines instead of human text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Air queued broadcasts until stopped (SIGTERM or Ctrl-C).
    Serve {
        /// The uplink's TOML config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Queue a file for broadcast; prints the broadcast id.
    Send {
        /// The file to broadcast.
        file: PathBuf,
        /// The uplink's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// What the file is: policy, software or codetable.
        #[arg(long)]
        kind: Kind,
        /// Division-code prefixes, comma separated ("41,4201,110101"), or "all".
        #[arg(long)]
        to: String,
        /// The name receivers deliver it under (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// The version of (kind, name); must grow with every release (default: now, in seconds).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Create and hand out keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create the root, signing and network keys and the private QUIC CA in DIR.
    Init {
        /// The key directory to create.
        #[arg(long)]
        dir: PathBuf,
        /// How long the signing-key certificate is valid.
        #[arg(long, default_value_t = 365)]
        validity_days: u32,
    },
    /// Write what one county needs (pinned root, network key, client certificate, CA,
    /// example config) into OUT.
    Receiver {
        /// The uplink's key directory.
        #[arg(long)]
        dir: PathBuf,
        /// The county's six-digit division code.
        #[arg(long)]
        id: String,
        /// Where to write the county's bundle.
        #[arg(long)]
        out: PathBuf,
    },
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    match cli.command {
        Command::Serve { config } => {
            let config = UplinkConfig::load(&config)?;
            let stop = Arc::new(AtomicBool::new(false));
            spawn_signal_watcher(stop.clone())?;
            serve::serve(config, stop).context("uplink stopped with an error")
        }
        Command::Send { file, config, kind, to, name, version } => {
            let config = UplinkConfig::load(&config)?;
            let targets = parse_targets(&to).with_context(|| format!("bad --to {to:?}"))?;
            let size = std::fs::metadata(&file).with_context(|| format!("cannot read {}", file.display()))?.len();
            if size == 0 {
                bail!("{} is empty; there is nothing to broadcast", file.display());
            }
            let name = match name {
                Some(name) => name,
                None => file.file_name().context("the file has no name; pass --name")?.to_string_lossy().into_owned(),
            };
            let object_id: u64 = {
                use rand::{RngCore, SeedableRng};
                rand::rngs::StdRng::from_os_rng().next_u64().max(1)
            };
            let job = Job {
                object_id: format!("{object_id:016x}"),
                kind: kind.to_string(),
                name,
                version: version.unwrap_or_else(unix_secs),
                targets,
                queued_unix_secs: unix_secs(),
                feedback: true,
            };
            Queue::open(&config.state_dir)?.submit(&job, &file)?;
            println!("{}", job.object_id);
            Ok(())
        }
        Command::Keys { command: KeysCommand::Init { dir, validity_days } } => {
            keys::init(&dir, unix_secs(), validity_days)?;
            println!("keys written to {}; move root.secret offline", dir.display());
            Ok(())
        }
        Command::Keys { command: KeysCommand::Receiver { dir, id, out } } => {
            keys::receiver(&dir, &id, &out)?;
            println!("bundle for county {id} written to {}", out.display());
            Ok(())
        }
    }
}

/// Sets `stop` on SIGTERM or SIGINT so the daemon finishes its current datagram and exits.
fn spawn_signal_watcher(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        runtime.block_on(async {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else { return };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            stop.store(true, Ordering::Relaxed);
        });
    })?;
    Ok(())
}
