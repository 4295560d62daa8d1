//! The control API: HTTP and JSON on loopback, every request carrying the token from
//! `<state_dir>/control.token` as `Authorization: Bearer <token>`. The CLI uses it for
//! everything, `send` included. Reads come straight from the index and the queue folders; a
//! new broadcast is admitted (`admit`) and queued here, its bytes streamed to the queue
//! folder by a blocking task (at most [`UPLOADS_MAX`] at once, each read bounded by
//! `control.body_stall_secs`); changes to broadcasts (cancel, re-air) go to the datapath, which owns
//! the broadcast machine, and are answered once done. docs/operations.md ("The control
//! API") describes every endpoint for other clients.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | /v1/broadcasts?kind=K&to=T&name=N[&version=V&priority=P&not_before=S&deadline=S&feedback=0&confidential=1|0] | the file's bytes (Content-Length required) | `{"id": id, "version": v}` |
//! | POST | the same with &check=1&size=BYTES | | `{"admissible": true}` or the refusal |
//! | GET | /v1/broadcasts | | `[BroadcastSummary]` |
//! | GET | /v1/broadcasts/{id} | | `BroadcastStatus` |
//! | POST | /v1/broadcasts/{id}/cancel | | `{"cancelled": id}` |
//! | POST | /v1/broadcasts/{id}/reair | `{"to": "41,4201", "deadline_unix_secs": n}`, either optional | `{"reaired": id, "targets": n}` |
//! | GET | /v1/receivers?silent_for=SECS&all=1 | | `[ReceiverSummary]` |
//!
//! | GET | /health | | `{"status": "ok"}` (no token) |
//! | GET | /metrics | | Prometheus text (no token: loopback only) |
//!
//! Errors are `{"error": "..."}` (one line) with status 400 (bad request, or a job refused:
//! name, targets, dates), 401 (token), 404 (unknown id), 408 (an upload stalled for
//! `control.body_stall_secs`), 409 (not possible now, or a version not above the last), 411
//! (no Content-Length), 413 (larger than the uplink accepts) or 503 (the daemon is busy).
//!
//! It runs on axum, on a small tokio runtime of its own; blocking work (the index, the
//! queue folders, an upload's file) goes to its blocking threads. The read-only dashboard
//! (`crate::dashboard`) is served by the same runtime on a listener of its own.

use satcast_daemon::http::{BoundedListener, HTTP_CONNECTIONS_MAX, HTTP_IDLE_TIMEOUT};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::BodyExt;
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
/// Threads for blocking work (index reads, upload writes, command answers): one per
/// upload, and a few for everything else.
const BLOCKING_THREADS_MAX: usize = UPLOADS_MAX + 4;
/// Chunks of an upload read from the network but not yet written to its file.
const UPLOAD_CHUNKS_PENDING_MAX: usize = 16;
/// How often the servers look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

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
    ensure_token_at(&token_path(state_dir))
}

/// Where the viewer credential lives: `dashboard.viewer_token_file`, else
/// `<state_dir>/viewer.token`.
pub fn viewer_token_path(config: &crate::UplinkConfig) -> PathBuf {
    config.dashboard.as_ref().and_then(|d| d.viewer_token_file.clone()).unwrap_or_else(|| config.state_dir.join("viewer.token"))
}

/// The viewer credential, created (random, mode 0600) on first use: it reads the dashboard
/// and /metrics, and nothing else.
pub fn ensure_viewer_token(config: &crate::UplinkConfig) -> Result<String, ControlError> {
    ensure_token_at(&viewer_token_path(config))
}

fn ensure_token_at(path: &Path) -> Result<String, ControlError> {
    let path = path.to_owned();
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
    /// The operator token.
    pub token: String,
    /// The viewer credential: the dashboard's reads and its /metrics, nothing else.
    pub viewer_token: String,
    /// Where commands go.
    pub commands: SyncSender<Command>,
    /// The largest payload accepted, in bytes (what the FEC settings can carry).
    pub object_bytes_max: u64,
    /// Uploads running now, at most [`UPLOADS_MAX`].
    pub uploads: Arc<std::sync::atomic::AtomicUsize>,
    /// The longest a request body may stall between two reads.
    pub body_stall: Duration,
    /// Metrics, alarms and the carrier's history, shared with the datapath.
    pub shared: crate::dashboard::Shared,
}

