//! Post-receive hooks: a program configured per kind (`[hooks.<kind>]`) runs once after each
//! delivery, on a worker thread so the datapath never waits for it, and its result goes to
//! the uplink as `FeedbackMessage::HookResult`.
//!
//! Exactly once, across crashes, by small JSON records under `state/hooks/`:
//! - `due/<object id>.json` is written (fsynced) *before* the delivery, as `pending`;
//!   after the delivery (and its trust-state record) it becomes `ready`; the worker marks it
//!   `running` just before starting the program;
//! - when the program ends, `done/<object id>.json` (fsynced) holds the result and the due
//!   record is removed; then the result is pushed to the durable outbox and the record
//!   says `reported`.
//!
//! A done record means "never again": a hook that ran and failed is not retried, and an
//! object delivered again (after trust state was restored, say) does not run it again.
//! At start, a `pending` record whose object the trust state says was delivered becomes
//! `ready` (the daemon stopped between the delivery and the mark); one whose object was not
//! delivered waits for the delivery (the object resumes from its spool). A `running` record
//! means the daemon died or was stopped while the program ran: it runs again, so a hook
//! can run twice only then. Hooks should therefore be idempotent for the same
//! SATCAST_OBJECT_ID, or tolerate a second run after a crash.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use satcast_daemon::clock::wall_unix_ms;
use satcast_protocol::ObjectId;
use satcast_protocol::feedback::{Feedback, FeedbackMessage, TEXT_BYTES_MAX};
use satcast_protocol::manifest::{Kind, Manifest};
use satcast_protocol::trust::Accepted;
use satcast_store::Outbox;
use satcast_store::fsutil::write_atomic;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{info, warn};

use crate::config::{HookConfig, HooksConfig};
use crate::upgrade::Executable;

/// The most hooks waiting (pending, ready or running) at once. A delivery that would
/// exceed it waits (it is retried every second like a delivery that hit a full disk), so
/// no hook is ever dropped and the queue stays bounded.
pub const HOOKS_DUE_MAX: usize = 64;
/// Finished hook records kept on disk; the oldest are removed beyond it.
pub const HOOKS_DONE_KEPT_MAX: usize = 256;
/// The most recent results shown in status.
pub const HOOK_RESULTS_SHOWN_MAX: usize = 16;
/// Bytes of a hook's standard output and of its standard error that are kept (the last
/// ones: the end of an error output says what went wrong).
pub const OUTPUT_TAIL_BYTES_MAX: usize = 4096;
/// A record file larger than this is not a record (the largest is about 10 KiB).
pub const RECORD_BYTES_MAX: u64 = 64 * 1024;
/// After the timeout, SIGTERM to the hook's process group; SIGKILL this long after.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// When the daemon stops, a running hook gets this long to finish before it is killed
/// (and then run again at the next start). Below systemd's TimeoutStopSec of 30 s.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// After the hook exits, its output pipes get this long to close; a background process it
/// left behind that holds them open is not waited for.
const OUTPUT_DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How often the worker looks for due hooks without being nudged, and checks on a running one.
const RESCAN_INTERVAL: Duration = Duration::from_secs(1);
const WAIT_POLL: Duration = Duration::from_millis(50);

/// Why a hook could not be recorded.
#[derive(Debug, Error)]
pub enum HookError {
    /// [`HOOKS_DUE_MAX`] hooks are waiting already.
    #[error("{0} hooks are waiting already (HOOKS_DUE_MAX)")]
    QueueFull(usize),
    /// A record could not be read or written.
    #[error("hook record {path}: {source}")]
    Io {
        /// The record.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Where a due hook stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Recorded before the delivery; the delivery may not have happened yet.
    Pending,
    /// The object is delivered: the hook is to run.
    Ready,
    /// The program was started (and, if found so at start, interrupted).
    Running,
}

/// A hook to run for one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookJob {
    /// The delivered object.
    #[serde(with = "satcast_daemon::object_id")]
    pub object_id: u64,
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// BLAKE3 of the payload, hex.
    pub hash: String,
    /// Where it is delivered.
    pub path: PathBuf,
    /// When its manifest expires: a pending hook whose object never got delivered is
    /// forgotten after this.
    pub expires_unix_secs: u64,
    /// When the hook was recorded as due.
    pub queued_unix_ms: u64,
    /// Where it stands.
    pub state: JobState,
}

