//! The storage worker: the one thread that touches the receiver's disk. It owns the durable
//! store, trust state and hook records, carries out the node's requests in the order they
//! were made, hands completions back, syncs the spool once a second, and writes the status
//! file. The receive thread never waits on it.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use satcast_protocol::manifest::{Kind, Manifest};
use satcast_protocol::receiver_node::{Completion, HookRecord, Request};
use satcast_protocol::storage;
use satcast_protocol::trust::{Accepted, SignedManifest};
use satcast_store::{ReceiverStore, TrustState};
use tracing::{debug, warn};

use crate::hooks::{HookBook, Prepared};
use crate::status::{
    self, CachedStatus, DaemonStatus, DiskStatus, HeartbeatStatus, OutboxStatus, PartialStatus, ReceptionStatus, StuckState, StuckStatus,
};

/// How often the spool is synced: symbols received since are lost in a power cut, and
/// collected again.
pub const SPOOL_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// What the worker owns.
#[derive(Debug)]
pub struct Storage {
    /// Symbols, partial objects, the cache and the outbox.
    pub store: ReceiverStore,
    /// Delivered versions and the revocation list.
    pub trust_state: TrustState,
    /// Post-receive hook records.
    pub hooks: HookBook,
    /// Where status.json goes.
    pub state_dir: PathBuf,
    /// The status last written, for /metrics and /health.
    pub latest: crate::metrics::Latest,
}

/// The receive thread's part of status.json.
#[derive(Debug)]
pub struct NodeView {
    /// This county.
    pub county_code: String,
    /// When the daemon started.
    pub started_unix_ms: u64,
    /// The daemon is stopping.
    pub stopped: bool,
    /// The heartbeat watch.
    pub heartbeat: HeartbeatStatus,
    /// The reception counters.
    pub reception: ReceptionStatus,
    /// Objects being received.
    pub partial: Vec<PartialStatus>,
    /// Completed objects whose delivery waits on storage.
    pub deliveries_waiting: usize,
    /// Objects not delivered yet, and why (the worker adds those whose hook waits).
    pub stuck: Vec<StuckStatus>,
}

/// One job for the worker.
#[derive(Debug)]
pub enum Job {
    /// A node request.
    Request(Request),
    /// Write status.json from this and the store's state.
    Status(Box<NodeView>),
}

/// The object hash a kept signed manifest names, read without verifying it (the node
/// verifies the manifest before anything counts); zeros if it does not parse.
pub fn kept_object_hash(signed: &[u8]) -> [u8; 32] {
    SignedManifest::from_bytes(signed).ok().and_then(|s| Manifest::from_bytes(&s.manifest).ok()).map_or([0; 32], |m| m.delivered_hash())
}

/// Starts the worker; it runs until `jobs` is closed, then syncs the spool.
pub fn start(storage: Storage, jobs: Receiver<Job>, completions: Sender<Completion>) -> std::io::Result<JoinHandle<()>> {
    let span = tracing::Span::current();
    std::thread::Builder::new().name("storage".into()).spawn(move || span.in_scope(|| run(storage, jobs, completions)))
}

