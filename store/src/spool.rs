//! The symbol spool: one append-only file per (object, source block) holding the symbols
//! received for a block not yet decoded, so a restart resumes reception where it stopped.
//!
//! Record layout, fixed size for an object (T = symbol size):
//!
//! ```text
//! 0  4  ESI (big endian)
//! 4  4  check: CRC-32 (IEEE) of ESI || symbol, big endian
//! 8  T  symbol
//! ```
//!
//! Records are read at multiples of the record length, so the file must stay on that grid:
//! each block remembers where its last whole record ends and writes the next record there
//! (a positioned write, not an append). A write that fails part way (a full disk takes what
//! fits) is cut back to that offset at once; should the cut fail too, the next record
//! overwrites the torn bytes, and a torn tail found by a read is trimmed then, not only at
//! start-up. A crash can leave a torn last record as well; opening trims it. Reading skips
//! any record whose check fails, so a damaged spool costs symbols, never a wrong decode (and
//! the block hash would catch that anyway), and the count is always of readable records.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes of a record's header (ESI and check).
pub const RECORD_HEADER_LEN: usize = 8;
/// Open spool files kept at once; beyond this the least recently used is closed.
pub const OPEN_FILES_MAX: usize = 64;

/// The record check catches torn writes and bit rot, not forgery (the block's signed hash
/// does that), so a CRC is enough: a cryptographic hash here cost 12% of the receiver's time.
fn check(esi: u32, symbol: &[u8]) -> [u8; 4] {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&esi.to_be_bytes());
    hasher.update(symbol);
    hasher.finalize().to_be_bytes()
}

/// What the spool knows of one block's file.
#[derive(Debug, Default)]
struct BlockFile {
    /// ESIs of the readable records: for deduplication and counting.
    esis: HashSet<u32>,
    /// Where the last whole record ends: the next record is written here, and anything past
    /// it is a record torn by a failed write.
    end: u64,
}

/// The spool files of one object directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    symbol_size: usize,
    blocks: HashMap<u8, BlockFile>,
    open: Vec<(u8, File)>,
    dirty: HashSet<u8>,
    /// Tests make the next record write fail part way, as a full disk does.
    #[cfg(test)]
    fault: Option<tests::Fault>,
}

impl Spool {
    fn block_path(&self, sbn: u8) -> PathBuf {
        self.dir.join(format!("{sbn:03}.sym"))
    }

    fn record_len(&self) -> u64 {
        (RECORD_HEADER_LEN + self.symbol_size) as u64
    }

