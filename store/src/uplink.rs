//! The uplink's durable state: one record per broadcast (its signed manifest and where its
//! airing stands), the delivery ledger per (county, broadcast), and the receiver registry.
//!
//! The queue folder (queue/*.job, *.payload) is the truth for what must air; this index
//! adds what lets a restart continue a broadcast instead of starting it over. If the index
//! is lost, broadcasts restart with fresh signatures and ESIs beyond any used before
//! (see [`RESTART_ESI_OFFSET_FACTOR`]), and the ledger is re-learned from the counties'
//! acknowledgements, which they repeat until acknowledged.

use std::path::Path;

use bincode::{Decode, Encode};
use satcast_protocol::feedback::Refusal;

use crate::index::{Index, IndexError, IndexOpen, Tree};
use crate::lock::StateLock;

/// The name the uplink writes into its state folder's lock (see [`crate::lock`]).
pub const UPLINK_PROGRAM: &str = "satcast-uplink";

/// The most ledger entries or registry entries read at once.
pub const LIST_MAX: usize = 1_000_000;
/// With the index lost, a restarted broadcast starts its fresh ESIs at this many times K
/// per block, beyond anything an earlier airing could have used.
pub const RESTART_ESI_OFFSET_FACTOR: u32 = 8;

/// A broadcast the uplink has started airing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct BroadcastRecord {
    /// The signed manifest as aired (re-used on restart, so counties see the same one).
    pub signed_manifest: Vec<u8>,
    /// The broadcast machine's checkpoint, encoded (see `broadcast::Checkpoint`).
    pub checkpoint: Option<Vec<u8>>,
    /// How it ended, if it did ("completed", "deadline", "cancelled", "aired").
    pub outcome: Option<String>,
    /// Kind, as text.
    pub kind: String,
    /// Name receivers deliver it under.
    pub name: String,
    /// Version of (kind, name).
    pub version: u64,
    /// Payload bytes.
    pub size_bytes: u64,
    /// Division-code prefixes it was sent to.
    pub prefixes: Vec<String>,
    /// Counties whose acknowledgement it waits for (empty for a carousel).
    pub targets: Vec<String>,
    /// Scheduling class, as text.
    pub priority: String,
    /// When it started airing, seconds since the Unix epoch.
    pub started_unix_secs: u64,
}

/// What the uplink knows of one county and one broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum LedgerState {
    /// Reported progress: symbols still needed, summed over blocks.
    InProgress {
        /// Symbols still needed.
        needed: u64,
    },
    /// Verified, durable and delivered.
    Delivered {
        /// BLAKE3 the county reported.
        hash: [u8; 32],
    },
    /// The county refused the manifest (kept for ledgers written before refusals were
    /// typed; [`LedgerState::Refused`] is recorded now).
    Rejected {
        /// Its reason.
        reason: String,
    },
    /// The county refused the manifest, or cannot take the object now (appended last, so
    /// older entries keep their encoding).
    Refused {
        /// Why.
        refusal: Refusal,
    },
}

/// A ledger entry with when it was last updated.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct LedgerEntry {
    /// The state.
    pub state: LedgerState,
    /// When, seconds since the Unix epoch.
    pub updated_unix_secs: u64,
    /// The post-receive hook's outcome, once reported: success and detail.
    pub hook: Option<(bool, String)>,
}

/// One county receiver as the uplink knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct ReceiverRecord {
    /// Its name from the national division table.
    pub name: String,
    /// When it last said anything, seconds since the Unix epoch.
    pub last_seen_unix_secs: Option<u64>,
    /// Its software version, from its last hello.
    pub software_version: Option<String>,
    /// Free bytes on its state disk, from its last hello.
    pub free_disk_bytes: Option<u64>,
    /// Seconds since its last valid heartbeat, from its last hello.
    pub heartbeat_age_secs: Option<u64>,
}

/// The uplink's index.
#[derive(Debug)]
pub struct UplinkStore {
    index: Index,
    broadcasts: Tree,
    ledger: Tree,
    receivers: Tree,
}

fn ledger_key(object_id: u64, county: &str) -> Vec<u8> {
    let mut key = object_id.to_be_bytes().to_vec();
    key.extend_from_slice(county.as_bytes());
    key
}

