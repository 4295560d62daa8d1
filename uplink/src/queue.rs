//! The broadcast queue on disk: `send` drops a job (a payload copy and a job file) into
//! state/queue/, the daemon picks it up, and moves it to state/done/ once aired. Files are
//! the truth, so a job queued while the daemon is down, or interrupted by a restart, airs
//! when the daemon next runs. A watcher thread lists the folder and announces each job file
//! that appears, so the datapath never reads it.

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

/// The most jobs read from the queue directory at once.
pub const QUEUED_JOBS_MAX: usize = 10_000;
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
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io { path: path.to_owned(), source }
}

/// The queue directories under the uplink's state directory.
#[derive(Debug, Clone)]
pub struct Queue {
    queue_dir: PathBuf,
    done_dir: PathBuf,
}

impl Queue {
    /// Opens (creating) the queue under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, QueueError> {
        let queue = Queue { queue_dir: state_dir.join("queue"), done_dir: state_dir.join("done") };
        for dir in [&queue.queue_dir, &queue.done_dir] {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        Ok(queue)
    }

    /// Where a job's payload copy lives.
    pub fn payload_path(&self, object_id: &str) -> PathBuf {
        self.queue_dir.join(format!("{object_id}.payload"))
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

    /// Puts a done job back in the queue (to air it again).
    pub fn requeue(&self, object_id: &str) -> Result<(), QueueError> {
        for name in [format!("{object_id}.payload"), format!("{object_id}.job")] {
            let from = self.done_dir.join(&name);
            let to = self.queue_dir.join(&name);
            if from.exists() {
                fs::rename(&from, &to).map_err(io_err(&from))?;
            }
        }
        satcast_store::fsutil::fsync_dir(&self.queue_dir).map_err(io_err(&self.queue_dir))
    }

    /// Moves a finished job and its payload to done/.
    pub fn finish(&self, object_id: &str) -> Result<(), QueueError> {
        for name in [format!("{object_id}.job"), format!("{object_id}.payload")] {
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
        queue.requeue("00000000000000a1").expect("requeue");
        assert_eq!(ids(watch.scan()), ["00000000000000a1"], "back in the queue: announced again");
        // A job started afresh by a new watch (a restarted daemon) is announced again.
        let mut all = ids(Watch::new(queue.clone()).scan());
        all.sort();
        assert_eq!(all, ["00000000000000a1", "00000000000000b2"]);
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
