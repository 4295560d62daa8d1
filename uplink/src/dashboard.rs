//! The read-only web dashboard, `/health` and `/metrics`: served by the control API's
//! runtime on `dashboard.listen`, every byte of it built into the binary (plain HTML, CSS
//! and JavaScript; no CDN, no build step). The page itself holds no data; its JSON reads
//! (`/dashboard/api/...`) and `/metrics` need the viewer credential
//! (`Authorization: Bearer <viewer.token>`), which the control API refuses: nothing here
//! can change anything. docs/operations.md ("The dashboard") describes it.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | /dashboard/ | the page (its key in the fragment: `#key=<viewer token>`) |
//! | GET | /dashboard/api/overview[?broadcast=ID] | provinces, broadcasts, alarms, carrier history |
//! | GET | /dashboard/api/areas/{code}[?broadcast=ID] | a province's prefectures, or a prefecture's counties |
//! | GET | /dashboard/api/broadcasts/{id} | one broadcast, as `GET /v1/broadcasts/{id}` |
//! | GET | /metrics | Prometheus text |
//! | GET | /health | `{"status": "ok"}`, 503 when the pacing loop stalls (no credential) |
//!
//! The same runtime also looks at the alarms' conditions and samples the carrier every few
//! seconds ([`background`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use satcast_daemon::clock::{wall_unix_ms, wall_unix_secs};
use satcast_store::ReceiverRecord;
use serde::Serialize;

use crate::alarms::{Alarm, AlarmKind, Alarms};
use crate::config::{AlarmsConfig, UplinkConfig};
use crate::control::{Context, bearer_is, blocking, error, respond};
use crate::metrics::{CLASSES, UplinkMetrics};
use crate::report::{self, BroadcastSummary};

/// Carrier samples kept: an hour at [`CARRIER_SAMPLE_INTERVAL`].
pub const CARRIER_SAMPLES_MAX: usize = 720;
/// How often the bytes on air per class are sampled for the chart.
pub const CARRIER_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// Counties whose loss estimate is kept (more than the division table has).
pub const LOSS_COUNTIES_MAX: usize = 8192;
/// Broadcasts whose counts make up "now" on the nation view: those not ended yet.
pub const CURRENT_BROADCASTS_MAX: usize = 64;
/// The pacing loop is stalled if it has not gone round for this long (`/health`).
const LOOP_STALE_MS: u64 = 5_000;

const INDEX_HTML: &str = include_str!("../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../assets/dashboard/app.css");
const CITIES_CSV: &str = include_str!("../../data/divisions/cities.csv");
const PROVINCES_CSV: &str = include_str!("../../data/divisions/provinces.csv");

/// What the datapath, the storage worker and the control runtime share for the dashboard.
#[derive(Clone, Debug)]
pub struct Shared {
    /// The metrics.
    pub metrics: Arc<UplinkMetrics>,
    /// The alarms.
    pub alarms: Arc<Mutex<Alarms>>,
    /// Bits per second on the carrier per class, sampled.
    pub carrier: Arc<Mutex<CarrierHistory>>,
    /// Each county's loss estimate from its last progress report (1 - symbols it received
    /// / symbols aired by then).
    pub losses: Arc<Mutex<HashMap<String, f64>>>,
    /// The alarm thresholds.
    pub alarm_config: AlarmsConfig,
    /// The carrier's configured rate.
    pub link_rate_bits_per_sec: u64,
    /// The key directory (the signing key's validity).
    pub keys_dir: std::path::PathBuf,
}

impl Shared {
    /// Everything empty, for a daemon about to start.
    pub fn new(config: &UplinkConfig) -> Shared {
        Shared {
            metrics: Arc::new(UplinkMetrics::new()),
            alarms: Arc::new(Mutex::new(Alarms::new(&config.alarms))),
            carrier: Arc::new(Mutex::new(CarrierHistory::default())),
            losses: Arc::new(Mutex::new(HashMap::new())),
            alarm_config: config.alarms.clone(),
            link_rate_bits_per_sec: config.downlink.link_rate_bits_per_sec,
            keys_dir: config.keys_dir.clone(),
        }
    }

    /// Records a county's loss estimate.
    pub fn set_loss(&self, county: &str, loss: f64) {
        if let Ok(mut losses) = self.losses.lock() {
            if losses.len() < LOSS_COUNTIES_MAX || losses.contains_key(county) {
                losses.insert(county.to_owned(), loss.clamp(0.0, 1.0));
            }
        }
    }