impl UplinkStore {
    /// Takes `state_dir` for this process (refusing if another owns it) and opens its
    /// index (creating it, or quarantining a broken one). The folder stays owned for as
    /// long as the store lives.
    pub fn open(state_dir: &Path, now_unix_secs: u64) -> Result<(UplinkStore, IndexOpen), IndexError> {
        let (index, how) = Index::open(StateLock::acquire(state_dir, UPLINK_PROGRAM)?, now_unix_secs)?;
        let store = UplinkStore {
            broadcasts: index.tree("broadcasts")?,
            ledger: index.tree("ledger")?,
            receivers: index.tree("receivers")?,
            index,
        };
        Ok((store, how))
    }

    /// Makes every write durable.
    pub fn flush(&self) -> Result<(), IndexError> {
        self.index.flush()
    }

    /// The record of a broadcast.
    pub fn broadcast(&self, object_id: u64) -> Result<Option<BroadcastRecord>, IndexError> {
        self.broadcasts.get(&object_id.to_be_bytes())
    }

    /// Stores the record of a broadcast.
    pub fn put_broadcast(&self, object_id: u64, record: &BroadcastRecord) -> Result<(), IndexError> {
        self.broadcasts.put(&object_id.to_be_bytes(), record)
    }

    /// Every broadcast record, by object id.
    pub fn broadcasts(&self) -> Result<Vec<(u64, BroadcastRecord)>, IndexError> {
        Ok(self.broadcasts.scan::<BroadcastRecord>(&[], LIST_MAX)?.into_iter().map(|(k, v)| (key_u64(&k), v)).collect())
    }

    /// Records what a county reported about a broadcast; returns whether the ledger
    /// changed. A delivery is final: it is never downgraded by a late progress report or a
    /// refusal (a replayed manifest refused as expired after the county delivered it), and
    /// a repeated acknowledgement or refusal changes nothing.
    pub fn record(&self, object_id: u64, county: &str, state: LedgerState, now_unix_secs: u64) -> Result<bool, IndexError> {
        let key = ledger_key(object_id, county);
        match self.ledger.get::<LedgerEntry>(&key)? {
            Some(LedgerEntry { state: old @ LedgerState::Delivered { .. }, .. })
                if !matches!(state, LedgerState::Delivered { .. }) || old == state =>
            {
                return Ok(false);
            }
            Some(LedgerEntry { state: old @ LedgerState::Refused { .. }, .. }) if old == state => return Ok(false),
            _ => {}
        }
        let hook = self.ledger.get::<LedgerEntry>(&key)?.and_then(|e| e.hook);
        self.ledger.put(&key, &LedgerEntry { state, updated_unix_secs: now_unix_secs, hook })?;
        Ok(true)
    }

    /// Records a county's post-receive hook outcome for a broadcast.
    pub fn record_hook(&self, object_id: u64, county: &str, success: bool, detail: &str, now_unix_secs: u64) -> Result<(), IndexError> {
        let key = ledger_key(object_id, county);
        let mut entry = self.ledger.get::<LedgerEntry>(&key)?.unwrap_or(LedgerEntry {
            state: LedgerState::InProgress { needed: 0 },
            updated_unix_secs: now_unix_secs,
            hook: None,
        });
        entry.hook = Some((success, detail.to_owned()));
        self.ledger.put(&key, &entry)
    }

    /// Every ledger entry of a broadcast, by county.
    pub fn ledger(&self, object_id: u64) -> Result<Vec<(String, LedgerEntry)>, IndexError> {
        Ok(self
            .ledger
            .scan::<LedgerEntry>(&object_id.to_be_bytes(), LIST_MAX)?
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k[8..]).into_owned(), v))
            .collect())
    }

    /// A county's registry record.
    pub fn receiver(&self, county: &str) -> Result<Option<ReceiverRecord>, IndexError> {
        self.receivers.get(county.as_bytes())
    }

    /// Stores a county's registry record.
    pub fn put_receiver(&self, county: &str, record: &ReceiverRecord) -> Result<(), IndexError> {
        self.receivers.put(county.as_bytes(), record)
    }

    /// Every registered county, by code.
    pub fn receivers(&self) -> Result<Vec<(String, ReceiverRecord)>, IndexError> {
        Ok(self
            .receivers
            .scan::<ReceiverRecord>(&[], LIST_MAX)?
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect())
    }

    /// Registers every county of a division-code CSV (`code,name,...`, six-digit codes)
    /// that is not registered yet, and refreshes names. Returns how many rows it took.
    pub fn import_divisions(&self, csv: &str) -> Result<usize, IndexError> {
        let mut imported = 0;
        for line in csv.lines().skip(1) {
            let mut fields = line.split(',');
            let (Some(code), Some(name)) = (fields.next(), fields.next()) else { continue };
            let code = code.trim();
            if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let mut record = self.receiver(code)?.unwrap_or_default();
            record.name = name.trim().trim_matches('"').to_owned();
            self.put_receiver(code, &record)?;
            imported += 1;
        }
        Ok(imported)
    }
}

