//! The broadcast queue on disk: `send` drops a job (a payload copy and a job file) into
//! state/queue/, the daemon picks it up, and moves it to state/done/ once aired. Files are
//! the truth, so a job queued while the daemon is down, or interrupted by a restart, airs
//! when the daemon next runs. A watcher thread lists the folder and announces each job file
//! that appears, so the datapath never reads it.
//!
//! Jobs arrive through the control API: the upload streams into a hidden file in the queue
//! folder ([`Upload`]), which becomes the payload only once the job is admitted and its
//! version picked. A job file the daemon refuses (see `admit`) moves to state/refused/ with
//! its reason beside it.
//!
//! Versions of (kind, name) only go up: counties refuse anything not newer than what they
//! accepted, so a job that reused a version would be refused everywhere after airing.
//! [`Queue::submit_new`] picks or checks the version under a lock and records the last one
//! per (kind, name) in state/versions/.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use satcast_protocol::ObjectId;
use satcast_protocol::manifest::Kind;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::warn;

/// The coded (aired) copy beside a payload file.
pub fn aired_path(payload: &Path) -> PathBuf {
    payload.with_extension("aired")
}

/// The most jobs read from the queue directory at once.
pub const QUEUED_JOBS_MAX: usize = 10_000;
/// The most job files (queued and done) read to find the last version of a name that has
/// no version record yet (queued before records existed).
pub const VERSION_SCAN_JOBS_MAX: usize = 100_000;
/// The most refused jobs read back for `list`.
pub const REFUSED_LISTED_MAX: usize = 1_000;
/// Longest refusal reason read back, in bytes.
const REASON_BYTES_MAX: u64 = 1024;
/// Longest version record read, in bytes (a record is a kind, a name and a number).
const VERSION_RECORD_BYTES_MAX: u64 = 1024;
/// How often the watcher lists the queue folder for new job files. Short, because an
/// emergency notice must reach the air within 100 ms of landing in the queue; cheap, because
/// a listing reads names only and a job file is read once, when it appears.
pub const QUEUE_SCAN_INTERVAL: Duration = Duration::from_millis(20);

/// What the queue watcher has seen: each job file is announced once when it appears, and
/// again only if it leaves the folder and comes back. Unreadable job files are reported once
/// and read again on every scan.
#[derive(Debug)]
pub struct Watch {
    queue: Queue,
    /// Ids listed and announced at the last scan.
    seen: HashSet<String>,
    /// Ids whose job file could not be read, already reported.
    unreadable: HashSet<String>,
    /// Whether the last listing failed, already reported.
    listing_failed: bool,
}

impl Watch {
    /// A watch that has seen nothing yet: its first scan announces every queued job.
    pub fn new(queue: Queue) -> Watch {
        Watch { queue, seen: HashSet::new(), unreadable: HashSet::new(), listing_failed: false }
    }

    /// Lists the folder once; returns the jobs that appeared since the last scan.
    pub fn scan(&mut self) -> Vec<Job> {
        let ids = match self.queue.queued_ids() {
            Ok(ids) => ids,
            Err(error) => {
                if !std::mem::replace(&mut self.listing_failed, true) {
                    warn!(%error, "cannot list the queue; trying again");
                }
                return Vec::new();
            }
        };
        self.listing_failed = false;
        let mut appeared = Vec::new();
        let mut seen = HashSet::with_capacity(ids.len());
        for id in ids {
            if !self.seen.contains(&id) {
                match self.queue.job(&id) {
                    Ok(job) => appeared.push(job),
                    Err(error) => {
                        if !self.unreadable.contains(&id) {
                            warn!(%error, "skipping unreadable job");
                        }
                        self.unreadable.insert(id);
                        continue;
                    }
                }
            }
            self.unreadable.remove(&id);
            seen.insert(id);
        }
        self.unreadable.retain(|id| self.queue.is_queued(id));
        self.seen = seen;
        appeared
    }
}

