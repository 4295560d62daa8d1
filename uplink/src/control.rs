//! The control API: HTTP and JSON on loopback, every request carrying the token from
//! `<state_dir>/control.token` as `Authorization: Bearer <token>`. The CLI uses it for
//! everything, `send` included, and a dashboard can. Reads come straight from the index and
//! the queue folders; a new broadcast is admitted (`admit`) and queued here, on a thread of
//! its own per upload; changes to broadcasts (cancel, re-air) go to the datapath, which owns
//! the broadcast machine, and are answered once done. docs/operations.md ("The control
//! API") describes every endpoint for other clients.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | /v1/broadcasts?kind=K&to=T&name=N[&version=V&priority=P&not_before=S&deadline=S&feedback=0] | the file's bytes (Content-Length required) | `{"id": id, "version": v}` |
//! | POST | the same with &check=1&size=BYTES | | `{"admissible": true}` or the refusal |
//! | GET | /v1/broadcasts | | `[BroadcastSummary]` |
//! | GET | /v1/broadcasts/{id} | | `BroadcastStatus` |
//! | POST | /v1/broadcasts/{id}/cancel | | `{"cancelled": id}` |
//! | POST | /v1/broadcasts/{id}/reair | `{"to": "41,4201", "deadline_unix_secs": n}`, either optional | `{"reaired": id, "targets": n}` |
//! | GET | /v1/receivers?silent_for=SECS&all=1 | | `[ReceiverSummary]` |
//!
//! Errors are `{"error": "..."}` (one line) with status 400 (bad request, or a job refused:
//! name, targets, dates), 401 (token), 404 (unknown id), 409 (not possible now, or a version
//! not above the last), 411 (no Content-Length), 413 (larger than the uplink accepts) or 503
//! (the daemon is busy).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use satcast_daemon::clock::{wall_unix_ms, wall_unix_secs};
use satcast_protocol::ObjectId;
use satcast_store::UplinkStore;
use serde::Serialize;
use thiserror::Error;
use tracing::{info, warn};

use crate::admit;
use crate::queue::{Job, Queue, QueueError, Version};
use crate::report::{self, BroadcastSummary};

/// The largest request body.
pub const REQUEST_BYTES_MAX: u64 = 64 * 1024;
/// Commands waiting for the datapath.
pub const COMMANDS_PENDING_MAX: usize = 64;
/// Uploads (`send`) running at once, each on a thread of its own; more are answered busy.
pub const UPLOADS_MAX: usize = 4;
/// How long a command may wait for the datapath.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the control API could not start.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The token file could not be read or created.
    #[error("control token {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP listener could not bind.
    #[error("cannot listen on {addr}: {why}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        why: String,
    },
}

/// A change the datapath must make.
#[derive(Debug)]
pub enum Command {
    /// Stop airing a broadcast now.
    Cancel {
        /// The broadcast.
        object_id: u64,
        /// The answer: Ok, or an HTTP status and message.
        reply: SyncSender<Result<serde_json::Value, (u16, String)>>,
    },
    /// Air a finished broadcast again for the counties that do not have it.
    Reair {
        /// The broadcast.
        object_id: u64,
        /// Only counties under these prefixes (none: every county that lacks it).
        prefixes: Option<Vec<String>>,
        /// The re-air's own deadline, unix seconds (none: no deadline, whatever the first
        /// airing had).
        deadline_unix_secs: Option<u64>,
        /// The answer.
        reply: SyncSender<Result<serde_json::Value, (u16, String)>>,
    },
}

/// What the datapath publishes for reads about one broadcast.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    /// "preparing" (being read, hashed and signed), "airing" or "idle"; none between.
    pub state: Option<String>,
    /// Payload bytes aired since the daemon started (source and repair symbols).
    pub bytes_aired: u64,
    /// Bits per second aired over the last sample (0 once it stopped airing).
    pub rate_bits_per_sec: u64,
}

/// [`Live`] per broadcast id.
pub type LiveStates = Arc<Mutex<BTreeMap<u64, Live>>>;

/// Where the token lives under a state directory.
pub fn token_path(state_dir: &Path) -> PathBuf {
    state_dir.join("control.token")
}