/// How a hook run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookOutcome {
    /// Exit status 0 within the timeout.
    pub success: bool,
    /// The exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Killed at its timeout.
    pub timed_out: bool,
    /// What happened, at most `TEXT_BYTES_MAX` bytes: this is what the uplink records.
    pub detail: String,
    /// The last [`OUTPUT_TAIL_BYTES_MAX`] bytes of its standard output.
    pub stdout_tail: String,
    /// The last [`OUTPUT_TAIL_BYTES_MAX`] bytes of its standard error.
    pub stderr_tail: String,
    /// When it started (0 if it never did).
    pub started_unix_ms: u64,
    /// When it ended.
    pub finished_unix_ms: u64,
}

/// A finished hook: what ran and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecord {
    /// The job.
    pub job: HookJob,
    /// Its result.
    pub outcome: HookOutcome,
    /// The result is in the outbox (or was already acknowledged).
    pub reported: bool,
}

/// A hook result for status: the record without the output tails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookSummary {
    /// The object.
    #[serde(with = "satcast_daemon::object_id")]
    pub object_id: u64,
    /// kind/name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// Exit status 0 within the timeout.
    pub success: bool,
    /// Killed at its timeout.
    pub timed_out: bool,
    /// What happened.
    pub detail: String,
    /// When it ended.
    pub finished_unix_ms: u64,
    /// How long it ran.
    pub duration_ms: u64,
}

impl From<&HookRecord> for HookSummary {
    fn from(record: &HookRecord) -> Self {
        HookSummary {
            object_id: record.job.object_id,
            name: format!("{}/{}", record.job.kind, record.job.name),
            version: record.job.version,
            success: record.outcome.success,
            timed_out: record.outcome.timed_out,
            detail: record.outcome.detail.clone(),
            finished_unix_ms: record.outcome.finished_unix_ms,
            duration_ms: record.outcome.finished_unix_ms.saturating_sub(record.outcome.started_unix_ms),
        }
    }
}

/// What the hooks are doing, for status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookStatus {
    /// Hooks waiting (pending delivery, ready, or running).
    pub queued: usize,
    /// The hook running now: kind/name and when it started.
    pub running: Option<RunningHook>,
    /// The latest results, newest first.
    pub recent: VecDeque<HookSummary>,
}

/// The hook running now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningHook {
    /// The object.
    #[serde(with = "satcast_daemon::object_id")]
    pub object_id: u64,
    /// kind/name.
    pub name: String,
    /// When it started.
    pub started_unix_ms: u64,
}

/// What [`HookBook::prepare`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// The hook is recorded as due: call [`HookBook::mark_ready`] after the delivery.
    Due,
    /// The hook for this object already ran (or is queued past delivery): nothing to do.
    AlreadyHandled,
}

/// The durable hook records and what the worker is doing. Clones share them.
#[derive(Debug, Clone)]
pub struct HookBook {
    due_dir: PathBuf,
    done_dir: PathBuf,
    /// Serialises read-modify-write of records between the datapath and the worker.
    lock: Arc<Mutex<()>>,
    status: Arc<Mutex<HookStatus>>,
    nudge: SyncSender<()>,
    nudges: Arc<Mutex<Option<Receiver<()>>>>,
}

fn record_name(object_id: u64) -> String {
    format!("{}.json", ObjectId(object_id))
}