fn run(mut storage: Storage, jobs: Receiver<Job>, completions: Sender<Completion>) {
    let mut last_sync = Instant::now();
    loop {
        match jobs.recv_timeout(SPOOL_SYNC_INTERVAL) {
            Ok(Job::Request(request)) => {
                if let Some(completion) = storage.execute(request) {
                    // The receive thread is gone only when the daemon is stopping.
                    let _ = completions.send(completion);
                }
            }
            Ok(Job::Status(view)) => storage.write_status(*view),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_sync.elapsed() >= SPOOL_SYNC_INTERVAL {
            last_sync = Instant::now();
            if let Err(error) = storage.store.sync() {
                warn!(%error, "cannot sync the spool");
            }
        }
    }
    if let Err(error) = storage.store.sync() {
        warn!(%error, "cannot sync the spool at stop");
    }
}

impl Storage {
    fn execute(&mut self, request: Request) -> Option<Completion> {
        let text = |e: &dyn std::fmt::Display| e.to_string();
        match request {
            Request::Store(request) => storage::execute(request, &mut self.store).map(Completion::Store),
            Request::RecordHookDue { manifest } => {
                let result = match self.hooks.prepare(&manifest, &self.store.delivered_path(&manifest)) {
                    Ok(Prepared::Due) => Ok(HookRecord::Due),
                    Ok(Prepared::AlreadyHandled) => Ok(HookRecord::AlreadyHandled),
                    Err(error) => Err(text(&error)),
                };
                Some(Completion::HookRecorded { object_id: manifest.object_id, result })
            }
            Request::Commit { manifest } => {
                let result = self.store.commit(&manifest).map(|_| ()).map_err(|e| text(&e));
                Some(Completion::Committed { object_id: manifest.object_id, result })
            }
            Request::RecordVersion { manifest } => {
                let accepted = Accepted { version: manifest.version, object_id: manifest.object_id };
                let result = self.trust_state.record(manifest.kind, &manifest.name, accepted).map_err(|e| text(&e));
                Some(Completion::VersionRecorded { object_id: manifest.object_id, result })
            }
            Request::ReleaseHook { object_id } => {
                Some(Completion::HookReleased { object_id, result: self.hooks.mark_ready(object_id).map_err(|e| text(&e)) })
            }
            Request::RecordRevocations { sequence, revoked_serials } => self
                .trust_state
                .record_revocations(sequence, &revoked_serials)
                .err()
                .map(|e| Completion::RevocationsNotRecorded { error: text(&e) }),
            Request::PushOutbox { feedback } => match self.store.outbox().push(&feedback) {
                Ok(()) => None,
                Err(error) => Some(Completion::OutboxFailed { feedback, error: text(&error) }),
            },
        }
    }

    fn write_status(&mut self, view: NodeView) {
        let delivered: Vec<(Kind, &str, Accepted)> = self.trust_state.delivered().collect();
        let mut cached: Vec<CachedStatus> = self
            .store
            .cached()
            .into_iter()
            .map(|e| CachedStatus {
                object_id: e.object_id,
                delivered: delivered.iter().any(|(k, n, a)| k.as_str() == e.kind && *n == e.name && a.object_id == e.object_id),
                kind: e.kind,
                name: e.name,
                version: e.version,
                size_bytes: e.size_bytes,
                hash: hex::encode(e.hash),
            })
            .collect();
        let cached_total = cached.len();
        let cache_bytes = cached.iter().map(|c| c.size_bytes).sum();
        status::sort_cached(&mut cached);
        cached.truncate(status::STATUS_CACHED_MAX);
        let disk = self.store.disk_use();
        let mut stuck = view.stuck;
        let running = self.hooks.status().running.map(|r| r.object_id);
        stuck.extend(self.hooks.waiting().into_iter().map(|job| StuckStatus {
            object_id: job.object_id,
            name: format!("{}/{}", job.kind, job.name),
            state: StuckState::WaitingForHook,
            detail: if running == Some(job.object_id) { "running".into() } else { "queued".into() },
            reason: None,
        }));
        let stuck_total = stuck.len();
        stuck.truncate(status::STATUS_STUCK_MAX);
        let status = DaemonStatus {
            format: status::STATUS_FORMAT,
            pid: std::process::id(),
            county_code: view.county_code,
            software_version: crate::upgrade::software_version().to_owned(),
            started_unix_ms: view.started_unix_ms,
            updated_unix_ms: satcast_daemon::clock::wall_unix_ms(),
            stopped: view.stopped,
            heartbeat: view.heartbeat,
            outbox: OutboxStatus { messages: self.store.outbox().len() },
            disk: DiskStatus {
                spool_bytes: disk.spool_bytes,
                spool_bytes_max: disk.limits.spool_bytes_max,
                cache_bytes,
                cache_bytes_max: disk.limits.cache_bytes_max,
                free_bytes: fs4::available_space(&self.state_dir).ok(),
            },
            reception: view.reception,
            partial: view.partial,
            deliveries_waiting: view.deliveries_waiting,
            stuck,
            stuck_total,
            cached,
            cached_total,
            hooks: self.hooks.status(),
        };
        if let Err(error) = status::write(&self.state_dir, &status) {
            debug!(%error, "cannot write the status file");
        }
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(std::sync::Arc::new(status));
        }
    }
}
