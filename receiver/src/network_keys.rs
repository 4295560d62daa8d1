//! The network keys a county learned over the air (docs/protocol.md 8.6), kept in
//! `state/network-keys.state` so a restart, before or after a rotation's activation, still
//! hears the uplink. The file names the bundle key it was learned under: a county given a
//! new bundle (with a newer key) starts from the bundle again.
//!
//! ```text
//! satcast-network-keys-v1
//! bundle <BLAKE3 of the bundle's key, hex>
//! current <activation, unix seconds> <key text>
//! next <activation, unix seconds> <key text>      (while a rotation is announced)
//! ```

use std::path::{Path, PathBuf};

use satcast_protocol::trust::NetworkKey;
use satcast_store::fsutil::write_atomic;

/// The file in the state folder.
pub const NETWORK_KEYS_FILE: &str = "network-keys.state";
const HEADER: &str = "satcast-network-keys-v1";
/// A file larger than this is not ours.
const NETWORK_KEYS_FILE_BYTES_MAX: u64 = 4096;

/// A key and when it activates (0: the bundle's).
pub type DatedKey = (u64, NetworkKey);

/// The keys in force: the bundle's, or those learned since under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkKeys {
    /// The key the county tags with now.
    pub current: DatedKey,
    /// A key announced to take over.
    pub next: Option<DatedKey>,
}

/// The state file of one county.
#[derive(Debug)]
pub struct NetworkKeysFile {
    path: PathBuf,
    /// The bundle's key, and its BLAKE3 as the file names it.
    bundle_key: NetworkKey,
    bundle: String,
}

impl NetworkKeysFile {
    /// The file in `state_dir`, for the bundle key `bundle_key`.
    pub fn new(state_dir: &Path, bundle_key: &NetworkKey) -> NetworkKeysFile {
        let bundle = blake3::hash(&bundle_key.0).to_hex().to_string();
        NetworkKeysFile { path: state_dir.join(NETWORK_KEYS_FILE), bundle_key: bundle_key.clone(), bundle }
    }

    /// The keys to start with: the file's, if it was written under this bundle, else the
    /// bundle's key. An unreadable or damaged file is an error (one line); a missing one is not.
    pub fn load(&self) -> Result<NetworkKeys, String> {
        let from_bundle = NetworkKeys { current: (0, self.bundle_key.clone()), next: None };
        let text = match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(from_bundle),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
            Ok(meta) if meta.len() > NETWORK_KEYS_FILE_BYTES_MAX => {
                return Err(format!("{}: {} bytes, more than {NETWORK_KEYS_FILE_BYTES_MAX}", self.path.display(), meta.len()));
            }
            Ok(_) => std::fs::read_to_string(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?,
        };
        let damaged = |why: &str| format!("{}: {why}", self.path.display());
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(damaged("not a network keys file"));
        }
        let mut bundle = None;
        let mut keys = from_bundle.clone();
        for line in lines.map(str::trim).filter(|l| !l.is_empty()) {
            let mut fields = line.splitn(3, ' ');
            match (fields.next(), fields.next(), fields.next()) {
                (Some("bundle"), Some(hash), None) => bundle = Some(hash.to_owned()),
                (Some(which @ ("current" | "next")), Some(activates), Some(key)) => {
                    let activates: u64 = activates.parse().map_err(|_| damaged("bad activation time"))?;
                    let key = NetworkKey::from_text(key).map_err(|e| damaged(&e.to_string()))?;
                    if which == "current" {
                        keys.current = (activates, key);
                    } else {
                        keys.next = Some((activates, key));
                    }
                }
                _ => return Err(damaged("unreadable line")),
            }
        }
        // Learned under another bundle: the bundle installed since is newer.
        Ok(if bundle.as_deref() == Some(self.bundle.as_str()) { keys } else { from_bundle })
    }

    /// Writes `keys` durably (temporary file, fsync, rename).
    pub fn save(&self, keys: &NetworkKeys) -> std::io::Result<()> {
        let mut text = format!("{HEADER}\nbundle {}\ncurrent {} {}\n", self.bundle, keys.current.0, keys.current.1.to_text().trim());
        if let Some((activates, key)) = &keys.next {
            text.push_str(&format!("next {activates} {}\n", key.to_text().trim()));
        }
        write_atomic(&self.path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_a_restart_and_a_new_bundle_starts_from_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = NetworkKey([1; 32]);
        let file = NetworkKeysFile::new(dir.path(), &bundle);
        assert_eq!(file.load(), Ok(NetworkKeys { current: (0, bundle.clone()), next: None }), "nothing learned yet");
        let learned = NetworkKeys { current: (0, bundle.clone()), next: Some((1_800_000_000, NetworkKey([2; 32]))) };
        file.save(&learned).expect("saves");
        assert_eq!(file.load(), Ok(learned));
        let activated = NetworkKeys { current: (1_800_000_000, NetworkKey([2; 32])), next: None };
        file.save(&activated).expect("saves");
        assert_eq!(file.load(), Ok(activated));
        // A new bundle, with the newest key: the file learned under the old one is ignored.
        let newer = NetworkKey([3; 32]);
        assert_eq!(NetworkKeysFile::new(dir.path(), &newer).load(), Ok(NetworkKeys { current: (0, newer), next: None }));
        // Damage is one line, never a panic.
        std::fs::write(dir.path().join(NETWORK_KEYS_FILE), "satcast-network-keys-v1\ncurrent x y\n").expect("write");
        assert!(file.load().expect_err("damaged").contains("bad activation time"));
        std::fs::write(dir.path().join(NETWORK_KEYS_FILE), [0xff, 0xfe]).expect("write");
        assert!(file.load().is_err());
    }
}