/// Reads every record in a folder (skipping temp files and anything unreadable, which is
/// logged: a record is never trusted blindly, but a bad one must not stop the daemon).
fn read_records<T: for<'de> Deserialize<'de>>(dir: &Path, limit: usize) -> Vec<(PathBuf, T)> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.flatten().take(limit) {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        match read_record(&path) {
            Ok(record) => out.push((path, record)),
            Err(error) => {
                // Set aside once (records are written atomically, so this is damage from
                // outside), rather than warned about every second.
                let aside = path.with_extension("json.unreadable");
                let moved = fs::rename(&path, &aside).is_ok();
                warn!(path = %path.display(), %error, moved_to = %aside.display(), moved, "unreadable hook record; set aside");
            }
        }
    }
    out
}

fn read_record<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    let mut bytes = Vec::new();
    fs::File::open(path)?.take(RECORD_BYTES_MAX).read_to_end(&mut bytes)?;
    serde_json::from_slice(&bytes).map_err(io::Error::other)
}

impl HookBook {
    /// Opens (creating) `state_dir/hooks/`, and loads the latest results for status.
    pub fn open(state_dir: &Path) -> Result<HookBook, HookError> {
        let root = state_dir.join("hooks");
        let due_dir = root.join("due");
        let done_dir = root.join("done");
        for dir in [&due_dir, &done_dir] {
            fs::create_dir_all(dir).map_err(|source| HookError::Io { path: dir.clone(), source })?;
        }
        let (nudge, nudges) = std::sync::mpsc::sync_channel(1);
        let book = HookBook {
            due_dir,
            done_dir,
            lock: Arc::new(Mutex::new(())),
            status: Arc::new(Mutex::new(HookStatus::default())),
            nudge,
            nudges: Arc::new(Mutex::new(Some(nudges))),
        };
        let mut done = book.done_records();
        done.sort_by_key(|r| std::cmp::Reverse(r.outcome.finished_unix_ms));
        let queued = book.due_jobs().len();
        if let Ok(mut status) = book.status.lock() {
            status.recent = done.iter().take(HOOK_RESULTS_SHOWN_MAX).map(HookSummary::from).collect();
            status.queued = queued;
        }
        Ok(book)
    }

    /// A snapshot for status.
    pub fn status(&self) -> HookStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Delivered objects whose hook has not finished (ready or running), oldest first, for
    /// status: read from the records only while any are queued.
    pub fn waiting(&self) -> Vec<HookJob> {
        if self.status().queued == 0 {
            return Vec::new();
        }
        self.due_jobs().into_iter().filter(|j| j.state != JobState::Pending).collect()
    }

    fn due_path(&self, object_id: u64) -> PathBuf {
        self.due_dir.join(record_name(object_id))
    }

    fn done_path(&self, object_id: u64) -> PathBuf {
        self.done_dir.join(record_name(object_id))
    }

    fn due_jobs(&self) -> Vec<HookJob> {
        let mut jobs: Vec<HookJob> = read_records(&self.due_dir, HOOKS_DUE_MAX * 4).into_iter().map(|(_, j)| j).collect();
        jobs.sort_by_key(|j: &HookJob| (j.queued_unix_ms, j.object_id));
        jobs
    }

    fn done_records(&self) -> Vec<HookRecord> {
        read_records(&self.done_dir, HOOKS_DONE_KEPT_MAX * 4).into_iter().map(|(_, r)| r).collect()
    }

    fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), HookError> {
        let io_err = |source| HookError::Io { path: path.to_owned(), source };
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| io_err(io::Error::other(e)))?;
        write_atomic(path, &bytes).map_err(io_err)
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock leaves no half-written record (writes are atomic
        // renames), so a poisoned lock is safe to take over.
        self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_queued(&self) {
        let queued = self.due_jobs().len();
        if let Ok(mut status) = self.status.lock() {
            status.queued = queued;
        }
    }

    /// Before a delivery: records durably that its hook is due.
    pub fn prepare(&self, manifest: &Manifest, path: &Path) -> Result<Prepared, HookError> {
        let _guard = self.guard();
        if self.done_path(manifest.object_id).exists() {
            return Ok(Prepared::AlreadyHandled);
        }
        let due_path = self.due_path(manifest.object_id);
        if let Ok(job) = read_record::<HookJob>(&due_path) {
            return Ok(if job.state == JobState::Pending { Prepared::Due } else { Prepared::AlreadyHandled });
        }
        let waiting = self.due_jobs().len();
        if waiting >= HOOKS_DUE_MAX {
            return Err(HookError::QueueFull(waiting));
        }
        let job = HookJob {
            object_id: manifest.object_id,
            kind: manifest.kind.to_string(),
            name: manifest.name.clone(),
            version: manifest.version,
            hash: hex::encode(manifest.delivered_hash()),
            path: path.to_owned(),
            expires_unix_secs: manifest.expires_unix_secs,
            queued_unix_ms: wall_unix_ms(),
            state: JobState::Pending,
        };
        Self::write(&due_path, &job)?;
        drop(_guard);
        self.set_queued();
        Ok(Prepared::Due)
    }

    /// After the delivery (and its trust-state record): the hook may run.
    pub fn mark_ready(&self, object_id: u64) -> Result<(), HookError> {
        {
            let _guard = self.guard();
            let path = self.due_path(object_id);
            let mut job: HookJob = read_record(&path).map_err(|source| HookError::Io { path: path.clone(), source })?;
            if job.state == JobState::Pending {
                job.state = JobState::Ready;
                Self::write(&path, &job)?;
            }
        }
        // Capacity 1: a nudge already waiting is as good as a second one.
        let _ = self.nudge.try_send(());
        Ok(())
    }

    /// At start, before the worker: settles `pending` records against what trust state says
    /// was delivered, and drops those whose object expired undelivered.
    pub fn reconcile(&self, delivered: impl Fn(Kind, &str) -> Option<Accepted>, now_unix_secs: u64) {
        let _guard = self.guard();
        for job in self.due_jobs() {
            if self.done_path(job.object_id).exists() {
                // Stopped between writing the result and removing the due record.
                let _ = fs::remove_file(self.due_path(job.object_id));
                continue;
            }
            if job.state != JobState::Pending {
                continue;
            }
            let kind = job.kind.parse::<Kind>().ok();
            let accepted = kind.and_then(|k| delivered(k, &job.name));
            let object = ObjectId(job.object_id);
            match accepted {
                Some(a) if a.object_id == job.object_id => {
                    info!(object = %object, name = %job.name, "delivered before the daemon stopped; its hook is due");
                    let mut job = job;
                    job.state = JobState::Ready;
                    if let Err(error) = Self::write(&self.due_path(job.object_id), &job) {
                        warn!(object = %object, %error, "cannot mark the hook ready; it stays due");
                    }
                }
                Some(a) if a.version > job.version => {
                    let detail = format!("not run: version {} of {} was delivered before this one's hook could run", a.version, job.name);
                    warn!(object = %object, %detail, "hook skipped");
                    if let Err(failed) = self.finish_locked(job, skipped(detail)) {
                        let error = &failed.0;
                        warn!(object = %object, %error, "cannot record the skipped hook; it is looked at again at the next start");
                    }
                }
                _ if job.expires_unix_secs <= now_unix_secs => {
                    info!(object = %object, name = %job.name, "forgetting the hook of an object that expired before it was delivered");
                    let _ = fs::remove_file(self.due_path(job.object_id));
                }
                // Not delivered yet: the object resumes from its spool, and its delivery
                // finds this record.
                _ => {}
            }
        }
        drop(_guard);
        self.set_queued();
    }

    /// The next hook to run: the oldest ready or interrupted one.
    fn next_runnable(&self) -> Option<HookJob> {
        let _guard = self.guard();
        self.due_jobs().into_iter().find(|j| j.state != JobState::Pending)
    }

    fn set_running(&self, job: &HookJob) -> Result<(), HookError> {
        let _guard = self.guard();
        let mut job = job.clone();
        job.state = JobState::Running;
        Self::write(&self.due_path(job.object_id), &job)
    }

    /// Writes the result, removes the due record, trims old results. Holds the lock.
    fn finish_locked(&self, job: HookJob, outcome: HookOutcome) -> Result<HookRecord, Box<(HookError, HookJob, HookOutcome)>> {
        let record = HookRecord { job, outcome, reported: false };
        let object_id = record.job.object_id;
        if let Err(error) = Self::write(&self.done_path(object_id), &record) {
            return Err(Box::new((error, record.job, record.outcome)));
        }
        let _ = fs::remove_file(self.due_path(object_id));
        let mut done = self.done_records();
        if done.len() > HOOKS_DONE_KEPT_MAX {
            done.sort_by_key(|r| r.outcome.finished_unix_ms);
            for old in done.iter().take(done.len() - HOOKS_DONE_KEPT_MAX) {
                let _ = fs::remove_file(self.done_path(old.job.object_id));
            }
        }
        if let Ok(mut status) = self.status.lock() {
            status.recent.push_front(HookSummary::from(&record));
            status.recent.truncate(HOOK_RESULTS_SHOWN_MAX);
        }
        Ok(record)
    }

    /// Records a result, retrying every second while the disk refuses (the hook must not
    /// run again just because its result could not be written). `None` if the daemon
    /// stopped first: the record stays `running` and the hook runs again at start.
    fn finish(&self, mut job: HookJob, mut outcome: HookOutcome, stop: &AtomicBool) -> Option<HookRecord> {
        loop {
            let result = {
                let _guard = self.guard();
                self.finish_locked(job, outcome)
            };
            match result {
                Ok(record) => {
                    self.set_queued();
                    return Some(record);
                }
                Err(failed) => {
                    let (error, j, o) = *failed;
                    warn!(object = %ObjectId(j.object_id), %error, "cannot record the hook's result; retrying");
                    (job, outcome) = (j, o);
                }
            }
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            std::thread::sleep(RESCAN_INTERVAL);
        }
    }

    fn mark_reported(&self, object_id: u64) {
        let _guard = self.guard();
        let path = self.done_path(object_id);
        if let Ok(mut record) = read_record::<HookRecord>(&path) {
            record.reported = true;
            if let Err(error) = Self::write(&path, &record) {
                warn!(object = %ObjectId(object_id), %error, "cannot mark the hook result reported; it may be reported twice");
            }
        }
    }

    fn unreported(&self) -> Vec<HookRecord> {
        let mut records: Vec<HookRecord> = self.done_records().into_iter().filter(|r| !r.reported).collect();
        records.sort_by_key(|r| r.outcome.finished_unix_ms);
        records
    }
}

