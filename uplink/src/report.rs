//! What operators ask all day: which counties have a broadcast, and which do not. Built
//! from the broadcast records, the delivery ledger and the receiver registry; shared by
//! the control API and the CLI's tables.

use std::collections::BTreeMap;

use satcast_store::{BroadcastRecord, LedgerEntry, LedgerState, ReceiverRecord};
use serde::{Deserialize, Serialize};

/// The state of a broadcast whose not-before time is still ahead.
pub const SCHEDULED: &str = "scheduled";
/// The state of a job the daemon refused to air.
pub const REFUSED: &str = "refused";
/// States a broadcast ends in.
pub const FINAL_STATES: [&str; 5] = ["completed", "cancelled", "deadline", "aired", REFUSED];

/// Province names from the national division table.
const PROVINCES_CSV: &str = include_str!("../../data/divisions/provinces.csv");
/// The most lagging counties listed in one status.
pub const LAGGING_LISTED_MAX: usize = 200;

/// One broadcast, in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BroadcastSummary {
    /// The broadcast id (16 hex digits in JSON).
    #[serde(with = "satcast_daemon::object_id")]
    pub id: u64,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// Payload bytes.
    pub size_bytes: u64,
    /// Scheduling class.
    pub priority: String,
    /// Prefixes it was sent to.
    pub to: Vec<String>,
    /// queued, preparing, scheduled (its not-before time is ahead), airing, idle, or how it
    /// ended: completed, cancelled, deadline, aired (a carousel that ran out) or refused.
    pub state: String,
    /// Counties waited for, and any that have it without being waited for (enrolled after
    /// airing started, reached by a carousel, or delivered before a re-air narrowed the
    /// targets): so `delivered` is never above it.
    pub targeted: usize,
    /// Counties that have it, verified and durable.
    pub delivered: usize,
    /// Counties that reported progress but do not have it yet.
    pub in_progress: usize,
    /// Counties never heard from about it.
    pub silent: usize,
    /// Counties that refused it.
    pub rejected: usize,
    /// When it started airing, seconds since the Unix epoch (0 while queued).
    pub started_unix_secs: u64,
    /// Not aired before this time, seconds since the Unix epoch (`send --not-before`).
    #[serde(default)]
    pub not_before_unix_secs: Option<u64>,
    /// Airing stops at this time, complete or not (`send --deadline`, `reair --deadline`).
    #[serde(default)]
    pub deadline_unix_secs: Option<u64>,
    /// Payload bytes aired so far (source and repair symbols): above the size once repair
    /// rounds air. Counted while the daemon runs: none for a broadcast it has not aired
    /// since it last started (the count is not kept across restarts).
    #[serde(default)]
    pub bytes_aired: Option<u64>,
    /// How fast it aired over the last second, bits per second (0 when not airing).
    #[serde(default)]
    pub rate_bits_per_sec: u64,
    /// Seconds until the whole file has aired once at that rate (none when it has, or when
    /// it is not airing): repair rounds, if counties need them, come after.
    #[serde(default)]
    pub eta_secs: Option<u64>,
    /// Why the daemon refused it (state `refused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Sealed for its targeted counties (`send --confidential`, or its kind's default once
    /// prepared). The name of an aired confidential broadcast is its pseudonym: the real
    /// name is sealed, and the uplink keeps no key to it.
    #[serde(default)]
    pub confidential: bool,
}

impl BroadcastSummary {
    /// A job that has no broadcast record yet (queued, preparing, scheduled or refused):
    /// nothing to count.
    pub fn of_job(id: u64, job: &crate::queue::Job, size_bytes: u64, state: &str) -> BroadcastSummary {
        BroadcastSummary {
            id,
            kind: job.kind.clone(),
            name: job.name.clone(),
            version: job.version,
            confidential: job.confidential == Some(true),
            size_bytes,
            priority: job.priority.clone(),
            to: job.targets.clone(),
            state: state.to_owned(),
            targeted: 0,
            delivered: 0,
            in_progress: 0,
            silent: 0,
            rejected: 0,
            started_unix_secs: 0,
            not_before_unix_secs: job.not_before_unix_secs,
            deadline_unix_secs: job.deadline_unix_secs,
            bytes_aired: None,
            rate_bits_per_sec: 0,
            eta_secs: None,
            reason: None,
        }
    }
}

