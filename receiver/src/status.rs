//! `satcast-receiver status`: the running daemon writes `state/status.json` every second
//! (temp file and rename, so a reader never sees half of one); the command reads it, says
//! whether the daemon is running, and prints a table or JSON. Whether it runs is decided by
//! the state folder's lock (`state/daemon.lock`, see `satcast_store::lock`), which the
//! daemon holds for as long as it lives, not by the status file's age: on a full disk the
//! file cannot be rewritten, and a running daemon is then reported as running with a stale
//! status. When the daemon is not running, or its status is stale, it still shows what is
//! on disk, read straight from the files (the cache's manifests, the spools' manifests,
//! trust state, hook records) without opening the index.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use satcast_daemon::clock::unix_ms;
use satcast_protocol::ObjectId;
use satcast_protocol::fec::{self, Oti};
use satcast_protocol::manifest::Manifest;
use satcast_protocol::trust::SignedManifest;
use satcast_store::receiver::human_bytes;
use satcast_store::{Owner, Ownership, TrustState};
use serde::{Deserialize, Serialize};

use crate::hooks::{HOOK_RESULTS_SHOWN_MAX, HookJob, HookRecord, HookStatus, HookSummary};

/// The status file, under the state directory.
pub const STATUS_FILE: &str = "status.json";
/// A status file older than this is stale (the daemon rewrites it every second). Only if
/// the lock cannot be looked at does staleness alone mean the daemon is not running.
pub const STATUS_STALE_AFTER: Duration = Duration::from_secs(5);
/// The most objects listed as not delivered yet, with why (the total is always given).
pub const STATUS_STUCK_MAX: usize = 100;
/// The most cache entries listed in status (the total is always given).
pub const STATUS_CACHED_MAX: usize = 1000;
/// The most files looked at per folder when reading state without the daemon.
pub const OFFLINE_FILES_MAX: usize = 100_000;
/// The largest status or manifest file read.
pub const STATUS_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Bumped when a field changes meaning or goes away (new fields do not bump it).
pub const STATUS_FORMAT: u32 = 1;

/// Exit code of `status`: the daemon is running (even if its status file is stale).
pub const EXIT_RUNNING: i32 = 0;
/// Exit code of `status`: the daemon is not running (nothing holds `state/daemon.lock`).
pub const EXIT_NOT_RUNNING: i32 = 3;

/// What the daemon writes every second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// [`STATUS_FORMAT`].
    pub format: u32,
    /// The daemon's process id.
    pub pid: u32,
    /// This county.
    pub county_code: String,
    /// The receiver's version.
    pub software_version: String,
    /// When the daemon started.
    pub started_unix_ms: u64,
    /// When this was written.
    pub updated_unix_ms: u64,
    /// Set in the last status a daemon writes as it stops.
    #[serde(default)]
    pub stopped: bool,
    /// Uplink heartbeats.
    pub heartbeat: HeartbeatStatus,
    /// Feedback waiting for the uplink.
    pub outbox: OutboxStatus,
    /// Disk use against the limits.
    pub disk: DiskStatus,
    /// What arrived.
    pub reception: ReceptionStatus,
    /// Objects being received.
    pub partial: Vec<PartialStatus>,
    /// Completed objects waiting to be delivered (a full disk, the cache limit, the hook queue).
    pub deliveries_waiting: usize,
    /// Objects addressed to this county that are not delivered (or whose hook has not
    /// run) yet, and why: at most [`STATUS_STUCK_MAX`], deliveries and refusals first.
    #[serde(default)]
    pub stuck: Vec<StuckStatus>,
    /// How many there are in all.
    #[serde(default)]
    pub stuck_total: usize,
    /// Finished objects in the cache (at most [`STATUS_CACHED_MAX`], newest version first).
    pub cached: Vec<CachedStatus>,
    /// How many objects the cache holds in all.
    pub cached_total: usize,
    /// Post-receive hooks.
    pub hooks: HookStatus,
}

/// Uplink heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatStatus {
    /// Milliseconds since the last valid heartbeat; none since start if absent.
    pub age_ms: Option<u64>,
    /// The configured `heartbeat_warn_after_secs`.
    pub warn_after_secs: u64,
    /// No heartbeat within that bound (the warning is standing).
    pub stale: bool,
}

/// Feedback waiting for the uplink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxStatus {
    /// Messages in the durable outbox.
    pub messages: usize,
}

