//! The broadcast queue on disk: `send` drops a job (a payload copy and a job file) into
//! state/queue/, the daemon picks it up, and moves it to state/done/ once aired. Files are
//! the truth, so a job queued while the daemon is down, or interrupted by a restart, airs
//! when the daemon next runs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use satcast_protocol::manifest::Kind;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The most jobs read from the queue directory at once.
pub const QUEUED_JOBS_MAX: usize = 10_000;

/// One queued broadcast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The broadcast (object) id, as 16 hex digits.
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
        u64::from_str_radix(&self.object_id, 16).map_err(|_| QueueError::BadJob(format!("object id {:?}", self.object_id)))
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