fn skipped(detail: String) -> HookOutcome {
    let now = wall_unix_ms();
    HookOutcome {
        success: false,
        exit_code: None,
        signal: None,
        timed_out: false,
        detail: fit_detail(&detail, ""),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        started_unix_ms: 0,
        finished_unix_ms: now,
    }
}

/// Keeps the last [`OUTPUT_TAIL_BYTES_MAX`] bytes written to it.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > 2 * OUTPUT_TAIL_BYTES_MAX {
            let cut = self.bytes.len() - OUTPUT_TAIL_BYTES_MAX;
            self.bytes.drain(..cut);
        }
    }

    fn into_string(mut self) -> String {
        if self.bytes.len() > OUTPUT_TAIL_BYTES_MAX {
            let cut = self.bytes.len() - OUTPUT_TAIL_BYTES_MAX;
            self.bytes.drain(..cut);
        }
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Reads a pipe to its end on its own thread, keeping the tail; the result arrives on the
/// returned channel.
fn drain<R: Read + Send + 'static>(pipe: Option<R>, what: &str) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let Some(mut pipe) = pipe else {
        let _ = tx.send(String::new());
        return rx;
    };
    let spawned = std::thread::Builder::new().name(format!("hook-{what}")).spawn(move || {
        let mut tail = Tail::default();
        let mut buf = [0u8; 8192];
        // Ends when every writer has closed the pipe (or on a read error).
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.push(&buf[..n]);
        }
        let _ = tx.send(tail.into_string());
    });
    if spawned.is_err() {
        warn!("cannot start a thread to read a hook's {what}");
    }
    rx
}

