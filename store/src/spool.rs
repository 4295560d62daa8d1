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
//! A crash can leave a torn last record; reading stops at the last whole record and skips
//! any record whose check fails, so a damaged spool costs symbols, never a wrong decode
//! (and the block hash would catch that anyway).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
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

/// The spool files of one object directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    symbol_size: usize,
    /// ESIs spooled per block: for deduplication and counting.
    esis: HashMap<u8, HashSet<u32>>,
    open: Vec<(u8, File)>,
    dirty: HashSet<u8>,
}

impl Spool {
    fn block_path(&self, sbn: u8) -> PathBuf {
        self.dir.join(format!("{sbn:03}.sym"))
    }

    /// Opens the spool in `dir` (created if missing), reading back the ESIs of every block
    /// file and trimming any torn last record.
    pub fn open(dir: &Path, symbol_size: usize) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut spool = Spool { dir: dir.to_owned(), symbol_size, esis: HashMap::new(), open: Vec::new(), dirty: HashSet::new() };
        for entry in fs::read_dir(dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(sbn) = name.strip_suffix(".sym").and_then(|n| n.parse::<u8>().ok()) else { continue };
            let records = spool.read_block(sbn)?;
            let record_len = (RECORD_HEADER_LEN + symbol_size) as u64;
            let whole = entry.metadata()?.len() / record_len * record_len;
            OpenOptions::new().write(true).open(entry.path())?.set_len(whole)?;
            spool.esis.insert(sbn, records.into_iter().map(|(esi, _)| esi).collect());
        }
        Ok(spool)
    }

    /// Distinct symbols spooled for a block.
    pub fn count(&self, sbn: u8) -> u32 {
        self.esis.get(&sbn).map_or(0, |e| e.len() as u32)
    }

    /// Bytes of every spool file.
    pub fn bytes(&self) -> u64 {
        let record = (RECORD_HEADER_LEN + self.symbol_size) as u64;
        self.esis.values().map(|e| e.len() as u64 * record).sum()
    }

    /// Appends a symbol; false if its ESI was already spooled. Written to the OS at once (so
    /// a killed process loses nothing); [`Spool::sync`] makes it survive a power cut.
    pub fn append(&mut self, sbn: u8, esi: u32, symbol: &[u8]) -> io::Result<bool> {
        if symbol.len() != self.symbol_size {
            return Err(io::Error::other(format!("symbol of {} bytes in a spool of {}-byte symbols", symbol.len(), self.symbol_size)));
        }
        if self.esis.get(&sbn).is_some_and(|e| e.contains(&esi)) {
            return Ok(false);
        }
        let mut record = Vec::with_capacity(RECORD_HEADER_LEN + symbol.len());
        record.extend_from_slice(&esi.to_be_bytes());
        record.extend_from_slice(&check(esi, symbol));
        record.extend_from_slice(symbol);
        self.file(sbn)?.write_all(&record)?;
        self.dirty.insert(sbn);
        self.esis.entry(sbn).or_default().insert(esi);
        Ok(true)
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
            let file = OpenOptions::new().create(true).append(true).open(self.block_path(sbn))?;
            self.open.push((sbn, file));
        }
        self.open.last_mut().map(|(_, f)| f).ok_or_else(|| io::Error::other("spool file vanished"))
    }

    /// Every intact record of a block, read record by record (no second copy of the file).
    pub fn read_block(&self, sbn: u8) -> io::Result<Vec<(u32, Vec<u8>)>> {
        let file = match File::open(self.block_path(sbn)) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let record_len = RECORD_HEADER_LEN + self.symbol_size;
        let len = file.metadata()?.len() as usize;
        let mut reader = io::BufReader::with_capacity(1 << 16, file);
        let mut out = Vec::with_capacity(len / record_len);
        let mut seen = HashSet::new();
        let mut header = [0u8; RECORD_HEADER_LEN];
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
            let mut esi = [0u8; 4];
            esi.copy_from_slice(&header[..4]);
            let esi = u32::from_be_bytes(esi);
            if header[4..8] == check(esi, &symbol) && seen.insert(esi) {
                out.push((esi, symbol));
            }
        }
        Ok(out)
    }

    /// Removes a block's spool file (decoded, or poisoned).
    pub fn clear(&mut self, sbn: u8) -> io::Result<()> {
        self.open.retain(|(s, _)| *s != sbn);
        self.dirty.remove(&sbn);
        self.esis.remove(&sbn);
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
    use super::*;

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
        let spool = Spool::open(dir.path(), 16).expect("reopen");
        assert_eq!(spool.count(0), 2);
        assert_eq!(spool.read_block(0).expect("read"), vec![(5, vec![1; 16]), (9, vec![2; 16])]);
        // A flipped bit in a symbol costs that symbol only.
        let mut bytes = fs::read(&path).expect("read");
        bytes[RECORD_HEADER_LEN + 3] ^= 1;
        fs::write(&path, bytes).expect("write");
        assert_eq!(spool.read_block(0).expect("read"), vec![(9, vec![2; 16])]);
    }
}