/// What the control API and the dashboard are started with.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // holds the tokens, which must not end up in a log
pub struct Settings {
    /// The operator token.
    pub token: String,
    /// The largest payload accepted, in bytes.
    pub object_bytes_max: u64,
    /// The control API's address (loopback).
    pub listen: String,
    /// The dashboard's address, if it is served.
    pub dashboard_listen: Option<String>,
    /// The viewer credential the dashboard and its /metrics accept.
    pub viewer_token: String,
    /// The longest a request body (an upload) may stall between two reads.
    pub body_stall: Duration,
}

/// Starts the API (and the dashboard) on a thread of its own, running a small tokio
/// runtime; returns the receiving end of the command channel. The listeners are bound
/// here, so a busy port is an error at start, not a log line later.
pub fn start(
    settings: Settings,
    store: Arc<UplinkStore>,
    queue: Queue,
    live: LiveStates,
    shared: crate::dashboard::Shared,
    stop: Arc<AtomicBool>,
) -> Result<Receiver<Command>, ControlError> {
    let bind = |addr: &str| {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| ControlError::Bind { addr: addr.to_owned(), why: e.to_string() })?;
        listener.set_nonblocking(true).map_err(|e| ControlError::Bind { addr: addr.to_owned(), why: e.to_string() })?;
        Ok::<_, ControlError>(listener)
    };
    let control_listener = bind(&settings.listen)?;
    let dashboard_listener = settings.dashboard_listen.as_deref().map(bind).transpose()?;
    let (commands, rx) = sync_channel(COMMANDS_PENDING_MAX);
    queue.remove_stale_uploads();
    let uploads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let context = Context {
        store,
        queue,
        live,
        token: settings.token,
        viewer_token: settings.viewer_token,
        commands,
        object_bytes_max: settings.object_bytes_max,
        uploads,
        body_stall: settings.body_stall,
        shared,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .thread_name("control")
        .build()
        .map_err(|e| ControlError::Bind { addr: settings.listen.clone(), why: format!("cannot start the runtime: {e}") })?;
    let listen = settings.listen.clone();
    let dashboard_listen = settings.dashboard_listen.clone();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            runtime.block_on(async move {
                let stopped = {
                    let stop = stop.clone();
                    move || {
                        let stop = stop.clone();
                        async move {
                            while !stop.load(Ordering::Relaxed) {
                                tokio::time::sleep(STOP_POLL).await;
                            }
                        }
                    }
                };
                let control = match tokio::net::TcpListener::from_std(control_listener) {
                    Ok(listener) => listener,
                    Err(error) => return warn!(%error, "control API cannot listen"),
                };
                info!(%listen, "control API listening");
                let app = router(context.clone());
                let shutdown = stopped();
                // Longer than an upload's stall, so a stalled upload is answered, not cut.
                let idle = (context.body_stall * 2).max(HTTP_IDLE_TIMEOUT);
                let control = BoundedListener::with_limits(control, HTTP_CONNECTIONS_MAX, idle);
                let control = tokio::spawn(async move { axum::serve(control, app).with_graceful_shutdown(shutdown).await });
                if let Some(listener) = dashboard_listener.and_then(|l| tokio::net::TcpListener::from_std(l).ok()) {
                    info!(listen = dashboard_listen.as_deref().unwrap_or(""), "dashboard listening");
                    let app = crate::dashboard::router(context.clone());
                    let shutdown = stopped();
                    let listener = BoundedListener::new(listener);
                    tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(shutdown).await });
                }
                tokio::spawn(crate::dashboard::background(context, stop.clone()));
                let _ = control.await;
            })
        })
        .map_err(|e| ControlError::Bind { addr: settings.listen.clone(), why: e.to_string() })?;
    Ok(rx)
}

/// The operators' API: every endpoint behind the operator token, but `/health` and
/// `/metrics` (loopback only, like the rest).
fn router(context: Context) -> Router {
    Router::new()
        .route("/health", get(crate::dashboard::health))
        .route("/metrics", get(crate::dashboard::metrics_open))
        .fallback(handle)
        .with_state(context)
}