/// The token, created (random, mode 0600) on first use.
pub fn ensure_token(state_dir: &Path) -> Result<String, ControlError> {
    let path = token_path(state_dir);
    let err = |source| ControlError::Token { path: path.clone(), source };
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    let mut bytes = [0u8; 24];
    rand::rngs::StdRng::from_os_rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    satcast_store::fsutil::write_atomic(&path, token.as_bytes()).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(token)
}

/// Everything a request handler reads.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // holds channel and index handles with nothing to show
pub struct Context {
    /// The uplink's index.
    pub store: Arc<UplinkStore>,
    /// The queue folders.
    pub queue: Queue,
    /// Live states from the datapath.
    pub live: LiveStates,
    /// The token.
    pub token: String,
    /// Where commands go.
    pub commands: SyncSender<Command>,
    /// The largest payload accepted, in bytes (what the FEC settings can carry).
    pub object_bytes_max: u64,
    /// Uploads running now, at most [`UPLOADS_MAX`].
    pub uploads: Arc<std::sync::atomic::AtomicUsize>,
}

/// Starts the API on its own thread; returns the receiving end of the command channel.
pub fn start(
    listen: &str,
    store: Arc<UplinkStore>,
    queue: Queue,
    live: LiveStates,
    token: String,
    object_bytes_max: u64,
    stop: Arc<AtomicBool>,
) -> Result<Receiver<Command>, ControlError> {
    let server = tiny_http::Server::http(listen).map_err(|e| ControlError::Bind { addr: listen.to_owned(), why: e.to_string() })?;
    let (commands, rx) = sync_channel(COMMANDS_PENDING_MAX);
    queue.remove_stale_uploads();
    let uploads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let context = Context { store, queue, live, token, commands, object_bytes_max, uploads };
    info!(%listen, "control API listening");
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match server.recv_timeout(Duration::from_millis(200)) {
                    Ok(Some(request)) => handle(&context, request),
                    Ok(None) => {}
                    Err(error) => warn!(%error, "control API receive failed"),
                }
            }
        })
        .map_err(|e| ControlError::Bind { addr: listen.to_owned(), why: e.to_string() })?;
    Ok(rx)
}

fn respond(request: tiny_http::Request, status: u16, body: &impl Serialize) {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    let header = tiny_http::Header::from_bytes("Content-Type", "application/json").ok();
    let mut response = tiny_http::Response::from_string(text).with_status_code(status);
    if let Some(header) = header {
        response.add_header(header);
    }
    let _ = request.respond(response);
}

fn error(request: tiny_http::Request, status: u16, message: &str) {
    respond(request, status, &serde_json::json!({ "error": message }));
}

fn authorized(context: &Context, request: &tiny_http::Request) -> bool {
    let expected = format!("Bearer {}", context.token);
    request.headers().iter().any(|h| h.field.equiv("Authorization") && h.value.as_str().as_bytes() == expected.as_bytes())
}

fn parse_id(text: &str) -> Option<u64> {
    text.parse::<ObjectId>().ok().map(u64::from)
}

