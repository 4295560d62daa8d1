//! The bases the uplink builds patches against: for each (kind, name), the bytes of the last
//! version it prepared for the air, under state/bases/. A new version of that name goes on
//! the air as a zstd patch against it (see [`satcast_protocol::codec`]); a county that lacks
//! it refuses the patch and gets the full object afterwards, so a base the counties never
//! received costs bytes, never correctness.
//!
//! Files: `<kind>.<hex of name>.base` (the bytes) and `.meta` (version and BLAKE3, as TOML),
//! each written atomically; the meta goes last, so a base is used only when whole.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use satcast_protocol::codec::DELTA_BASE_BYTES_MAX;
use satcast_protocol::manifest::Kind;
use serde::{Deserialize, Serialize};

/// The most names a base is kept for; beyond it new names are aired without patches (the
/// folder holds at most this many files of [`DELTA_BASE_BYTES_MAX`]).
pub const BASES_MAX: usize = 1000;
/// Longest meta file read, in bytes.
const META_BYTES_MAX: u64 = 1024;

/// One kept base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// The version it was aired as.
    pub version: u64,
    /// BLAKE3 of its bytes, hex.
    pub hash: String,
}

/// The folder of bases.
#[derive(Debug, Clone)]
pub struct Bases {
    dir: PathBuf,
}

impl Bases {
    /// Opens (creating) state/bases under `state_dir`.
    pub fn open(state_dir: &Path) -> io::Result<Bases> {
        let dir = state_dir.join("bases");
        fs::create_dir_all(&dir)?;
        Ok(Bases { dir })
    }

    fn stem(&self, kind: Kind, name: &str) -> PathBuf {
        self.dir.join(format!("{kind}.{}", hex::encode(name.as_bytes())))
    }

    /// The kept base of (kind, name) and the path of its bytes, if there is a whole one.
    pub fn latest(&self, kind: Kind, name: &str) -> Option<(Base, PathBuf)> {
        use std::io::Read;
        let stem = self.stem(kind, name);
        let mut text = String::new();
        fs::File::open(stem.with_extension("meta")).ok()?.take(META_BYTES_MAX).read_to_string(&mut text).ok()?;
        let base: Base = toml::from_str(&text).ok()?;
        let path = stem.with_extension("base");
        fs::metadata(&path).ok().filter(|m| m.len() <= DELTA_BASE_BYTES_MAX)?;
        Some((base, path))
    }

    /// Keeps `payload` as the base of (kind, name) at `version`, replacing an older one.
    /// Payloads over [`DELTA_BASE_BYTES_MAX`], and new names past [`BASES_MAX`], are not kept.
    pub fn record(&self, kind: Kind, name: &str, version: u64, payload: &Path, hash: &[u8; 32]) -> io::Result<bool> {
        if fs::metadata(payload)?.len() > DELTA_BASE_BYTES_MAX {
            return Ok(false);
        }
        let stem = self.stem(kind, name);
        if let Some((kept, _)) = self.latest(kind, name) {
            if kept.version >= version {
                return Ok(false);
            }
        } else if fs::read_dir(&self.dir)?.count() / 2 >= BASES_MAX {
            return Ok(false);
        }
        let tmp = stem.with_extension("base.tmp");
        fs::copy(payload, &tmp)?;
        fs::File::open(&tmp)?.sync_all()?;
        // The meta goes first out of the way: a crash between the two renames leaves no
        // meta naming other bytes.
        match fs::remove_file(stem.with_extension("meta")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::rename(&tmp, stem.with_extension("base"))?;
        let meta = toml::to_string(&Base { version, hash: hex::encode(hash) }).map_err(io::Error::other)?;
        satcast_store::fsutil::write_atomic(&stem.with_extension("meta"), meta.as_bytes())?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_is_kept_per_name_and_only_moves_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bases = Bases::open(dir.path()).expect("open");
        let v1 = dir.path().join("v1");
        let v2 = dir.path().join("v2");
        fs::write(&v1, b"version one").expect("v1");
        fs::write(&v2, b"version two").expect("v2");
        assert!(bases.latest(Kind::CodeTable, "区划代码.csv").is_none());
        assert!(bases.record(Kind::CodeTable, "区划代码.csv", 1, &v1, &[1; 32]).expect("record"));
        assert!(bases.record(Kind::CodeTable, "区划代码.csv", 2, &v2, &[2; 32]).expect("record"));
        assert!(!bases.record(Kind::CodeTable, "区划代码.csv", 1, &v1, &[1; 32]).expect("record"), "never back");
        let (base, path) = bases.latest(Kind::CodeTable, "区划代码.csv").expect("kept");
        assert_eq!((base.version, fs::read(path).expect("read")), (2, b"version two".to_vec()));
        assert!(bases.latest(Kind::Policy, "区划代码.csv").is_none(), "per kind");
    }
}