/// The largest suffix of `text` of at most `max` bytes that starts on a character boundary.
fn last_bytes(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// `status`, then as much of the end of `stderr` as fits in `TEXT_BYTES_MAX` bytes.
fn fit_detail(status: &str, stderr: &str) -> String {
    let status = last_bytes(status, TEXT_BYTES_MAX);
    // A multi-line error: its lines joined, so the uplink's log stays one line per result.
    let stderr = stderr.trim().replace(['\n', '\r'], " | ");
    const SEP: &str = "; stderr: ";
    if stderr.is_empty() || status.len() + SEP.len() >= TEXT_BYTES_MAX {
        return status.to_owned();
    }
    let room = TEXT_BYTES_MAX - status.len() - SEP.len();
    format!("{status}{SEP}{}", last_bytes(&stderr, room))
}

fn kill_group(child: &Child, signal: rustix::process::Signal) {
    // The hook leads its own process group (process_group(0) at spawn), so this reaches
    // whatever it started too: a shell script's `sleep` must not outlive it holding the
    // output pipes open.
    let pid = rustix::process::Pid::from_child(child);
    if let Err(error) = rustix::process::kill_process_group(pid, signal) {
        if error != rustix::io::Errno::SRCH {
            warn!(pid = pid.as_raw_nonzero().get(), %error, "cannot signal the hook's process group");
        }
    }
}

/// Waits for the child, escalating to SIGTERM then SIGKILL at `deadline`. Returns its exit
/// status and whether the timeout killed it, or `None` if the daemon is stopping and the
/// hook did not finish within [`STOP_GRACE`] (it was killed and will run again).
fn wait_bounded(child: &mut Child, deadline: Instant, stop: &AtomicBool) -> io::Result<Option<(ExitStatus, bool)>> {
    let mut stopping_since: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some((status, false)));
        }
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) {
            let since = *stopping_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= STOP_GRACE {
                kill_group(child, rustix::process::Signal::KILL);
                child.wait()?;
                return Ok(None);
            }
        }
        if now >= deadline {
            kill_group(child, rustix::process::Signal::TERM);
            let grace_end = Instant::now() + KILL_GRACE;
            while Instant::now() < grace_end {
                if child.try_wait()?.is_some() {
                    break;
                }
                std::thread::sleep(WAIT_POLL);
            }
            // Whatever is left of the group, including children that ignored SIGTERM.
            kill_group(child, rustix::process::Signal::KILL);
            let status = child.wait()?;
            return Ok(Some((status, true)));
        }
        std::thread::sleep(WAIT_POLL);
    }
}

