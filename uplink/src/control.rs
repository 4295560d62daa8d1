//! The control API: HTTP and JSON on loopback, every request carrying the token from
//! `<state_dir>/control.token` as `Authorization: Bearer <token>`. The CLI uses it, and a
//! dashboard can. Reads come straight from the index; changes (cancel, re-air) go to the
//! datapath, which owns the broadcast machine, and are answered once done.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | /v1/broadcasts | | `[BroadcastSummary]` |
//! | GET | /v1/broadcasts/{id} | | `BroadcastStatus` |
//! | POST | /v1/broadcasts/{id}/cancel | | `{"cancelled": id}` |
//! | POST | /v1/broadcasts/{id}/reair | `{"to": "41,4201", "deadline_unix_secs": n}`, either optional | `{"reaired": id, "targets": n}` |
//! | GET | /v1/receivers?silent_for=SECS&all=1 | | `[ReceiverSummary]` |
//!
//! Errors are `{"error": "..."}` with status 400 (bad request), 401 (token), 404 (unknown
//! id), 409 (not possible now) or 503 (the daemon is busy).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use satcast_daemon::clock::wall_unix_secs;
use satcast_protocol::ObjectId;
use satcast_store::UplinkStore;
use serde::Serialize;
use thiserror::Error;
use tracing::{info, warn};

use crate::queue::Queue;
use crate::report;

/// The largest request body.
pub const REQUEST_BYTES_MAX: u64 = 64 * 1024;
/// Commands waiting for the datapath.
pub const COMMANDS_PENDING_MAX: usize = 64;
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

/// The state the datapath publishes for reads, per broadcast id: "preparing" (being read,
/// hashed and signed), "airing" or "idle".
pub type LiveStates = Arc<Mutex<BTreeMap<u64, String>>>;

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
}

/// Starts the API on its own thread; returns the receiving end of the command channel.
pub fn start(
    listen: &str,
    store: Arc<UplinkStore>,
    queue: Queue,
    live: LiveStates,
    token: String,
    stop: Arc<AtomicBool>,
) -> Result<Receiver<Command>, ControlError> {
    let server = tiny_http::Server::http(listen).map_err(|e| ControlError::Bind { addr: listen.to_owned(), why: e.to_string() })?;
    let (commands, rx) = sync_channel(COMMANDS_PENDING_MAX);
    let context = Context { store, queue, live, token, commands };
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

fn state_of(context: &Context, object_id: u64, outcome: &Option<String>) -> String {
    match outcome {
        Some(outcome) => outcome.clone(),
        None => context.live.lock().ok().and_then(|l| l.get(&object_id).cloned()).unwrap_or_else(|| "airing".into()),
    }
}

fn list(context: &Context) -> Result<Vec<report::BroadcastSummary>, String> {
    let registry: BTreeMap<_, _> = context.store.receivers().map_err(|e| e.to_string())?.into_iter().collect();
    let mut out = Vec::new();
    let records = context.store.broadcasts().map_err(|e| e.to_string())?;
    for (object_id, record) in &records {
        let ledger = context.store.ledger(*object_id).map_err(|e| e.to_string())?;
        let state = state_of(context, *object_id, &record.outcome);
        out.push(report::status(*object_id, record, &state, &ledger, &registry).summary);
    }
    // Queued jobs that have not started airing yet.
    for job in context.queue.pending().map_err(|e| e.to_string())?.into_iter().flatten() {
        let Ok(object_id) = job.object_id() else { continue };
        if records.iter().any(|(id, _)| *id == object_id) {
            continue;
        }
        out.push(report::BroadcastSummary {
            id: object_id,
            kind: job.kind.clone(),
            name: job.name.clone(),
            version: job.version,
            size_bytes: std::fs::metadata(context.queue.payload_path(&job.object_id)).map_or(0, |m| m.len()),
            priority: job.priority.clone(),
            to: job.targets.clone(),
            state: context.live.lock().ok().and_then(|l| l.get(&object_id).cloned()).unwrap_or_else(|| "queued".into()),
            targeted: 0,
            delivered: 0,
            in_progress: 0,
            silent: 0,
            rejected: 0,
            started_unix_secs: 0,
        });
    }
    report::sort_by_time(&mut out);
    Ok(out)
}

fn status(context: &Context, object_id: u64) -> Result<Option<report::BroadcastStatus>, String> {
    let Some(record) = context.store.broadcast(object_id).map_err(|e| e.to_string())? else {
        // Queued, not started: known, but nothing to count yet.
        return Ok(list(context)?.into_iter().find(|s| s.id == object_id).map(|summary| report::BroadcastStatus {
            summary,
            provinces: Vec::new(),
            lagging: Vec::new(),
            hooks_failed: Vec::new(),
            delivered: Vec::new(),
        }));
    };
    let registry: BTreeMap<_, _> = context.store.receivers().map_err(|e| e.to_string())?.into_iter().collect();
    let ledger = context.store.ledger(object_id).map_err(|e| e.to_string())?;
    let state = state_of(context, object_id, &record.outcome);
    Ok(Some(report::status(object_id, &record, &state, &ledger, &registry)))
}