/// Disk use against the limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStatus {
    /// Spooled symbols and partial objects.
    pub spool_bytes: u64,
    /// `limits.spool_bytes_max`.
    pub spool_bytes_max: u64,
    /// Cached objects.
    pub cache_bytes: u64,
    /// `limits.cache_bytes_max`.
    pub cache_bytes_max: u64,
    /// Free space on the state directory's file system.
    pub free_bytes: Option<u64>,
}

/// Reception counters since the daemon started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceptionStatus {
    /// Datagrams received.
    pub datagrams: u64,
    /// Refused by the wire parser (bad tag, magic, length...).
    pub dropped: u64,
    /// DATA symbols kept.
    pub symbols_kept: u64,
    /// DATA symbols ignored (unknown or completed object, duplicate...).
    pub symbols_ignored: u64,
    /// Events the datapath did not poll in time.
    pub events_lost: u64,
    /// Signed messages whose signatures were checked (one or two Ed25519 verifications each).
    #[serde(default)]
    pub signatures_checked: u64,
    /// Heartbeats dropped as replays, before any signature check.
    #[serde(default)]
    pub heartbeats_replayed: u64,
    /// Revocation lists dropped as replays, before any signature check.
    #[serde(default)]
    pub revocations_replayed: u64,
    /// ROUND markers for completed objects not answered again (answered already, or too soon).
    #[serde(default)]
    pub round_markers_repeated: u64,
    /// Completes said again in answer to ROUND markers.
    #[serde(default)]
    pub completes_repeated: u64,
    /// Manifest fragments of broadcasts that ended, dropped before assembly (replays).
    #[serde(default)]
    pub manifests_ended: u64,
    /// Partial objects of broadcasts that ended, dropped to make room for new ones.
    #[serde(default)]
    pub partials_ended: u64,
    /// KEY_WRAP datagrams heard (the confidential key tree's carousel).
    #[serde(default)]
    pub key_wraps: u64,
    /// Of them, dropped before any signature: nothing new for this county.
    #[serde(default)]
    pub key_wraps_unwanted: u64,
    /// Of them, refused: malformed, revoked or unknown signer, bad signature.
    #[serde(default)]
    pub key_wraps_refused: u64,
    /// Group keys of this county's path learned from them.
    #[serde(default)]
    pub group_keys_learned: u64,
    /// NETWORK KEY datagrams heard (a rotation of the network key).
    #[serde(default)]
    pub network_key_announcements: u64,
    /// Of those, refused (malformed, bad signature, not sealed for this county).
    #[serde(default)]
    pub network_key_refused: u64,
    /// Next network keys learned.
    #[serde(default)]
    pub network_keys_learned: u64,
    /// Next network keys that took over.
    #[serde(default)]
    pub network_keys_activated: u64,
    /// Confidential objects aimed at this county's code but not sealed for it (revoked
    /// before they were made): dropped quietly.
    #[serde(default)]
    pub sealed_not_targeted: u64,
    /// Manifest repeats of confidential objects waiting for a group key from the carousel.
    #[serde(default)]
    pub sealed_pending: u64,
    /// Confidential objects this county opened (it is among their readers).
    #[serde(default)]
    pub sealed_opened: u64,
    /// Signed symbol lists accepted (one signature check each).
    #[serde(default)]
    pub symbol_lists_accepted: u64,
    /// Symbol lists dropped before any signature check: seen already, or of a completed or ended object.
    #[serde(default)]
    pub symbol_lists_replayed: u64,
    /// Symbol lists whose signature did not verify.
    #[serde(default)]
    pub symbol_lists_refused: u64,
    /// Symbol lists of a signer not learned, revoked or expired: not checked, their symbols stay unverified.
    #[serde(default)]
    pub symbol_lists_unknown_signer: u64,
    /// Symbol lists held unchecked because the budget of failed list checks was spent (someone forges lists).
    #[serde(default)]
    pub symbol_lists_held: u64,
    /// Of those, checked and accepted when a symbol or ROUND marker they name arrived.
    #[serde(default)]
    pub symbol_lists_held_accepted: u64,
    /// Held lists pushed out never checked: their symbols stay unverified, as a lost list's.
    #[serde(default)]
    pub symbol_lists_unchecked: u64,
    /// DATA symbols that did not match their signed list: forgeries, never decoded.
    #[serde(default)]
    pub symbols_forged: u64,
    /// DATA symbols kept unverified: no signed list named them (their list was lost).
    #[serde(default)]
    pub symbols_unverified: u64,
    /// Unverified symbols dropped (bounds, a failed attempt with them, or their block takes listed symbols only).
    #[serde(default)]
    pub symbols_unverified_dropped: u64,
    /// Blocks decoded with the help of unverified symbols.
    #[serde(default)]
    pub unverified_decodes: u64,
    /// Decode attempts with unverified symbols that failed the block's hash (a forgery among them).
    #[serde(default)]
    pub unverified_decodes_failed: u64,
    /// ROUND markers no signed list named.
    #[serde(default)]
    pub round_markers_unlisted: u64,
}