/// One queued broadcast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The broadcast (object) id, as 16 hex digits ([`ObjectId`]'s text: also the job's
    /// file names).
    pub object_id: String,
    /// What the payload is.
    pub kind: String,
    /// The name receivers deliver it under.
    pub name: String,
    /// The version of (kind, name).
    pub version: u64,
    /// Division-code prefixes ("" = nationwide).
    pub targets: Vec<String>,
    /// When it was queued, seconds since the Unix epoch.
    pub queued_unix_secs: u64,
    /// Air with feedback-driven repair (true) or as a carousel sized from the target loss.
    #[serde(default = "yes")]
    pub feedback: bool,
    /// Scheduling class: emergency, high, normal or bulk.
    #[serde(default = "normal")]
    pub priority: String,
    /// Do not air before this time, seconds since the Unix epoch.
    #[serde(default)]
    pub not_before_unix_secs: Option<u64>,
    /// Stop airing at this time, complete or not, seconds since the Unix epoch.
    #[serde(default)]
    pub deadline_unix_secs: Option<u64>,
    /// Air sealed for the targeted counties only (docs/protocol.md 8.5); `None` (and job
    /// files of older builds): the kind's default, `coding.confidential_kinds`.
    #[serde(default)]
    pub confidential: Option<bool>,
}

fn normal() -> String {
    "normal".into()
}

fn yes() -> bool {
    true
}

impl Job {
    /// The object id as a number.
    pub fn object_id(&self) -> Result<u64, QueueError> {
        self.object_id.parse::<ObjectId>().map(u64::from).map_err(|e| QueueError::BadJob(e.to_string()))
    }

    /// The priority as a type.
    pub fn priority(&self) -> Result<satcast_protocol::broadcast::Priority, QueueError> {
        self.priority.parse().map_err(QueueError::BadJob)
    }

    /// The kind as a type.
    pub fn kind(&self) -> Result<Kind, QueueError> {
        self.kind.parse().map_err(|_| QueueError::BadJob(format!("kind {:?}", self.kind)))
    }
}

