//! What operators ask all day: which counties have a broadcast, and which do not. Built
//! from the broadcast records, the delivery ledger and the receiver registry; shared by
//! the control API and the CLI's tables.

use std::collections::BTreeMap;

use satcast_store::{BroadcastRecord, LedgerEntry, LedgerState, ReceiverRecord};
use serde::{Deserialize, Serialize};

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
    /// queued, airing, completed, cancelled, deadline or aired (a carousel that ran out).
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
    };
    BroadcastStatus { summary, provinces, lagging, hooks_failed, delivered }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        let mut list = vec![summary(1, 300), summary(2, 0), summary(3, 100), summary(4, 200)];
        sort_by_time(&mut list);
        assert_eq!(list.iter().map(|b| b.id).collect::<Vec<_>>(), vec![3, 4, 1, 2], "oldest first, queued last");
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