    /// Opens the spool in `dir` (created if missing), reading back the ESIs of every block
    /// file and trimming any torn last record.
    pub fn open(dir: &Path, symbol_size: usize) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut spool = Spool {
            dir: dir.to_owned(),
            symbol_size,
            blocks: HashMap::new(),
            open: Vec::new(),
            dirty: HashSet::new(),
            #[cfg(test)]
            fault: None,
        };
        for entry in fs::read_dir(dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(sbn) = name.strip_suffix(".sym").and_then(|n| n.parse::<u8>().ok()) else { continue };
            spool.read_block(sbn)?;
        }
        Ok(spool)
    }

    /// Distinct readable symbols spooled for a block.
    pub fn count(&self, sbn: u8) -> u32 {
        self.blocks.get(&sbn).map_or(0, |b| b.esis.len() as u32)
    }

    /// Bytes of every spool file.
    pub fn bytes(&self) -> u64 {
        self.blocks.values().map(|b| b.end).sum()
    }

    /// Appends a symbol; false if its ESI was already spooled. Written to the OS at once (so
    /// a killed process loses nothing); [`Spool::sync`] makes it survive a power cut. On an
    /// error the symbol is not counted and the file is left on its record grid.
    pub fn append(&mut self, sbn: u8, esi: u32, symbol: &[u8]) -> io::Result<bool> {
        if symbol.len() != self.symbol_size {
            return Err(io::Error::other(format!("symbol of {} bytes in a spool of {}-byte symbols", symbol.len(), self.symbol_size)));
        }
        if self.blocks.get(&sbn).is_some_and(|b| b.esis.contains(&esi)) {
            return Ok(false);
        }
        let mut record = Vec::with_capacity(RECORD_HEADER_LEN + symbol.len());
        record.extend_from_slice(&esi.to_be_bytes());
        record.extend_from_slice(&check(esi, symbol));
        record.extend_from_slice(symbol);
        let end = self.blocks.get(&sbn).map_or(0, |b| b.end);
        if let Err(error) = self.write_record(sbn, end, &record) {
            // Part of the record may be on disk past `end`: cut it off now, so nothing is
            // left off the grid. If the cut fails as well, no harm is kept: the torn bytes
            // are shorter than a record, the next record is written over them at `end`, and
            // a read trims them.
            if !self.trim_fails() {
                let _ = self.file(sbn).and_then(|f| f.set_len(end));
            }
            return Err(error);
        }
        let block = self.blocks.entry(sbn).or_default();
        block.end = end + record.len() as u64;
        block.esis.insert(esi);
        self.dirty.insert(sbn);
        Ok(true)
    }

    fn write_record(&mut self, sbn: u8, offset: u64, record: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(fault) = self.fault {
            self.file(sbn)?.write_all_at(&record[..fault.torn_bytes], offset)?;
            return Err(io::Error::new(io::ErrorKind::StorageFull, "injected: no space left on device"));
        }
        self.file(sbn)?.write_all_at(record, offset)
    }

    /// Whether a test made the cut after a failed write fail too; the fault is spent.
    fn trim_fails(&mut self) -> bool {
        #[cfg(test)]
        if let Some(fault) = self.fault.take() {
            return fault.trim_fails;
        }
        false
    }

    fn file(&mut self, sbn: u8) -> io::Result<&mut File> {
        if let Some(i) = self.open.iter().position(|(s, _)| *s == sbn) {
            let entry = self.open.remove(i);
            self.open.push(entry);
        } else {
            if self.open.len() >= OPEN_FILES_MAX {
                let (old, file) = self.open.remove(0);
                if self.dirty.remove(&old) {
                    file.sync_data()?;
                }
            }
            // Not in append mode: records go at the block's known end (see the module comment).
            let file = OpenOptions::new().create(true).truncate(false).write(true).open(self.block_path(sbn))?;
            self.open.push((sbn, file));
        }
        self.open.last_mut().map(|(_, f)| f).ok_or_else(|| io::Error::other("spool file vanished"))
    }

    /// Every intact record of a block, read record by record (no second copy of the file).
    /// The block's count becomes what was readable, and a torn record at the end is trimmed.
    pub fn read_block(&mut self, sbn: u8) -> io::Result<Vec<(u32, Vec<u8>)>> {
        let file = match File::open(self.block_path(sbn)) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                self.blocks.remove(&sbn);
                return Ok(Vec::new());
            }
            Err(error) => return Err(error),
        };
        let record_len = self.record_len();
        let len = file.metadata()?.len();
        let mut reader = io::BufReader::with_capacity(1 << 16, file);
        let mut out = Vec::with_capacity((len / record_len) as usize);
        let mut seen = HashSet::new();
        let mut header = [0u8; RECORD_HEADER_LEN];
        // Where the last whole record (readable or not) ends.
        let mut whole = 0u64;
        loop {
            match reader.read_exact(&mut header) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(error) => return Err(error),
            }
            let mut symbol = vec![0u8; self.symbol_size];
            match reader.read_exact(&mut symbol) {
                Ok(()) => {}
                // A torn last record.
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(error) => return Err(error),
            }
            whole += record_len;
            let mut esi = [0u8; 4];
            esi.copy_from_slice(&header[..4]);
            let esi = u32::from_be_bytes(esi);
            if header[4..8] == check(esi, &symbol) && seen.insert(esi) {
                out.push((esi, symbol));
            }
        }
        self.blocks.insert(sbn, BlockFile { esis: seen, end: whole });
        if whole != len {
            // Trimmed now, whoever tore it. Best effort: if the cut fails, the next record
            // is written over the torn bytes at `whole` anyway.
            if self.file(sbn).and_then(|f| f.set_len(whole)).is_ok() {
                self.dirty.insert(sbn);
            }
        }
        Ok(out)
    }

    /// Removes a block's spool file (decoded, or poisoned).
    pub fn clear(&mut self, sbn: u8) -> io::Result<()> {
        self.open.retain(|(s, _)| *s != sbn);
        self.dirty.remove(&sbn);
        self.blocks.remove(&sbn);
        match fs::remove_file(self.block_path(sbn)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Flushes every written record to disk.
    pub fn sync(&mut self) -> io::Result<()> {
        for (sbn, file) in &self.open {
            if self.dirty.contains(sbn) {
                file.sync_data()?;
            }
        }
        self.dirty.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// A write that fails part way, as on a full disk: `torn_bytes` of the record reach the
    /// file, then the error. With `trim_fails` the cleanup after it fails as well.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Fault {
        pub(super) torn_bytes: usize,
        pub(super) trim_fails: bool,
    }

    const SYMBOL_SIZE: usize = 16;
    const RECORD_LEN: usize = RECORD_HEADER_LEN + SYMBOL_SIZE;

    fn symbol(sbn: u8, esi: u32) -> Vec<u8> {
        (0..SYMBOL_SIZE).map(|i| sbn ^ (esi as u8).wrapping_add(i as u8)).collect()
    }

    fn file_len(dir: &Path, sbn: u8) -> u64 {
        fs::metadata(dir.join(format!("{sbn:03}.sym"))).map_or(0, |m| m.len())
    }

    #[test]
    fn a_failed_append_leaves_later_appends_readable_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), SYMBOL_SIZE).expect("open");
        assert!(spool.append(0, 1, &symbol(0, 1)).expect("append"));
        spool.fault = Some(Fault { torn_bytes: 11, trim_fails: false });
        assert!(spool.append(0, 2, &symbol(0, 2)).is_err(), "the disk is full");
        assert_eq!(file_len(dir.path(), 0), RECORD_LEN as u64, "the torn record is cut off at once");
        assert!(spool.append(0, 3, &symbol(0, 3)).expect("room again"));
        assert!(spool.append(0, 2, &symbol(0, 2)).expect("the failed one, again"));
        assert_eq!(spool.count(0), 3);
        let read: Vec<u32> = spool.read_block(0).expect("read").into_iter().map(|(esi, _)| esi).collect();
        assert_eq!(read, vec![1, 3, 2]);
    }

    #[test]
    fn a_torn_record_left_by_a_failed_trim_is_overwritten_and_trimmed_when_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), SYMBOL_SIZE).expect("open");
        assert!(spool.append(0, 1, &symbol(0, 1)).expect("append"));
        spool.fault = Some(Fault { torn_bytes: 5, trim_fails: true });
        assert!(spool.append(0, 2, &symbol(0, 2)).is_err(), "the disk is full");
        assert_eq!(spool.count(0), 1);
        assert_eq!(spool.read_block(0).expect("read").len(), 1);
        assert_eq!(file_len(dir.path(), 0), RECORD_LEN as u64, "trimmed when found, without a restart");
        spool.fault = Some(Fault { torn_bytes: 13, trim_fails: true });
        assert!(spool.append(0, 2, &symbol(0, 2)).is_err(), "the disk is full again");
        assert!(spool.append(0, 3, &symbol(0, 3)).expect("room again"), "written over the torn bytes");
        assert_eq!(spool.read_block(0).expect("read"), vec![(1, symbol(0, 1)), (3, symbol(0, 3))]);
    }

    /// Random sequences of appends, failed appends (with and without a failed trim), reads,
    /// clears, syncs and reopens against a model: the count is always what is readable.
    #[test]
    fn random_append_fail_trim_sequences_keep_the_spool_on_its_record_grid() {
        let seed = std::env::var("SPOOL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
        println!("seed {seed}; replay with SPOOL_SEED={seed} cargo test -p satcast-store --lib spool::tests::random");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), SYMBOL_SIZE).expect("open");
        // The readable ESIs per block, in the order they were appended.
        let mut model: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
        const STEPS: usize = 2_000;
        for step in 0..STEPS {
            let sbn = rng.random_range(0..3u8);
            let esi = rng.random_range(0..40u32);
            let kept = model.entry(sbn).or_default();
            match rng.random_range(0..100) {
                0..55 => {
                    let added = spool.append(sbn, esi, &symbol(sbn, esi)).expect("append");
                    assert_eq!(added, !kept.contains(&esi), "step {step}: append {sbn}/{esi}");
                    if added {
                        kept.push(esi);
                    }
                }
                55..80 => {
                    let fault = Fault { torn_bytes: rng.random_range(0..RECORD_LEN), trim_fails: rng.random_bool(0.5) };
                    spool.fault = Some(fault);
                    let result = spool.append(sbn, esi, &symbol(sbn, esi));
                    if kept.contains(&esi) {
                        assert!(matches!(result, Ok(false)), "step {step}: duplicate {sbn}/{esi}");
                    } else {
                        assert!(result.is_err(), "step {step}: failed append {sbn}/{esi} {fault:?}");
                    }
                    spool.fault = None;
                }
                80..92 => {
                    let read: Vec<u32> = spool.read_block(sbn).expect("read").into_iter().map(|(esi, _)| esi).collect();
                    assert_eq!(&read, kept, "step {step}: read block {sbn}");
                    assert_eq!(file_len(dir.path(), sbn) % RECORD_LEN as u64, 0, "step {step}: a torn tail found is trimmed");
                }
                92..95 => {
                    spool.clear(sbn).expect("clear");
                    kept.clear();
                }
                95..98 => spool.sync().expect("sync"),
                _ => {
                    drop(spool);
                    spool = Spool::open(dir.path(), SYMBOL_SIZE).expect("reopen");
                }
            }
            for (sbn, kept) in &model {
                assert_eq!(spool.count(*sbn), kept.len() as u32, "step {step}: count of block {sbn}");
            }
        }
        for (sbn, kept) in &model {
            let read: Vec<u32> = spool.read_block(*sbn).expect("read").into_iter().map(|(esi, _)| esi).collect();
            assert_eq!(&read, kept, "end: block {sbn}");
        }
    }

    #[test]
    fn survives_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 16).expect("open");
        assert!(spool.append(0, 5, &[1; 16]).expect("append"));
        assert!(!spool.append(0, 5, &[1; 16]).expect("duplicate"));
        assert!(spool.append(0, 9, &[2; 16]).expect("append"));
        spool.sync().expect("sync");
        drop(spool);
        // A torn record at the end, as a crash mid-write leaves.
        let path = dir.path().join("000.sym");
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&[0xFF; 7]).expect("tear");
        drop(file);
        let mut spool = Spool::open(dir.path(), 16).expect("reopen");
        assert_eq!(spool.count(0), 2);
        assert_eq!(spool.read_block(0).expect("read"), vec![(5, vec![1; 16]), (9, vec![2; 16])]);
        // A flipped bit in a symbol costs that symbol only.
        let mut bytes = fs::read(&path).expect("read");
        bytes[RECORD_HEADER_LEN + 3] ^= 1;
        fs::write(&path, bytes).expect("write");
        assert_eq!(spool.read_block(0).expect("read"), vec![(9, vec![2; 16])]);
    }
}
