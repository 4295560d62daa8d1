//! The receiver's `/metrics` (Prometheus text) and `/health`, on `metrics.listen`
//! (loopback by default). Both are read from the status the storage worker writes every
//! second (`status.json`, [`crate::status::DaemonStatus`]), so they say exactly what
//! `satcast-receiver status` says; the server runs on a thread of its own with a small
//! tokio runtime and never touches the receive thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tracing::{info, warn};

use crate::status::{DaemonStatus, STATUS_STALE_AFTER};

/// The latest status the storage worker wrote.
pub type Latest = Arc<Mutex<Option<Arc<DaemonStatus>>>>;

type Labels = Vec<(&'static str, String)>;

/// How often the server looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Starts the server; a port that cannot be bound is a warning, not a reason to stop
/// receiving (the county's files matter more than its graphs).
pub fn start(listen: &str, latest: Latest, stop: Arc<AtomicBool>) {
    let listener = match listen.parse::<SocketAddr>().map_err(|e| e.to_string()).and_then(|addr| {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(listener)
    }) {
        Ok(listener) => listener,
        Err(error) => return warn!(%listen, %error, "cannot serve /metrics and /health; receiving goes on without them"),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return warn!(%error, "cannot start the metrics runtime"),
    };
    let listen = listen.to_owned();
    let spawned = std::thread::Builder::new().name("metrics".into()).spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            info!(%listen, "serving /metrics and /health");
            let app = Router::new().route("/metrics", get(metrics)).route("/health", get(health)).with_state(latest);
            let stopped = async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(STOP_POLL).await;
                }
            };
            let listener = satcast_daemon::http::BoundedListener::new(listener);
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                warn!(%error, "the metrics server stopped");
            }
        })
    });
    if let Err(error) = spawned {
        warn!(%error, "cannot start the metrics thread");
    }
}

fn latest(state: &Latest) -> Option<Arc<DaemonStatus>> {
    state.lock().ok().and_then(|l| l.clone())
}

async fn metrics(State(state): State<Latest>) -> Response {
    match latest(&state) {
        Some(status) => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], render(&status)).into_response()
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "starting: no status yet\n").into_response(),
    }
}

/// `GET /health`: ok while the status is fresh (the datapath and the storage worker go
/// round) and heartbeats arrive; 503 otherwise, with why.
async fn health(State(state): State<Latest>) -> Response {
    let Some(status) = latest(&state) else {
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "application/json")], r#"{"status":"starting"}"#).into_response();
    };
    let age_ms = satcast_daemon::clock::wall_unix_ms().saturating_sub(status.updated_unix_ms);
    let (code, word) = if age_ms > STATUS_STALE_AFTER.as_millis() as u64 {
        (StatusCode::SERVICE_UNAVAILABLE, "stalled")
    } else if status.heartbeat.stale {
        (StatusCode::SERVICE_UNAVAILABLE, "no_heartbeat")
    } else {
        (StatusCode::OK, "ok")
    };
    let body = serde_json::json!({ "status": word, "status_age_ms": age_ms, "heartbeat_age_ms": status.heartbeat.age_ms });
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn gauge(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: u64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, gauge),
        None => registry.register(name, help, gauge),
    }
}

