//! The receiver's object store: the symbol spool, partial objects, the content-addressed
//! cache (objects/<blake3>), atomic delivery into deliver/<kind>/<name>, and the durable
//! outbox of feedback not yet acknowledged by the uplink.
//!
//! Layout under the state directory (files are the truth; `index/` can be rebuilt):
//! - `spool/<object id>/manifest`: the signed manifest, so a restart can resume the object;
//! - `spool/<object id>/<sbn>.sym`: symbols of blocks not yet decoded (see `spool`);
//! - `partial/<object id>.part`: decoded, verified blocks at their offsets;
//! - `objects/<blake3 hex>` and `objects/<blake3 hex>.manifest`: finished objects;
//! - `index/`: sled: verified blocks per partial object, cache entries, the outbox;
//!
//! and under the deliver directory `<kind>/<name>`, replaced by atomic rename, and
//! `.incoming/` for copies on their way into place (same file system as the targets).

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bincode::{Decode, Encode};
use satcast_protocol::codec::{self, DELTA_BASE_BYTES_MAX};
use satcast_protocol::fec::{self, Oti};
use satcast_protocol::feedback::{Feedback, FeedbackMessage};
use satcast_protocol::feedback::{Refusal, RefusalCode};
use satcast_protocol::manifest::{Compression, Manifest};
use satcast_protocol::object_id::ObjectId;
use satcast_protocol::reception::ReceptionStore;
use satcast_protocol::storage::{self, DecodeFailure};
use satcast_protocol::trust::SignedManifest;
use thiserror::Error;

use crate::fsutil::{fsync_dir, write_atomic};
use crate::index::{Index, IndexError, IndexOpen, Tree};
use crate::lock::StateLock;
use crate::spool::{RECORD_HEADER_LEN, Spool};

/// The most feedback messages kept for the uplink; beyond it the oldest progress report
/// goes (completions are never dropped: the uplink re-asks for progress every round).
pub const OUTBOX_ENTRIES_MAX: usize = 10_000;
/// The most cache entries listed or considered for eviction at once.
pub const CACHE_ENTRIES_MAX: usize = 100_000;

/// The name the receiver writes into its state folder's lock (see [`crate::lock`]).
pub const RECEIVER_PROGRAM: &str = "satcast-receiver";

/// Bounds on what the receiver keeps on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverLimits {
    /// Spooled symbols and partial objects together (config `limits.spool_bytes_max`).
    pub spool_bytes_max: u64,
    /// Finished objects in the cache (config `limits.cache_bytes_max`).
    pub cache_bytes_max: u64,
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        ReceiverLimits { spool_bytes_max: 8 << 30, cache_bytes_max: 16 << 30 }
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A directory could not be created or read.
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The cache limit leaves no room for this object even after evicting every
    /// superseded version; the object stays partial and is committed when room returns.
    #[error("cache full: {needed} bytes needed, {used} of {limit} used by latest versions that are never evicted")]
    CacheFull {
        /// Bytes the new object needs.
        needed: u64,
        /// Bytes the cache holds.
        used: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The finished object could not be moved into the cache (a full disk, for example);
    /// nothing already cached was touched.
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

/// A finished object in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct CacheEntry {
    /// Its object id.
    pub object_id: u64,
    /// Its kind, as text.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// Its size.
    pub size_bytes: u64,
    /// BLAKE3 of the payload (also its file name).
    pub hash: [u8; 32],
}

#[derive(Debug, Clone, Default, Encode, Decode)]
struct ObjectEntry {
    verified: Vec<u8>,
}

/// What opening the store found and did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// How the index opened (quarantined and rebuilt, perhaps).
    pub index: IndexOpen,
    /// Partial objects found, to resume.
    pub partial_objects: usize,
    /// Cache entries rebuilt from the files.
    pub cache_entries_rebuilt: usize,
    /// Leftovers removed (spools without a manifest, stray partial files, cache manifests
    /// without their object, temp files).
    pub orphans_removed: usize,
    /// Verified-block claims in the index that the partial file did not back (missing or
    /// too short, as a crash inside a commit leaves it): dropped, the blocks are collected again.
    pub claims_dropped: usize,
    /// Partial objects whose verified object is already whole in the cache (a crash inside
    /// a commit, after the rename into the cache): they complete from the cache without
    /// another symbol, and [`ReceiverStore::cached_object`] finds them.
    pub partials_cached: usize,
}

/// Disk use against the limits, for status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUse {
    /// Spooled symbols and partial objects.
    pub spool_bytes: u64,
    /// Cached objects.
    pub cache_bytes: u64,
    /// The limits.
    pub limits: ReceiverLimits,
}

struct Partial {
    manifest: Manifest,
    spool: Spool,
    /// Blocks verified and written to the partial file (never a block the file lacks).
    verified: BTreeSet<u8>,
    /// Bytes of the partial file (its highest written offset), kept here so the spool
    /// limit check on every symbol costs no system call.
    partial_bytes: u64,
}

impl std::fmt::Debug for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partial").field("object_id", &self.manifest.object_id).field("verified", &self.verified).finish()
    }
}

/// The receiver's durable object store. See the module documentation for the layout.
#[derive(Debug)]
pub struct ReceiverStore {
    spool_dir: PathBuf,
    partial_dir: PathBuf,
    objects_dir: PathBuf,
    deliver_dir: PathBuf,
    incoming_dir: PathBuf,
    index: Index,
    objects: Tree,
    cache: Tree,
    outbox: Outbox,
    partials: HashMap<u64, Partial>,
    limits: ReceiverLimits,
    /// Tests stop `commit` at this step, as a crash there would.
    #[cfg(test)]
    crash_at: Option<CommitStep>,
}

/// The steps of [`ReceiverStore::commit`], in order: a crash after each one leaves a state
/// that [`ReceiverStore::open`] resumes from (see commit's documentation). Tests stop a
/// commit at each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitStep {
    /// The partial file has the object's length and is fsynced.
    PartialSynced,
    /// `objects/<hash>.manifest` is written (atomically).
    ManifestCached,
    /// The partial file is renamed to `objects/<hash>` (directory not yet fsynced).
    Renamed,
    /// The directory is fsynced and the cache's index entry flushed.
    CacheIndexed,
    /// The copy is in `deliver/<kind>/<name>`, its directory fsynced.
    Delivered,
    /// The spool folder is removed; the index's claims are not yet.
    SpoolRemoved,
}