/// Why the queue could not be used.
#[derive(Debug, Error)]
pub enum QueueError {
    /// A queue file could not be read or written.
    #[error("queue {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A job file is not valid.
    #[error("bad job: {0}")]
    BadJob(String),
    /// The version asked for is not above the last one queued for this (kind, name):
    /// counties would refuse it as a rollback.
    #[error("version {requested} of {kind}/{name} is not above {last}, the last version queued for it")]
    VersionNotAbove {
        /// The kind.
        kind: Kind,
        /// The name.
        name: String,
        /// The version asked for.
        requested: u64,
        /// The last version queued.
        last: u64,
    },
    /// A version record exists but cannot be read: no version is picked blind.
    #[error("version record {path}: {why}; it says which version of a name was queued last")]
    VersionRecord {
        /// The record file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// How [`Queue::submit_new`] sets a new job's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// This version, refused unless above the last one queued for (kind, name).
    Explicit(u64),
    /// The wall clock in milliseconds, or one above the last version queued for
    /// (kind, name), whichever is larger: two sends in one millisecond still differ.
    Default {
        /// Now, milliseconds since the Unix epoch.
        now_unix_ms: u64,
    },
}

/// The last version queued for one (kind, name), as stored in state/versions/.
#[derive(Debug, Serialize, Deserialize)]
struct VersionRecord {
    kind: String,
    name: String,
    version: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io { path: path.to_owned(), source }
}

/// The queue directories under the uplink's state directory.
#[derive(Debug, Clone)]
pub struct Queue {
    queue_dir: PathBuf,
    done_dir: PathBuf,
    versions_dir: PathBuf,
    refused_dir: PathBuf,
}

/// A payload being uploaded: a hidden file in the queue folder (the watcher ignores it),
/// renamed into place by [`Queue::submit_upload`], and removed if it never is (a refused
/// job, an upload cut short), so nothing is left behind.
#[derive(Debug)]
pub struct Upload {
    path: PathBuf,
    file: fs::File,
    placed: bool,
}

impl Upload {
    /// Where the bytes go.
    pub fn file(&mut self) -> &mut fs::File {
        &mut self.file
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Queue {
    /// Opens (creating) the queue under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, QueueError> {
        let queue = Queue {
            queue_dir: state_dir.join("queue"),
            done_dir: state_dir.join("done"),
            versions_dir: state_dir.join("versions"),
            refused_dir: state_dir.join("refused"),
        };
        for dir in [&queue.queue_dir, &queue.done_dir, &queue.versions_dir, &queue.refused_dir] {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        Ok(queue)
    }

    /// Where a job's payload copy lives.
    pub fn payload_path(&self, object_id: &str) -> PathBuf {
        self.queue_dir.join(format!("{object_id}.payload"))
    }

    /// Where a job's payload as aired lives when it is coded (compressed, or a patch): made
    /// by its preparation, read by the broadcast, and moved with the payload.
    pub fn aired_path(&self, object_id: &str) -> PathBuf {
        aired_path(&self.payload_path(object_id))
    }

    fn job_path(&self, object_id: &str) -> PathBuf {
        self.queue_dir.join(format!("{object_id}.job"))
    }

    /// Queues a job: copies the payload in, fsyncs it, then writes the job file atomically.
    /// The job file appears last, so the daemon never sees a job without its payload.
    pub fn submit(&self, job: &Job, payload: &Path) -> Result<(), QueueError> {
        let payload_path = self.payload_path(&job.object_id);
        let tmp = self.queue_dir.join(format!(".{}.payload.tmp", job.object_id));
        fs::copy(payload, &tmp).map_err(io_err(payload))?;
        fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &payload_path).map_err(io_err(&payload_path))?;
        let text = toml::to_string(job).map_err(|e| QueueError::BadJob(e.to_string()))?;
        let job_path = self.job_path(&job.object_id);
        satcast_store::fsutil::write_atomic(&job_path, text.as_bytes()).map_err(io_err(&job_path))
    }

    /// Queues a new job with its version set as `version` says (see [`Version`]), and
    /// records that version as the last of its (kind, name); returns the job as queued.
    /// Concurrent calls, from any process, take turns on a lock file, so two of them never
    /// pick the same version. Nothing is queued if the version is refused.
    pub fn submit_new(&self, job: Job, version: Version, payload: &Path) -> Result<Job, QueueError> {
        self.submit_versioned(job, version, |job| self.submit(job, payload))
    }

    /// A new upload for `object_id` (refused if one is already under way).
    pub fn upload(&self, object_id: &str) -> Result<Upload, QueueError> {
        let path = self.queue_dir.join(format!(".{object_id}.upload"));
        let file = fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(io_err(&path))?;
        Ok(Upload { path, file, placed: false })
    }

    /// [`Queue::submit_new`] for an uploaded payload: fsynced and renamed into place, not
    /// copied. Dropping a refused upload removes it.
    pub fn submit_upload(&self, job: Job, version: Version, mut upload: Upload) -> Result<Job, QueueError> {
        upload.file.sync_all().map_err(io_err(&upload.path))?;
        self.submit_versioned(job, version, |job| {
            let payload_path = self.payload_path(&job.object_id);
            fs::rename(&upload.path, &payload_path).map_err(io_err(&payload_path))?;
            upload.placed = true;
            let text = toml::to_string(job).map_err(|e| QueueError::BadJob(e.to_string()))?;
            let job_path = self.job_path(&job.object_id);
            satcast_store::fsutil::write_atomic(&job_path, text.as_bytes()).map_err(io_err(&job_path))
        })
    }

    /// Removes uploads a stopped daemon left behind (none can be under way at its start).
    pub fn remove_stale_uploads(&self) {
        let Ok(entries) = fs::read_dir(&self.queue_dir) else { return };
        for entry in entries.flatten().take(QUEUED_JOBS_MAX) {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".upload") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Whether `version` would be taken for (kind, name) now: a check before an upload, so
    /// a refused version costs no transfer. [`Queue::submit_upload`] checks again under the lock.
    pub fn check_version(&self, kind: Kind, name: &str, version: Version) -> Result<(), QueueError> {
        match (version, self.last_version(kind, name)?) {
            (Version::Explicit(requested), Some(last)) if requested <= last => {
                Err(QueueError::VersionNotAbove { kind, name: name.to_owned(), requested, last })
            }
            _ => Ok(()),
        }
    }

    fn submit_versioned(
        &self,
        mut job: Job,
        version: Version,
        place: impl FnOnce(&Job) -> Result<(), QueueError>,
    ) -> Result<Job, QueueError> {
        let kind = job.kind()?;
        let lock_path = self.versions_dir.join(".lock");
        let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err(&lock_path))?;
        // fs4's trait, named in full: std's File::lock is newer than rust-version. Released
        // when `lock` is dropped.
        fs4::FileExt::lock(&lock).map_err(io_err(&lock_path))?;
        let last = self.last_version(kind, &job.name)?;
        let not_above = |requested| QueueError::VersionNotAbove { kind, name: job.name.clone(), requested, last: last.unwrap_or(0) };
        job.version = match (version, last) {
            (Version::Explicit(requested), Some(last)) if requested <= last => return Err(not_above(requested)),
            (Version::Explicit(requested), _) => requested,
            (Version::Default { now_unix_ms }, None) => now_unix_ms,
            (Version::Default { now_unix_ms }, Some(last)) => now_unix_ms.max(last.checked_add(1).ok_or_else(|| not_above(u64::MAX))?),
        };
        // Recorded before the job appears: a crash in between burns a version, never reuses one.
        let record = VersionRecord { kind: kind.to_string(), name: job.name.clone(), version: job.version };
        let text = toml::to_string(&record).map_err(|e| QueueError::BadJob(e.to_string()))?;
        let path = self.version_path(kind, &job.name);
        satcast_store::fsutil::write_atomic(&path, text.as_bytes()).map_err(io_err(&path))?;
        place(&job)?;
        drop(lock);
        Ok(job)
    }

    /// The record of the last version queued for (kind, name): named by a hash, so any
    /// valid name makes a short, safe file name.
    fn version_path(&self, kind: Kind, name: &str) -> PathBuf {
        let hash = blake3::hash(format!("{kind}/{name}").as_bytes());
        self.versions_dir.join(format!("{kind}-{}.toml", &hash.to_hex()[..32]))
    }

    /// The last version queued for (kind, name): its record, or, for a name queued before
    /// records existed, the highest version among the job files (queued and done).
    fn last_version(&self, kind: Kind, name: &str) -> Result<Option<u64>, QueueError> {
        use std::io::Read;
        let path = self.version_path(kind, name);
        let bad = |why: String| QueueError::VersionRecord { path: path.clone(), why };
        match fs::File::open(&path) {
            Ok(file) => {
                let mut text = String::new();
                file.take(VERSION_RECORD_BYTES_MAX).read_to_string(&mut text).map_err(|e| bad(e.to_string()))?;
                let record: VersionRecord = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
                if record.kind != kind.as_str() || record.name != name {
                    return Err(bad(format!("it is for {}/{}", record.kind, record.name)));
                }
                Ok(Some(record.version))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut last = None;
                for dir in [&self.queue_dir, &self.done_dir] {
                    let entries = fs::read_dir(dir).map_err(io_err(dir))?.flatten();
                    for entry in entries.filter(|e| e.path().extension().is_some_and(|x| x == "job")).take(VERSION_SCAN_JOBS_MAX) {
                        let job = fs::read_to_string(entry.path()).ok().and_then(|t| toml::from_str::<Job>(&t).ok());
                        if let Some(job) = job.filter(|j| j.kind == kind.as_str() && j.name == name) {
                            last = last.max(Some(job.version));
                        }
                    }
                }
                Ok(last)
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Every queued job, oldest first. Unreadable job files are returned as errors beside
    /// the good ones, so one bad file does not stop the queue.
    pub fn pending(&self) -> Result<Vec<Result<Job, QueueError>>, QueueError> {
        let mut jobs = Vec::new();
        for entry in fs::read_dir(&self.queue_dir).map_err(io_err(&self.queue_dir))?.flatten().take(QUEUED_JOBS_MAX) {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "job") {
                continue;
            }
            let job = fs::read_to_string(&path)
                .map_err(io_err(&path))
                .and_then(|text| toml::from_str::<Job>(&text).map_err(|e| QueueError::BadJob(format!("{}: {e}", path.display()))));
            jobs.push(job);
        }
        jobs.sort_by_key(|job| job.as_ref().map_or(0, |j| j.queued_unix_secs));
        Ok(jobs)
    }

    /// The ids of the job files in the queue folder (at most [`QUEUED_JOBS_MAX`]), in no
    /// particular order: names only, no file is read.
    fn queued_ids(&self) -> Result<Vec<String>, QueueError> {
        let entries = fs::read_dir(&self.queue_dir).map_err(io_err(&self.queue_dir))?;
        let ids = entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str().and_then(|name| name.strip_suffix(".job")).map(str::to_owned))
            .filter(|id| !id.starts_with('.'))
            .take(QUEUED_JOBS_MAX)
            .collect();
        Ok(ids)
    }

    /// Reads one queued job.
    pub fn job(&self, object_id: &str) -> Result<Job, QueueError> {
        let path = self.job_path(object_id);
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        toml::from_str::<Job>(&text).map_err(|e| QueueError::BadJob(format!("{}: {e}", path.display())))
    }

    /// Whether the job is still in the queue folder (not finished, cancelled or never queued).
    pub fn is_queued(&self, object_id: &str) -> bool {
        self.job_path(object_id).exists()
    }

    /// Watches the queue folder on a thread of its own until `stop` is set: lists it every
    /// [`QUEUE_SCAN_INTERVAL`] and hands each job file that appears (see [`Watch`]) to
    /// `announce`, which returns false once the datapath is gone.
    pub fn watch(&self, stop: Arc<AtomicBool>, announce: impl Fn(Job) -> bool + Send + 'static) -> io::Result<()> {
        let mut watch = Watch::new(self.clone());
        std::thread::Builder::new().name("queue".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for job in watch.scan() {
                    if !announce(job) {
                        return;
                    }
                }
                std::thread::sleep(QUEUE_SCAN_INTERVAL);
            }
        })?;
        Ok(())
    }