/// Runs a hook program for a job. `None` if the daemon stopped it (it runs again at start).
pub fn execute(hook: &HookConfig, job: &HookJob, stop: &AtomicBool) -> Option<HookOutcome> {
    let started_unix_ms = wall_unix_ms();
    let failed = |detail: String| HookOutcome {
        success: false,
        exit_code: None,
        signal: None,
        timed_out: false,
        detail: fit_detail(&detail, ""),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        started_unix_ms,
        finished_unix_ms: wall_unix_ms(),
    };
    let Some((program, args)) = hook.command.split_first() else {
        return Some(failed("not run: the hook has no command".into()));
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env("SATCAST_PATH", &job.path)
        .env("SATCAST_KIND", &job.kind)
        .env("SATCAST_NAME", &job.name)
        .env("SATCAST_VERSION", job.version.to_string())
        .env("SATCAST_OBJECT_ID", ObjectId(job.object_id).to_string())
        .env("SATCAST_HASH", &job.hash)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = job.path.parent().filter(|d| d.is_dir()) {
        command.current_dir(dir);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return Some(failed(format!("could not start {program}: {error}"))),
    };
    let stdout = drain(child.stdout.take(), "stdout");
    let stderr = drain(child.stderr.take(), "stderr");
    let deadline = Instant::now() + hook.timeout();
    let waited = wait_bounded(&mut child, deadline, stop);
    let collect = |rx: Receiver<String>| rx.recv_timeout(OUTPUT_DRAIN_GRACE).unwrap_or_default();
    let (status, timed_out) = match waited {
        Ok(Some(done)) => done,
        Ok(None) => return None,
        Err(error) => {
            kill_group(&child, rustix::process::Signal::KILL);
            let _ = child.wait();
            return Some(failed(format!("lost track of the hook: {error}")));
        }
    };
    if status.signal().is_some() && !timed_out && stop.load(Ordering::Relaxed) {
        // Killed by a signal we did not send while the daemon stops: the service manager
        // stopping everything (systemd's default KillMode). Interrupted, not failed.
        return None;
    }
    let stdout_tail = collect(stdout);
    let stderr_tail = collect(stderr);
    let status_text = if timed_out {
        format!("timed out after {} s; killed", hook.timeout_secs)
    } else if let Some(code) = status.code() {
        format!("exit status {code}")
    } else {
        format!("killed by signal {}", status.signal().unwrap_or(0))
    };
    let success = status.success() && !timed_out;
    Some(HookOutcome {
        success,
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        detail: fit_detail(&status_text, &stderr_tail),
        stdout_tail,
        stderr_tail,
        started_unix_ms,
        finished_unix_ms: wall_unix_ms(),
    })
}

fn report(outbox: &Outbox, county_code: &str, record: &HookRecord) -> bool {
    let feedback = Feedback {
        county_code: county_code.to_owned(),
        message: FeedbackMessage::HookResult {
            object_id: record.job.object_id,
            success: record.outcome.success,
            detail: record.outcome.detail.clone(),
        },
    };
    match outbox.push(&feedback) {
        Ok(()) => true,
        Err(error) => {
            warn!(object = %ObjectId(record.job.object_id), %error, "cannot queue the hook result; will retry");
            false
        }
    }
}

fn log_outcome(job: &HookJob, outcome: &HookOutcome) {
    let object = ObjectId(job.object_id);
    let duration_ms = outcome.finished_unix_ms.saturating_sub(outcome.started_unix_ms);
    if outcome.success {
        info!(object = %object, kind = %job.kind, name = %job.name, version = job.version, duration_ms, detail = %outcome.detail, "post-receive hook succeeded");
    } else {
        warn!(
            object = %object,
            kind = %job.kind,
            name = %job.name,
            version = job.version,
            duration_ms,
            timed_out = outcome.timed_out,
            detail = %outcome.detail,
            stderr = %last_bytes(&outcome.stderr_tail, 1024),
            "post-receive hook failed; it is not retried"
        );
    }
}

/// The hook worker: runs due hooks one at a time, oldest first, until `stop`. Between two
/// hooks, it also looks whether a new build of the daemon was installed over `executable`
/// (by the hook that just ran, typically): then it returns true, having set `stop`, so the
/// daemon restarts into it once the hook's result is recorded (see crate::upgrade).
pub fn run_worker(
    book: HookBook,
    hooks: HooksConfig,
    outbox: Outbox,
    county_code: String,
    executable: Option<Executable>,
    stop: Arc<AtomicBool>,
) -> bool {
    let nudges = book.nudges.lock().ok().and_then(|mut n| n.take());
    let mut unreported = book.unreported();
    while !stop.load(Ordering::Relaxed) {
        if let Some(executable) = executable.as_ref().filter(|e| e.replaced()) {
            info!(path = %executable.path().display(), "a new build of the receiver is installed; restarting into it");
            stop.store(true, Ordering::Relaxed);
            return true;
        }
        // Results not yet in the outbox (a full disk, or a stop in between).
        unreported.retain(|record| {
            if report(&outbox, &county_code, record) {
                book.mark_reported(record.job.object_id);
                false
            } else {
                true
            }
        });
        let Some(job) = book.next_runnable() else {
            match &nudges {
                Some(rx) => match rx.recv_timeout(RESCAN_INTERVAL) {
                    Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(RESCAN_INTERVAL),
                },
                None => std::thread::sleep(RESCAN_INTERVAL),
            }
            continue;
        };
        let object = ObjectId(job.object_id);
        let kind = job.kind.parse::<Kind>().ok();
        let Some(hook) = kind.and_then(|k| hooks.for_kind(k)) else {
            let detail = format!("not run: no hook is configured for {} any more", job.kind);
            warn!(object = %object, %detail, "hook skipped");
            let Some(record) = book.finish(job, skipped(detail), &stop) else { break };
            if report(&outbox, &county_code, &record) {
                book.mark_reported(record.job.object_id);
            } else {
                unreported.push(record);
            }
            continue;
        };
        if job.state == JobState::Running {
            warn!(object = %object, name = %job.name, "the daemon stopped while this hook ran; running it again");
        }
        if let Err(error) = book.set_running(&job) {
            // Without the mark a crash would not know it ran; try again shortly.
            warn!(object = %object, %error, "cannot mark the hook running; waiting");
            std::thread::sleep(RESCAN_INTERVAL);
            continue;
        }
        if let Ok(mut status) = book.status.lock() {
            status.running =
                Some(RunningHook { object_id: job.object_id, name: format!("{}/{}", job.kind, job.name), started_unix_ms: wall_unix_ms() });
        }
        info!(object = %object, kind = %job.kind, name = %job.name, version = job.version, program = %hook.command.first().map_or("", String::as_str), "running post-receive hook");
        let outcome = execute(hook, &job, &stop);
        if let Ok(mut status) = book.status.lock() {
            status.running = None;
        }
        let Some(outcome) = outcome else {
            warn!(object = %object, "the daemon is stopping: hook killed; it runs again at the next start");
            break;
        };
        log_outcome(&job, &outcome);
        let Some(record) = book.finish(job, outcome, &stop) else { break };
        if report(&outbox, &county_code, &record) {
            book.mark_reported(record.job.object_id);
        } else {
            unreported.push(record);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_fits_the_wire_bound_and_keeps_the_end_of_stderr() {
        let stderr = "x".repeat(5000) + "\nfatal: disk is read-only\n";
        let detail = fit_detail("exit status 3", &stderr);
        assert!(detail.len() <= TEXT_BYTES_MAX, "{}", detail.len());
        assert!(detail.starts_with("exit status 3; stderr: "));
        assert!(detail.ends_with("fatal: disk is read-only"), "{detail}");
        let wide = "é".repeat(400);
        let detail = fit_detail("exit status 1", &wide);
        assert!(detail.len() <= TEXT_BYTES_MAX);
        assert_eq!(fit_detail("exit status 0", "  \n"), "exit status 0");
    }

    #[test]
    fn the_tail_keeps_the_last_bytes() {
        let mut tail = Tail::default();
        for i in 0..10_000u32 {
            tail.push(format!("{i}\n").as_bytes());
        }
        let text = tail.into_string();
        assert!(text.len() <= OUTPUT_TAIL_BYTES_MAX);
        assert!(text.ends_with("9999\n"));
    }
}