    /// An alarm event (a hook failure, a missed deadline), raised at the next check.
    pub fn alarm_event(&self, kind: AlarmKind, subject: String, text: String) {
        if let Ok(mut alarms) = self.alarms.lock() {
            alarms.event(kind, subject, text, wall_unix_secs());
        }
    }
}

/// The carrier's rate per class over the last hour.
#[derive(Debug, Default)]
pub struct CarrierHistory {
    last: Option<(u64, [u64; 5])>,
    samples: VecDeque<CarrierSample>,
}

/// One sample: the rate per class ([`CLASSES`]) since the one before.
#[derive(Debug, Clone, Serialize)]
pub struct CarrierSample {
    /// When, unix milliseconds.
    pub at_unix_ms: u64,
    /// Bits per second per class.
    pub bits_per_sec: [u64; 5],
}

impl CarrierHistory {
    /// Takes the byte counters at `now_unix_ms`.
    pub fn sample(&mut self, now_unix_ms: u64, bytes: [u64; 5]) {
        if let Some((at, before)) = self.last {
            let elapsed_ms = now_unix_ms.saturating_sub(at).max(1);
            let bits_per_sec = [0, 1, 2, 3, 4].map(|i| bytes[i].saturating_sub(before[i]).saturating_mul(8_000) / elapsed_ms);
            if self.samples.len() >= CARRIER_SAMPLES_MAX {
                self.samples.pop_front();
            }
            self.samples.push_back(CarrierSample { at_unix_ms: now_unix_ms, bits_per_sec });
        }
        self.last = Some((now_unix_ms, bytes));
    }
}

/// The dashboard's listener: the page, its reads, `/metrics` and `/health`; anything but
/// GET is refused.
pub fn router(context: Context) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/dashboard/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/dashboard/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/health", get(health))
        .route("/metrics", get(metrics_viewer))
        .fallback(api)
        .with_state(context)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// `GET /health`: ok while the pacing loop goes round.
pub async fn health(State(context): State<Context>) -> Response {
    let at = context.shared.metrics.loop_unix_ms.load(Ordering::Relaxed);
    let age_ms = wall_unix_ms().saturating_sub(at);
    if at > 0 && age_ms <= LOOP_STALE_MS {
        respond(200, &serde_json::json!({ "status": "ok" }))
    } else {
        respond(503, &serde_json::json!({ "status": "stalled", "loop_age_ms": age_ms }))
    }
}

/// The exposition, with the gauges about the queue and the registry read now.
async fn metrics_text(context: &Context) -> Response {
    let reading = context.clone();
    let _ = blocking(move || {
        queue_gauges(&reading);
        receiver_gauges(&reading, wall_unix_secs());
    })
    .await;
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], context.shared.metrics.render())
        .into_response()
}

/// `GET /metrics` on the control API's loopback listener: no credential.
pub async fn metrics_open(State(context): State<Context>) -> Response {
    metrics_text(&context).await
}

async fn metrics_viewer(State(context): State<Context>, request: Request) -> Response {
    if !bearer_is(request.headers(), &context.viewer_token) {
        return error(401, "missing or wrong viewer credential (Authorization: Bearer <viewer token>)");
    }
    metrics_text(&context).await
}

/// The JSON reads, behind the viewer credential.
async fn api(State(context): State<Context>, request: Request) -> Response {
    if request.method() != Method::GET {
        return error(405, "the dashboard is read-only: changes go through satcast-uplink with the operator token");
    }
    let path = request.uri().path().to_owned();
    let segments: Vec<String> = path.trim_matches('/').split('/').map(str::to_owned).collect();
    if segments.first().map(String::as_str) != Some("dashboard") || segments.get(1).map(String::as_str) != Some("api") {
        return error(404, &format!("no such page: {}", crate::admit::echo(&path)));
    }
    if !bearer_is(request.headers(), &context.viewer_token) {
        return error(401, "missing or wrong viewer credential (Authorization: Bearer <viewer token>)");
    }
    let mut scope = None;
    for pair in request.uri().query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("broadcast", id)) => match id.parse::<satcast_protocol::ObjectId>() {
                Ok(id) => scope = Some(u64::from(id)),
                Err(_) => return error(400, "a broadcast id is 16 hex digits"),
            },
            _ => return error(400, &format!("unknown parameter {}", crate::admit::echo(pair))),
        }
    }
    let reading = context.clone();
    let answer = blocking(move || -> Result<Response, (u16, String)> {
        let rest: Vec<&str> = segments.iter().skip(2).map(String::as_str).collect();
        match rest.as_slice() {
            ["overview"] => Ok(respond(200, &overview(&reading, scope)?)),
            ["areas", code] => Ok(respond(200, &area(&reading, code, scope)?)),
            ["broadcasts", id] => {
                let object_id =
                    id.parse::<satcast_protocol::ObjectId>().map_err(|_| (400u16, String::from("a broadcast id is 16 hex digits")))?;
                match crate::control::broadcast_status(&reading, u64::from(object_id)) {
                    Ok(Some(status)) => Ok(respond(200, &status)),
                    Ok(None) => Err((404, format!("unknown broadcast {id}"))),
                    Err(message) => Err((503, message)),
                }
            }
            _ => Err((404, "no such read".into())),
        }
    })
    .await;
    match answer {
        Some(Ok(response)) => response,
        Some(Err((status, message))) => error(status, &message),
        None => error(503, "the daemon is busy; try again"),
    }
}