fn handle(context: &Context, mut request: tiny_http::Request) {
    if !authorized(context, &request) {
        return error(request, 401, "missing or wrong token (Authorization: Bearer <state_dir/control.token>)");
    }
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = request.method().clone();
    match (method, segments.as_slice()) {
        (tiny_http::Method::Post, ["v1", "broadcasts"]) => submit(context, request, query),
        (tiny_http::Method::Get, ["v1", "broadcasts"]) => match list(context) {
            Ok(list) => respond(request, 200, &list),
            Err(message) => error(request, 503, &message),
        },
        (tiny_http::Method::Get, ["v1", "broadcasts", id]) => {
            let Some(object_id) = parse_id(id) else { return error(request, 400, "a broadcast id is 16 hex digits") };
            match status(context, object_id) {
                Ok(Some(status)) => respond(request, 200, &status),
                Ok(None) => error(request, 404, &format!("unknown broadcast {id}")),
                Err(message) => error(request, 503, &message),
            }
        }
        (tiny_http::Method::Post, ["v1", "broadcasts", id, action @ ("cancel" | "reair")]) => {
            let Some(object_id) = parse_id(id) else { return error(request, 400, "a broadcast id is 16 hex digits") };
            let mut body = String::new();
            if request.as_reader().take(REQUEST_BYTES_MAX).read_to_string(&mut body).is_err() {
                return error(request, 400, "unreadable body");
            }
            let (reply, answer) = sync_channel(1);
            let command = if *action == "cancel" {
                Command::Cancel { object_id, reply }
            } else {
                let body = serde_json::from_str::<serde_json::Value>(&body).ok();
                let to = body.as_ref().and_then(|v| v.get("to").and_then(|t| t.as_str()).map(str::to_owned));
                let prefixes = match to.map(|t| satcast_protocol::manifest::parse_targets(&t)) {
                    Some(Ok(p)) => Some(p),
                    Some(Err(e)) => return error(request, 400, &format!("bad prefixes: {e}")),
                    None => None,
                };
                let deadline_unix_secs = match body.as_ref().and_then(|v| v.get("deadline_unix_secs")) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(deadline) => match deadline.as_u64() {
                        Some(secs) => Some(secs),
                        None => return error(request, 400, "deadline_unix_secs is unix seconds"),
                    },
                };
                Command::Reair { object_id, prefixes, deadline_unix_secs, reply }
            };
            if context.commands.try_send(command).is_err() {
                return error(request, 503, "the daemon is busy; try again");
            }
            match answer.recv_timeout(COMMAND_TIMEOUT) {
                Ok(Ok(value)) => respond(request, 200, &value),
                Ok(Err((status, message))) => error(request, status, &message),
                Err(_) => error(request, 503, "the daemon did not answer in time"),
            }
        }
        (tiny_http::Method::Get, ["v1", "receivers"]) => {
            let mut silent_for = None;
            let mut all = false;
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("silent_for", secs)) => match secs.parse() {
                        Ok(secs) => silent_for = Some(secs),
                        Err(_) => return error(request, 400, "silent_for is a number of seconds"),
                    },
                    Some(("all", value)) => all = value == "1" || value == "true",
                    _ => return error(request, 400, &format!("unknown parameter {pair}")),
                }
            }
            match context.store.receivers() {
                Ok(registry) => {
                    let registry: BTreeMap<_, _> = registry.into_iter().collect();
                    respond(request, 200, &report::receivers(&registry, wall_unix_secs(), silent_for, all));
                }
                Err(e) => error(request, 503, &e.to_string()),
            }
        }
        _ => error(request, 404, &format!("no such endpoint: {path}")),
    }
}

/// The state operators see: how it ended, else scheduled while its not-before time is ahead,
/// else what the datapath says (or `otherwise`).
fn state_of(context: &Context, object_id: u64, outcome: Option<&str>, job: Option<&Job>, otherwise: &str, now: u64) -> String {
    if let Some(outcome) = outcome {
        return outcome.to_owned();
    }
    if job.and_then(|j| j.not_before_unix_secs).is_some_and(|at| at > now) {
        return report::SCHEDULED.to_owned();
    }
    context.live.lock().ok().and_then(|l| l.get(&object_id).and_then(|live| live.state.clone())).unwrap_or_else(|| otherwise.to_owned())
}

/// Adds what the job file and the datapath know: times, bytes aired, rate and ETA.
fn add_progress(context: &Context, summary: &mut BroadcastSummary, job: Option<&Job>) {
    if let Some(job) = job {
        summary.not_before_unix_secs = job.not_before_unix_secs;
        summary.deadline_unix_secs = job.deadline_unix_secs;
    }
    let live = context.live.lock().ok().and_then(|l| l.get(&summary.id).cloned()).unwrap_or_default();
    summary.bytes_aired = Some(live.bytes_aired).filter(|&bytes| bytes > 0);
    if report::FINAL_STATES.contains(&summary.state.as_str()) {
        return;
    }
    summary.rate_bits_per_sec = live.rate_bits_per_sec;
    let left_bits = summary.size_bytes.saturating_sub(live.bytes_aired).saturating_mul(8);
    summary.eta_secs = (left_bits > 0).then(|| left_bits.div_ceil(live.rate_bits_per_sec.max(1))).filter(|_| live.rate_bits_per_sec > 0);
}