/// A JSON answer.
pub fn respond(status: u16, body: &impl Serialize) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// `{"error": message}` with a status.
pub fn error(status: u16, message: &str) -> Response {
    respond(status, &serde_json::json!({ "error": message }))
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in constant time.
pub fn bearer_is(headers: &HeaderMap, token: &str) -> bool {
    let expected = format!("Bearer {token}");
    headers.get_all(header::AUTHORIZATION).iter().any(|value| constant_time_eq(value.as_bytes(), expected.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_id(text: &str) -> Option<u64> {
    text.parse::<ObjectId>().ok().map(u64::from)
}

/// Runs blocking work (the index, the queue folders) off the runtime's thread.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok()
}

/// The next chunk of a body: its bytes, `None` at its end, or why it failed (nothing
/// arrived for `stall`: a client that stopped sending does not hold its slot forever).
async fn next_chunk(body: &mut Body, stall: Duration) -> Result<Option<Bytes>, String> {
    loop {
        match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => return Err(format!("nothing arrived for {} s", stall.as_secs())),
            Ok(None) => return Ok(None),
            Ok(Some(Err(failed))) => return Err(failed.to_string()),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Reads a small body, at most [`REQUEST_BYTES_MAX`] bytes.
async fn small_body(body: &mut Body, stall: Duration) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = next_chunk(body, stall).await? {
        if (bytes.len() + chunk.len()) as u64 > REQUEST_BYTES_MAX {
            return Err(format!("the body is larger than {REQUEST_BYTES_MAX} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

async fn handle(State(context): State<Context>, request: Request) -> Response {
    let (parts, mut body) = request.into_parts();
    if !bearer_is(&parts.headers, &context.token) {
        return error(401, "missing or wrong token (Authorization: Bearer <state_dir/control.token>)");
    }
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = parts.method.clone();
    match (method, segments.as_slice()) {
        (Method::POST, ["v1", "broadcasts"]) => submit(&context, &parts.headers, body, &query).await,
        (Method::GET, ["v1", "broadcasts"]) => {
            let reading = context.clone();
            match blocking(move || list(&reading)).await {
                Some(Ok(list)) => respond(200, &list),
                Some(Err(message)) => error(503, &message),
                None => error(503, "the daemon is busy; try again"),
            }
        }
        (Method::GET, ["v1", "broadcasts", id]) => {
            let Some(object_id) = parse_id(id) else { return error(400, "a broadcast id is 16 hex digits") };
            let reading = context.clone();
            match blocking(move || status(&reading, object_id)).await {
                Some(Ok(Some(status))) => respond(200, &status),
                Some(Ok(None)) => error(404, &format!("unknown broadcast {id}")),
                Some(Err(message)) => error(503, &message),
                None => error(503, "the daemon is busy; try again"),
            }
        }
        (Method::POST, ["v1", "broadcasts", id, action @ ("cancel" | "reair")]) => {
            let Some(object_id) = parse_id(id) else { return error(400, "a broadcast id is 16 hex digits") };
            let body = match small_body(&mut body, context.body_stall).await {
                Ok(body) => String::from_utf8_lossy(&body).into_owned(),
                Err(why) => return error(400, &format!("unreadable body: {why}")),
            };
            let (reply, answer) = sync_channel(1);
            let command = if *action == "cancel" {
                Command::Cancel { object_id, reply }
            } else {
                let body = serde_json::from_str::<serde_json::Value>(&body).ok();
                let to = body.as_ref().and_then(|v| v.get("to").and_then(|t| t.as_str()).map(str::to_owned));
                let prefixes = match to.map(|t| satcast_protocol::manifest::parse_targets(&t)) {
                    Some(Ok(p)) => Some(p),
                    Some(Err(e)) => return error(400, &format!("bad prefixes: {e}")),
                    None => None,
                };
                let deadline_unix_secs = match body.as_ref().and_then(|v| v.get("deadline_unix_secs")) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(deadline) => match deadline.as_u64() {
                        Some(secs) => Some(secs),
                        None => return error(400, "deadline_unix_secs is unix seconds"),
                    },
                };
                Command::Reair { object_id, prefixes, deadline_unix_secs, reply }
            };
            if context.commands.try_send(command).is_err() {
                return error(503, "the daemon is busy; try again");
            }
            match blocking(move || answer.recv_timeout(COMMAND_TIMEOUT)).await {
                Some(Ok(Ok(value))) => respond(200, &value),
                Some(Ok(Err((status, message)))) => error(status, &message),
                _ => error(503, "the daemon did not answer in time"),
            }
        }
        (Method::GET, ["v1", "receivers"]) => {
            let mut silent_for = None;
            let mut all = false;
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("silent_for", secs)) => match secs.parse() {
                        Ok(secs) => silent_for = Some(secs),
                        Err(_) => return error(400, "silent_for is a number of seconds"),
                    },
                    Some(("all", value)) => all = value == "1" || value == "true",
                    _ => return error(400, &format!("unknown parameter {}", admit::echo(pair))),
                }
            }
            let store = context.store.clone();
            match blocking(move || store.receivers()).await {
                Some(Ok(registry)) => {
                    let registry: BTreeMap<_, _> = registry.into_iter().collect();
                    respond(200, &report::receivers(&registry, wall_unix_secs(), silent_for, all))
                }
                Some(Err(e)) => error(503, &e.to_string()),
                None => error(503, "the daemon is busy; try again"),
            }
        }
        _ => error(404, &format!("no such endpoint: {path}")),
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
    // The queue before the records: a job leaves the queue only after its record is
    // written, so one that starts airing (or ends) between the two reads is in one of them.
    let pending = context.queue.pending().map_err(|e| e.to_string())?;
    let records = context.store.broadcasts().map_err(|e| e.to_string())?;
    for (object_id, record) in &records {
        out.push(recorded(context, *object_id, record, &registry, now)?.summary);
    }
    // Queued jobs that have not started airing yet.
    for job in pending.into_iter().flatten() {
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

/// `GET /v1/broadcasts`, for the dashboard.
pub fn broadcast_list(context: &Context) -> Result<Vec<BroadcastSummary>, String> {
    list(context)
}

/// `GET /v1/broadcasts/{id}`, for the dashboard.
pub fn broadcast_status(context: &Context, object_id: u64) -> Result<Option<report::BroadcastStatus>, String> {
    status(context, object_id)
}

/// A recorded broadcast's state as `list` shows it.
pub fn state_now(context: &Context, object_id: u64, record: &satcast_store::BroadcastRecord, now: u64) -> String {
    let job = context.queue.find(&ObjectId(object_id).to_string()).map(|(job, _)| job);
    state_of(context, object_id, record.outcome.as_deref(), job.as_ref(), "airing", now)
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
        if !matches!(
            key,
            "kind" | "name" | "to" | "version" | "priority" | "not_before" | "deadline" | "feedback" | "check" | "size" | "confidential"
        ) {
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
        confidential: match params.get("confidential").map(String::as_str) {
            None => None,
            Some("1" | "true") => Some(true),
            Some("0" | "false") => Some(false),
            Some(other) => return Err(format!("confidential is 1 or 0, not {:?}", admit::echo(other))),
        },
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
/// largest object, with the stall bound on each read): a client still sending reads the
/// answer, not a reset. A large body is drained only on a free upload slot, so at most
/// [`UPLOADS_MAX`] connections are kept for it; without one the answer goes at once and the
/// connection closes.
async fn refuse(context: &Context, headers: &HeaderMap, mut body: Body, status: u16, message: &str) -> Response {
    let sent = content_length(headers).unwrap_or(0).min(context.object_bytes_max);
    let slot = if sent <= REQUEST_BYTES_MAX { None } else { UploadSlot::take(&context.uploads) };
    if sent <= REQUEST_BYTES_MAX || slot.is_some() {
        let mut drained = 0u64;
        while drained < sent {
            match next_chunk(&mut body, context.body_stall).await {
                Ok(Some(chunk)) => drained += chunk.len() as u64,
                Ok(None) | Err(_) => break,
            }
        }
    }
    drop(slot);
    error(status, message)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

/// `POST /v1/broadcasts`: everything but the body is checked first (the CLI asks with
/// `check=1` before it sends the file, so a refusal costs no transfer); the body then
/// streams into the queue folder, written by a blocking task, so a large file neither holds
/// the control API nor touches the pacing thread.
async fn submit(context: &Context, headers: &HeaderMap, body: Body, query: &str) -> Response {
    let UploadParams { job, version, check, size } = match upload_params(query) {
        Ok(params) => params,
        Err(message) => return refuse(context, headers, body, 400, &message).await,
    };
    let size = match (check, size, content_length(headers)) {
        (true, Some(size), _) => size,
        (true, None, _) => return refuse(context, headers, body, 400, "a check needs size=BYTES").await,
        (false, _, Some(size)) => size,
        (false, _, None) => return refuse(context, headers, body, 411, "Content-Length is required: the file's size in bytes").await,
    };
    let checking = context.clone();
    let checked = {
        let job = job.clone();
        blocking(move || admissible(&checking, &job, version, size)).await
    };
    match checked {
        Some(Ok(())) => {}
        Some(Err((status, message))) => return refuse(context, headers, body, status, &message).await,
        None => return refuse(context, headers, body, 503, "the daemon is busy; try again").await,
    }
    if check {
        return respond(200, &serde_json::json!({ "admissible": true }));
    }
    let Some(slot) = UploadSlot::take(&context.uploads) else {
        return refuse(context, headers, body, 503, &format!("{UPLOADS_MAX} uploads are running; try again")).await;
    };
    let response = upload(context.queue.clone(), body, job, version, size, context.body_stall).await;
    drop(slot);
    response
}

/// Streams the body into an upload file, then queues the job; answers the id. A body that
/// ends early, fails or stalls for `stall` queues nothing (the upload file is removed).
async fn upload(queue: Queue, mut body: Body, job: Job, version: Version, size: u64, stall: Duration) -> Response {
    let (chunks, mut incoming) = tokio::sync::mpsc::channel::<Bytes>(UPLOAD_CHUNKS_PENDING_MAX);
    let opening = queue.clone();
    let object_id = job.object_id.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<crate::queue::Upload, (u16, String)> {
        let mut file = opening.upload(&object_id).map_err(|failed| (503, failed.to_string()))?;
        while let Some(chunk) = incoming.blocking_recv() {
            if let Err(failed) = file.file().write_all(&chunk) {
                return Err((503, format!("the upload failed: {failed}; nothing was queued")));
            }
        }
        Ok(file)
    });
    let mut copied = 0u64;
    let mut failure = None;
    while copied < size {
        match next_chunk(&mut body, stall).await {
            Ok(Some(mut chunk)) => {
                let room = usize::try_from(size - copied).unwrap_or(usize::MAX);
                chunk.truncate(room);
                copied += chunk.len() as u64;
                // The writer is gone only if it failed: its error is the answer.
                if chunks.send(chunk).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(why) => {
                failure = Some(why);
                break;
            }
        }
    }
    drop(chunks);
    let file = match writer.await {
        Ok(Ok(file)) => file,
        Ok(Err((status, message))) => return error(status, &message),
        Err(failed) => return error(503, &format!("the upload failed: {failed}; nothing was queued")),
    };
    if let Some(why) = failure {
        info!(object = %job.object_id, copied, size, %why, "upload abandoned");
        return error(408, &format!("the upload failed after {copied} of {size} bytes: {why}; nothing was queued"));
    }
    if copied != size {
        return error(400, &format!("the upload ended after {copied} of {size} bytes; nothing was queued"));
    }
    let submitted = blocking(move || {
        let result = queue.submit_upload(job, version, file);
        if let Ok(job) = &result {
            info!(object = %job.object_id, kind = %job.kind, name = %job.name, version = job.version, size, "queued");
        }
        result
    })
    .await;
    match submitted {
        Some(Ok(job)) => respond(200, &serde_json::json!({ "id": job.object_id, "version": job.version })),
        Some(Err(refused @ QueueError::VersionNotAbove { .. })) => error(409, &refused.to_string()),
        Some(Err(failed)) => error(503, &failed.to_string()),
        None => error(503, "the upload could not be queued; nothing was queued"),
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