fn key_u64(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    if key.len() >= 8 {
        bytes.copy_from_slice(&key[..8]);
    }
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_registry_and_broadcasts_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (store, _) = UplinkStore::open(dir.path(), 1).expect("open");
            let csv = "code,name,cityCode,provinceCode\n410102,\"中原区\",4101,41\n410103,\"二七区\",4101,41\nbad,row\n";
            assert_eq!(store.import_divisions(csv).expect("import"), 2);
            store.record(7, "410102", LedgerState::Delivered { hash: [1; 32] }, 10).expect("record");
            store.record(7, "410102", LedgerState::InProgress { needed: 5 }, 11).expect("late progress");
            store.record(7, "410103", LedgerState::InProgress { needed: 5 }, 11).expect("progress");
            store.put_broadcast(7, &BroadcastRecord { signed_manifest: vec![1, 2], ..BroadcastRecord::default() }).expect("put");
            store.flush().expect("flush");
        }
        let (store, how) = UplinkStore::open(dir.path(), 2).expect("reopen");
        assert_eq!(how, IndexOpen::Opened);
        assert_eq!(store.receiver("410102").expect("get").map(|r| r.name), Some("中原区".to_owned()));
        let ledger = store.ledger(7).expect("ledger");
        assert_eq!(ledger.len(), 2);
        assert_eq!(ledger[0].1.state, LedgerState::Delivered { hash: [1; 32] }, "a delivery is never downgraded");
        assert_eq!(store.broadcasts().expect("list")[0].0, 7);
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn a_repeated_delivery_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = UplinkStore::open(dir.path(), 1).expect("open");
        assert!(store.record(7, "410102", LedgerState::Delivered { hash: [1; 32] }, 10).expect("first"));
        assert!(!store.record(7, "410102", LedgerState::Delivered { hash: [1; 32] }, 11).expect("repeat"));
        assert!(!store.record(7, "410102", LedgerState::InProgress { needed: 3 }, 12).expect("late progress"));
    }

    #[test]
    fn a_refusal_is_recorded_once_clears_with_progress_and_never_downgrades_a_delivery() {
        use satcast_protocol::feedback::RefusalCode;
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = UplinkStore::open(dir.path(), 1).expect("open");
        let full = LedgerState::Refused { refusal: Refusal::new(RefusalCode::StorageFull, "needs 40.0 MiB, 12.0 MiB free") };
        assert!(store.record(7, "410102", full.clone(), 10).expect("refused"));
        assert!(!store.record(7, "410102", full.clone(), 11).expect("the same again"), "said once");
        assert!(store.record(7, "410102", LedgerState::InProgress { needed: 3 }, 12).expect("space freed"));
        assert!(store.record(7, "410102", LedgerState::Delivered { hash: [1; 32] }, 13).expect("delivered"));
        let expired = LedgerState::Refused { refusal: Refusal::new(RefusalCode::ManifestExpired, "replayed") };
        assert!(!store.record(7, "410102", expired, 14).expect("a replay refused later"));
        assert_eq!(store.ledger(7).expect("ledger")[0].1.state, LedgerState::Delivered { hash: [1; 32] });
        // Entries written before refusals were typed still read.
        let old = LedgerEntry { state: LedgerState::Rejected { reason: "rollback".into() }, updated_unix_secs: 1, hook: None };
        store.ledger.put(&ledger_key(8, "410102"), &old).expect("put");
        assert_eq!(store.ledger(8).expect("ledger")[0].1, old);
    }
}