impl CommitStep {
    #[cfg(test)]
    const ALL: [CommitStep; 6] = [
        CommitStep::PartialSynced,
        CommitStep::ManifestCached,
        CommitStep::Renamed,
        CommitStep::CacheIndexed,
        CommitStep::Delivered,
        CommitStep::SpoolRemoved,
    ];
}

fn prepare(path: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(path).map_err(|source| StoreError::Prepare { path: path.to_owned(), source })
}

fn read_dir(path: &Path) -> Result<Vec<fs::DirEntry>, StoreError> {
    Ok(fs::read_dir(path).map_err(|source| StoreError::Prepare { path: path.to_owned(), source })?.flatten().collect())
}

/// The manifest inside signed-manifest bytes, without verifying the signature (the
/// reception machine verifies it again when it resumes the object).
fn unverified_manifest(signed: &[u8]) -> Option<Manifest> {
    let signed = SignedManifest::from_bytes(signed).ok()?;
    Manifest::from_bytes(&signed.manifest).ok()
}

fn object_key(object_id: u64) -> [u8; 8] {
    object_id.to_be_bytes()
}

impl ReceiverStore {
    /// Opens (creating if needed) the store: resumes partial objects from their spools,
    /// removes leftovers, and rebuilds the index from the files if it had to be replaced.
    pub fn open(
        state_dir: &Path,
        deliver_dir: &Path,
        limits: ReceiverLimits,
        now_unix_secs: u64,
    ) -> Result<(Self, OpenReport), StoreError> {
        // First: everything below (the clean-up of leftovers included) is the owner's business.
        let owner = StateLock::acquire(state_dir, RECEIVER_PROGRAM).map_err(IndexError::from)?;
        let spool_dir = state_dir.join("spool");
        let partial_dir = state_dir.join("partial");
        let objects_dir = state_dir.join("objects");
        let incoming_dir = deliver_dir.join(".incoming");
        for dir in [&spool_dir, &partial_dir, &objects_dir, &deliver_dir.to_owned(), &incoming_dir] {
            prepare(dir)?;
        }
        for entry in read_dir(&incoming_dir)? {
            let _ = fs::remove_file(entry.path());
        }
        let (index, how) = Index::open(owner, now_unix_secs)?;
        let rebuild = !matches!(how, IndexOpen::Opened);
        let mut store = ReceiverStore {
            objects: index.tree("objects")?,
            cache: index.tree("cache")?,
            outbox: Outbox::new(index.clone(), index.tree("outbox")?)?,
            index,
            spool_dir,
            partial_dir,
            objects_dir,
            deliver_dir: deliver_dir.to_owned(),
            incoming_dir,
            partials: HashMap::new(),
            limits,
            #[cfg(test)]
            crash_at: None,
        };
        let mut report = OpenReport {
            index: how,
            partial_objects: 0,
            cache_entries_rebuilt: 0,
            orphans_removed: 0,
            claims_dropped: 0,
            partials_cached: 0,
        };
        store.remove_cache_leftovers(&mut report)?;
        store.load_partials(&mut report)?;
        if rebuild {
            report.cache_entries_rebuilt = store.rebuild_cache()?;
        }
        store.index.flush()?;
        Ok((store, report))
    }

    fn load_partials(&mut self, report: &mut OpenReport) -> Result<(), StoreError> {
        let mut live = BTreeSet::new();
        for entry in read_dir(&self.spool_dir)? {
            let dir = entry.path();
            let parsed = u64::from_str_radix(&entry.file_name().to_string_lossy(), 16).ok();
            let manifest = fs::read(dir.join("manifest")).ok().and_then(|b| unverified_manifest(&b));
            let (Some(object_id), Some(manifest)) = (parsed, manifest) else {
                let _ = fs::remove_dir_all(&dir);
                report.orphans_removed += 1;
                continue;
            };
            let spool = match Spool::open(&dir, usize::from(Oti::decode(&manifest.oti).map_or(0, |o| o.symbol_size))) {
                Ok(spool) => spool,
                Err(_) => {
                    let _ = fs::remove_dir_all(&dir);
                    report.orphans_removed += 1;
                    continue;
                }
            };
            let partial_bytes = fs::metadata(self.partial_path(object_id)).map_or(0, |m| m.len());
            let verified: BTreeSet<u8> = match self.objects.get::<ObjectEntry>(&object_key(object_id))? {
                // A claim counts only if the partial file holds the whole block: a crash
                // inside a commit (after its rename) leaves claims on a file that is gone.
                Some(entry) => {
                    let claimed = entry.verified.len();
                    let backed: BTreeSet<u8> = entry
                        .verified
                        .into_iter()
                        .filter(|sbn| block_end(&manifest, *sbn).is_some_and(|end| end <= partial_bytes))
                        .collect();
                    report.claims_dropped += claimed - backed.len();
                    backed
                }
                // Index lost: the partial file's blocks that match their signed hashes count.
                None => self.rehash_partial(&manifest),
            };
            self.objects.put(&object_key(object_id), &ObjectEntry { verified: verified.iter().copied().collect() })?;
            if self.cache_file_whole(&manifest) {
                // What the interrupted commit may not have done yet, so the cache lists it
                // (and `has_cached` finds it).
                if self.cache.get::<CacheEntry>(&manifest.delivered_hash())?.is_none() {
                    self.cache.put(&manifest.delivered_hash(), &cache_entry(&manifest))?;
                }
                report.partials_cached += 1;
            }
            live.insert(object_id);
            self.partials.insert(object_id, Partial { manifest, spool, verified, partial_bytes });
            report.partial_objects += 1;
        }
        for entry in read_dir(&self.partial_dir)? {
            let id = entry.file_name().to_string_lossy().strip_suffix(".part").and_then(|n| u64::from_str_radix(n, 16).ok());
            if !id.is_some_and(|id| live.contains(&id)) {
                let _ = fs::remove_file(entry.path());
                report.orphans_removed += 1;
            }
        }
        for (key, _) in self.objects.scan::<ObjectEntry>(&[], usize::MAX)? {
            if key.len() == 8 && !live.contains(&key_seq(&key)) {
                self.objects.remove(&key)?;
            }
        }
        Ok(())
    }