/// Counts for one province.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProvinceCounts {
    /// Two-digit code.
    pub code: String,
    /// Its name.
    pub name: String,
    /// Counties waited for.
    pub targeted: usize,
    /// Delivered.
    pub delivered: usize,
    /// In progress.
    pub in_progress: usize,
    /// Silent.
    pub silent: usize,
    /// Refused.
    pub rejected: usize,
}

/// A county that does not have the broadcast yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lagging {
    /// Six-digit code.
    pub code: String,
    /// Its name.
    pub name: String,
    /// in_progress, silent or refused.
    pub state: String,
    /// Symbols it last said it needed, or why it refused ("spool full (needs 40.0 MiB,
    /// 12.0 MiB free under limits.spool_bytes_max)").
    pub detail: String,
    /// For a refusal, its code: `spool_full`, `too_many_partial`, `key_revoked`... (`other`
    /// for an older county's text reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was last heard from at all, seconds since the Unix epoch.
    pub last_seen_unix_secs: Option<u64>,
}

/// One broadcast in detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BroadcastStatus {
    /// The counts.
    pub summary: BroadcastSummary,
    /// By province.
    pub provinces: Vec<ProvinceCounts>,
    /// Counties that do not have it yet, worst first (at most [`LAGGING_LISTED_MAX`]).
    pub lagging: Vec<Lagging>,
    /// Counties whose post-receive hook failed, with the detail.
    pub hooks_failed: Vec<(String, String)>,
    /// Exactly the counties that have it.
    pub delivered: Vec<String>,
}

/// One county receiver, in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiverSummary {
    /// Six-digit code.
    pub code: String,
    /// Its name.
    pub name: String,
    /// Last heard from, seconds since the Unix epoch.
    pub last_seen_unix_secs: Option<u64>,
    /// Its software version.
    pub software_version: Option<String>,
    /// Free bytes on its state disk.
    pub free_disk_bytes: Option<u64>,
    /// Seconds since its last valid heartbeat, when it last said hello.
    pub heartbeat_age_secs: Option<u64>,
}

