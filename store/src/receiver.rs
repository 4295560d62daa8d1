//! The receiver's object store: partial objects, the content-addressed cache
//! (objects/<blake3>) and atomic delivery into deliver/<kind>/<name>.
//!
//! Layout under the state directory:
//! - `partial/<object id>.part`: decoded, verified blocks written at their offsets;
//! - `objects/<blake3 hex>`: finished objects, verified and fsynced;
//! and under the deliver directory:
//! - `<kind>/<name>`: the delivered file, replaced by atomic rename;
//! - `.incoming/`: temp files on the way into place (same file system as the targets).
//!
//! Symbols of blocks not yet decoded are kept in memory here; the durable spool that lets a
//! restart resume mid-block is the store issue's work.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use satcast_protocol::manifest::Manifest;
use satcast_protocol::reception::ReceptionStore;
use thiserror::Error;

use crate::fsutil::fsync_dir;

/// Why the store could not do what was asked.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A directory could not be created or opened.
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The finished object could not be moved into the cache.
    #[error("cannot cache object {object_id:016x}: {source}")]
    Cache {
        /// The object.
        object_id: u64,
        /// The I/O error.
        source: io::Error,
    },
    /// The cached object could not be delivered.
    #[error("cannot deliver {path}: {source}")]
    Deliver {
        /// Where it was to go.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// The receiver's durable object store. See the module documentation for the layout.
#[derive(Debug)]
pub struct ReceiverStore {
    partial_dir: PathBuf,
    objects_dir: PathBuf,
    deliver_dir: PathBuf,
    incoming_dir: PathBuf,
    symbols: HashMap<(u64, u8), BTreeMap<u32, Vec<u8>>>,
    written: HashMap<u64, HashSet<u8>>,
}

fn prepare(path: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(path).map_err(|source| StoreError::Prepare { path: path.to_owned(), source })
}

impl ReceiverStore {
    /// Opens (creating if needed) the store. Partial objects left by an earlier run are
    /// removed: without a durable spool their blocks cannot be trusted to be complete.
    pub fn open(state_dir: &Path, deliver_dir: &Path) -> Result<Self, StoreError> {
        let store = ReceiverStore {
            partial_dir: state_dir.join("partial"),
            objects_dir: state_dir.join("objects"),
            deliver_dir: deliver_dir.to_owned(),
            incoming_dir: deliver_dir.join(".incoming"),
            symbols: HashMap::new(),
            written: HashMap::new(),
        };
        for dir in [&store.partial_dir, &store.objects_dir, &store.deliver_dir, &store.incoming_dir] {
            prepare(dir)?;
        }
        for dir in [&store.partial_dir, &store.incoming_dir] {
            let entries = fs::read_dir(dir).map_err(|source| StoreError::Prepare { path: dir.clone(), source })?;
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(store)
    }

    fn partial_path(&self, object_id: u64) -> PathBuf {
        self.partial_dir.join(format!("{object_id:016x}.part"))
    }

    /// Where a delivered object of this kind and name lives.
    pub fn delivered_path(&self, manifest: &Manifest) -> PathBuf {
        self.deliver_dir.join(manifest.kind.to_string()).join(&manifest.name)
    }

    /// Makes a completed object durable: fsyncs the partial file, renames it into the
    /// content-addressed cache, then delivers a copy into deliver/<kind>/<name> by atomic
    /// rename. Returns the delivered path. Only after this returns may it be acknowledged.
    pub fn commit(&mut self, manifest: &Manifest) -> Result<PathBuf, StoreError> {
        let object_id = manifest.object_id;
        let cache_err = |source| StoreError::Cache { object_id, source };
        let partial = self.partial_path(object_id);
        let cached = self.objects_dir.join(hex::encode(manifest.object_hash));
        {
            let file = OpenOptions::new().write(true).open(&partial).map_err(cache_err)?;
            // Blocks are padded by the FEC codec only in memory, but trim anyway so the
            // cached file is exactly the transmitted payload.
            file.set_len(manifest.size_bytes).map_err(cache_err)?;
            file.sync_all().map_err(cache_err)?;
        }
        fs::rename(&partial, &cached).map_err(cache_err)?;
        fsync_dir(&self.objects_dir).map_err(cache_err)?;
        self.symbols.retain(|(id, _), _| *id != object_id);
        self.written.remove(&object_id);

        let target = self.delivered_path(manifest);
        let deliver_err = |source| StoreError::Deliver { path: target.clone(), source };
        let kind_dir = target.parent().map(Path::to_owned).unwrap_or_else(|| self.deliver_dir.clone());
        fs::create_dir_all(&kind_dir).map_err(deliver_err)?;
        let tmp = self.incoming_dir.join(format!("{object_id:016x}"));
        // A copy, not a link: a local system that edits the delivered file must not alter
        // the verified cache.
        fs::copy(&cached, &tmp).map_err(deliver_err)?;
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(deliver_err)?;
        fs::rename(&tmp, &target).map_err(deliver_err)?;
        fsync_dir(&kind_dir).map_err(deliver_err)?;
        Ok(target)
    }
}

impl ReceptionStore for ReceiverStore {
    fn add_symbol(&mut self, object_id: u64, sbn: u8, esi: u32, symbol: &[u8]) -> io::Result<bool> {
        let block = self.symbols.entry((object_id, sbn)).or_default();
        if block.contains_key(&esi) {
            return Ok(false);
        }
        block.insert(esi, symbol.to_vec());
        Ok(true)
    }

    fn symbol_count(&self, object_id: u64, sbn: u8) -> u32 {
        self.symbols.get(&(object_id, sbn)).map_or(0, |b| b.len() as u32)
    }

    fn symbols(&mut self, object_id: u64, sbn: u8) -> io::Result<Vec<(u32, Vec<u8>)>> {
        Ok(self.symbols.get(&(object_id, sbn)).map(|b| b.iter().map(|(e, s)| (*e, s.clone())).collect()).unwrap_or_default())
    }

    fn clear_block(&mut self, object_id: u64, sbn: u8) -> io::Result<()> {
        self.symbols.remove(&(object_id, sbn));
        Ok(())
    }

    fn write_block(&mut self, object_id: u64, sbn: u8, offset: u64, data: &[u8]) -> io::Result<()> {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(self.partial_path(object_id))?;
        file.write_all_at(data, offset)?;
        self.written.entry(object_id).or_default().insert(sbn);
        Ok(())
    }

    fn block_written(&self, object_id: u64, sbn: u8) -> bool {
        self.written.get(&object_id).is_some_and(|w| w.contains(&sbn))
    }

    fn object_hash(&mut self, object_id: u64, len: u64) -> io::Result<[u8; 32]> {
        let mut file = File::open(self.partial_path(object_id))?.take(len);
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(*hasher.finalize().as_bytes())
    }

    fn discard(&mut self, object_id: u64) -> io::Result<()> {
        self.symbols.retain(|(id, _), _| *id != object_id);
        self.written.remove(&object_id);
        match fs::remove_file(self.partial_path(object_id)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}