/// One object being received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialStatus {
    /// The object.
    #[serde(with = "satcast_daemon::object_id")]
    pub object_id: u64,
    /// kind/name.
    pub name: String,
    /// Its version, when known.
    pub version: Option<u64>,
    /// Its size, when known.
    pub size_bytes: Option<u64>,
    /// Source blocks verified so far (known only while the daemon runs).
    pub blocks_verified: Option<usize>,
    /// Source blocks in all.
    pub blocks: Option<usize>,
    /// Distinct symbols held for blocks not yet verified (known only while the daemon runs).
    pub symbols_held: Option<u64>,
}

/// Where an object that is not delivered yet stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StuckState {
    /// Accepted and being collected.
    WaitingForSymbols,
    /// Refused (and the uplink told why).
    Refused,
    /// Accepted, but storage fails (retried as symbols arrive).
    StorageFailing,
    /// Complete, but a delivery step fails (retried every second).
    DeliveryFailing,
    /// Delivered; its post-receive hook is queued or running.
    WaitingForHook,
}

impl std::fmt::Display for StuckState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StuckState::WaitingForSymbols => "waiting for symbols",
            StuckState::Refused => "refused",
            StuckState::StorageFailing => "storage failing",
            StuckState::DeliveryFailing => "delivery failing",
            StuckState::WaitingForHook => "waiting for hook",
        })
    }
}

/// One object not delivered yet, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StuckStatus {
    /// The object.
    #[serde(with = "satcast_daemon::object_id")]
    pub object_id: u64,
    /// kind/name.
    pub name: String,
    /// Where it stands.
    pub state: StuckState,
    /// Why, in words: "needs 120 more symbols", "spool full (needs 40.0 MiB, ...)".
    pub detail: String,
    /// For a refusal, its code (`spool_full`, `too_many_partial`, `key_revoked`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One finished object in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedStatus {
    /// The object.
    #[serde(with = "satcast_daemon::object_id")]
    pub object_id: u64,
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// Its size.
    pub size_bytes: u64,
    /// BLAKE3, hex.
    pub hash: String,
    /// It is the version last delivered into deliver/<kind>/<name>.
    pub delivered: bool,
}

/// Writes the status file: temp file and rename, no fsync (it is rewritten every second
/// and worthless after a power cut; a reader must only never see half of it).
pub fn write(state_dir: &Path, status: &DaemonStatus) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
    let tmp = state_dir.join(format!(".{STATUS_FILE}.tmp"));
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
    }
    fs::rename(&tmp, state_dir.join(STATUS_FILE))
}

fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?.take(STATUS_BYTES_MAX).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Whether a daemon is running, judged from the state folder's lock and its status file.
#[derive(Debug, Clone, PartialEq)]
pub enum Liveness {
    /// The daemon owns its state folder and its status is fresh.
    Running {
        /// The status.
        status: Box<DaemonStatus>,
        /// How old it is.
        age: Duration,
    },
    /// The daemon owns its state folder but its status file is not current: it cannot be
    /// rewritten (a full disk), the daemon is still starting, or it is stuck.
    RunningStale {
        /// The daemon's process id, as it wrote it into the lock file.
        pid: Option<u32>,
        /// What is wrong with the status file, in words.
        reason: String,
        /// The last status found, and how old it is.
        last: Option<(Box<DaemonStatus>, Duration)>,
    },
    /// No daemon; the last status it wrote, if any.
    NotRunning {
        /// Why we think so, in words.
        reason: String,
        /// The last status found.
        last: Option<Box<DaemonStatus>>,
    },
}

impl Liveness {
    /// The exit code of `status`.
    pub fn exit_code(&self) -> i32 {
        match self {
            Liveness::Running { .. } | Liveness::RunningStale { .. } => EXIT_RUNNING,
            Liveness::NotRunning { .. } => EXIT_NOT_RUNNING,
        }
    }

    /// Whether the report shows what the files say (the daemon's own status is missing or old).
    pub fn needs_offline_state(&self) -> bool {
        !matches!(self, Liveness::Running { .. })
    }
}

