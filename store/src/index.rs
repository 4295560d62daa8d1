//! The sled index, behind this crate's own API. sled 0.34 is beta and has open reports of
//! corruption after unclean shutdown, so the index only ever holds what can be rebuilt from
//! the files (or re-learned from the protocol): if it fails to open, or panics while
//! opening, it is moved aside and a fresh one is built.
//!
//! Only if it is broken, though: an index another process has open is in use, not corrupt.
//! Opening one needs the state folder's [`StateLock`], which the index keeps for as long
//! as any handle to it lives, so no index is opened, or quarantined, behind its owner's back.

use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bincode::{Decode, Encode};
use fs4::{FileExt, TryLockError};
use thiserror::Error;

use crate::lock::{LockError, StateLock};

/// The index folder, under the state directory.
pub const INDEX_DIR: &str = "index";

/// Why the index could not be used.
#[derive(Debug, Error)]
pub enum IndexError {
    /// sled failed even on a fresh directory.
    #[error("cannot open index {path}: {why}")]
    Open {
        /// The index directory.
        path: PathBuf,
        /// sled's error.
        why: String,
    },
    /// The broken index could not be moved aside.
    #[error("cannot quarantine broken index {path}: {source}")]
    Quarantine {
        /// The index directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another process has the index open (sled's own lock): it is in use, not corrupt, and
    /// was left as it is.
    #[error("index {path} is in use by another process; left as it is")]
    InUse {
        /// The index directory.
        path: PathBuf,
    },
    /// The state folder belongs to another process.
    #[error(transparent)]
    Owned(#[from] LockError),
    /// A read or write failed.
    #[error("index operation failed: {0}")]
    Sled(#[from] sled::Error),
}

/// sled's page cache: its default (1 GiB) would dwarf a receiver's whole memory budget,
/// and the index is small.
pub const CACHE_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// What happened when the index was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOpen {
    /// It opened as it was.
    Opened,
    /// It was new (first start, or after a quarantine).
    Created,
    /// It would not open; it was moved to `moved_to` and a fresh one created. The caller
    /// must rebuild it from the files.
    Quarantined {
        /// Where the broken index now is.
        moved_to: PathBuf,
        /// Why it would not open.
        why: String,
    },
}

/// An opened index.
#[derive(Debug, Clone)]
pub struct Index {
    db: sled::Db,
    /// The state folder's ownership, released when the last handle goes.
    _owner: Arc<StateLock>,
}

/// Why sled would not open.
enum OpenFailure {
    Sled(sled::Error),
    Panicked,
}

impl std::fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenFailure::Sled(error) => error.fmt(f),
            OpenFailure::Panicked => f.write_str("sled panicked while opening"),
        }
    }
}

fn open_sled(path: &Path) -> Result<sled::Db, OpenFailure> {
    // A corrupt file must not take the daemon down: sled may panic instead of erroring.
    match std::panic::catch_unwind(AssertUnwindSafe(|| {
        sled::Config::new().path(path).mode(sled::Mode::LowSpace).cache_capacity(CACHE_BYTES_MAX).open()
    })) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(error)) => Err(OpenFailure::Sled(error)),
        Err(_) => Err(OpenFailure::Panicked),
    }
}

/// Whether another process holds sled's lock on the index. sled reports it as a plain I/O
/// error, so its message is one sign; the other, which does not depend on the wording, is
/// that sled's `db` file is still locked now.
fn in_use(path: &Path, failure: &OpenFailure) -> bool {
    let says_locked =
        matches!(failure, OpenFailure::Sled(sled::Error::Io(error)) if error.to_string().starts_with("could not acquire lock"));
    // A shared probe, released when the file is dropped; an exclusive holder refuses it.
    let still_locked = File::open(path.join("db")).is_ok_and(|db| matches!(FileExt::try_lock_shared(&db), Err(TryLockError::WouldBlock)));
    says_locked || still_locked
}

impl Index {
    /// Opens the index of the state folder `owner` owns, quarantining it beside itself if it
    /// is broken. An index some other process has open is an error, never quarantined.
    pub fn open(owner: StateLock, now_unix_secs: u64) -> Result<(Index, IndexOpen), IndexError> {
        let path = owner.state_dir().join(INDEX_DIR);
        let owner = Arc::new(owner);
        let existed = path.exists();
        match open_sled(&path) {
            Ok(db) => Ok((Index { db, _owner: owner }, if existed { IndexOpen::Opened } else { IndexOpen::Created })),
            Err(failure) if in_use(&path, &failure) => Err(IndexError::InUse { path }),
            Err(failure) => {
                let why = failure.to_string();
                let moved_to = path.with_file_name(format!("{INDEX_DIR}.quarantined-{now_unix_secs}"));
                std::fs::rename(&path, &moved_to).map_err(|source| IndexError::Quarantine { path: path.clone(), source })?;
                let db = open_sled(&path).map_err(|failure| IndexError::Open { path: path.clone(), why: failure.to_string() })?;
                Ok((Index { db, _owner: owner }, IndexOpen::Quarantined { moved_to, why }))
            }
        }
    }