/// One recorded broadcast's status.
fn recorded(
    context: &Context,
    object_id: u64,
    record: &satcast_store::BroadcastRecord,
    registry: &BTreeMap<String, satcast_store::ReceiverRecord>,
    now: u64,
) -> Result<report::BroadcastStatus, String> {
    let ledger = context.store.ledger(object_id).map_err(|e| e.to_string())?;
    let job = context.queue.find(&satcast_protocol::ObjectId(object_id).to_string()).map(|(job, _)| job);
    let state = state_of(context, object_id, record.outcome.as_deref(), job.as_ref(), "airing", now);
    let mut status = report::status(object_id, record, &state, &ledger, registry);
    add_progress(context, &mut status.summary, job.as_ref());
    Ok(status)
}

/// A job with no broadcast record yet: queued (or preparing, or scheduled).
fn unrecorded(context: &Context, object_id: u64, job: &Job, now: u64) -> BroadcastSummary {
    let size_bytes = std::fs::metadata(context.queue.payload_path(&job.object_id)).map_or(0, |m| m.len());
    let state = state_of(context, object_id, None, Some(job), "queued", now);
    let mut summary = BroadcastSummary::of_job(object_id, job, size_bytes, &state);
    add_progress(context, &mut summary, Some(job));
    summary
}

/// A job the daemon refused, with its reason.
fn refused(object_id: u64, job: &Job, reason: String) -> BroadcastSummary {
    BroadcastSummary { reason: Some(reason), ..BroadcastSummary::of_job(object_id, job, 0, report::REFUSED) }
}

fn list(context: &Context) -> Result<Vec<BroadcastSummary>, String> {
    let now = wall_unix_secs();
    let registry: BTreeMap<_, _> = context.store.receivers().map_err(|e| e.to_string())?.into_iter().collect();
    let mut out = Vec::new();
    let records = context.store.broadcasts().map_err(|e| e.to_string())?;
    for (object_id, record) in &records {
        out.push(recorded(context, *object_id, record, &registry, now)?.summary);
    }
    // Queued jobs that have not started airing yet.
    for job in context.queue.pending().map_err(|e| e.to_string())?.into_iter().flatten() {
        let Ok(object_id) = job.object_id() else { continue };
        if records.iter().any(|(id, _)| *id == object_id) {
            continue;
        }
        out.push(unrecorded(context, object_id, &job, now));
    }
    for (job, reason) in context.queue.refused().map_err(|e| e.to_string())? {
        let Ok(object_id) = job.object_id() else { continue };
        out.push(refused(object_id, &job, reason));
    }
    report::sort_by_time(&mut out);
    Ok(out)
}

fn status(context: &Context, object_id: u64) -> Result<Option<report::BroadcastStatus>, String> {
    let now = wall_unix_secs();
    let Some(record) = context.store.broadcast(object_id).map_err(|e| e.to_string())? else {
        // Queued, not started, or refused: known, but nothing to count yet.
        let id = satcast_protocol::ObjectId(object_id).to_string();
        let summary = match (context.queue.find(&id), context.queue.refused_job(&id)) {
            (Some((job, _)), _) => unrecorded(context, object_id, &job, now),
            (None, Some((job, reason))) => refused(object_id, &job, reason),
            (None, None) => return Ok(None),
        };
        return Ok(Some(report::BroadcastStatus {
            summary,
            provinces: Vec::new(),
            lagging: Vec::new(),
            hooks_failed: Vec::new(),
            delivered: Vec::new(),
        }));
    };
    let registry: BTreeMap<_, _> = context.store.receivers().map_err(|e| e.to_string())?.into_iter().collect();
    recorded(context, object_id, &record, &registry, now).map(Some)
}

/// The parameters of `POST /v1/broadcasts`, decoded.
#[derive(Debug)]
struct UploadParams {
    job: Job,
    version: Version,
    /// `check=1`: only say whether the job would be taken (a file of `size` bytes).
    check: bool,
    /// The size a check is asked about.
    size: Option<u64>,
}

