//! The receiver's trust state: the last version delivered for each (kind, name), which is
//! what rollback protection compares against. Written atomically; an unreadable file fails
//! closed (the daemon refuses to start) instead of silently forgetting versions, which
//! would let an old, signed software update be replayed.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use bincode::{Decode, Encode};
use satcast_protocol::manifest::Kind;
use satcast_protocol::trust::Accepted;
use thiserror::Error;

use crate::fsutil;

/// The most (kind, name) entries kept; a file claiming more is refused as corrupt.
pub const TRUST_ENTRIES_MAX: usize = 100_000;
const FILE_MAGIC: &[u8; 8] = b"SCTRUST1";

/// Why trust state could not be read or written.
#[derive(Debug, Error)]
pub enum TrustStateError {
    /// The file exists but cannot be read.
    #[error("cannot read trust state {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file exists but is not valid trust state: refusing to start rather than forget
    /// which versions were delivered.
    #[error(
        "trust state {path} is corrupt ({why}); refusing to run without rollback protection (restore it from backup, or remove it deliberately)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The new state could not be written durably.
    #[error("cannot write trust state {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

#[derive(Debug, Clone, Default, Encode, Decode)]
struct Entries {
    /// (kind as text, name) -> (version, object id).
    delivered: Vec<(String, String, u64, u64)>,
    /// The root's revocation list: its sequence and the revoked signing-key serials.
    revocation_sequence: u64,
    revoked_serials: Vec<u64>,
}

/// Delivered versions per (kind, name), persisted in one file.
#[derive(Debug)]
pub struct TrustState {
    path: PathBuf,
    delivered: BTreeMap<(Kind, String), Accepted>,
    revocation_sequence: u64,
    revoked_serials: Vec<u64>,
}

impl TrustState {
    /// Loads the state from `path`; a missing file is an empty state (first start).
    pub fn load(path: &Path) -> Result<Self, TrustStateError> {
        let mut state =
            TrustState { path: path.to_owned(), delivered: BTreeMap::new(), revocation_sequence: 0, revoked_serials: Vec::new() };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(state),
            Err(source) => return Err(TrustStateError::Read { path: path.to_owned(), source }),
        };
        let corrupt = |why: &str| TrustStateError::Corrupt { path: path.to_owned(), why: why.to_owned() };
        let body = bytes.strip_prefix(FILE_MAGIC.as_slice()).ok_or_else(|| corrupt("bad magic"))?;
        if body.len() < 32 {
            return Err(corrupt("truncated"));
        }
        let (payload, checksum) = body.split_at(body.len() - 32);
        if blake3::hash(payload).as_bytes() != checksum {
            return Err(corrupt("checksum mismatch"));
        }
        let config = bincode::config::standard().with_limit::<{ 64 * 1024 * 1024 }>();
        let (entries, _): (Entries, usize) = bincode::decode_from_slice(payload, config).map_err(|e| corrupt(&e.to_string()))?;
        if entries.delivered.len() > TRUST_ENTRIES_MAX {
            return Err(corrupt("too many entries"));
        }
        state.revocation_sequence = entries.revocation_sequence;
        state.revoked_serials = entries.revoked_serials;
        for (kind, name, version, object_id) in entries.delivered {
            let kind: Kind = kind.parse().map_err(|_| corrupt("unknown kind"))?;
            state.delivered.insert((kind, name), Accepted { version, object_id });
        }
        Ok(state)
    }

    /// Every delivered (kind, name) with its version.
    pub fn delivered(&self) -> impl Iterator<Item = (Kind, &str, Accepted)> {
        self.delivered.iter().map(|((kind, name), accepted)| (*kind, name.as_str(), *accepted))
    }

    /// The revocation list last recorded: its sequence and revoked serials.
    pub fn revocations(&self) -> (u64, &[u64]) {
        (self.revocation_sequence, &self.revoked_serials)
    }

    /// Records a newer revocation list and writes the state durably before returning.
    pub fn record_revocations(&mut self, sequence: u64, revoked_serials: &[u64]) -> Result<(), TrustStateError> {
        if sequence <= self.revocation_sequence {
            return Ok(());
        }
        self.revocation_sequence = sequence;
        self.revoked_serials = revoked_serials.to_vec();
        self.save()
    }

    /// Records a delivery and writes the state durably before returning.
    pub fn record(&mut self, kind: Kind, name: &str, accepted: Accepted) -> Result<(), TrustStateError> {
        self.delivered.insert((kind, name.to_owned()), accepted);
        self.save()
    }

    fn save(&self) -> Result<(), TrustStateError> {
        let entries = Entries {
            revocation_sequence: self.revocation_sequence,
            revoked_serials: self.revoked_serials.clone(),
            delivered: self.delivered.iter().map(|((kind, name), a)| (kind.to_string(), name.clone(), a.version, a.object_id)).collect(),
        };
        let payload = bincode::encode_to_vec(&entries, bincode::config::standard())
            .map_err(|e| TrustStateError::Write { path: self.path.clone(), source: io::Error::other(e) })?;
        let mut bytes = FILE_MAGIC.to_vec();
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(blake3::hash(&payload).as_bytes());
        fsutil::write_atomic(&self.path, &bytes).map_err(|source| TrustStateError::Write { path: self.path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_reload_and_fails_closed_when_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trust.state");
        let mut state = TrustState::load(&path).expect("empty");
        state.record(Kind::Software, "app", Accepted { version: 3, object_id: 9 }).expect("record");
        let again = TrustState::load(&path).expect("reload");
        let entries: Vec<_> = again.delivered().collect();
        assert_eq!(entries, vec![(Kind::Software, "app", Accepted { version: 3, object_id: 9 })]);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).expect("write");
        assert!(matches!(TrustState::load(&path), Err(TrustStateError::Corrupt { .. })));
    }
}
