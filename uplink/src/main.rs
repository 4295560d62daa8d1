//! `satcast-uplink`: the uplink daemon and the operators' CLI.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use satcast_daemon::cli::{self, OutputError};
use satcast_daemon::clock::wall_unix_secs;
use satcast_daemon::{logging, outln, signals};
use satcast_protocol::ObjectId;
use satcast_protocol::broadcast::Priority;
use satcast_protocol::manifest::Kind;
use satcast_uplink::client::{Client, ClientError};
use satcast_uplink::report::{self, BroadcastStatus, BroadcastSummary, ReceiverSummary};
use satcast_uplink::{UplinkConfig, keys, serve};

/// Exit codes scripts can rely on.
const EXIT_ERROR: u8 = 1;
/// Bad usage: clap's own code for a malformed argument, and `send`'s for a job it refuses.
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_RUNNING: u8 = 3;
const EXIT_UNKNOWN_ID: u8 = 4;
const EXIT_INCOMPLETE: u8 = 5;

#[derive(Parser)]
#[command(
    name = "satcast-uplink",
    version,
    about = "satcast uplink daemon and operators' CLI",
    after_help = "Exit codes: 0 success; 1 error; 2 bad usage, or a job the daemon refuses at `send` (name, target, dates, size or version; nothing is queued); 3 the daemon is not running (`send` queued nothing: send again once it runs); 4 unknown broadcast id; 5 `send --wait` ended before every targeted county had the file; 141 standard output was a closed pipe (`list | head`), stopped quietly.\nErrors are one line on standard error; with --json also {\"error\": ..., \"exit_code\": N} on standard output."
)]
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
    /// Queue a file for broadcast through the running daemon, which checks the job and
    /// queues it; prints the broadcast id (with --json, `{"id": ...}` on a line of its own) as
    /// soon as the daemon answers. A job no county could take is refused, exit code 2, and
    /// nothing is queued; with the daemon down nothing is queued either (exit code 3).
    Send {
        /// The file to broadcast.
        file: PathBuf,
        /// The uplink's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// What the file is: policy, software or codetable.
        #[arg(long)]
        kind: Kind,
        /// Division-code prefixes, comma separated ("41,4201,110101"), or "all"; each must
        /// have a county under it in the national division table.
        #[arg(long)]
        to: String,
        /// The name counties deliver it under (default: the file's name): UTF-8 up to 240
        /// bytes; no '/', '\\', control characters, leading '.' or surrounding spaces.
        #[arg(long)]
        name: Option<String>,
        /// The version of (kind, name); must be above the last one sent (default: now in
        /// milliseconds, or one above the last, whichever is larger).
        #[arg(long)]
        version: Option<u64>,
        /// emergency, high, normal or bulk.
        #[arg(long, default_value = "normal")]
        priority: Priority,
        /// Do not air before this time: +30m, +2h, unix seconds, or 2026-11-27T08:00:00Z.
        #[arg(long)]
        not_before: Option<String>,
        /// Stop airing at this time, complete or not (same formats).
        #[arg(long)]
        deadline: Option<String>,
        /// Air as a carousel sized from the target loss, without waiting for acknowledgements.
        #[arg(long)]
        no_feedback: bool,
        /// Seal it so only the targeted counties can read it (default: the kind's, from
        /// coding.confidential_kinds in the config).
        #[arg(long, conflicts_with = "no_confidential")]
        confidential: bool,
        /// Air it readable by anyone under the beam, whatever the kind's default.
        #[arg(long)]
        no_confidential: bool,
        /// Show progress (counties complete / targeted, bytes aired, rate, ETA) until the
        /// broadcast ends: a bar on a terminal, plain lines otherwise; with --json, the final
        /// status follows the id as a second JSON line.
        #[arg(long)]
        wait: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List broadcasts.
    List {
        /// The uplink's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Which counties have a broadcast, by province, and who lags.
    Status {
        /// The broadcast id (16 hex digits, as `send` printed it).
        id: ObjectId,
        /// The uplink's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop airing a broadcast now.
    Cancel {
        /// The broadcast id (16 hex digits, as `send` printed it).
        id: ObjectId,
        /// The uplink's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Air a finished broadcast again for the counties that do not have it.
    Reair {
        /// The broadcast id (16 hex digits, as `send` printed it).
        id: ObjectId,
        /// The uplink's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Only counties under these prefixes.
        #[arg(long)]
        to: Option<String>,
        /// Stop re-airing at this time (same formats as send --deadline); without it the
        /// re-air has no deadline, whatever the first airing had.
        #[arg(long)]
        deadline: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// County receivers: last seen, software version, free disk.
    Receivers {
        /// The uplink's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Only counties not heard from for this long (90s, 30m, 2h, 7d), or never.
        #[arg(long)]
        silent_for: Option<String>,
        /// Include counties that never connected.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The read-only web dashboard's address with the viewer key (`[dashboard]` in the
    /// config): open it in a browser. The key reads the dashboard and /metrics, nothing else.
    Dashboard {
        /// The uplink's TOML config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a config and the key files and folders it names, without starting: what
    /// `serve` would refuse, one `problem:` line each (run it as the daemon's user). Exit 0
    /// when none is found, 1 otherwise.
    Check {
        /// The uplink's TOML config.
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
    /// a ready receiver.toml) into OUT.
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
        /// The uplink's acknowledgement endpoint the county reaches over the WAN.
        #[arg(long, value_name = "HOST:PORT", default_value = keys::DEFAULT_ACK_UPLINK)]
        uplink: keys::AckUplink,
        /// The multicast group and port the uplink airs on.
        #[arg(long, value_name = "ADDR:PORT", value_parser = keys::parse_group, default_value_t = keys::DEFAULT_GROUP)]
        group: std::net::SocketAddrV4,
        /// The county's local interface address to join the group on (0.0.0.0: the kernel chooses).
        #[arg(long, value_name = "ADDR", value_parser = keys::parse_interface, default_value = "0.0.0.0")]
        interface: std::net::Ipv4Addr,
        /// The receiver's state folder (the default is the one the shipped systemd unit allows).
        #[arg(long, value_name = "DIR", value_parser = keys::parse_folder, default_value = keys::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Where finished files are delivered (the default is under the unit's /srv/satcast).
        #[arg(long, value_name = "DIR", value_parser = keys::parse_folder, default_value = keys::DEFAULT_DELIVER_DIR)]
        deliver_dir: PathBuf,
    },
    /// List the signing keys: serial, validity, which is active, which are revoked.
    List {
        /// The uplink's key directory.
        #[arg(long)]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke every QUIC client certificate issued to a county (a stolen county PC): the
    /// acknowledgement server refuses them from then on. Issue a new bundle with `receiver`.
    RevokeReceiver {
        /// The uplink's key directory.
        #[arg(long)]
        dir: PathBuf,
        /// The county's six-digit division code.
        #[arg(long)]
        id: String,
    },
    /// Rotate the network key over the air: a fresh key, sealed for every county enrolled in
    /// the confidential key tree (a revoked county cannot open it), aired by the running
    /// daemon after every heartbeat until it takes over. Counties keep it durably and switch
    /// when the uplink does. Revoke a leaked bundle's county first, then rotate.
    RotateNetworkKey {
        /// The uplink's key directory.
        #[arg(long)]
        dir: PathBuf,
        /// How long counties have to hear it before it takes over (counties off the air for
        /// longer need a new bundle): 90s, 30m, 24h...
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_span)]
        activate_in: u64,
    },
    /// Revoke signing keys by serial: the root (which must be in DIR for this) signs a new
    /// revocation list; the running daemon airs it and counties refuse those keys from then on.
    /// The active key and serials never issued are refused without --force.
    Revoke {
        /// The uplink's key directory.
        #[arg(long)]
        dir: PathBuf,
        /// A serial to revoke (repeat the flag for several); `keys list` shows them.
        #[arg(long = "serial", required = true)]
        serials: Vec<u64>,
        /// Revoke the active key or a serial never issued anyway: every county then refuses
        /// everything signed by it until a rotation (a stolen key: rotate right after).
        #[arg(long)]
        force: bool,
    },
    /// Replace the online signing key with a new one certified by the root (which must be
    /// in DIR for this); the running daemon picks it up and airs the new certificate with
    /// every manifest and heartbeat.
    Rotate {
        /// The uplink's key directory.
        #[arg(long)]
        dir: PathBuf,
        /// How long the new certificate is valid.
        #[arg(long, default_value_t = 365)]
        validity_days: u32,
    },
}

/// A job `send` refuses before asking the daemon, so nothing is queued: exit code
/// [`EXIT_USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("refused: {0}")]
struct Refused(String);

/// A span like 90s, 30m, 2h or 7d, in seconds.
fn parse_span(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: u64 = number.parse().with_context(|| format!("{text:?} is not a span like 90s, 30m, 2h or 7d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => bail!("unknown unit {other:?} in {text:?} (s, m, h or d)"),
    };
    Ok(number.saturating_mul(scale))
}

/// A time like +30m, unix seconds, or 2026-11-27T08:00:00Z, as unix seconds.
fn parse_time(text: &str) -> anyhow::Result<u64> {
    if let Some(span) = text.strip_prefix('+') {
        return Ok(wall_unix_secs() + parse_span(span)?);
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs);
    }
    parse_rfc3339_utc(text).with_context(|| format!("{text:?} is not a time: use +30m, unix seconds, or 2026-11-27T08:00:00Z"))
}

/// YYYY-MM-DDTHH:MM:SSZ (UTC only) as unix seconds.
fn parse_rfc3339_utc(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

fn ago(then: Option<u64>) -> String {
    match then {
        None => "never".into(),
        Some(then) => {
            let secs = wall_unix_secs().saturating_sub(then);
            match secs {
                0..=119 => format!("{secs}s ago"),
                120..=7199 => format!("{}m ago", secs / 60),
                7200..=172_799 => format!("{}h ago", secs / 3600),
                _ => format!("{}d ago", secs / 86_400),
            }
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

fn print_list(list: &[BroadcastSummary]) -> Result<(), OutputError> {
    let now = wall_unix_secs();
    outln!(
        "{:<16}  {:<9}  {:<28} {:>8}  {:<9}  {:<10} {:>9}  {:<12}  schedule, progress",
        "id",
        "kind",
        "name",
        "version",
        "priority",
        "state",
        "delivered",
        "to"
    )?;
    for b in list {
        outln!(
            "{:<16}  {:<9}  {:<28} {:>8}  {:<9}  {:<10} {:>4}/{:<4}  {:<12}  {}",
            ObjectId(b.id),
            b.kind,
            b.name.chars().take(28).collect::<String>(),
            b.version,
            b.priority,
            b.state,
            b.delivered,
            b.targeted,
            report::targets_text(&b.to),
            report::schedule_and_progress(b, now) + if b.confidential { ", confidential" } else { "" }
        )?;
    }
    Ok(())
}

fn print_status(status: &BroadcastStatus) -> Result<(), OutputError> {
    let s = &status.summary;
    let sealed = if s.confidential { ", confidential" } else { "" };
    outln!("{} {}/{} version {} ({} bytes, {}{sealed}): {}", ObjectId(s.id), s.kind, s.name, s.version, s.size_bytes, s.priority, s.state)?;
    outln!("to {}: {} counties targeted", report::targets_text(&s.to), s.targeted)?;
    let more = report::schedule_and_progress(s, wall_unix_secs());
    if !more.is_empty() {
        outln!("{more}")?;
    }
    outln!("delivered {}  in progress {}  silent {}  rejected {}", s.delivered, s.in_progress, s.silent, s.rejected)?;
    if !status.provinces.is_empty() {
        outln!()?;
        outln!(
            "{:<4} {:<16} {:>8} {:>9} {:>11} {:>7} {:>8}",
            "code",
            "province",
            "targeted",
            "delivered",
            "in progress",
            "silent",
            "rejected"
        )?;
        for p in &status.provinces {
            outln!(
                "{:<4} {:<16} {:>8} {:>9} {:>11} {:>7} {:>8}",
                p.code,
                p.name,
                p.targeted,
                p.delivered,
                p.in_progress,
                p.silent,
                p.rejected
            )?;
        }
    }
    if !status.lagging.is_empty() {
        outln!()?;
        outln!("lagging counties:")?;
        for l in &status.lagging {
            outln!("  {} {:<20} {:<11} {:<30} last seen {}", l.code, l.name, l.state, l.detail, ago(l.last_seen_unix_secs))?;
        }
    }
    for (county, detail) in &status.hooks_failed {
        outln!("hook failed at {county}: {detail}")?;
    }
    Ok(())
}

fn print_receivers(list: &[ReceiverSummary]) -> Result<(), OutputError> {
    outln!("{:<6}  {:<24} {:>10}  {:<14} {:>10}  heartbeat", "code", "name", "last seen", "version", "free disk")?;
    for r in list {
        let free = r.free_disk_bytes.map_or("-".into(), |b| format!("{:.1} GB", b as f64 / 1e9));
        let heartbeat = r.heartbeat_age_secs.map_or("-".into(), |s| format!("{s}s old"));
        outln!(
            "{:<6}  {:<24} {:>10}  {:<14} {:>10}  {}",
            r.code,
            r.name.chars().take(12).collect::<String>(),
            ago(r.last_seen_unix_secs),
            r.software_version.as_deref().unwrap_or("-"),
            free,
            heartbeat
        )?;
    }
    if !list.is_empty() {
        let spread: Vec<String> = report::version_spread(list).iter().map(|(version, n)| format!("{version} on {n}")).collect();
        outln!("versions: {}", spread.join(", "))?;
    }
    Ok(())
}

/// Off a terminal, `send --wait` prints a progress line when the state or the counts change,
/// and at least this often while the broadcast airs.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Follows a broadcast until it ends: a progress bar on standard error when it is a
/// terminal, plain lines otherwise (a log, a pipe).
fn wait(client: &Client, id: ObjectId, json: bool) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let mut shown: Option<(String, usize, usize)> = None;
    let mut shown_at = std::time::Instant::now();
    let mut bar_chars: usize = 0;
    loop {
        let status: BroadcastStatus = client.get(&format!("/v1/broadcasts/{id}"))?;
        let s = &status.summary;
        let ended = report::FINAL_STATES.contains(&s.state.as_str());
        if !json {
            let line = report::progress_line(s, wall_unix_secs());
            if terminal {
                let width = 30;
                let filled = (s.delivered * width).checked_div(s.targeted).unwrap_or(0).min(width);
                let bar = format!("[{}{}] {line}", "#".repeat(filled), " ".repeat(width - filled));
                // Spaces over what is left of a longer previous bar.
                let pad = bar_chars.saturating_sub(bar.chars().count());
                bar_chars = bar.chars().count();
                cli::eprint(&format!("\r{bar}{}", " ".repeat(pad)));
                if ended {
                    cli::eprint("\n");
                }
            } else {
                let now_shown = (s.state.clone(), s.delivered, s.targeted);
                if ended || shown.as_ref() != Some(&now_shown) || shown_at.elapsed() >= PLAIN_PROGRESS_EVERY {
                    cli::eprint(&format!("{line}\n"));
                    shown = Some(now_shown);
                    shown_at = std::time::Instant::now();
                }
            }
        }
        if ended {
            let complete = s.delivered >= s.targeted && s.state != report::REFUSED;
            if json {
                // One line, after the id's line: `send --wait --json` prints JSON lines.
                outln!("{}", serde_json::to_string(&status)?)?;
            }
            return Ok(if complete { ExitCode::SUCCESS } else { ExitCode::from(EXIT_INCOMPLETE) });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn main() -> ExitCode {
    let cli: Cli = cli::parse();
    logging::init(cli.log_json);
    let json = cli.command.json();
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            let code = match error.downcast_ref::<ClientError>() {
                Some(ClientError::NotRunning(_)) => EXIT_NOT_RUNNING,
                Some(ClientError::UnknownId(_)) => EXIT_UNKNOWN_ID,
                Some(ClientError::JobRefused(_)) => EXIT_USAGE,
                _ if error.is::<Refused>() => EXIT_USAGE,
                _ => EXIT_ERROR,
            };
            cli::report(error.as_ref(), code, json);
            ExitCode::from(code)
        }
    }
}

impl Command {
    /// Whether the command was asked for JSON, so its error is reported in JSON too.
    fn json(&self) -> bool {
        match self {
            Command::Send { json, .. }
            | Command::List { json, .. }
            | Command::Status { json, .. }
            | Command::Cancel { json, .. }
            | Command::Reair { json, .. }
            | Command::Receivers { json, .. }
            | Command::Check { json, .. } => *json,
            Command::Serve { .. } | Command::Keys { .. } | Command::GenerateAssets { .. } | Command::Dashboard { .. } => false,
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { config, json } => return Ok(ExitCode::from(satcast_uplink::check::check(&config).print(json)?)),
        Command::GenerateAssets { out } => satcast_daemon::assets::write(<Cli as clap::CommandFactory>::command(), &out)?,
        Command::Dashboard { config } => {
            let config = UplinkConfig::load(&config)?;
            let Some(dashboard) = &config.dashboard else {
                return Err(Refused(
                    "the config has no [dashboard] section: add one with listen = \"127.0.0.1:5711\" and restart the daemon".into(),
                )
                .into());
            };
            let path = satcast_uplink::control::viewer_token_path(&config);
            let key = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read the viewer key {} (the daemon writes it when it starts)", path.display()))?;
            outln!("http://{}/dashboard/#key={}", dashboard.listen, key.trim())?;
        }
        Command::Serve { config } => {
            let config = UplinkConfig::load(&config)?;
            let stop = signals::stop_on_signals()?;
            serve::serve(config, stop).context("uplink stopped with an error")?;
        }
        Command::Send {
            file,
            config,
            kind,
            to,
            name,
            version,
            priority,
            not_before,
            deadline,
            no_feedback,
            confidential,
            no_confidential,
            wait: follow,
            json,
        } => {
            let config = UplinkConfig::load(&config)?;
            let name = match name {
                Some(name) => name,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| Refused(format!("{} has no UTF-8 file name; pass --name", file.display())))?
                    .to_owned(),
            };
            let opened = std::fs::File::open(&file).with_context(|| format!("cannot read {}", file.display()))?;
            if !opened.metadata().with_context(|| format!("cannot read {}", file.display()))?.is_file() {
                bail!("{} is not a file", file.display());
            }
            // The daemon checks all of it (name, targets, dates, size, version) and queues it.
            let mut query = vec![("kind", kind.to_string()), ("to", to), ("name", name), ("priority", priority.to_string())];
            if let Some(version) = version {
                query.push(("version", version.to_string()));
            }
            if let Some(at) = not_before.as_deref().map(parse_time).transpose()? {
                query.push(("not_before", at.to_string()));
            }
            if let Some(at) = deadline.as_deref().map(parse_time).transpose()? {
                query.push(("deadline", at.to_string()));
            }
            if no_feedback {
                query.push(("feedback", "0".into()));
            }
            if confidential || no_confidential {
                query.push(("confidential", if confidential { "1" } else { "0" }.into()));
            }
            let client = Client::new(&config)?;
            let answer = client.post_file("/v1/broadcasts", &query, &opened)?;
            let object_id: ObjectId = answer
                .get("id")
                .and_then(|id| id.as_str())
                .and_then(|id| id.parse().ok())
                .with_context(|| format!("the daemon answered without a broadcast id: {answer}"))?;
            // Printed as soon as the daemon answers, whatever happens next (the wait
            // interrupted): a script that retries must not queue it twice.
            if json {
                outln!("{}", serde_json::json!({ "id": object_id.to_string() }))?;
            } else {
                outln!("{object_id}")?;
            }
            if follow {
                return wait(&client, object_id, json);
            }
        }
        Command::List { config, json } => {
            let list: Vec<BroadcastSummary> = Client::new(&UplinkConfig::load(&config)?)?.get("/v1/broadcasts")?;
            if json { print_json(&list)? } else { print_list(&list)? }
        }
        Command::Status { id, config, json } => {
            let status: BroadcastStatus = Client::new(&UplinkConfig::load(&config)?)?.get(&format!("/v1/broadcasts/{id}"))?;
            if json { print_json(&status)? } else { print_status(&status)? }
        }
        Command::Cancel { id, config, json } => {
            let answer = Client::new(&UplinkConfig::load(&config)?)?.post(&format!("/v1/broadcasts/{id}/cancel"), serde_json::json!({}))?;
            if json { print_json(&answer)? } else { outln!("cancelled {id}")? }
        }
        Command::Reair { id, config, to, deadline, json } => {
            let deadline_unix_secs = deadline.as_deref().map(parse_time).transpose()?;
            let mut body = serde_json::json!({});
            if let Some(to) = to {
                body["to"] = to.into();
            }
            if let Some(secs) = deadline_unix_secs {
                body["deadline_unix_secs"] = secs.into();
            }
            let answer = Client::new(&UplinkConfig::load(&config)?)?.post(&format!("/v1/broadcasts/{id}/reair"), body)?;
            if json {
                print_json(&answer)?;
            } else {
                outln!("re-airing {id} for {} counties", answer.get("targets").and_then(|t| t.as_u64()).unwrap_or(0))?;
            }
        }
        Command::Receivers { config, silent_for, all, json } => {
            let mut path = String::from("/v1/receivers?");
            if let Some(span) = silent_for {
                path.push_str(&format!("silent_for={}&", parse_span(&span)?));
            }
            if all {
                path.push_str("all=1");
            }
            let list: Vec<ReceiverSummary> = Client::new(&UplinkConfig::load(&config)?)?.get(path.trim_end_matches(['?', '&']))?;
            if json { print_json(&list)? } else { print_receivers(&list)? }
        }
        Command::Keys { command: KeysCommand::Init { dir, validity_days } } => {
            keys::init(&dir, wall_unix_secs(), validity_days)?;
            outln!("keys written to {}; move root.secret offline", dir.display())?;
        }
        Command::Keys { command: KeysCommand::Receiver { dir, id, out, uplink, group, interface, state_dir, deliver_dir } } => {
            let settings = keys::BundleSettings { uplink, group, interface, state_dir, deliver_dir };
            keys::receiver(&dir, &id, &out, &settings)?;
            outln!("bundle for county {id} written to {}", out.display())?;
        }
        Command::Keys { command: KeysCommand::List { dir, json } } => {
            let list = keys::list(&dir, wall_unix_secs())?;
            if json { print_json(&list)? } else { cli::print(&keys::format_list(&list))? }
        }
        Command::Keys { command: KeysCommand::RevokeReceiver { dir, id } } => {
            let count = keys::revoke_receiver(&dir, &id)?;
            outln!(
                "revoked {count} client certificate(s) of county {id}; if it was in the confidential key tree, it is out and its path re-keyed"
            )?;
        }
        Command::Keys { command: KeysCommand::RotateNetworkKey { dir, activate_in } } => {
            let activates = keys::rotate_network_key(&dir, wall_unix_secs(), activate_in)?;
            outln!(
                "next network key written to {}; the running daemon airs it to every enrolled county and switches to it at {}",
                dir.join(keys::NEXT_NETWORK_KEY_FILE).display(),
                report::utc_text(activates)
            )?;
        }
        Command::Keys { command: KeysCommand::Revoke { dir, serials, force } } => {
            let check = if force { keys::RevokeCheck::Force } else { keys::RevokeCheck::Refuse };
            let (sequence, revoked) = keys::revoke(&dir, &serials, wall_unix_secs(), check)?;
            outln!("revocation list {sequence} now names serials {revoked:?}; the running daemon airs it within seconds")?;
        }
        Command::Keys { command: KeysCommand::Rotate { dir, validity_days } } => {
            let serial = keys::rotate(&dir, wall_unix_secs(), validity_days)?;
            outln!("new signing key (serial {serial}) written to {}; the running daemon airs it within seconds", dir.display())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