    /// Removes what a crash inside `commit` or `write_atomic` can leave in the cache folder
    /// and nothing else will: a cache manifest written before its object was renamed in, and
    /// temp files.
    fn remove_cache_leftovers(&self, report: &mut OpenReport) -> Result<(), StoreError> {
        for entry in read_dir(&self.objects_dir)? {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let temp = name.starts_with('.') && name.ends_with(".tmp");
            let orphan_manifest = name.strip_suffix(".manifest").is_some_and(|object| !self.objects_dir.join(object).exists());
            if (temp || orphan_manifest) && fs::remove_file(&path).is_ok() {
                report.orphans_removed += 1;
            }
        }
        Ok(())
    }

    fn rehash_partial(&self, manifest: &Manifest) -> BTreeSet<u8> {
        let Ok(oti) = Oti::decode(&manifest.oti) else { return BTreeSet::new() };
        let Ok(file) = File::open(self.partial_path(manifest.object_id)) else { return BTreeSet::new() };
        let mut verified = BTreeSet::new();
        for (block, expected) in fec::blocks(&oti).iter().zip(&manifest.block_hashes) {
            let mut data = vec![0u8; block.len as usize];
            if file.read_exact_at(&mut data, block.offset).is_ok() && fec::block_hash(&data) == *expected {
                verified.insert(block.sbn);
            }
        }
        verified
    }