/// Counts of one area (province, prefecture or county) over the broadcasts in scope.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AreaCounts {
    /// Division code.
    pub code: String,
    /// Its name.
    pub name: String,
    /// Counties waited for (summed over the broadcasts in scope).
    pub targeted: usize,
    /// Have it.
    pub delivered: usize,
    /// In progress or silent.
    pub lagging: usize,
    /// Refused it.
    pub refused: usize,
}

impl AreaCounts {
    fn add(&mut self, state: &str) {
        self.targeted += 1;
        match state {
            "delivered" => self.delivered += 1,
            "in_progress" | "silent" => self.lagging += 1,
            "refused" => self.refused += 1,
            _ => {}
        }
    }
}

/// How many counties are enrolled and heard from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReceiverCounts {
    /// Counties that ever said hello.
    pub enrolled: usize,
    /// Heard from within `alarms.county_silent_after_secs`.
    pub heard: usize,
    /// Enrolled, not heard from for that long.
    pub silent: usize,
}

/// The nation at a glance.
#[derive(Debug, Serialize)]
pub struct Overview {
    /// Now, unix seconds.
    pub now_unix_secs: u64,
    /// The broadcast the counts are about, or none for every current one.
    #[serde(with = "optional_id")]
    pub scope: Option<u64>,
    /// The broadcasts counted.
    pub counted: Vec<String>,
    /// Every province, with counts over the broadcasts counted.
    pub provinces: Vec<AreaCounts>,
    /// Every broadcast, as `list`.
    pub broadcasts: Vec<BroadcastSummary>,
    /// The registry in three numbers.
    pub receivers: ReceiverCounts,
    /// The silence threshold.
    pub silent_after_secs: u64,
    /// Standing alarms, newest first.
    pub alarms: Vec<Alarm>,
    /// The carrier's configured rate.
    pub link_rate_bits_per_sec: u64,
    /// Class names of the carrier samples.
    pub classes: [&'static str; 5],
    /// Bits per second per class over the last hour.
    pub carrier: Vec<CarrierSample>,
}

mod optional_id {
    pub fn serialize<S: serde::Serializer>(id: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => serializer.serialize_str(&satcast_protocol::ObjectId(*id).to_string()),
            None => serializer.serialize_none(),
        }
    }
}

/// One county, in a prefecture's list.
#[derive(Debug, Clone, Serialize)]
pub struct CountyView {
    /// Counts over the broadcasts in scope.
    #[serde(flatten)]
    pub counts: AreaCounts,
    /// Its state for the one broadcast in scope.
    pub state: Option<&'static str>,
    /// Last heard from, unix seconds.
    pub last_seen_unix_secs: Option<u64>,
    /// Software version from its last hello.
    pub software_version: Option<String>,
    /// Free bytes on its state disk.
    pub free_disk_bytes: Option<u64>,
    /// Seconds since its last heartbeat, when it last said hello.
    pub heartbeat_age_secs: Option<u64>,
    /// Loss estimate from its last progress report.
    pub loss_rate: Option<f64>,
}

/// A province's prefectures, or a prefecture's counties.
#[derive(Debug, Serialize)]
pub struct AreaView {
    /// The area's code.
    pub code: String,
    /// Its name.
    pub name: String,
    /// The province above a prefecture.
    pub parent: Option<AreaCounts>,
    /// Its prefectures (a province).
    pub prefectures: Vec<AreaCounts>,
    /// Its counties (a prefecture).
    pub counties: Vec<CountyView>,
    /// The broadcasts counted.
    pub counted: Vec<String>,
}