fn process_exists(pid: u32) -> bool {
    // Without /proc (not Linux?) assume it exists: the age of the file decides alone.
    !Path::new("/proc/self").exists() || Path::new(&format!("/proc/{pid}")).exists()
}

/// The status file as found.
enum StatusFile {
    Missing(PathBuf),
    Unreadable(String),
    Found(Box<DaemonStatus>, Duration),
}

fn read_status(state_dir: &Path, now: SystemTime) -> StatusFile {
    let path = state_dir.join(STATUS_FILE);
    let bytes = match read_bounded(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return StatusFile::Missing(path),
        Err(error) => return StatusFile::Unreadable(format!("cannot read {}: {error}", path.display())),
    };
    match serde_json::from_slice::<DaemonStatus>(&bytes) {
        Ok(status) => {
            let age = Duration::from_millis(unix_ms(now).saturating_sub(status.updated_unix_ms));
            StatusFile::Found(Box::new(status), age)
        }
        Err(error) => StatusFile::Unreadable(format!("{} is unreadable: {error}", path.display())),
    }
}

/// Reads the state folder's lock and status file and decides whether the daemon runs.
pub fn liveness(state_dir: &Path, now: SystemTime) -> Liveness {
    let file = read_status(state_dir, now);
    match satcast_store::lock::ownership(state_dir) {
        Ok(Ownership::Held(owner)) => held(owner, file),
        Ok(Ownership::Free) => free(file),
        Err(error) => by_age(file, &error.to_string()),
    }
}

/// The daemon runs; is its status current?
fn held(owner: Option<Owner>, file: StatusFile) -> Liveness {
    let pid = owner.map(|o| o.pid);
    let (reason, last) = match file {
        StatusFile::Found(status, age) if !status.stopped && pid.is_none_or(|p| p == status.pid) && age <= STATUS_STALE_AFTER => {
            return Liveness::Running { status, age };
        }
        StatusFile::Found(status, age) if status.stopped || pid.is_some_and(|p| p != status.pid) => (
            format!("its status file is from an earlier run (pid {}); it has not written one yet (starting?)", status.pid),
            Some((status, age)),
        ),
        StatusFile::Found(status, age) => (
            format!("its status file is stale: last written {} ago (a full disk? see the daemon's log)", human_duration(age)),
            Some((status, age)),
        ),
        StatusFile::Missing(path) => (format!("it has not written {} yet (starting?)", path.display()), None),
        StatusFile::Unreadable(why) => (format!("its status file is unusable: {why}"), None),
    };
    Liveness::RunningStale { pid, reason, last }
}

/// Nothing holds the state folder: no daemon runs, whatever the status file says.
fn free(file: StatusFile) -> Liveness {
    match file {
        StatusFile::Found(status, age) if status.stopped => Liveness::NotRunning {
            reason: format!("the daemon (pid {}) stopped {} ago", status.pid, human_duration(age)),
            last: Some(status),
        },
        StatusFile::Found(status, age) => Liveness::NotRunning {
            reason: format!(
                "the daemon (pid {}) is gone without stopping (killed or crashed); its status was last written {} ago",
                status.pid,
                human_duration(age)
            ),
            last: Some(status),
        },
        StatusFile::Missing(path) => {
            Liveness::NotRunning { reason: format!("no {} (the daemon has not run with this state directory)", path.display()), last: None }
        }
        StatusFile::Unreadable(reason) => Liveness::NotRunning { reason, last: None },
    }
}

/// The lock cannot be looked at (no permission to open it, say): judge by the status
/// file's age and whether its process exists.
fn by_age(file: StatusFile, lock_error: &str) -> Liveness {
    let (status, age) = match file {
        StatusFile::Found(status, age) => (status, age),
        StatusFile::Missing(path) => return Liveness::NotRunning { reason: format!("no {} ({lock_error})", path.display()), last: None },
        StatusFile::Unreadable(reason) => return Liveness::NotRunning { reason: format!("{reason} ({lock_error})"), last: None },
    };
    let reason = if status.stopped {
        Some(format!("the daemon (pid {}) stopped {} ago", status.pid, human_duration(age)))
    } else if age > STATUS_STALE_AFTER {
        Some(format!("status last updated {} ago by pid {} ({lock_error})", human_duration(age), status.pid))
    } else if !process_exists(status.pid) {
        Some(format!("process {} is gone (it was killed {} ago or less)", status.pid, human_duration(age)))
    } else {
        None
    };
    match reason {
        Some(reason) => Liveness::NotRunning { reason, last: Some(status) },
        None => Liveness::Running { status, age },
    }
}