    fn rebuild_cache(&mut self) -> Result<usize, StoreError> {
        let mut rebuilt = 0;
        for entry in read_dir(&self.objects_dir)? {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "manifest") {
                continue;
            }
            let Some(manifest) = fs::read(&path).ok().and_then(|b| unverified_manifest(&b)) else { continue };
            let object = self.objects_dir.join(hex::encode(manifest.delivered_hash()));
            if fs::metadata(&object).map(|m| m.len()).ok() != Some(manifest.delivered_size()) {
                continue;
            }
            self.cache.put(&manifest.delivered_hash(), &cache_entry(&manifest))?;
            rebuilt += 1;
        }
        Ok(rebuilt)
    }

    /// Cached objects are named by what they deliver ([`Manifest::delivered_hash`]), so a
    /// patch and a full airing of one version are one cache entry, and a patch finds its base.
    fn cached_path(&self, manifest: &Manifest) -> PathBuf {
        self.objects_dir.join(hex::encode(manifest.delivered_hash()))
    }

    /// Whether the manifest's object is whole in the cache. Only a verified object is ever
    /// renamed to its hash there, so its size is enough to tell it from nothing.
    fn cache_file_whole(&self, manifest: &Manifest) -> bool {
        fs::metadata(self.cached_path(manifest)).is_ok_and(|m| m.is_file() && m.len() == manifest.delivered_size())
    }

    /// The cached object with this BLAKE3 hash, if the cache lists it and holds it whole: an
    /// object whose manifest names this hash is delivered from here (by
    /// [`ReceiverStore::commit`]) without receiving a byte. `has_cached` answers the
    /// reception machine with it, for partial objects at resume (a crash inside a commit)
    /// and for manifests that come again (a crash before the version was recorded).
    pub fn cached_object(&self, object_hash: &[u8; 32]) -> Option<PathBuf> {
        let entry = self.cache.get::<CacheEntry>(object_hash).ok().flatten()?;
        let path = self.objects_dir.join(hex::encode(object_hash));
        fs::metadata(&path).is_ok_and(|m| m.len() == entry.size_bytes).then_some(path)
    }

    /// The cached object with this delivered hash, read whole for use as a patch's base, and
    /// checked against its hash first: a base corrupted on disk is evicted and refused like a
    /// missing one ([`RefusalCode::NoBase`]), so the county gets the full object instead.
    fn read_base(&mut self, base_hash: &[u8; 32]) -> Result<Vec<u8>, DecodeFailure> {
        let no_base =
            |why: &str| DecodeFailure::Refused(Refusal::new(RefusalCode::NoBase, format!("base {} {why}", hex::encode(&base_hash[..8]))));
        let Some(path) = self.cached_object(base_hash) else { return Err(no_base("is not in the cache")) };
        let len = fs::metadata(&path).map_err(DecodeFailure::Io)?.len();
        if len > DELTA_BASE_BYTES_MAX {
            return Err(DecodeFailure::Refused(Refusal::new(RefusalCode::Undecodable, format!("base of {len} bytes is over the limit"))));
        }
        let base = fs::read(&path).map_err(DecodeFailure::Io)?;
        if blake3::hash(&base).as_bytes() != base_hash {
            let _ = fs::remove_file(path.with_extension("manifest"));
            let _ = fs::remove_file(&path);
            let _ = self.cache.remove(base_hash);
            return Err(no_base("failed its hash in the cache (evicted)"));
        }
        Ok(base)
    }

    /// Signed manifests of the partial objects found at open, for the reception machine to
    /// verify again and resume. Those whose object is already cached (a commit interrupted
    /// by a crash) are among them: `has_cached` says so, and the machine completes them at
    /// once, from the cache.
    pub fn resumable(&self) -> Vec<(u64, Vec<u8>)> {
        let mut out: Vec<(u64, Vec<u8>)> = self
            .partials
            .keys()
            .filter_map(|id| fs::read(self.spool_dir.join(ObjectId(*id).to_string()).join("manifest")).ok().map(|b| (*id, b)))
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }

    fn partial_path(&self, object_id: u64) -> PathBuf {
        self.partial_dir.join(format!("{}.part", ObjectId(object_id)))
    }

    /// Where a coded object's decoded bytes wait for the commit. Not a `.part` file, so open
    /// removes one a crash left: the object is verified and decoded again.
    fn decoded_path(&self, object_id: u64) -> PathBuf {
        self.partial_dir.join(format!("{}.decoded", ObjectId(object_id)))
    }

    fn object_spool_dir(&self, object_id: u64) -> PathBuf {
        self.spool_dir.join(ObjectId(object_id).to_string())
    }

    /// Where a delivered object of this kind and name lives.
    pub fn delivered_path(&self, manifest: &Manifest) -> PathBuf {
        self.deliver_dir.join(manifest.kind.to_string()).join(&manifest.name)
    }

    /// Spool and cache use against the limits.
    pub fn disk_use(&self) -> DiskUse {
        DiskUse { spool_bytes: self.spool_bytes(), cache_bytes: self.cache_bytes(), limits: self.limits }
    }

    fn spool_bytes(&self) -> u64 {
        self.partials.values().map(|p| p.spool.bytes() + p.partial_bytes).sum()
    }

    /// The spool as objects in progress will need it: each at its full size at least.
    fn spool_reserved(&self) -> u64 {
        self.partials.values().map(|p| p.spool.bytes() + p.partial_bytes.max(p.manifest.size_bytes)).sum()
    }

    fn cache_bytes(&self) -> u64 {
        self.cached().iter().map(|e| e.size_bytes).sum()
    }

    /// Every cached object.
    pub fn cached(&self) -> Vec<CacheEntry> {
        self.cache.scan::<CacheEntry>(&[], CACHE_ENTRIES_MAX).map(|v| v.into_iter().map(|(_, e)| e).collect()).unwrap_or_default()
    }

    /// Bytes the index uses on disk (for the disk-ratio measurement).
    pub fn index_bytes(&self) -> u64 {
        self.index.size_on_disk()
    }

    /// Makes everything written so far survive a power cut: spool files and the index.
    pub fn sync(&mut self) -> io::Result<()> {
        for partial in self.partials.values_mut() {
            partial.spool.sync()?;
        }
        self.index.flush().map_err(io::Error::other)
    }

    /// Frees cache room for `needed` bytes by evicting superseded versions (never the
    /// latest version of a name), oldest version first.
    fn make_room(&mut self, needed: u64) -> Result<(), StoreError> {
        let entries = self.cached();
        let mut used: u64 = entries.iter().map(|e| e.size_bytes).sum();
        if used + needed <= self.limits.cache_bytes_max {
            return Ok(());
        }
        let mut latest: HashMap<(&str, &str), u64> = HashMap::new();
        for e in &entries {
            let v = latest.entry((e.kind.as_str(), e.name.as_str())).or_insert(e.version);
            *v = (*v).max(e.version);
        }
        let mut superseded: Vec<&CacheEntry> =
            entries.iter().filter(|e| latest.get(&(e.kind.as_str(), e.name.as_str())) != Some(&e.version)).collect();
        superseded.sort_by_key(|e| e.version);
        for entry in superseded {
            if used + needed <= self.limits.cache_bytes_max {
                break;
            }
            let file = self.objects_dir.join(hex::encode(entry.hash));
            let _ = fs::remove_file(file.with_extension("manifest"));
            match fs::remove_file(&file) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => continue,
                _ => {}
            }
            self.cache.remove(&entry.hash)?;
            used -= entry.size_bytes;
        }
        if used + needed > self.limits.cache_bytes_max {
            return Err(StoreError::CacheFull { needed, used, limit: self.limits.cache_bytes_max });
        }
        Ok(())
    }

    /// Makes a completed object durable and delivers it: fsyncs the partial file, renames
    /// it into the content-addressed cache, then delivers a copy into deliver/<kind>/<name>
    /// by atomic rename, and only then forgets the partial object. Returns the delivered
    /// path. Only after this returns may the object be acknowledged. On error nothing
    /// already cached is touched and the call can be retried (it is idempotent).
    ///
    /// The partial object (its spool folder with the manifest) is the record that the
    /// object is unfinished, so it goes last: until then a restart resumes the object. A
    /// crash after each step (`CommitStep`, where the tests stop it) leaves, and `open` does:
    ///
    /// - before the rename (`PartialSynced`, `ManifestCached`): the partial file whole and
    ///   its claims; perhaps a cache manifest without its object, which open removes. The
    ///   object resumes with every block verified and completes; the commit is redone.
    /// - after the rename (`Renamed`, `CacheIndexed`): the object in the cache, the partial
    ///   file gone, the index still claiming its blocks. Open drops the claims the partial
    ///   file no longer backs, adds the cache's index entry if it was not flushed, and
    ///   reports the partial as cached (`partials_cached`; [`ReceiverStore::cached_object`]
    ///   and `has_cached` find it): the reception machine completes it from the cache
    ///   without a symbol, and the commit that follows only delivers and forgets.
    /// - after delivery (`Delivered`): as above; delivering again renames the same bytes over
    ///   the same file.
    /// - while forgetting (`SpoolRemoved`): the spool folder gone or without its manifest,
    ///   perhaps a claim left in the index; open removes both as leftovers. The object is
    ///   cached and delivered.
    ///
    /// A power cut can also undo a rename whose directory was not yet fsynced; that lands
    /// in the state before it, which is covered above.
    pub fn commit(&mut self, manifest: &Manifest) -> Result<PathBuf, StoreError> {
        let object_id = manifest.object_id;
        let cached = self.cached_path(manifest);
        let cache_err = |source| StoreError::Cache { object_id, source };
        if !self.cache_file_whole(manifest) {
            self.make_room(manifest.delivered_size())?;
            // A coded object delivers its decoded bytes (synced by the decode); the transmitted
            // ones are forgotten with the partial object.
            let coded = manifest.compression != Compression::None;
            let partial = if coded { self.decoded_path(object_id) } else { self.partial_path(object_id) };
            {
                let file = OpenOptions::new().write(true).open(&partial).map_err(cache_err)?;
                // A sealed object's delivered length is sealed: its decoded file has it.
                if !matches!(manifest.compression, Compression::Sealed(_)) {
                    file.set_len(manifest.delivered_size()).map_err(cache_err)?;
                }
                file.sync_all().map_err(cache_err)?;
            }
            self.crash_point(CommitStep::PartialSynced)?;
            let spool_manifest = self.object_spool_dir(object_id).join("manifest");
            let signed = fs::read(&spool_manifest).map_err(cache_err)?;
            write_atomic(&cached.with_extension("manifest"), &signed).map_err(cache_err)?;
            self.crash_point(CommitStep::ManifestCached)?;
            fs::rename(&partial, &cached).map_err(cache_err)?;
            if let Some(partial) = self.partials.get_mut(&object_id) {
                // The blocks now live in the cache; the partial file is gone.
                partial.verified.clear();
                partial.partial_bytes = 0;
            }
            self.crash_point(CommitStep::Renamed)?;
            fsync_dir(&self.objects_dir).map_err(cache_err)?;
        } else if !cached.with_extension("manifest").exists() {
            // Left without it by an interrupted eviction: the manifest is what rebuilds the
            // cache's index entry, so it is put back when this object brings one.
            if let Ok(signed) = fs::read(self.object_spool_dir(object_id).join("manifest")) {
                write_atomic(&cached.with_extension("manifest"), &signed).map_err(cache_err)?;
            }
        }
        // Not overwritten if present: an object with the same bytes may be cached already.
        if self.cache.get::<CacheEntry>(&manifest.delivered_hash())?.is_none() {
            self.cache.put(&manifest.delivered_hash(), &cache_entry(manifest))?;
        }
        self.index.flush()?;
        self.crash_point(CommitStep::CacheIndexed)?;
        let delivered = self.deliver(manifest, &cached)?;
        self.crash_point(CommitStep::Delivered)?;
        self.forget(object_id)?;
        Ok(delivered)
    }

    /// Removes a committed object's partial state: what is left of the partial file (there
    /// is one if the same bytes were cached already), the spool folder, the index claims.
    fn forget(&mut self, object_id: u64) -> Result<(), StoreError> {
        let forget_err = |source| StoreError::Cache { object_id, source };
        for path in [self.partial_path(object_id), self.decoded_path(object_id)] {
            match fs::remove_file(path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(forget_err(error)),
                _ => {}
            }
        }
        match fs::remove_dir_all(self.object_spool_dir(object_id)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(forget_err(error)),
            _ => {}
        }
        self.crash_point(CommitStep::SpoolRemoved)?;
        self.objects.remove(&object_key(object_id))?;
        self.index.flush()?;
        self.partials.remove(&object_id);
        Ok(())
    }

    /// Where tests simulate a crash: `commit` stops there with an error, leaving the files
    /// and index as they are, and the test reopens the store.
    fn crash_point(&self, step: CommitStep) -> Result<(), StoreError> {
        #[cfg(test)]
        if self.crash_at == Some(step) {
            return Err(StoreError::Cache { object_id: 0, source: io::Error::other(format!("simulated crash after {step:?}")) });
        }
        let _ = step;
        Ok(())
    }

    fn deliver(&self, manifest: &Manifest, cached: &Path) -> Result<PathBuf, StoreError> {
        let target = self.delivered_path(manifest);
        let deliver_err = |source| StoreError::Deliver { path: target.clone(), source };
        let kind_dir = target.parent().map(Path::to_owned).unwrap_or_else(|| self.deliver_dir.clone());
        fs::create_dir_all(&kind_dir).map_err(deliver_err)?;
        let tmp = self.incoming_dir.join(ObjectId(manifest.object_id).to_string());
        // A copy, not a link: a local system that edits the delivered file must not alter
        // the verified cache.
        fs::copy(cached, &tmp).map_err(deliver_err)?;
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(deliver_err)?;
        fs::rename(&tmp, &target).map_err(deliver_err)?;
        fsync_dir(&kind_dir).map_err(deliver_err)?;
        Ok(target)
    }

    /// The outbox of feedback for the uplink; clones share it (the acknowledgement client
    /// drains it from its own thread).
    pub fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }
}