    /// A named tree.
    pub fn tree(&self, name: &str) -> Result<Tree, IndexError> {
        Ok(Tree { tree: self.db.open_tree(name)? })
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), IndexError> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// One keyspace of the index, with values in bincode.
#[derive(Debug, Clone)]
pub struct Tree {
    tree: sled::Tree,
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 1 << 20 }>()
}

impl Tree {
    /// Stores `value` under `key`.
    pub fn put<V: Encode>(&self, key: &[u8], value: &V) -> Result<(), IndexError> {
        let bytes = bincode::encode_to_vec(value, config()).map_err(|e| sled::Error::Unsupported(e.to_string()))?;
        self.tree.insert(key, bytes)?;
        Ok(())
    }

    /// The value under `key`; an undecodable value reads as absent (the caller rebuilds it).
    pub fn get<V: Decode<()>>(&self, key: &[u8]) -> Result<Option<V>, IndexError> {
        Ok(self.tree.get(key)?.and_then(|bytes| bincode::decode_from_slice(&bytes, config()).ok().map(|(v, _)| v)))
    }

    /// Removes `key`.
    pub fn remove(&self, key: &[u8]) -> Result<(), IndexError> {
        self.tree.remove(key)?;
        Ok(())
    }

    /// Every decodable (key, value), in key order, at most `limit`.
    pub fn scan<V: Decode<()>>(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, V)>, IndexError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix).take(limit) {
            let (key, bytes) = item?;
            if let Ok((value, _)) = bincode::decode_from_slice(&bytes, config()) {
                out.push((key.to_vec(), value));
            }
        }
        Ok(out)
    }

    /// Entries in the tree.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(dir: &Path) -> StateLock {
        StateLock::acquire(dir, "satcast-test").expect("lock")
    }

    #[test]
    fn a_corrupt_index_is_quarantined_and_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(INDEX_DIR);
        {
            let (index, how) = Index::open(owner(dir.path()), 1).expect("create");
            assert_eq!(how, IndexOpen::Created);
            index.tree("t").expect("tree").put(b"k", &7u64).expect("put");
            index.flush().expect("flush");
        }
        // Garbage over every file sled keeps.
        for entry in std::fs::read_dir(&path).expect("read dir").flatten() {
            if entry.path().is_file() {
                std::fs::write(entry.path(), vec![0xA5u8; 4096]).expect("corrupt");
            }
        }
        let (index, how) = Index::open(owner(dir.path()), 2).expect("reopen");
        assert!(matches!(how, IndexOpen::Quarantined { .. }), "{how:?}");
        assert!(dir.path().join("index.quarantined-2").exists());
        assert_eq!(index.tree("t").expect("tree").get::<u64>(b"k").expect("get"), None);
    }

    #[test]
    fn an_index_in_use_by_another_opener_is_an_error_not_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(INDEX_DIR);
        // Someone who ignores the state folder's lock (an older satcast, a tool) has the
        // index open. sled's flock conflicts between two opens even in one process.
        let other = sled::open(&path).expect("other opener");
        other.insert(b"k", b"history").expect("insert");
        other.flush().expect("flush");
        match Index::open(owner(dir.path()), 2) {
            Err(IndexError::InUse { path: reported }) => assert_eq!(reported, path),
            other => panic!("an index in use must be an error: {other:?}"),
        }
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).expect("read dir").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, vec![crate::lock::LOCK_FILE.to_owned(), INDEX_DIR.to_owned()], "nothing was quarantined");
        assert_eq!(other.get(b"k").expect("get").as_deref(), Some(&b"history"[..]));
    }

    #[test]
    fn the_index_keeps_its_folder_owned_while_any_handle_lives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (index, _) = Index::open(owner(dir.path()), 1).expect("open");
        let handle = index.clone();
        drop(index);
        assert!(matches!(StateLock::acquire(dir.path(), "satcast-test"), Err(LockError::InUse { .. })));
        drop(handle);
        assert!(StateLock::acquire(dir.path(), "satcast-test").is_ok());
    }
}