    /// A job by id, queued or done.
    pub fn find(&self, object_id: &str) -> Option<(Job, PathBuf)> {
        for dir in [&self.queue_dir, &self.done_dir] {
            let path = dir.join(format!("{object_id}.job"));
            if let Some(job) = fs::read_to_string(&path).ok().and_then(|t| toml::from_str::<Job>(&t).ok()) {
                return Some((job, dir.join(format!("{object_id}.payload"))));
            }
        }
        None
    }

    /// Puts a done job back in the queue (to air it again) with this deadline (unix seconds;
    /// None: no deadline), written into its job file before it moves, so a restart keeps it.
    pub fn requeue(&self, object_id: &str, deadline_unix_secs: Option<u64>) -> Result<(), QueueError> {
        let done_job = self.done_dir.join(format!("{object_id}.job"));
        if done_job.exists() {
            let text = fs::read_to_string(&done_job).map_err(io_err(&done_job))?;
            let job = toml::from_str::<Job>(&text).map_err(|e| QueueError::BadJob(format!("{}: {e}", done_job.display())))?;
            let text = toml::to_string(&Job { deadline_unix_secs, ..job }).map_err(|e| QueueError::BadJob(e.to_string()))?;
            satcast_store::fsutil::write_atomic(&done_job, text.as_bytes()).map_err(io_err(&done_job))?;
        }
        for name in [format!("{object_id}.payload"), format!("{object_id}.aired"), format!("{object_id}.job")] {
            let from = self.done_dir.join(&name);
            let to = self.queue_dir.join(&name);
            if from.exists() {
                fs::rename(&from, &to).map_err(io_err(&from))?;
            }
        }
        satcast_store::fsutil::fsync_dir(&self.queue_dir).map_err(io_err(&self.queue_dir))
    }