/// Feedback not yet acknowledged by the uplink, durable across restarts. Cloning gives
/// another handle to the same outbox.
#[derive(Debug, Clone)]
pub struct Outbox {
    index: Index,
    tree: Tree,
    next_seq: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Outbox {
    fn new(index: Index, tree: Tree) -> Result<Outbox, StoreError> {
        let next = tree.scan::<Vec<u8>>(&[], usize::MAX)?.last().map_or(0, |(k, _)| key_seq(k) + 1);
        Ok(Outbox { index, tree, next_seq: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(next)) })
    }

    /// Queues feedback for the uplink, durably. A newer progress report replaces an older
    /// one for the same object: the uplink only needs the latest.
    pub fn push(&self, feedback: &Feedback) -> Result<(), StoreError> {
        // One completion or refusal per object is enough: a repeat (the county answering
        // another round marker while the WAN is down) adds nothing.
        // A refusal is a repeat only with the same code: a new reason is news.
        let same = |old: &FeedbackMessage| match (old, &feedback.message) {
            (FeedbackMessage::Complete { object_id: a, .. }, FeedbackMessage::Complete { object_id: b, .. })
            | (FeedbackMessage::Rejected { object_id: a, .. }, FeedbackMessage::Rejected { object_id: b, .. }) => a == b,
            (FeedbackMessage::Refused { object_id: a, refusal: r }, FeedbackMessage::Refused { object_id: b, refusal: s }) => {
                a == b && r.code == s.code
            }
            _ => false,
        };
        if matches!(feedback.message, FeedbackMessage::Complete { .. } | FeedbackMessage::Rejected { .. } | FeedbackMessage::Refused { .. })
        {
            let repeat = self
                .tree
                .scan::<Vec<u8>>(&[], OUTBOX_ENTRIES_MAX)?
                .iter()
                .any(|(_, old)| Feedback::from_bytes(old).is_ok_and(|f| same(&f.message)));
            if repeat {
                return Ok(());
            }
        }
        if let Some(object_id) = report_about(&feedback.message) {
            let same_report = |old: &FeedbackMessage| {
                std::mem::discriminant(old) == std::mem::discriminant(&feedback.message) && report_about(old) == Some(object_id)
            };
            for (key, old) in self.tree.scan::<Vec<u8>>(&[], OUTBOX_ENTRIES_MAX)? {
                if Feedback::from_bytes(&old).is_ok_and(|f| same_report(&f.message)) {
                    self.tree.remove(&key)?;
                }
            }
        }
        if self.tree.len() >= OUTBOX_ENTRIES_MAX {
            let oldest_progress = self
                .tree
                .scan::<Vec<u8>>(&[], OUTBOX_ENTRIES_MAX)?
                .into_iter()
                .find(|(_, b)| Feedback::from_bytes(b).is_ok_and(|f| report_about(&f.message).is_some()));
            if let Some((key, _)) = oldest_progress {
                self.tree.remove(&key)?;
            }
        }
        let seq = self.next_seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.tree.put(&seq.to_be_bytes(), &feedback.to_bytes())?;
        if report_about(&feedback.message).is_none() {
            self.index.flush()?;
        }
        Ok(())
    }