fn upload_params(query: &str) -> Result<UploadParams, String> {
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| format!("parameter {} is not UTF-8", admit::echo(key)))?
            .into_owned();
        if !matches!(key, "kind" | "name" | "to" | "version" | "priority" | "not_before" | "deadline" | "feedback" | "check" | "size") {
            return Err(format!("unknown parameter {}", admit::echo(key)));
        }
        params.insert(key.to_owned(), value);
    }
    let required = |key: &str| params.get(key).cloned().ok_or_else(|| format!("parameter {key} is required"));
    let number = |key: &str| -> Result<Option<u64>, String> {
        params.get(key).map(|v| v.parse::<u64>().map_err(|_| format!("{key} is a whole number, not {:?}", admit::echo(v)))).transpose()
    };
    let targets = admit::targets(&required("to")?).map_err(|e| e.0)?;
    let object_id = satcast_protocol::ObjectId(rand::rngs::StdRng::from_os_rng().next_u64().max(1));
    let job = Job {
        object_id: object_id.to_string(),
        kind: required("kind")?,
        name: required("name")?,
        version: 0, // set by the queue as it is submitted
        targets,
        queued_unix_secs: wall_unix_secs(),
        feedback: params.get("feedback").is_none_or(|v| v != "0" && v != "false"),
        priority: params.get("priority").cloned().unwrap_or_else(|| "normal".into()),
        not_before_unix_secs: number("not_before")?,
        deadline_unix_secs: number("deadline")?,
    };
    let version = match number("version")? {
        Some(version) => Version::Explicit(version),
        None => Version::Default { now_unix_ms: wall_unix_ms() },
    };
    let check = params.get("check").is_some_and(|v| v == "1" || v == "true");
    Ok(UploadParams { job, version, check, size: number("size")? })
}

/// One of the [`UPLOADS_MAX`] upload threads, given back when the upload ends, however it
/// ends.
struct UploadSlot(Arc<std::sync::atomic::AtomicUsize>);

impl UploadSlot {
    /// A slot, if one is free.
    fn take(uploads: &Arc<std::sync::atomic::AtomicUsize>) -> Option<UploadSlot> {
        let taken = uploads.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < UPLOADS_MAX).then_some(n + 1));
        taken.ok().map(|_| UploadSlot(uploads.clone()))
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Everything about a new job but its bytes and its final version check: answered before
/// a byte of the body is read.
fn admissible(context: &Context, job: &Job, version: Version, size: u64) -> Result<(), (u16, String)> {
    admit::check_new(job, wall_unix_secs()).map_err(|refusal| (400, refusal.0))?;
    if size == 0 {
        return Err((400, "the file is empty: there is nothing to broadcast".into()));
    }
    if size > context.object_bytes_max {
        let max = context.object_bytes_max;
        return Err((413, format!("the file is {size} bytes; this uplink airs at most {max} bytes (fec.block_bytes_max)")));
    }
    match job.kind().and_then(|kind| context.queue.check_version(kind, &job.name, version)) {
        Ok(()) => Ok(()),
        Err(refused @ QueueError::VersionNotAbove { .. }) => Err((409, refused.to_string())),
        Err(failed) => Err((503, failed.to_string())),
    }
}

/// Answers an error to an upload, after reading what was sent of its body (at most the
/// largest object, in small reads): a client still sending reads the answer, not a reset.
/// A large body is read on an upload slot's thread, so the control thread goes on.
fn refuse(context: &Context, request: tiny_http::Request, status: u16, message: &str) {
    let sent = request.body_length().map_or(0, |n| n as u64).min(context.object_bytes_max);
    let drain = move |mut request: tiny_http::Request, message: &str| {
        let _ = std::io::copy(&mut request.as_reader().take(sent), &mut std::io::sink());
        error(request, status, message);
    };
    let slot = if sent <= REQUEST_BYTES_MAX { None } else { UploadSlot::take(&context.uploads) };
    let Some(slot) = slot else { return drain(request, message) };
    let message = message.to_owned();
    let spawned = std::thread::Builder::new().name("refuse".into()).spawn(move || {
        let _slot = slot;
        drain(request, &message);
    });
    if let Err(failed) = spawned {
        warn!(error = %failed, "cannot start a thread to answer a refused upload");
    }
}