/// What the files say, without the daemon: cached and partial objects, hook records.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OfflineState {
    /// Finished objects (from objects/*.manifest).
    pub cached: Vec<CachedStatus>,
    /// How many in all.
    pub cached_total: usize,
    /// Objects being received (from spool/*/manifest).
    pub partial: Vec<PartialStatus>,
    /// Hooks waiting and the latest results.
    pub hooks: HookStatus,
}

fn unverified_manifest(path: &Path) -> Option<Manifest> {
    let bytes = read_bounded(path).ok()?;
    let signed = SignedManifest::from_bytes(&bytes).ok()?;
    Manifest::from_bytes(&signed.manifest).ok()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir).map(|entries| entries.flatten().take(OFFLINE_FILES_MAX).map(|e| e.path()).collect()).unwrap_or_default()
}

/// Orders cache entries for display: by kind and name, newest version first.
pub fn sort_cached(cached: &mut [CachedStatus]) {
    cached.sort_by(|a, b| (&a.kind, &a.name, std::cmp::Reverse(a.version)).cmp(&(&b.kind, &b.name, std::cmp::Reverse(b.version))));
}

/// Reads the state directory's files. The manifests are shown as found (their signatures
/// were checked when they were accepted; this is a display, not a decision).
pub fn offline_state(state_dir: &Path) -> OfflineState {
    let delivered: Vec<(String, String, u64)> = TrustState::load(&state_dir.join("trust.state"))
        .map(|t| t.delivered().map(|(k, n, a)| (k.to_string(), n.to_owned(), a.object_id)).collect())
        .unwrap_or_default();
    let mut cached: Vec<CachedStatus> = files(&state_dir.join("objects"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "manifest"))
        .filter_map(|p| unverified_manifest(p))
        .map(|m| CachedStatus {
            object_id: m.object_id,
            kind: m.kind.to_string(),
            delivered: delivered.iter().any(|(k, n, id)| *k == m.kind.as_str() && *n == m.name && *id == m.object_id),
            size_bytes: m.delivered_size(),
            hash: hex::encode(m.delivered_hash()),
            name: m.name,
            version: m.version,
        })
        .collect();
    sort_cached(&mut cached);
    let cached_total = cached.len();
    cached.truncate(STATUS_CACHED_MAX);
    let mut partial: Vec<PartialStatus> = files(&state_dir.join("spool"))
        .iter()
        .filter_map(|dir| unverified_manifest(&dir.join("manifest")))
        .map(|m| PartialStatus {
            object_id: m.object_id,
            name: format!("{}/{}", m.kind, m.name),
            version: Some(m.version),
            size_bytes: Some(m.size_bytes),
            blocks_verified: None,
            blocks: Oti::decode(&m.oti).ok().map(|oti| fec::blocks(&oti).len()),
            symbols_held: None,
        })
        .collect();
    partial.sort_by_key(|p| p.object_id);
    let hooks_dir = state_dir.join("hooks");
    let queued = files(&hooks_dir.join("due")).iter().filter(|p| p.extension().is_some_and(|e| e == "json")).count();
    let mut done: Vec<HookRecord> = files(&hooks_dir.join("done"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter_map(|p| read_bounded(p).ok().and_then(|b| serde_json::from_slice(&b).ok()))
        .collect();
    done.sort_by_key(|r| std::cmp::Reverse(r.outcome.finished_unix_ms));
    let running = files(&hooks_dir.join("due"))
        .iter()
        .filter_map(|p| read_bounded(p).ok().and_then(|b| serde_json::from_slice::<HookJob>(&b).ok()))
        .find(|j| j.state == crate::hooks::JobState::Running)
        .map(|j| crate::hooks::RunningHook { object_id: j.object_id, name: format!("{}/{}", j.kind, j.name), started_unix_ms: 0 });
    let hooks = HookStatus { queued, running, recent: done.iter().take(HOOK_RESULTS_SHOWN_MAX).map(HookSummary::from).collect() };
    OfflineState { cached, cached_total, partial, hooks }
}

/// The JSON `status --json` prints: the daemon's status with `running` and its age, or,
/// when it is not running or its status is stale, the reason, what the files say, and the
/// last status written (with `running` true and `status_stale` true in the second case).
pub fn json_report(liveness: &Liveness, offline: Option<&OfflineState>) -> serde_json::Value {
    match liveness {
        Liveness::Running { status, age } => {
            let mut value = serde_json::to_value(status.as_ref()).unwrap_or(serde_json::Value::Null);
            if let Some(object) = value.as_object_mut() {
                object.insert("running".into(), true.into());
                object.insert("status_age_ms".into(), (age.as_millis() as u64).into());
            }
            value
        }
        Liveness::RunningStale { pid, reason, last } => {
            let mut value = offline.and_then(|o| serde_json::to_value(o).ok()).unwrap_or_else(|| serde_json::json!({}));
            if let Some(object) = value.as_object_mut() {
                object.insert("running".into(), true.into());
                object.insert("status_stale".into(), true.into());
                object.insert("pid".into(), pid.map_or(serde_json::Value::Null, serde_json::Value::from));
                object.insert("reason".into(), reason.clone().into());
                object.insert(
                    "status_age_ms".into(),
                    last.as_ref().map_or(serde_json::Value::Null, |(_, age)| (age.as_millis() as u64).into()),
                );
                object.insert(
                    "last_status".into(),
                    last.as_ref().and_then(|(s, _)| serde_json::to_value(s.as_ref()).ok()).unwrap_or(serde_json::Value::Null),
                );
            }
            value
        }
        Liveness::NotRunning { reason, last } => {
            let mut value = offline.and_then(|o| serde_json::to_value(o).ok()).unwrap_or_else(|| serde_json::json!({}));
            if let Some(object) = value.as_object_mut() {
                object.insert("running".into(), false.into());
                object.insert("reason".into(), reason.clone().into());
                object.insert(
                    "last_status".into(),
                    last.as_ref().and_then(|s| serde_json::to_value(s.as_ref()).ok()).unwrap_or(serde_json::Value::Null),
                );
            }
            value
        }
    }
}

/// "3 s", "2 min 5 s", "4 h 10 min", "2 d 3 h".
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn when(unix_ms_then: u64, now: SystemTime) -> String {
    if unix_ms_then == 0 {
        return "-".into();
    }
    format!("{} ago", human_duration(Duration::from_millis(unix_ms(now).saturating_sub(unix_ms_then))))
}

fn write_cached(out: &mut String, cached: &[CachedStatus], total: usize) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\ncached objects: {total}{}",
        if total > cached.len() { format!(" ({} shown)", cached.len()) } else { String::new() }
    );
    if cached.is_empty() {
        return;
    }
    let _ = writeln!(out, "  {:<16}  {:<9}  {:<28}  {:>10}  {:>10}  {:<9}  HASH", "OBJECT", "KIND", "NAME", "VERSION", "SIZE", "DELIVERED");
    for c in cached {
        let hash = c.hash.get(..16).unwrap_or(&c.hash);
        let delivered = if c.delivered { "yes" } else { "superseded" };
        let _ = writeln!(
            out,
            "  {}  {:<9}  {:<28}  {:>10}  {:>10}  {:<9}  {hash}…",
            ObjectId(c.object_id),
            c.kind,
            c.name,
            c.version,
            human_bytes(c.size_bytes),
            delivered
        );
    }
}

