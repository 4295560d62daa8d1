//! Restarting into a new build once one is installed over the running one.
//!
//! A county upgrades over the air: the uplink airs the receiver's own package as kind
//! `software`, and the county's post-receive hook installs it (see
//! docs/operations.md, "Upgrading counties over the air"). The package manager replaces
//! `/usr/bin/satcast-receiver` by a rename, so the running process still executes the old
//! file. Between two hooks (never while one runs, so the installing hook's result is
//! recorded first) the hook worker compares the file at the daemon's path with the one it
//! was started from; once they differ, the daemon stops as for SIGTERM and executes the new
//! file in its place, with the same arguments and process id (systemd sees one service
//! that kept running). The new build says its version to the uplink in its first Hello.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// This build's version as the uplink's `receivers` shows it: what the binary set at start
/// ([`set_software_version`]), else the crate's version. The binary holds the version
/// stamp (`SATCAST_VERSION`, the Debian package's version, set by packaging/build-debs.sh)
/// so that stamping another version rebuilds only the binary, not everything that links
/// this library.
pub fn software_version() -> &'static str {
    SOFTWARE_VERSION.get().copied().unwrap_or(env!("CARGO_PKG_VERSION"))
}

/// Sets [`software_version`], once, before the daemon starts.
pub fn set_software_version(version: &'static str) {
    let _ = SOFTWARE_VERSION.set(version);
}

static SOFTWARE_VERSION: OnceLock<&'static str> = OnceLock::new();

/// The executable file this process started from: its path, and the file that path named
/// then (device and inode).
#[derive(Debug, Clone)]
pub struct Executable {
    path: PathBuf,
    file: (u64, u64),
}

impl Executable {
    /// The running executable, as it is now.
    pub fn current() -> io::Result<Executable> {
        let path = std::env::current_exe()?;
        let metadata = std::fs::metadata(&path)?;
        Ok(Executable { path, file: (metadata.dev(), metadata.ino()) })
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether another executable file has been installed at the path since. A path with
    /// nothing there (an installation half done) is not a new build yet.
    pub fn replaced(&self) -> bool {
        match std::fs::metadata(&self.path) {
            Ok(metadata) => metadata.is_file() && (metadata.dev(), metadata.ino()) != self.file,
            Err(_) => false,
        }
    }

    /// Replaces this process by the file now at the path, with the same arguments. Returns
    /// only if that fails.
    pub fn exec_again(&self) -> io::Error {
        let arguments: Vec<OsString> = std::env::args_os().skip(1).collect();
        std::process::Command::new(&self.path).args(arguments).exec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_renamed_over_the_path_is_a_new_build_and_a_rewrite_in_place_is_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("satcast-receiver");
        std::fs::write(&path, b"build 1").expect("write");
        let metadata = std::fs::metadata(&path).expect("stat");
        let running = Executable { path: path.clone(), file: (metadata.dev(), metadata.ino()) };
        assert!(!running.replaced());
        std::fs::write(&path, b"build 1, rewritten").expect("rewrite in place");
        assert!(!running.replaced(), "the same file, rewritten: not a new build");
        // The old file stays alive under another name, as a running executable's does after
        // dpkg's rename, so its inode cannot be reused by the new one.
        std::fs::rename(&path, dir.path().join("old")).expect("move away");
        assert!(!running.replaced(), "nothing at the path yet: the installation is under way");
        let staged = dir.path().join(".staged");
        std::fs::write(&staged, b"build 2").expect("write");
        std::fs::rename(&staged, &path).expect("rename");
        assert!(running.replaced());
    }
}