/// Province and prefecture names.
struct Names {
    provinces: BTreeMap<String, String>,
    prefectures: BTreeMap<String, String>,
}

fn names() -> &'static Names {
    static NAMES: OnceLock<Names> = OnceLock::new();
    NAMES.get_or_init(|| {
        let table = |csv: &str| -> BTreeMap<String, String> {
            csv.lines()
                .skip(1)
                .filter_map(|line| {
                    let mut fields = line.split(',');
                    Some((fields.next()?.trim().to_owned(), fields.next()?.trim().trim_matches('"').to_owned()))
                })
                .collect()
        };
        Names { provinces: table(PROVINCES_CSV), prefectures: table(CITIES_CSV) }
    })
}

/// Each county's states (`report::county_states`), one per broadcast counted.
type CountyStates = BTreeMap<String, Vec<&'static str>>;

/// Each county's states over the broadcasts in scope: the one named, or every one not
/// ended yet. Returns the ids counted and, per county, its states.
fn scoped_states(context: &Context, scope: Option<u64>) -> Result<(Vec<String>, CountyStates), (u16, String)> {
    let unavailable = |e: &dyn std::fmt::Display| (503u16, e.to_string());
    let records = context.store.broadcasts().map_err(|e| unavailable(&e))?;
    let now = wall_unix_secs();
    let mut counted = Vec::new();
    let mut states: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for (object_id, record) in records.iter().rev() {
        if scope.is_some_and(|id| id != *object_id) {
            continue;
        }
        let state = crate::control::state_now(context, *object_id, record, now);
        if scope.is_none() && (report::FINAL_STATES.contains(&state.as_str()) || counted.len() >= CURRENT_BROADCASTS_MAX) {
            continue;
        }
        let ledger = context.store.ledger(*object_id).map_err(|e| unavailable(&e))?;
        for (county, counted_state) in report::county_states(record, &state, &ledger) {
            states.entry(county.to_owned()).or_default().push(counted_state);
        }
        counted.push(satcast_protocol::ObjectId(*object_id).to_string());
    }
    if scope.is_some() && counted.is_empty() {
        return Err((404, "unknown broadcast".to_owned()));
    }
    Ok((counted, states))
}

fn counts_under(
    prefix_len: usize,
    states: &BTreeMap<String, Vec<&'static str>>,
    name: impl Fn(&str) -> String,
) -> BTreeMap<String, AreaCounts> {
    let mut out: BTreeMap<String, AreaCounts> = BTreeMap::new();
    for (county, list) in states {
        let Some(code) = county.get(..prefix_len) else { continue };
        let entry =
            out.entry(code.to_owned()).or_insert_with(|| AreaCounts { code: code.to_owned(), name: name(code), ..AreaCounts::default() });
        for state in list {
            entry.add(state);
        }
    }
    out
}

fn overview(context: &Context, scope: Option<u64>) -> Result<Overview, (u16, String)> {
    let now = wall_unix_secs();
    let (counted, states) = scoped_states(context, scope)?;
    let names = names();
    let mut by_province = counts_under(2, &states, |code| names.provinces.get(code).cloned().unwrap_or_default());
    // Every province, counted or not, so the table reads the same every day.
    for (code, name) in &names.provinces {
        by_province.entry(code.clone()).or_insert_with(|| AreaCounts { code: code.clone(), name: name.clone(), ..AreaCounts::default() });
    }
    let registry = context.store.receivers().map_err(|e| (503u16, e.to_string()))?;
    let silent_after = context.shared.alarm_config.county_silent_after_secs;
    let mut receivers = ReceiverCounts::default();
    for (_, record) in &registry {
        let Some(seen) = record.last_seen_unix_secs else { continue };
        receivers.enrolled += 1;
        if now.saturating_sub(seen) >= silent_after {
            receivers.silent += 1;
        } else {
            receivers.heard += 1;
        }
    }
    Ok(Overview {
        now_unix_secs: now,
        scope,
        counted,
        provinces: by_province.into_values().collect(),
        broadcasts: crate::control::broadcast_list(context).map_err(|e| (503u16, e))?,
        receivers,
        silent_after_secs: silent_after,
        alarms: context.shared.alarms.lock().map(|a| a.standing()).unwrap_or_default(),
        link_rate_bits_per_sec: context.shared.link_rate_bits_per_sec,
        classes: CLASSES,
        carrier: context.shared.carrier.lock().map(|c| c.samples.iter().cloned().collect()).unwrap_or_default(),
    })
}