fn write_partial(out: &mut String, partial: &[PartialStatus]) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "\nreceiving: {}", partial.len());
    if partial.is_empty() {
        return;
    }
    let _ = writeln!(out, "  {:<16}  {:<38}  {:>10}  {:>10}  {:>9}  {:>8}", "OBJECT", "NAME", "VERSION", "SIZE", "BLOCKS", "SYMBOLS");
    for p in partial {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        let blocks = match (p.blocks_verified, p.blocks) {
            (Some(v), Some(b)) => format!("{v}/{b}"),
            (None, Some(b)) => format!("?/{b}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "  {}  {:<38}  {:>10}  {:>10}  {:>9}  {:>8}",
            ObjectId(p.object_id),
            p.name,
            opt(p.version),
            p.size_bytes.map_or("-".into(), human_bytes),
            blocks,
            opt(p.symbols_held)
        );
    }
}

fn write_stuck(out: &mut String, stuck: &[StuckStatus], total: usize) {
    use std::fmt::Write as _;
    if total == 0 {
        return;
    }
    let shown = if total > stuck.len() { format!(" ({} shown)", stuck.len()) } else { String::new() };
    let _ = writeln!(out, "\nnot delivered yet: {total}{shown}");
    let _ = writeln!(out, "  {:<16}  {:<38}  WHY", "OBJECT", "NAME");
    for s in stuck {
        let why = if s.detail.is_empty() { s.state.to_string() } else { format!("{}: {}", s.state, s.detail) };
        let _ = writeln!(out, "  {}  {:<38}  {why}", ObjectId(s.object_id), s.name);
    }
}