    /// Up to `limit` queued messages, oldest first, with their sequence numbers.
    pub fn peek(&self, limit: usize) -> Result<Vec<(u64, Feedback)>, StoreError> {
        Ok(self
            .tree
            .scan::<Vec<u8>>(&[], limit)?
            .into_iter()
            .filter_map(|(k, b)| Feedback::from_bytes(&b).ok().map(|f| (key_seq(&k), f)))
            .collect())
    }

    /// The uplink has the message with this sequence number.
    pub fn ack(&self, seq: u64) -> Result<(), StoreError> {
        self.tree.remove(&seq.to_be_bytes())?;
        Ok(())
    }

    /// Messages waiting for the uplink.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether nothing waits for the uplink.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

/// The object a progress report (after a marker, or from the middle of a pass) is about:
/// only the latest of each matters, and losing one in a crash costs nothing, since the
/// county reports again.
fn report_about(message: &FeedbackMessage) -> Option<u64> {
    match message {
        FeedbackMessage::Progress { object_id, .. } | FeedbackMessage::PassProgress { object_id, .. } => Some(*object_id),
        _ => None,
    }
}

fn key_seq(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    if key.len() == 8 {
        bytes.copy_from_slice(key);
    }
    u64::from_be_bytes(bytes)
}

fn cache_entry(manifest: &Manifest) -> CacheEntry {
    CacheEntry {
        object_id: manifest.object_id,
        kind: manifest.kind.to_string(),
        name: manifest.name.clone(),
        version: manifest.version,
        size_bytes: manifest.delivered_size(),
        hash: manifest.delivered_hash(),
    }
}

/// Where block `sbn` of the manifest's object ends; None if the manifest has no such block.
fn block_end(manifest: &Manifest, sbn: u8) -> Option<u64> {
    let block = Oti::decode(&manifest.oti).ok()?.block(sbn).ok()?;
    Some(block.offset + block.len)
}

fn not_receiving(object_id: u64) -> io::Error {
    io::Error::other(format!("object {} was not begun", ObjectId(object_id)))
}

impl ReceptionStore for ReceiverStore {
    fn has_cached(&self, object_hash: &[u8; 32]) -> bool {
        // Only a verified, fsynced object is ever renamed into the cache.
        self.cached_object(object_hash).is_some()
    }