fn area(context: &Context, code: &str, scope: Option<u64>) -> Result<AreaView, (u16, String)> {
    let names = names();
    let (counted, states) = scoped_states(context, scope)?;
    match code.len() {
        2 => {
            let name = names.provinces.get(code).cloned().ok_or_else(|| (404u16, format!("no province {}", crate::admit::echo(code))))?;
            let mut prefectures = counts_under(4, &states, |c| names.prefectures.get(c).cloned().unwrap_or_default());
            prefectures.retain(|c, _| c.starts_with(code));
            for (c, n) in names.prefectures.range(code.to_owned()..).take_while(|(c, _)| c.starts_with(code)) {
                if crate::divisions::has_county_under(c) {
                    prefectures.entry(c.clone()).or_insert_with(|| AreaCounts {
                        code: c.clone(),
                        name: n.clone(),
                        ..AreaCounts::default()
                    });
                }
            }
            Ok(AreaView {
                code: code.to_owned(),
                name,
                parent: None,
                prefectures: prefectures.into_values().collect(),
                counties: Vec::new(),
                counted,
            })
        }
        4 => {
            let name =
                names.prefectures.get(code).cloned().ok_or_else(|| (404u16, format!("no prefecture {}", crate::admit::echo(code))))?;
            let province = code.get(..2).unwrap_or("");
            let parent = AreaCounts {
                code: province.to_owned(),
                name: names.provinces.get(province).cloned().unwrap_or_default(),
                ..AreaCounts::default()
            };
            let registry: BTreeMap<String, ReceiverRecord> =
                context.store.receivers().map_err(|e| (503u16, e.to_string()))?.into_iter().collect();
            let losses = context.shared.losses.lock().map(|l| l.clone()).unwrap_or_default();
            let counties = registry
                .range(code.to_owned()..)
                .take_while(|(c, _)| c.starts_with(code))
                .map(|(county, record)| {
                    let mut counts = AreaCounts { code: county.clone(), name: record.name.clone(), ..AreaCounts::default() };
                    let list = states.get(county).cloned().unwrap_or_default();
                    for state in &list {
                        counts.add(state);
                    }
                    CountyView {
                        counts,
                        state: if scope.is_some() { list.first().copied() } else { None },
                        last_seen_unix_secs: record.last_seen_unix_secs,
                        software_version: record.software_version.clone(),
                        free_disk_bytes: record.free_disk_bytes,
                        heartbeat_age_secs: record.heartbeat_age_secs,
                        loss_rate: losses.get(county).copied(),
                    }
                })
                .collect();
            Ok(AreaView { code: code.to_owned(), name, parent: Some(parent), prefectures: Vec::new(), counties, counted })
        }
        _ => Err((400, "an area is a province (2 digits) or a prefecture (4 digits)".into())),
    }
}

/// The conditions true now: silent counties, counties without heartbeats or disk, the
/// signing key near its end.
fn conditions(context: &Context, now: u64) -> Vec<(AlarmKind, String, String)> {
    let config = &context.shared.alarm_config;
    let mut out = Vec::new();
    let registry = match context.store.receivers() {
        Ok(registry) => registry,
        Err(error) => {
            tracing::debug!(%error, "alarms: cannot read the registry");
            Vec::new()
        }
    };
    for (code, record) in &registry {
        let Some(seen) = record.last_seen_unix_secs else { continue };
        let quiet = now.saturating_sub(seen);
        let who = format!("{code} {}", record.name);
        if quiet >= config.county_silent_after_secs {
            out.push((
                AlarmKind::CountySilent,
                code.clone(),
                format!("county {who} silent for {} (last contact {})", report::span_text(quiet), report::utc_text(seen)),
            ));
            continue;
        }
        if let Some(age) = record.heartbeat_age_secs {
            if age >= config.county_heartbeat_age_max_secs {
                out.push((
                    AlarmKind::CountyNoHeartbeat,
                    code.clone(),
                    format!("county {who} has had no uplink heartbeat for {}", report::span_text(age)),
                ));
            }
        }
        if let Some(free) = record.free_disk_bytes.filter(|&free| free < config.county_free_disk_bytes_min) {
            out.push((
                AlarmKind::CountyDiskLow,
                code.clone(),
                format!("county {who} has {} free on its state disk", report::bytes_text(free)),
            ));
        }
    }
    if let Ok(keys) = crate::keys::list(&context.shared.keys_dir, now) {
        let warn_secs = config.key_expiry_warn_days.saturating_mul(86_400);
        for key in keys.keys.iter().filter(|k| k.active && !k.revoked) {
            if let Some(end) = key.not_after_unix_secs.filter(|&end| end.saturating_sub(now) <= warn_secs) {
                let left = end.saturating_sub(now);
                out.push((
                    AlarmKind::SigningKeyExpiring,
                    format!("signing key {}", key.serial),
                    format!(
                        "the active signing key (serial {}) ends {} (in {}): run `satcast-uplink keys rotate`",
                        key.serial,
                        report::utc_text(end),
                        report::span_text(left)
                    ),
                ));
            }
        }
    }
    out
}

