//! The sled index, behind this crate's own API. sled 0.34 is beta and has open reports of
//! corruption after unclean shutdown, so the index only ever holds what can be rebuilt from
//! the files (or re-learned from the protocol): if it fails to open, or panics while
//! opening, it is moved aside and a fresh one is built.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use bincode::{Decode, Encode};
use thiserror::Error;

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
}

fn open_sled(path: &Path) -> Result<sled::Db, String> {
    // A corrupt file must not take the daemon down: sled may panic instead of erroring.
    match std::panic::catch_unwind(AssertUnwindSafe(|| {
        sled::Config::new().path(path).mode(sled::Mode::LowSpace).cache_capacity(CACHE_BYTES_MAX).open()
    })) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("sled panicked while opening".into()),
    }
}

impl Index {
    /// Opens the index at `path`, quarantining it beside itself if it will not open.
    pub fn open(path: &Path, now_unix_secs: u64) -> Result<(Index, IndexOpen), IndexError> {
        let existed = path.exists();
        match open_sled(path) {
            Ok(db) => Ok((Index { db }, if existed { IndexOpen::Opened } else { IndexOpen::Created })),
            Err(why) => {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "index".into());
                let moved_to = path.with_file_name(format!("{name}.quarantined-{now_unix_secs}"));
                std::fs::rename(path, &moved_to).map_err(|source| IndexError::Quarantine { path: path.to_owned(), source })?;
                let db = open_sled(path).map_err(|why| IndexError::Open { path: path.to_owned(), why })?;
                Ok((Index { db }, IndexOpen::Quarantined { moved_to, why }))
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

    #[test]
    fn a_corrupt_index_is_quarantined_and_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index");
        {
            let (index, how) = Index::open(&path, 1).expect("create");
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
        let (index, how) = Index::open(&path, 2).expect("reopen");
        assert!(matches!(how, IndexOpen::Quarantined { .. }), "{how:?}");
        assert!(dir.path().join("index.quarantined-2").exists());
        assert_eq!(index.tree("t").expect("tree").get::<u64>(b"k").expect("get"), None);
    }
}