fn province_names() -> BTreeMap<String, String> {
    PROVINCES_CSV
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            Some((f.next()?.trim().to_owned(), f.next()?.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

/// The detailed status of one broadcast.
pub fn status(
    id: u64,
    record: &BroadcastRecord,
    state: &str,
    ledger: &[(String, LedgerEntry)],
    registry: &BTreeMap<String, ReceiverRecord>,
) -> BroadcastStatus {
    let provinces_named = province_names();
    let by_county: BTreeMap<&str, &LedgerEntry> = ledger.iter().map(|(c, e)| (c.as_str(), e)).collect();
    let mut provinces: BTreeMap<String, ProvinceCounts> = BTreeMap::new();
    let mut lagging = Vec::new();
    let mut delivered = Vec::new();
    let mut hooks_failed = Vec::new();
    // Counties outside the targets that delivered anyway (a carousel) count as delivered.
    let mut counties: Vec<&str> = record.targets.iter().map(String::as_str).collect();
    for (county, entry) in ledger {
        if matches!(entry.state, LedgerState::Delivered { .. }) && !record.targets.contains(county) {
            counties.push(county);
        }
    }
    for county in counties {
        let code = county.get(..2).unwrap_or("").to_owned();
        let counts = provinces.entry(code.clone()).or_insert_with(|| ProvinceCounts {
            name: provinces_named.get(&code).cloned().unwrap_or_default(),
            code,
            ..ProvinceCounts::default()
        });
        counts.targeted += 1;
        let name = registry.get(county).map(|r| r.name.clone()).unwrap_or_default();
        let last_seen = registry.get(county).and_then(|r| r.last_seen_unix_secs);
        let entry = by_county.get(county);
        if let Some(LedgerEntry { hook: Some((false, detail)), .. }) = entry {
            hooks_failed.push((county.to_owned(), detail.clone()));
        }
        match entry.map(|e| &e.state) {
            // Not due yet: nobody is behind, and nobody is silent about it.
            None if state == SCHEDULED => {}
            Some(LedgerState::Delivered { .. }) => {
                counts.delivered += 1;
                delivered.push(county.to_owned());
            }
            Some(LedgerState::InProgress { needed }) => {
                counts.in_progress += 1;
                lagging.push(Lagging {
                    code: county.into(),
                    name,
                    state: "in_progress".into(),
                    detail: format!("needs {needed} symbols"),
                    reason: None,
                    last_seen_unix_secs: last_seen,
                });
            }
            Some(LedgerState::Rejected { reason }) => {
                counts.rejected += 1;
                lagging.push(Lagging {
                    code: county.into(),
                    name,
                    state: "refused".into(),
                    detail: reason.clone(),
                    reason: Some("other".into()),
                    last_seen_unix_secs: last_seen,
                });
            }
            Some(LedgerState::Refused { refusal }) => {
                counts.rejected += 1;
                lagging.push(Lagging {
                    code: county.into(),
                    name,
                    state: "refused".into(),
                    detail: refusal.to_string(),
                    reason: Some(refusal.code.name().into()),
                    last_seen_unix_secs: last_seen,
                });
            }
            None => {
                counts.silent += 1;
                lagging.push(Lagging {
                    code: county.into(),
                    name,
                    state: "silent".into(),
                    detail: String::new(),
                    reason: None,
                    last_seen_unix_secs: last_seen,
                });
            }
        }
    }
    // Silent first (most in need of a phone call), then refused, then in progress.
    lagging.sort_by_key(|l| {
        (
            match l.state.as_str() {
                "silent" => 0,
                "refused" => 1,
                _ => 2,
            },
            l.code.clone(),
        )
    });
    lagging.truncate(LAGGING_LISTED_MAX);
    let provinces: Vec<ProvinceCounts> = provinces.into_values().collect();
    let sum = |f: fn(&ProvinceCounts) -> usize| provinces.iter().map(f).sum::<usize>();
    let summary = BroadcastSummary {
        id,
        kind: record.kind.clone(),
        name: record.name.clone(),
        version: record.version,
        confidential: satcast_protocol::trust::SignedManifest::from_bytes(&record.signed_manifest)
            .ok()
            .and_then(|signed| satcast_protocol::manifest::Manifest::from_bytes(&signed.manifest).ok())
            .is_some_and(|manifest| manifest.confidential().is_some()),
        size_bytes: record.size_bytes,
        priority: record.priority.clone(),
        to: record.prefixes.clone(),
        state: state.to_owned(),
        targeted: sum(|p| p.targeted),
        delivered: sum(|p| p.delivered),
        in_progress: sum(|p| p.in_progress),
        silent: sum(|p| p.silent),
        rejected: sum(|p| p.rejected),
        started_unix_secs: record.started_unix_secs,
        not_before_unix_secs: None,
        deadline_unix_secs: None,
        bytes_aired: None,
        rate_bits_per_sec: 0,
        eta_secs: None,
        reason: None,
    };
    BroadcastStatus { summary, provinces, lagging, hooks_failed, delivered }
}

/// Each counted county's state for one broadcast, as [`status`] counts it: `delivered`,
/// `in_progress`, `silent` or `refused` (a county not heard from about a scheduled
/// broadcast is not counted as behind: it is `waiting`).
pub fn county_states<'a>(record: &'a BroadcastRecord, state: &str, ledger: &'a [(String, LedgerEntry)]) -> BTreeMap<&'a str, &'static str> {
    let by_county: BTreeMap<&str, &LedgerEntry> = ledger.iter().map(|(c, e)| (c.as_str(), e)).collect();
    let mut out = BTreeMap::new();
    for county in record.targets.iter().map(String::as_str) {
        let counted = match by_county.get(county).map(|e| &e.state) {
            None if state == SCHEDULED => "waiting",
            None => "silent",
            Some(LedgerState::Delivered { .. }) => "delivered",
            Some(LedgerState::InProgress { .. }) => "in_progress",
            Some(LedgerState::Rejected { .. } | LedgerState::Refused { .. }) => "refused",
        };
        out.insert(county, counted);
    }
    for (county, entry) in ledger {
        if matches!(entry.state, LedgerState::Delivered { .. }) {
            out.insert(county.as_str(), "delivered");
        }
    }
    out
}

/// A time as operators read it and `--not-before` takes it: 2026-11-27T08:00:00Z.
pub fn utc_text(unix_secs: u64) -> String {
    // Civil from days (Howard Hinnant's algorithm), the inverse of the CLI's parser.
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Bytes in the largest unit that keeps a digit before the point: 512 B, 1.5 MB, 4.0 GB.
pub fn bytes_text(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", bytes as f64 / 1e6),
        _ => format!("{:.1} GB", bytes as f64 / 1e9),
    }
}

/// A span of seconds as 45s, 12m30s or 3h05m.
pub fn span_text(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
    }
}

/// What an operator wants to know of a broadcast beyond its counts, in one phrase: when it
/// may air and must end, and how far its airing got ("not before ...; deadline ...; 1.2 MB
/// aired at 4.0 Mbit/s, ETA 12s"). Empty when there is nothing to say.
pub fn schedule_and_progress(summary: &BroadcastSummary, now_unix_secs: u64) -> String {
    let mut parts = Vec::new();
    if let Some(at) = summary.not_before_unix_secs {
        let ahead = at.checked_sub(now_unix_secs).filter(|&secs| secs > 0);
        parts.push(match ahead {
            Some(secs) => format!("not before {} (in {})", utc_text(at), span_text(secs)),
            None => format!("not before {}", utc_text(at)),
        });
    }
    if let Some(at) = summary.deadline_unix_secs {
        parts.push(format!("deadline {}", utc_text(at)));
    }
    if let Some(bytes) = summary.bytes_aired {
        let mut aired = format!("{} aired", bytes_text(bytes));
        if summary.rate_bits_per_sec > 0 {
            aired.push_str(&format!(" at {:.1} Mbit/s", summary.rate_bits_per_sec as f64 / 1e6));
        }
        if let Some(eta) = summary.eta_secs {
            aired.push_str(&format!(", ETA {}", span_text(eta)));
        }
        parts.push(aired);
    }
    if let Some(reason) = &summary.reason {
        parts.push(reason.clone());
    }
    parts.join("; ")
}

/// One line of `send --wait`'s progress: state, counties, bytes aired of the size, rate,
/// ETA, and the schedule.
pub fn progress_line(summary: &BroadcastSummary, now_unix_secs: u64) -> String {
    let mut line = format!(
        "{}: {}/{} counties, {} of {} aired",
        summary.state,
        summary.delivered,
        summary.targeted,
        bytes_text(summary.bytes_aired.unwrap_or(0)),
        bytes_text(summary.size_bytes)
    );
    if summary.rate_bits_per_sec > 0 {
        line.push_str(&format!(" at {:.1} Mbit/s", summary.rate_bits_per_sec as f64 / 1e6));
    }
    if let Some(eta) = summary.eta_secs {
        line.push_str(&format!(", ETA {}", span_text(eta)));
    }
    let schedule = BroadcastSummary { bytes_aired: None, rate_bits_per_sec: 0, eta_secs: None, ..summary.clone() };
    let schedule = schedule_and_progress(&schedule, now_unix_secs);
    if !schedule.is_empty() {
        line.push_str("; ");
        line.push_str(&schedule);
    }
    line
}

/// How a broadcast's prefixes read to an operator: `all` for the nation (the empty prefix
/// that `--to all` becomes), the prefixes joined by commas otherwise.
pub fn targets_text(prefixes: &[String]) -> String {
    if prefixes.iter().any(String::is_empty) { "all".to_owned() } else { prefixes.join(",") }
}

/// Orders broadcasts as they aired: by the time they started, those not started yet
/// (queued, preparing) last, ties by id.
pub fn sort_by_time(list: &mut [BroadcastSummary]) {
    list.sort_by_key(|b| (b.started_unix_secs == 0, b.started_unix_secs, b.id));
}

/// The registry as a list; `silent_for_secs` keeps only counties not heard from for that
/// long (or never), `all` includes counties that never connected.
pub fn receivers(
    registry: &BTreeMap<String, ReceiverRecord>,
    now_unix_secs: u64,
    silent_for_secs: Option<u64>,
    all: bool,
) -> Vec<ReceiverSummary> {
    registry
        .iter()
        .filter(|(_, r)| all || r.last_seen_unix_secs.is_some())
        .filter(|(_, r)| match silent_for_secs {
            Some(secs) => r.last_seen_unix_secs.is_none_or(|seen| now_unix_secs.saturating_sub(seen) >= secs),
            None => true,
        })
        .map(|(code, r)| ReceiverSummary {
            code: code.clone(),
            name: r.name.clone(),
            last_seen_unix_secs: r.last_seen_unix_secs,
            software_version: r.software_version.clone(),
            free_disk_bytes: r.free_disk_bytes,
            heartbeat_age_secs: r.heartbeat_age_secs,
        })
        .collect()
}

/// How many of the listed counties run each software version, most common first (then by
/// version); counties that never said one count as "-". What an operator looks at while an
/// upgrade goes out over the air.
pub fn version_spread(list: &[ReceiverSummary]) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for receiver in list {
        *counts.entry(receiver.software_version.as_deref().unwrap_or("-")).or_default() += 1;
    }
    let mut spread: Vec<(String, usize)> = counts.into_iter().map(|(version, n)| (version.to_owned(), n)).collect();
    spread.sort_by_key(|(version, n)| (std::cmp::Reverse(*n), version.clone()));
    spread
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_spread_counts_each_version_most_common_first() {
        let receiver = |code: &str, version: Option<&str>| ReceiverSummary {
            code: code.into(),
            name: String::new(),
            last_seen_unix_secs: None,
            software_version: version.map(str::to_owned),
            free_disk_bytes: None,
            heartbeat_age_secs: None,
        };
        let list = [
            receiver("410102", Some("0.1.0")),
            receiver("410103", Some("0.2.0")),
            receiver("410104", Some("0.1.0")),
            receiver("410105", None),
        ];
        assert_eq!(version_spread(&list), vec![("0.1.0".into(), 2), ("-".into(), 1), ("0.2.0".into(), 1)]);
    }

    fn delivered() -> LedgerEntry {
        LedgerEntry { state: LedgerState::Delivered { hash: [0; 32] }, updated_unix_secs: 0, hook: None }
    }

    fn counts(targets: &[&str], delivered_by: &[&str]) -> (usize, usize) {
        let record = BroadcastRecord { targets: targets.iter().map(|c| c.to_string()).collect(), ..BroadcastRecord::default() };
        let ledger: Vec<(String, LedgerEntry)> = delivered_by.iter().map(|c| (c.to_string(), delivered())).collect();
        let summary = status(1, &record, "completed", &ledger, &BTreeMap::new()).summary;
        (summary.delivered, summary.targeted)
    }

    #[test]
    fn the_nation_reads_as_all_and_lists_go_by_time() {
        assert_eq!(targets_text(&[String::new()]), "all");
        assert_eq!(targets_text(&["41".into(), "4201".into()]), "41,4201");
        let summary = |id: u64, started_unix_secs: u64| BroadcastSummary {
            id,
            kind: "policy".into(),
            name: "n".into(),
            version: 1,
            size_bytes: 1,
            priority: "normal".into(),
            to: vec![String::new()],
            state: "airing".into(),
            targeted: 0,
            delivered: 0,
            in_progress: 0,
            silent: 0,
            rejected: 0,
            started_unix_secs,
            not_before_unix_secs: None,
            deadline_unix_secs: None,
            bytes_aired: None,
            rate_bits_per_sec: 0,
            eta_secs: None,
            reason: None,
            confidential: false,
        };
        let mut list = vec![summary(1, 300), summary(2, 0), summary(3, 100), summary(4, 200)];
        sort_by_time(&mut list);
        assert_eq!(list.iter().map(|b| b.id).collect::<Vec<_>>(), vec![3, 4, 1, 2], "oldest first, queued last");
    }

    #[test]
    fn times_read_as_utc_and_a_scheduled_broadcast_has_nobody_lagging() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_text(1_795_766_400), "2026-11-27T08:00:00Z");
        assert_eq!(utc_text(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!((bytes_text(999), bytes_text(1_500_000), span_text(750)), ("999 B".into(), "1.5 MB".into(), "12m30s".into()));
        let record = BroadcastRecord { targets: vec!["410102".into()], ..BroadcastRecord::default() };
        let scheduled = status(1, &record, SCHEDULED, &[], &BTreeMap::new());
        assert_eq!((scheduled.summary.targeted, scheduled.summary.silent, scheduled.lagging.len()), (1, 0, 0));
        let airing = status(1, &record, "airing", &[], &BTreeMap::new());
        assert_eq!((airing.summary.silent, airing.lagging.len()), (1, 1));
    }

    #[test]
    fn delivered_is_never_above_targeted() {
        // A county that enrolled after airing started, and one that was reached anyway.
        assert_eq!(counts(&["410102", "410103"], &["410102", "410103", "410104"]), (3, 3));
        // A re-air narrowed the targets to the one county that lacked it.
        assert_eq!(counts(&["410104"], &["410102", "410103", "410104"]), (3, 3));
        // A carousel waits for nobody.
        assert_eq!(counts(&[], &["410102", "410103"]), (2, 2));
        assert_eq!(counts(&["410102", "410103"], &["410102"]), (1, 2));
    }

    #[test]
    fn a_refusing_county_shows_refused_with_its_reason_not_silent() {
        use satcast_protocol::feedback::{Refusal, RefusalCode};
        let record = BroadcastRecord { targets: vec!["410102".into(), "410103".into(), "410104".into()], ..BroadcastRecord::default() };
        let refused = |refusal| LedgerEntry { state: LedgerState::Refused { refusal }, updated_unix_secs: 0, hook: None };
        let old = LedgerEntry { state: LedgerState::Rejected { reason: "rollback: offered 1".into() }, updated_unix_secs: 0, hook: None };
        let ledger = vec![
            ("410102".to_owned(), refused(Refusal::new(RefusalCode::StorageFull, "needs 40.0 MiB, 12.0 MiB free"))),
            ("410103".to_owned(), old),
            ("410104".to_owned(), delivered()),
        ];
        let status = status(1, &record, "airing", &ledger, &BTreeMap::new());
        let s = &status.summary;
        assert_eq!((s.targeted, s.delivered, s.in_progress, s.silent, s.rejected), (3, 1, 0, 0, 2), "counts add up");
        assert_eq!(status.lagging[0].state, "refused");
        assert_eq!(status.lagging[0].detail, "spool full (needs 40.0 MiB, 12.0 MiB free)");
        assert_eq!(status.lagging[0].reason.as_deref(), Some("spool_full"));
        assert_eq!((status.lagging[1].state.as_str(), status.lagging[1].detail.as_str()), ("refused", "rollback: offered 1"));
    }
}