    /// Moves a job the daemon will not air to refused/, with `reason` beside it, so `list`
    /// and `status` say why and nothing of it stays queued.
    pub fn refuse(&self, object_id: &str, reason: &str) -> Result<(), QueueError> {
        let reason_path = self.refused_dir.join(format!("{object_id}.reason"));
        satcast_store::fsutil::write_atomic(&reason_path, reason.as_bytes()).map_err(io_err(&reason_path))?;
        // The job file first: once it is gone from queue/, the job is no longer queued.
        for name in [format!("{object_id}.job"), format!("{object_id}.payload"), format!("{object_id}.aired")] {
            let from = self.queue_dir.join(&name);
            match fs::rename(&from, self.refused_dir.join(&name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&from)(e)),
                _ => {}
            }
        }
        satcast_store::fsutil::fsync_dir(&self.refused_dir).map_err(io_err(&self.refused_dir))
    }

    /// Refused jobs with their reasons (at most [`REFUSED_LISTED_MAX`]); unreadable ones are
    /// skipped.
    pub fn refused(&self) -> Result<Vec<(Job, String)>, QueueError> {
        let entries = fs::read_dir(&self.refused_dir).map_err(io_err(&self.refused_dir))?;
        let ids: Vec<String> = entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str().and_then(|name| name.strip_suffix(".job")).map(str::to_owned))
            .take(REFUSED_LISTED_MAX)
            .collect();
        Ok(ids.iter().filter_map(|id| self.refused_job(id)).collect())
    }

    /// One refused job and its reason.
    pub fn refused_job(&self, object_id: &str) -> Option<(Job, String)> {
        use std::io::Read;
        let text = fs::read_to_string(self.refused_dir.join(format!("{object_id}.job"))).ok()?;
        let job = toml::from_str::<Job>(&text).ok()?;
        let mut reason = String::new();
        let file = fs::File::open(self.refused_dir.join(format!("{object_id}.reason")));
        if file.and_then(|f| f.take(REASON_BYTES_MAX).read_to_string(&mut reason)).is_err() {
            reason = "refused (the reason file is unreadable)".into();
        }
        Some((job, reason))
    }

    /// Moves a finished job and its payload to done/.
    pub fn finish(&self, object_id: &str) -> Result<(), QueueError> {
        for name in [format!("{object_id}.job"), format!("{object_id}.payload"), format!("{object_id}.aired")] {
            let from = self.queue_dir.join(&name);
            let to = self.done_dir.join(&name);
            match fs::rename(&from, &to) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&from)(e)),
                _ => {}
            }
        }
        satcast_store::fsutil::fsync_dir(&self.done_dir).map_err(io_err(&self.done_dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(object_id: &str) -> Job {
        Job {
            object_id: object_id.into(),
            kind: "policy".into(),
            name: "notice.txt".into(),
            version: 1,
            targets: vec!["41".into()],
            queued_unix_secs: 1_800_000_000,
            feedback: false,
            priority: "normal".into(),
            not_before_unix_secs: None,
            deadline_unix_secs: None,
            confidential: None,
        }
    }

    fn ids(jobs: Vec<Job>) -> Vec<String> {
        jobs.into_iter().map(|j| j.object_id).collect()
    }

    #[test]
    fn the_watch_announces_each_job_file_once_and_again_when_it_comes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::open(dir.path()).expect("queue");
        let payload = dir.path().join("notice.txt");
        fs::write(&payload, b"notice").expect("payload");
        let mut watch = Watch::new(queue.clone());
        assert!(watch.scan().is_empty());
        queue.submit(&job("00000000000000a1"), &payload).expect("submit");
        assert_eq!(ids(watch.scan()), ["00000000000000a1"]);
        assert!(watch.scan().is_empty(), "announced once");
        queue.submit(&job("00000000000000b2"), &payload).expect("submit");
        assert_eq!(ids(watch.scan()), ["00000000000000b2"]);
        queue.finish("00000000000000a1").expect("finish");
        assert!(watch.scan().is_empty());
        queue.requeue("00000000000000a1", None).expect("requeue");
        assert_eq!(ids(watch.scan()), ["00000000000000a1"], "back in the queue: announced again");
        // A job started afresh by a new watch (a restarted daemon) is announced again.
        let mut all = ids(Watch::new(queue.clone()).scan());
        all.sort();
        assert_eq!(all, ["00000000000000a1", "00000000000000b2"]);
    }

    #[test]
    fn a_requeued_job_file_carries_the_reairs_deadline_or_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::open(dir.path()).expect("queue");
        let payload = dir.path().join("notice.txt");
        fs::write(&payload, b"notice").expect("payload");
        let missed = Job { deadline_unix_secs: Some(1_800_000_100), ..job("00000000000000a1") };
        queue.submit(&missed, &payload).expect("submit");
        for deadline in [None, Some(1_800_009_000)] {
            queue.finish("00000000000000a1").expect("finish");
            queue.requeue("00000000000000a1", deadline).expect("requeue");
            // Read back from the file, as a restarted daemon would.
            assert_eq!(queue.job("00000000000000a1").expect("queued again").deadline_unix_secs, deadline);
            assert!(queue.payload_path("00000000000000a1").exists(), "the payload came back too");
        }
    }

    #[test]
    fn versions_only_go_up_per_kind_and_name_even_for_jobs_queued_before_version_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::open(dir.path()).expect("queue");
        let payload = dir.path().join("notice.txt");
        fs::write(&payload, b"notice").expect("payload");
        // Queued (version 1) by a `send` that kept no version records.
        queue.submit(&job("00000000000000a1"), &payload).expect("submit");
        let refused = queue.submit_new(job("00000000000000b2"), Version::Explicit(1), &payload).expect_err("not above 1");
        assert!(matches!(refused, QueueError::VersionNotAbove { requested: 1, last: 1, .. }), "{refused}");
        assert!(!queue.is_queued("00000000000000b2"), "a refused job is not queued");
        let queued = queue.submit_new(job("00000000000000b2"), Version::Default { now_unix_ms: 0 }, &payload).expect("default");
        assert_eq!(queued.version, 2, "one above the last when the clock is behind");
        let queued = queue.submit_new(job("00000000000000c3"), Version::Default { now_unix_ms: 1_000 }, &payload).expect("default");
        assert_eq!(queued.version, 1_000, "the clock when it is ahead");
        assert!(queue.submit_new(job("00000000000000d4"), Version::Explicit(1_000), &payload).is_err());
        let mut other = job("00000000000000d4");
        other.name = "通知 2026.txt".into();
        assert_eq!(queue.submit_new(other, Version::Explicit(1), &payload).expect("another name").version, 1);
        assert_eq!(queue.job("00000000000000c3").expect("queued").version, 1_000, "the job file carries the version");
    }

    #[test]
    fn an_upload_becomes_the_payload_once_admitted_and_leaves_nothing_otherwise() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::open(dir.path()).expect("queue");
        let mut upload = queue.upload("00000000000000a1").expect("upload");
        upload.file().write_all(b"notice").expect("write");
        let queued = queue.submit_upload(job("00000000000000a1"), Version::Explicit(3), upload).expect("queued");
        assert_eq!((queued.version, fs::read(queue.payload_path("00000000000000a1")).expect("payload")), (3, b"notice".to_vec()));
        assert_eq!(ids(Watch::new(queue.clone()).scan()), ["00000000000000a1"], "the upload file itself is never a job");
        // A version not above 3: refused, and the upload is gone with it.
        let upload = queue.upload("00000000000000b2").expect("upload");
        let path = upload.path().to_owned();
        assert!(matches!(
            queue.submit_upload(job("00000000000000b2"), Version::Explicit(3), upload),
            Err(QueueError::VersionNotAbove { .. })
        ));
        assert!(!path.exists() && !queue.is_queued("00000000000000b2"), "nothing left of a refused upload");
        // A job file the daemon will not air moves to refused/ with its reason.
        queue.refuse("00000000000000a1", "--to 99: no county").expect("refuse");
        assert!(!queue.is_queued("00000000000000a1"));
        let refused = queue.refused().expect("refused");
        assert_eq!(
            refused.iter().map(|(j, r)| (j.object_id.as_str(), r.as_str())).collect::<Vec<_>>(),
            [("00000000000000a1", "--to 99: no county")]
        );
    }

    #[test]
    fn an_unreadable_job_file_is_skipped_until_it_is_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::open(dir.path()).expect("queue");
        let mut watch = Watch::new(queue.clone());
        let path = queue.job_path("00000000000000c3");
        fs::write(&path, "not toml [").expect("bad job");
        assert!(watch.scan().is_empty());
        assert!(watch.scan().is_empty());
        fs::write(&path, toml::to_string(&job("00000000000000c3")).expect("toml")).expect("good job");
        assert_eq!(ids(watch.scan()), ["00000000000000c3"]);
        assert!(watch.scan().is_empty());
    }
}