    fn begin_object(&mut self, manifest: &Manifest, signed_manifest: &[u8]) -> io::Result<()> {
        let object_id = manifest.object_id;
        if self.partials.contains_key(&object_id) {
            return Ok(());
        }
        let oti = Oti::decode(&manifest.oti).map_err(io::Error::other)?;
        // Room for the whole object, counting each object in progress at its full size:
        // refused here, the county says so once (and retries every second), rather than
        // failing symbol after symbol halfway through.
        let free = self.limits.spool_bytes_max.saturating_sub(self.spool_reserved());
        // A coded object is decoded beside its transmitted bytes before the commit.
        let needed = match manifest.compression {
            Compression::None => manifest.size_bytes,
            _ => manifest.size_bytes.saturating_add(manifest.delivered_size()),
        };
        if needed > free {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("needs {}, {} free under limits.spool_bytes_max", human_bytes(needed), human_bytes(free)),
            ));
        }
        let dir = self.object_spool_dir(object_id);
        fs::create_dir_all(&dir)?;
        write_atomic(&dir.join("manifest"), signed_manifest)?;
        let spool = Spool::open(&dir, usize::from(oti.symbol_size))?;
        self.objects.put(&object_key(object_id), &ObjectEntry::default()).map_err(io::Error::other)?;
        self.partials.insert(object_id, Partial { manifest: manifest.clone(), spool, verified: BTreeSet::new(), partial_bytes: 0 });
        Ok(())
    }

    fn add_symbol(&mut self, object_id: u64, sbn: u8, esi: u32, symbol: &[u8]) -> io::Result<bool> {
        let record = (RECORD_HEADER_LEN + symbol.len()) as u64;
        if self.spool_bytes() + record > self.limits.spool_bytes_max {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("spool limit of {} bytes reached (limits.spool_bytes_max)", self.limits.spool_bytes_max),
            ));
        }
        let partial = self.partials.get_mut(&object_id).ok_or_else(|| not_receiving(object_id))?;
        partial.spool.append(sbn, esi, symbol)
    }

    fn symbol_count(&self, object_id: u64, sbn: u8) -> u32 {
        self.partials.get(&object_id).map_or(0, |p| p.spool.count(sbn))
    }

    fn symbols(&mut self, object_id: u64, sbn: u8) -> io::Result<Vec<(u32, Vec<u8>)>> {
        self.partials.get_mut(&object_id).ok_or_else(|| not_receiving(object_id))?.spool.read_block(sbn)
    }

    fn clear_block(&mut self, object_id: u64, sbn: u8) -> io::Result<()> {
        self.partials.get_mut(&object_id).ok_or_else(|| not_receiving(object_id))?.spool.clear(sbn)
    }

    fn write_block(&mut self, object_id: u64, sbn: u8, offset: u64, data: &[u8]) -> io::Result<()> {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(self.partial_path(object_id))?;
        file.write_all_at(data, offset)?;
        // A decoded block is worth a round trip of symbols: make it durable before the
        // index says it is there.
        file.sync_data()?;
        let partial = self.partials.get_mut(&object_id).ok_or_else(|| not_receiving(object_id))?;
        partial.verified.insert(sbn);
        partial.partial_bytes = partial.partial_bytes.max(offset + data.len() as u64);
        let entry = ObjectEntry { verified: partial.verified.iter().copied().collect() };
        self.objects.put(&object_key(object_id), &entry).map_err(io::Error::other)?;
        // The machine clears the block's spool next: the index must say the block is
        // verified before its symbols are gone, or a crash in between loses them.
        self.index.flush().map_err(io::Error::other)
    }

    /// A claimed block counts only while the partial file still holds all of it: otherwise
    /// it is collected again.
    fn block_written(&self, object_id: u64, sbn: u8) -> bool {
        self.partials.get(&object_id).is_some_and(|partial| {
            partial.verified.contains(&sbn)
                && block_end(&partial.manifest, sbn)
                    .is_some_and(|end| fs::metadata(self.partial_path(object_id)).is_ok_and(|m| m.len() >= end))
        })
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
        self.partials.remove(&object_id);
        self.objects.remove(&object_key(object_id)).map_err(io::Error::other)?;
        match fs::remove_dir_all(self.object_spool_dir(object_id)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        for path in [self.partial_path(object_id), self.decoded_path(object_id)] {
            match fs::remove_file(path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        Ok(())
    }

    fn decode_object(
        &mut self,
        object_id: u64,
        compression: &Compression,
        opened: Option<&satcast_protocol::confidential::Opening>,
    ) -> Result<(), DecodeFailure> {
        let partial = self.partials.get(&object_id).ok_or_else(|| DecodeFailure::Io(not_receiving(object_id)))?;
        let (aired_bytes, delivered) = match compression {
            Compression::None => return Ok(()),
            Compression::Zstd(delivered) | Compression::ZstdPatch { delivered, .. } => (partial.manifest.size_bytes, *delivered),
            Compression::Sealed(_) => {
                let Some(opened) = opened else {
                    return Err(DecodeFailure::Refused(Refusal::new(RefusalCode::Undecodable, "a sealed object without its content key")));
                };
                return self.open_sealed(object_id, opened);
            }
        };
        let base = match compression {
            Compression::ZstdPatch { base_hash, .. } => Some(self.read_base(base_hash)?),
            Compression::None | Compression::Zstd(_) | Compression::Sealed(_) => None,
        };
        let out_path = self.decoded_path(object_id);
        let aired = File::open(self.partial_path(object_id)).map_err(DecodeFailure::Io)?;
        let mut aired = io::BufReader::new(aired.take(aired_bytes));
        let mut out = io::BufWriter::new(File::create(&out_path).map_err(DecodeFailure::Io)?);
        let decoded = codec::decode(&mut aired, base.as_deref(), delivered.size_bytes, &delivered.hash, &mut out);
        let synced = decoded.map_err(storage::decode_failure).and_then(|_| {
            let file = out.into_inner().map_err(|e| DecodeFailure::Io(e.into_error()))?;
            file.sync_all().map_err(DecodeFailure::Io)
        });
        if synced.is_err() {
            // Nothing of a payload that did not decode is kept, not even its prefix.
            let _ = fs::remove_file(&out_path);
        }
        synced
    }
}

impl ReceiverStore {
    /// Decrypts a sealed object whose ciphertext verified against its signed hashes, block
    /// by block, checks the sealed plaintext size and hash, and decodes it as the secrets
    /// say (none or zstd) into the decoded file the commit delivers (docs/protocol.md 8.5).
    fn open_sealed(&mut self, object_id: u64, opened: &satcast_protocol::confidential::Opening) -> Result<(), DecodeFailure> {
        let refused = |why: String| DecodeFailure::Refused(Refusal::new(RefusalCode::Undecodable, why));
        let partial = self.partials.get(&object_id).ok_or_else(|| DecodeFailure::Io(not_receiving(object_id)))?;
        let oti = Oti::decode(&partial.manifest.oti).map_err(|e| refused(e.to_string()))?;
        let aired_bytes = partial.manifest.size_bytes;
        if aired_bytes > SEALED_OBJECT_BYTES_MAX {
            return Err(refused(format!("sealed object of {aired_bytes} bytes, more than {SEALED_OBJECT_BYTES_MAX}")));
        }
        let secrets = &opened.secrets;
        if secrets.plain_size > aired_bytes {
            return Err(refused("sealed plaintext longer than the object".into()));
        }
        let file = File::open(self.partial_path(object_id)).map_err(DecodeFailure::Io)?;
        let mut plain = Vec::with_capacity(aired_bytes as usize);
        for block in satcast_protocol::fec::blocks(&oti) {
            let mut bytes = vec![0u8; block.len as usize];
            file.read_exact_at(&mut bytes, block.offset).map_err(DecodeFailure::Io)?;
            satcast_protocol::confidential::open_block(&opened.key, object_id, &oti, block.sbn, &mut bytes)
                .map_err(|e| refused(e.to_string()))?;
            plain.extend_from_slice(&bytes);
        }
        plain.truncate(secrets.plain_size as usize);
        if blake3::hash(&plain).as_bytes() != &secrets.plain_hash {
            return Err(refused("the decrypted plaintext does not match its sealed hash".into()));
        }
        let out_path = self.decoded_path(object_id);
        let mut out = io::BufWriter::new(File::create(&out_path).map_err(DecodeFailure::Io)?);
        let written = match secrets.compression {
            Compression::None => io::Write::write_all(&mut out, &plain).map_err(DecodeFailure::Io),
            Compression::Zstd(delivered) => codec::decode(&mut plain.as_slice(), None, delivered.size_bytes, &delivered.hash, &mut out)
                .map(|_| ())
                .map_err(storage::decode_failure),
            Compression::ZstdPatch { .. } | Compression::Sealed(_) => {
                Err(refused(format!("sealed plaintext coded as {}", secrets.compression.as_str())))
            }
        };
        let synced = written.and_then(|()| {
            let file = out.into_inner().map_err(|e| DecodeFailure::Io(e.into_error()))?;
            file.sync_all().map_err(DecodeFailure::Io)
        });
        if synced.is_err() {
            let _ = fs::remove_file(&out_path);
        }
        synced
    }
}

/// Largest sealed object a county decrypts: it is held in memory while its blocks are
/// opened. Twice the uplink's limit on a sealed plaintext (256 MiB), for the tags and padding.
pub const SEALED_OBJECT_BYTES_MAX: u64 = 512 << 20;

/// "40.0 MiB": sizes an operator reads (a refusal here, the receiver's `status`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use satcast_protocol::manifest::{Compression, Kind};
    use satcast_protocol::reception::{Reception, ReceptionConfig, ReceptionEvent};
    use satcast_protocol::storage;
    use satcast_protocol::trust::{NetworkKey, RootKey, SigningKey};

    use super::*;

    const NOW: u64 = 1_795_000_000;

    /// A signed three-block object, its manifest, and the trust root that verifies it.
    fn object(object_id: u64) -> (Vec<u8>, Manifest, Vec<u8>, RootKey) {
        let mut rng = ChaCha8Rng::seed_from_u64(object_id);
        let mut data = vec![0u8; 2_500_000];
        rng.fill_bytes(&mut data);
        let root = RootKey::generate(&mut rng);
        let signer = SigningKey::generate(&mut rng, &root, 1, NOW - 10, NOW + 1000);
        let oti = Oti::new_for_object(data.len() as u64, 1436, 1 << 20).expect("oti");
        let manifest = Manifest {
            object_id,
            kind: Kind::Software,
            name: "agent.bin".into(),
            version: 3,
            size_bytes: data.len() as u64,
            compression: Compression::None,
            oti: oti.encode(),
            object_hash: *blake3::hash(&data).as_bytes(),
            block_hashes: fec::blocks(&oti)
                .iter()
                .map(|b| fec::block_hash(&data[b.offset as usize..(b.offset + b.len) as usize]))
                .collect(),
            targets: vec!["41".into()],
            created_unix_secs: NOW,
            expires_unix_secs: NOW + 100,
        };
        let signed = signer.sign_manifest(&manifest).expect("sign").to_bytes();
        (data, manifest, signed, root)
    }

    /// Every block the store claims as verified is in the partial file, whole and matching
    /// its signed hash.
    fn assert_claims_backed(store: &ReceiverStore, step: CommitStep) {
        for (object_id, partial) in &store.partials {
            let oti = Oti::decode(&partial.manifest.oti).expect("oti");
            let file = File::open(store.partial_path(*object_id));
            for block in fec::blocks(&oti).iter().filter(|b| partial.verified.contains(&b.sbn)) {
                let mut data = vec![0u8; block.len as usize];
                let read = file.as_ref().map_err(|e| e.kind()).and_then(|f| f.read_exact_at(&mut data, block.offset).map_err(|e| e.kind()));
                assert!(read.is_ok(), "{step:?}: block {} claimed but unreadable: {read:?}", block.sbn);
                assert_eq!(fec::block_hash(&data), partial.manifest.block_hashes[usize::from(block.sbn)], "{step:?}: block {}", block.sbn);
            }
        }
    }

    /// A crash after each step of commit, then a restart: no claim lacks its data, the
    /// object is delivered or completes from what is on disk without a symbol more, and the
    /// commit that follows leaves nothing behind.
    #[test]
    fn every_crash_point_of_commit_leaves_a_state_open_resumes_from() {
        for step in CommitStep::ALL {
            let dir = tempfile::tempdir().expect("tempdir");
            let (state, deliver) = (dir.path().join("state"), dir.path().join("deliver"));
            let open = || ReceiverStore::open(&state, &deliver, ReceiverLimits::default(), NOW).expect("open");
            let (data, manifest, signed, root) = object(0x51);
            let (mut store, _) = open();
            store.begin_object(&manifest, &signed).expect("begin");
            for block in fec::blocks(&Oti::decode(&manifest.oti).expect("oti")) {
                store
                    .write_block(0x51, block.sbn, block.offset, &data[block.offset as usize..(block.offset + block.len) as usize])
                    .expect("block");
            }
            store.crash_at = Some(step);
            let crashed = store.commit(&manifest);
            assert!(crashed.is_err(), "{step:?}: commit went past its crash point");
            drop(store);

            let (mut store, report) = open();
            assert_claims_backed(&store, step);
            let renamed = matches!(step, CommitStep::Renamed | CommitStep::CacheIndexed | CommitStep::Delivered);
            assert_eq!(report.partials_cached, usize::from(renamed), "{step:?}: {report:?}");
            let delivered = store.delivered_path(&manifest);
            if report.partial_objects == 0 {
                assert!(fs::read(&delivered).is_ok_and(|d| d == data), "{step:?}: neither resumable nor delivered");
            } else {
                let mut reception = Reception::new(ReceptionConfig::new("410102".into(), root.public(), NetworkKey([7; 32])));
                for (object_id, signed) in store.resumable() {
                    let held = storage::held(&store, object_id, &manifest.object_hash);
                    assert_eq!(held.in_cache, renamed, "{step:?}: {held:?}");
                    reception.resume(Instant::now(), NOW, object_id, &signed, &held);
                }
                storage::drain(&mut reception, &mut store);
                let events: Vec<_> = std::iter::from_fn(|| reception.poll_event()).collect();
                assert!(events.iter().any(|e| matches!(e, ReceptionEvent::Complete { .. })), "{step:?}: {events:?}");
                assert!(!events.iter().any(|e| matches!(e, ReceptionEvent::StoreFailed { .. })), "{step:?}: {events:?}");
                store.commit(&manifest).unwrap_or_else(|e| panic!("{step:?}: commit after the restart: {e}"));
            }
            assert_eq!(fs::read(&delivered).expect("delivered"), data, "{step:?}");
            assert!(store.cached().iter().any(|e| e.hash == manifest.object_hash), "{step:?}: the cache lists it");
            assert!(store.partials.is_empty() && store.resumable().is_empty(), "{step:?}: the partial is forgotten");
            assert!(!store.partial_path(0x51).exists() && !store.object_spool_dir(0x51).exists(), "{step:?}: no leftovers");
            assert!(store.objects.scan::<ObjectEntry>(&[], 10).expect("scan").is_empty(), "{step:?}: no claims left in the index");
            let mut cache_files: Vec<String> =
                read_dir(&store.objects_dir).expect("objects").iter().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            cache_files.sort();
            let hash = hex::encode(manifest.object_hash);
            assert_eq!(
                cache_files,
                vec![hash.clone(), format!("{hash}.manifest")],
                "{step:?}: the cache holds the object and its manifest"
            );
        }
    }
}