/// The registry gauges: counties heard and silent, the oldest heartbeat age reported.
fn receiver_gauges(context: &Context, now: u64) {
    let Ok(registry) = context.store.receivers() else { return };
    let silent_after = context.shared.alarm_config.county_silent_after_secs;
    let (mut heard, mut silent, mut heartbeat_age_max) = (0u64, 0u64, 0u64);
    for (_, record) in &registry {
        let Some(seen) = record.last_seen_unix_secs else { continue };
        if now.saturating_sub(seen) >= silent_after {
            silent += 1;
        } else {
            heard += 1;
            heartbeat_age_max = heartbeat_age_max.max(record.heartbeat_age_secs.unwrap_or(0));
        }
    }
    let metrics = &context.shared.metrics;
    let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    metrics.receivers.get_or_create(&vec![("state", "heard".to_owned())]).set(gauge(heard));
    metrics.receivers.get_or_create(&vec![("state", "silent".to_owned())]).set(gauge(silent));
    metrics.heartbeat_age_max.set(gauge(heartbeat_age_max));
}

/// The queue gauges, read from the queue folder.
fn queue_gauges(context: &Context) {
    let Ok(pending) = context.queue.pending() else { return };
    let jobs: Vec<_> = pending.into_iter().flatten().collect();
    let bytes: u64 =
        jobs.iter().filter_map(|job| std::fs::metadata(context.queue.payload_path(&job.object_id)).ok()).map(|m| m.len()).sum();
    context.shared.metrics.queue_jobs.set(i64::try_from(jobs.len()).unwrap_or(i64::MAX));
    context.shared.metrics.queue_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

/// Every few seconds: the carrier sample, the gauges, and the alarms' conditions.
pub async fn background(context: Context, stop: Arc<AtomicBool>) {
    let check_every = Duration::from_secs(context.shared.alarm_config.check_interval_secs);
    let mut next_check = tokio::time::Instant::now();
    let mut next_sample = tokio::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = tokio::time::Instant::now();
        if now >= next_sample {
            next_sample = now + CARRIER_SAMPLE_INTERVAL;
            let bytes = context.shared.metrics.air_bytes_by_class();
            if let Ok(mut carrier) = context.shared.carrier.lock() {
                carrier.sample(wall_unix_ms(), bytes);
            }
        }
        if now >= next_check {
            next_check = now + check_every;
            let checking = context.clone();
            let _ = blocking(move || {
                let now = wall_unix_secs();
                let conditions = conditions(&checking, now);
                if let Ok(mut alarms) = checking.shared.alarms.lock() {
                    for kind in alarms.check(conditions, now) {
                        UplinkMetrics::count(&checking.shared.metrics.alarms_raised, "kind", kind.as_str());
                    }
                    checking.shared.metrics.alarms.set(i64::try_from(alarms.standing().len()).unwrap_or(i64::MAX));
                }
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_carrier_history_holds_an_hour_of_rates_per_class() {
        let mut history = CarrierHistory::default();
        history.sample(0, [0; 5]);
        history.sample(1000, [1000, 0, 0, 0, 125]);
        assert_eq!(history.samples[0].bits_per_sec, [8000, 0, 0, 0, 1000]);
        for i in 2..(CARRIER_SAMPLES_MAX as u64 + 10) {
            history.sample(i * 1000, [1000 * i, 0, 0, 0, 0]);
        }
        assert_eq!(history.samples.len(), CARRIER_SAMPLES_MAX);
    }

    #[test]
    fn every_province_has_a_name_and_prefectures_are_named() {
        let names = names();
        assert_eq!(names.provinces.get("41").map(String::as_str), Some("河南省"));
        assert!(names.provinces.len() >= 31);
        assert!(names.prefectures.get("4101").is_some_and(|n| n == "郑州市"));
    }
}