/// `POST /v1/broadcasts`: everything but the body is checked first (the CLI asks with
/// `check=1` before it sends the file, so a refusal costs no transfer); the body then
/// streams into the queue folder on a thread of its own, so a large file neither holds the
/// control thread nor touches the pacing thread.
fn submit(context: &Context, request: tiny_http::Request, query: &str) {
    let UploadParams { job, version, check, size } = match upload_params(query) {
        Ok(params) => params,
        Err(message) => return refuse(context, request, 400, &message),
    };
    let size = match (check, size, request.body_length()) {
        (true, Some(size), _) => size,
        (true, None, _) => return refuse(context, request, 400, "a check needs size=BYTES"),
        (false, _, Some(size)) => size as u64,
        (false, _, None) => return refuse(context, request, 411, "Content-Length is required: the file's size in bytes"),
    };
    if let Err((status, message)) = admissible(context, &job, version, size) {
        return refuse(context, request, status, &message);
    }
    if check {
        return respond(request, 200, &serde_json::json!({ "admissible": true }));
    }
    let Some(slot) = UploadSlot::take(&context.uploads) else {
        return refuse(context, request, 503, &format!("{UPLOADS_MAX} uploads are running; try again"));
    };
    let queue = context.queue.clone();
    // The request moves into the thread: if it cannot start, the client sees the
    // connection close and reports it.
    let spawned = std::thread::Builder::new().name("upload".into()).spawn(move || {
        let _slot = slot;
        upload(&queue, request, job, version, size);
    });
    if let Err(failed) = spawned {
        warn!(error = %failed, "cannot start an upload thread");
    }
}

/// Streams the body into an upload file, then queues the job; answers the id.
fn upload(queue: &Queue, mut request: tiny_http::Request, job: Job, version: Version, size: u64) {
    let mut file = match queue.upload(&job.object_id) {
        Ok(file) => file,
        Err(failed) => return error(request, 503, &failed.to_string()),
    };
    let copied = std::io::copy(&mut request.as_reader().take(size), file.file());
    match copied {
        Ok(copied) if copied == size => {}
        Ok(copied) => return error(request, 400, &format!("the upload ended after {copied} of {size} bytes; nothing was queued")),
        Err(failed) => {
            let message = format!("the upload failed: {failed}; nothing was queued");
            return error(request, 503, &message);
        }
    }
    match queue.submit_upload(job, version, file) {
        Ok(job) => {
            info!(object = %job.object_id, kind = %job.kind, name = %job.name, version = job.version, size, "queued");
            respond(request, 200, &serde_json::json!({ "id": job.object_id, "version": job.version }));
        }
        Err(refused @ QueueError::VersionNotAbove { .. }) => error(request, 409, &refused.to_string()),
        Err(failed) => error(request, 503, &failed.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_uploads_max_run_at_once_and_a_finished_one_frees_its_slot() {
        let uploads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let slots: Vec<UploadSlot> = (0..UPLOADS_MAX).filter_map(|_| UploadSlot::take(&uploads)).collect();
        assert_eq!(slots.len(), UPLOADS_MAX);
        assert!(UploadSlot::take(&uploads).is_none(), "one more is answered busy");
        drop(slots);
        assert!(UploadSlot::take(&uploads).is_some());
    }

    #[test]
    fn upload_parameters_are_percent_decoded_utf8_and_unknown_ones_refused() {
        let params = upload_params("kind=policy&to=41%2C4201&name=%E9%80%9A%E7%9F%A5%202026.txt&version=7&feedback=0").expect("params");
        assert_eq!((params.job.name.as_str(), params.job.targets.clone()), ("通知 2026.txt", vec!["41".into(), "4201".into()]));
        assert!(matches!(params.version, Version::Explicit(7)) && !params.job.feedback && !params.check);
        assert!(upload_params("kind=policy&to=41&name=a&colour=red").is_err());
        assert!(upload_params("kind=policy&to=99&name=a").expect_err("no county").contains("no county"));
        assert!(upload_params("kind=policy&to=41&name=%FF").is_err(), "not UTF-8");
    }
}