fn counter(registry: &mut Registry, name: &str, help: &str, values: &[(&'static str, &str, u64)]) {
    let family = Family::<Labels, Counter>::default();
    for (label, value, count) in values {
        family.get_or_create(&vec![(*label, (*value).to_owned())]).inc_by(*count);
    }
    registry.register(name, help, family);
}

/// The text exposition of one status, named by the Prometheus conventions.
pub fn render(status: &DaemonStatus) -> String {
    let mut registry = Registry::with_prefix("satcast_receiver");
    let r = &status.reception;
    counter(
        &mut registry,
        "datagrams",
        "Datagrams received from the downlink, by verdict",
        &[("verdict", "accepted", r.datagrams.saturating_sub(r.dropped)), ("verdict", "dropped", r.dropped)],
    );
    counter(
        &mut registry,
        "symbols",
        "DATA symbols, by what became of them",
        &[
            ("verdict", "kept", r.symbols_kept),
            ("verdict", "ignored", r.symbols_ignored),
            ("verdict", "forged", r.symbols_forged),
            ("verdict", "unverified", r.symbols_unverified),
            ("verdict", "unverified_dropped", r.symbols_unverified_dropped),
        ],
    );
    counter(
        &mut registry,
        "symbol_lists",
        "Signed symbol lists (source authentication), by verdict",
        &[
            ("verdict", "accepted", r.symbol_lists_accepted),
            ("verdict", "refused", r.symbol_lists_refused),
            ("verdict", "unknown_signer", r.symbol_lists_unknown_signer),
            ("verdict", "held", r.symbol_lists_held),
            ("verdict", "held_accepted", r.symbol_lists_held_accepted),
            ("verdict", "unchecked", r.symbol_lists_unchecked),
        ],
    );
    counter(
        &mut registry,
        "unverified_decodes",
        "Block decodes that used unverified symbols, by outcome",
        &[("outcome", "verified", r.unverified_decodes), ("outcome", "failed", r.unverified_decodes_failed)],
    );
    counter(
        &mut registry,
        "replays",
        "Genuine datagrams seen again, by type: counted, not checked or logged again",
        &[
            ("type", "heartbeat", r.heartbeats_replayed),
            ("type", "revocation", r.revocations_replayed),
            ("type", "round", r.round_markers_repeated),
            ("type", "complete", r.completes_repeated),
            ("type", "manifest_of_ended_broadcast", r.manifests_ended),
            ("type", "symbol_list", r.symbol_lists_replayed),
            ("type", "unlisted_round", r.round_markers_unlisted),
        ],
    );
    counter(
        &mut registry,
        "partials_ended",
        "Partial objects of broadcasts the uplink no longer airs, dropped to make room",
        &[("reason", "not_live", r.partials_ended)],
    );
    counter(
        &mut registry,
        "network_key_rotations",
        "Over-the-air network-key rotations (NETWORK KEY datagrams), by what became of them",
        &[
            ("event", "announced", r.network_key_announcements),
            ("event", "refused", r.network_key_refused),
            ("event", "learned", r.network_keys_learned),
            ("event", "activated", r.network_keys_activated),
        ],
    );
    let signatures = Counter::<u64>::default();
    signatures.inc_by(r.signatures_checked);
    registry.register("signatures_checked", "Signed messages whose signatures were checked", signatures);
    let lost = Counter::<u64>::default();
    lost.inc_by(r.events_lost);
    registry.register("events_lost", "Events the datapath did not take in time", lost);
    let delivered = status.cached.iter().filter(|c| c.delivered).count() as u64;
    gauge(&mut registry, "objects_cached", "Verified objects in the cache", None, status.cached_total as u64);
    gauge(&mut registry, "objects_delivered", "Cached objects that are the delivered version of their name", None, delivered);
    gauge(&mut registry, "objects_partial", "Objects being received", None, status.partial.len() as u64);
    gauge(&mut registry, "objects_stuck", "Objects for this county not delivered yet", None, status.stuck_total as u64);
    gauge(&mut registry, "deliveries_waiting", "Completed objects waiting to be delivered", None, status.deliveries_waiting as u64);
    gauge(&mut registry, "spool", "Spooled symbols and partial objects", Some(Unit::Bytes), status.disk.spool_bytes);
    gauge(&mut registry, "spool_limit", "limits.spool_bytes_max", Some(Unit::Bytes), status.disk.spool_bytes_max);
    gauge(&mut registry, "cache", "Cached objects", Some(Unit::Bytes), status.disk.cache_bytes);
    gauge(&mut registry, "cache_limit", "limits.cache_bytes_max", Some(Unit::Bytes), status.disk.cache_bytes_max);
    if let Some(free) = status.disk.free_bytes {
        gauge(&mut registry, "disk_free", "Free space on the state directory's file system", Some(Unit::Bytes), free);
    }
    gauge(&mut registry, "outbox_messages", "Feedback waiting for the uplink", None, status.outbox.messages as u64);
    if let Some(age_ms) = status.heartbeat.age_ms {
        gauge(&mut registry, "heartbeat_age", "Seconds since the last valid uplink heartbeat", Some(Unit::Seconds), age_ms / 1000);
    }
    gauge(
        &mut registry,
        "heartbeat_stale",
        "1 while no heartbeat arrived within heartbeat_warn_after_secs",
        None,
        u64::from(status.heartbeat.stale),
    );
    let succeeded = status.hooks.recent.iter().filter(|h| h.success).count() as u64;
    let failed = status.hooks.recent.len() as u64 - succeeded;
    let hooks = Family::<Labels, Gauge>::default();
    hooks.get_or_create(&vec![("outcome", "succeeded".to_owned())]).set(i64::try_from(succeeded).unwrap_or(i64::MAX));
    hooks.get_or_create(&vec![("outcome", "failed".to_owned())]).set(i64::try_from(failed).unwrap_or(i64::MAX));
    registry.register("hook_results_recent", "Outcomes of the latest post-receive hooks (the ones status lists)", hooks);
    gauge(&mut registry, "hooks_queued", "Post-receive hooks waiting or running", None, status.hooks.queued as u64);
    gauge(&mut registry, "start_time", "When the daemon started, unix seconds", Some(Unit::Seconds), status.started_unix_ms / 1000);
    let mut text = String::new();
    if encode(&mut text, &registry).is_err() {
        text.clear();
    }
    text
}