fn write_hooks(out: &mut String, hooks: &HookStatus, now: SystemTime) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "\nhooks: {} waiting", hooks.queued);
    if let Some(running) = &hooks.running {
        let id = ObjectId(running.object_id);
        let _ = writeln!(out, "  running now: {} ({id}), started {}", running.name, when(running.started_unix_ms, now));
    }
    if hooks.recent.is_empty() {
        return;
    }
    let _ = writeln!(out, "  {:<16}  {:<38}  {:<6}  {:<14}  DETAIL", "OBJECT", "NAME", "RESULT", "FINISHED");
    for h in &hooks.recent {
        let result = if h.success { "ok" } else { "FAILED" };
        let id = ObjectId(h.object_id);
        let _ = writeln!(out, "  {id}  {:<38}  {:<6}  {:<14}  {}", h.name, result, when(h.finished_unix_ms, now), h.detail);
    }
}

/// The human-readable status.
pub fn human_report(liveness: &Liveness, offline: Option<&OfflineState>, now: SystemTime) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    match liveness {
        Liveness::Running { status, age } => {
            let s = status.as_ref();
            let _ = writeln!(
                out,
                "satcast-receiver {} for county {}: RUNNING (pid {}, up {}, status {} ms old)",
                s.software_version,
                s.county_code,
                s.pid,
                human_duration(Duration::from_millis(s.updated_unix_ms.saturating_sub(s.started_unix_ms))),
                age.as_millis()
            );
            let heartbeat = match s.heartbeat.age_ms {
                Some(ms) => format!("last {} ago", human_duration(Duration::from_millis(ms))),
                None => "none since start".into(),
            };
            let stale = if s.heartbeat.stale { "  ** STALE: the downlink is silent **" } else { "" };
            let _ = writeln!(out, "  heartbeat   {heartbeat} (warns after {} s){stale}", s.heartbeat.warn_after_secs);
            let _ = writeln!(out, "  outbox      {} message(s) waiting for the uplink", s.outbox.messages);
            let free = s.disk.free_bytes.map_or(String::new(), |f| format!(", {} free", human_bytes(f)));
            let _ = writeln!(
                out,
                "  disk        spool {} of {}, cache {} of {}{free}",
                human_bytes(s.disk.spool_bytes),
                human_bytes(s.disk.spool_bytes_max),
                human_bytes(s.disk.cache_bytes),
                human_bytes(s.disk.cache_bytes_max)
            );
            let r = &s.reception;
            let _ = writeln!(
                out,
                "  reception   {} datagrams, {} refused, {} symbols kept, {} ignored",
                r.datagrams, r.dropped, r.symbols_kept, r.symbols_ignored
            );
            if s.deliveries_waiting > 0 {
                let _ = writeln!(out, "  waiting     {} completed object(s) not yet delivered (see the log)", s.deliveries_waiting);
            }
            write_stuck(&mut out, &s.stuck, s.stuck_total);
            write_partial(&mut out, &s.partial);
            write_cached(&mut out, &s.cached, s.cached_total);
            write_hooks(&mut out, &s.hooks, now);
        }
        Liveness::RunningStale { pid, reason, .. } => {
            let pid = pid.map_or("pid unknown".into(), |p| format!("pid {p}"));
            let _ = writeln!(out, "satcast-receiver is RUNNING ({pid}), but {reason}");
            let _ = writeln!(out, "What is on disk:");
            if let Some(offline) = offline {
                write_partial(&mut out, &offline.partial);
                write_cached(&mut out, &offline.cached, offline.cached_total);
                write_hooks(&mut out, &offline.hooks, now);
            }
        }
        Liveness::NotRunning { reason, .. } => {
            let _ = writeln!(out, "satcast-receiver is NOT RUNNING: {reason}");
            let _ = writeln!(out, "What is on disk:");
            if let Some(offline) = offline {
                write_partial(&mut out, &offline.partial);
                write_cached(&mut out, &offline.cached, offline.cached_total);
                write_hooks(&mut out, &offline.hooks, now);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_is_owning_the_state_folder_and_a_stale_status_file_does_not_change_that() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(liveness(dir.path(), SystemTime::now()), Liveness::NotRunning { last: None, .. }));
        let status = DaemonStatus {
            format: STATUS_FORMAT,
            pid: std::process::id(),
            county_code: "410102".into(),
            software_version: "0".into(),
            started_unix_ms: unix_ms(SystemTime::now()),
            updated_unix_ms: unix_ms(SystemTime::now()),
            stopped: false,
            heartbeat: HeartbeatStatus { age_ms: None, warn_after_secs: 60, stale: false },
            outbox: OutboxStatus { messages: 2 },
            disk: DiskStatus { spool_bytes: 0, spool_bytes_max: 1, cache_bytes: 0, cache_bytes_max: 1, free_bytes: None },
            reception: ReceptionStatus {
                datagrams: 0,
                dropped: 0,
                symbols_kept: 0,
                symbols_ignored: 0,
                events_lost: 0,
                signatures_checked: 0,
                heartbeats_replayed: 0,
                revocations_replayed: 0,
                round_markers_repeated: 0,
                completes_repeated: 0,
                key_wraps: 0,
                key_wraps_unwanted: 0,
                key_wraps_refused: 0,
                group_keys_learned: 0,
                network_key_announcements: 0,
                network_key_refused: 0,
                network_keys_learned: 0,
                network_keys_activated: 0,
                sealed_not_targeted: 0,
                sealed_pending: 0,
                sealed_opened: 0,
                symbol_lists_accepted: 0,
                symbol_lists_replayed: 0,
                symbol_lists_refused: 0,
                symbol_lists_unknown_signer: 0,
                symbol_lists_held: 0,
                symbol_lists_held_accepted: 0,
                symbol_lists_unchecked: 0,
                symbols_forged: 0,
                symbols_unverified: 0,
                symbols_unverified_dropped: 0,
                unverified_decodes: 0,
                unverified_decodes_failed: 0,
                round_markers_unlisted: 0,
                manifests_ended: 0,
                partials_ended: 0,
            },
            partial: vec![],
            deliveries_waiting: 0,
            stuck: vec![StuckStatus {
                object_id: 7,
                name: "software/agent.bin".into(),
                state: StuckState::Refused,
                detail: "spool full (needs 40.0 MiB, 12.0 MiB free under limits.spool_bytes_max)".into(),
                reason: Some("spool_full".into()),
            }],
            stuck_total: 1,
            cached: vec![],
            cached_total: 0,
            hooks: HookStatus::default(),
        };
        write(dir.path(), &status).expect("write");
        // A fresh status file from a live process, but nobody owns the folder: not running.
        let now = liveness(dir.path(), SystemTime::now());
        assert!(matches!(now, Liveness::NotRunning { last: Some(_), .. }), "{now:?}");
        assert_eq!(now.exit_code(), EXIT_NOT_RUNNING);

        let lock = satcast_store::StateLock::acquire(dir.path(), "satcast-receiver").expect("lock");
        let now = liveness(dir.path(), SystemTime::now());
        assert!(matches!(now, Liveness::Running { .. }), "{now:?}");
        let json = json_report(&now, None);
        assert_eq!(json["running"], true);
        assert_eq!(json["stuck"][0]["state"], "refused");
        assert_eq!(json["stuck"][0]["reason"], "spool_full");
        let text = human_report(&now, None, SystemTime::now());
        assert!(text.contains("refused: spool full (needs 40.0 MiB"), "{text}");
        assert_eq!(json["outbox"]["messages"], 2);
        // A status file the daemon could not rewrite (a full disk): still running, said stale.
        let later = liveness(dir.path(), SystemTime::now() + Duration::from_secs(3600));
        let Liveness::RunningStale { pid, reason, last } = &later else { panic!("{later:?}") };
        assert_eq!(*pid, Some(std::process::id()));
        assert!(reason.contains("stale: last written 1 h 0 min ago"), "{reason}");
        assert!(last.is_some());
        assert_eq!(later.exit_code(), EXIT_RUNNING);
        let json = json_report(&later, Some(&OfflineState::default()));
        assert_eq!((json["running"].as_bool(), json["status_stale"].as_bool()), (Some(true), Some(true)), "{json}");
        assert!(human_report(&later, None, SystemTime::now()).starts_with("satcast-receiver is RUNNING (pid "));
        fs::write(dir.path().join(STATUS_FILE), b"{ not json").expect("write");
        assert!(matches!(liveness(dir.path(), SystemTime::now()), Liveness::RunningStale { .. }));

        drop(lock);
        assert!(matches!(liveness(dir.path(), SystemTime::now()), Liveness::NotRunning { .. }));
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(8 << 30), "8.0 GiB");
        assert_eq!(human_duration(Duration::from_secs(125)), "2 min 5 s");
    }
}
