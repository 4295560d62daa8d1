//! Ownership of a state folder: one daemon at a time. The owner holds an exclusive flock
//! on `<state_dir>/daemon.lock` for as long as it runs and writes its pid and program name
//! into it, so a second daemon can say who is in the way, and `satcast-receiver status` can
//! tell a running daemon from a dead one without trusting any file's age.
//!
//! The lock, not the file, is the truth: the kernel drops it when the process ends, however
//! it ends (a crash or SIGKILL leaves no stale lock to clean up). The file itself stays and
//! means nothing on its own. The descriptor is opened close-on-exec (Rust's default), so a
//! hook the daemon runs never inherits the lock and cannot keep it after the daemon dies.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fs4::{FileExt, TryLockError};
use thiserror::Error;

/// The lock file, under the state directory.
pub const LOCK_FILE: &str = "daemon.lock";
/// Attempts to take the lock before giving up. `status` takes it shared for an instant to
/// see whether it is free, so a daemon starting at that very instant waits a little
/// instead of refusing.
pub const ACQUIRE_ATTEMPTS_MAX: u32 = 10;
/// Pause between attempts.
pub const ACQUIRE_RETRY_INTERVAL: Duration = Duration::from_millis(50);
/// The most bytes read from a lock file (a pid and a program name).
pub const OWNER_BYTES_MAX: u64 = 256;

/// The process that owns a state folder, as it wrote itself into the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Its process id.
    pub pid: u32,
    /// Its program name, e.g. `satcast-receiver`.
    pub program: String,
}

impl Owner {
    fn parse(text: &str) -> Option<Owner> {
        let mut words = text.split_whitespace();
        let pid = words.next()?.parse().ok()?;
        let program = words.next()?.to_owned();
        Some(Owner { pid, program })
    }
}

fn describe(owner: &Option<Owner>) -> String {
    match owner {
        Some(owner) => format!("another {} (pid {})", owner.program, owner.pid),
        None => "another process".into(),
    }
}

/// Why a state folder could not be taken or looked at.
#[derive(Debug, Error)]
pub enum LockError {
    /// Another process owns the folder.
    #[error("state folder {} is in use by {}", state_dir.display(), describe(owner))]
    InUse {
        /// The state folder.
        state_dir: PathBuf,
        /// Who holds it, if it has written itself down yet.
        owner: Option<Owner>,
    },
    /// The folder or its lock file cannot be created, opened or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file (or the folder).
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Exclusive ownership of a state folder, held until dropped (or the process ends).
#[derive(Debug)]
pub struct StateLock {
    state_dir: PathBuf,
    // Holding the descriptor holds the flock.
    _file: File,
}

fn read_owner(file: &mut File) -> Option<Owner> {
    let mut text = String::new();
    file.take(OWNER_BYTES_MAX).read_to_string(&mut text).ok()?;
    Owner::parse(&text)
}

impl StateLock {
    /// Takes `state_dir` (creating it if needed) for this process, which calls itself
    /// `program`. Fails with [`LockError::InUse`] if another process holds it.
    pub fn acquire(state_dir: &Path, program: &str) -> Result<StateLock, LockError> {
        std::fs::create_dir_all(state_dir).map_err(|source| LockError::Io { path: state_dir.to_owned(), source })?;
        let path = state_dir.join(LOCK_FILE);
        let io_error = |source| LockError::Io { path: path.clone(), source };
        // Not truncated on open: until the lock is ours, its content is the owner's.
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_error)?;
        let mut attempt = 1;
        loop {
            // fs4's trait, named in full: std's File::try_lock is newer than rust-version.
            match FileExt::try_lock(&file) {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if attempt < ACQUIRE_ATTEMPTS_MAX => {
                    attempt += 1;
                    std::thread::sleep(ACQUIRE_RETRY_INTERVAL);
                }
                Err(TryLockError::WouldBlock) => {
                    // The full path: the operator must find the other daemon's folder.
                    let state_dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned());
                    return Err(LockError::InUse { state_dir, owner: read_owner(&mut file) });
                }
                Err(TryLockError::Error(source)) => return Err(io_error(source)),
            }
        }
        // No fsync: after a reboot the pid is meaningless and the lock is gone anyway.
        file.set_len(0).map_err(io_error)?;
        file.write_all(format!("{} {program}\n", std::process::id()).as_bytes()).map_err(io_error)?;
        Ok(StateLock { state_dir: state_dir.to_owned(), _file: file })
    }

    /// The state folder this lock owns.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

/// Whether some process owns a state folder, seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Nobody holds it: no daemon runs on it.
    Free,
    /// A process holds it; who, if it has written itself down yet.
    Held(Option<Owner>),
}

/// Looks at `state_dir`'s lock without taking it for more than an instant (a shared,
/// non-blocking lock, released at once). Works read-only, so any user who can read the
/// folder can ask.
pub fn ownership(state_dir: &Path) -> Result<Ownership, LockError> {
    let path = state_dir.join(LOCK_FILE);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Ownership::Free),
        Err(source) => return Err(LockError::Io { path, source }),
    };
    match FileExt::try_lock_shared(&file) {
        // Dropping the descriptor releases the shared lock.
        Ok(()) => Ok(Ownership::Free),
        Err(TryLockError::WouldBlock) => Ok(Ownership::Held(read_owner(&mut file))),
        Err(TryLockError::Error(source)) => Err(LockError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_at_a_time_and_the_folder_is_free_once_it_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        assert_eq!(ownership(&state).expect("look"), Ownership::Free, "no folder yet");
        let lock = StateLock::acquire(&state, "satcast-test").expect("first");
        let me = Owner { pid: std::process::id(), program: "satcast-test".into() };
        assert_eq!(ownership(&state).expect("look"), Ownership::Held(Some(me.clone())));
        // flock conflicts between two descriptors even in one process.
        match StateLock::acquire(&state, "satcast-test") {
            Err(error @ LockError::InUse { .. }) => {
                let expected = format!("state folder {} is in use by another satcast-test (pid {})", state.display(), me.pid);
                assert_eq!(error.to_string(), expected);
            }
            other => panic!("a second owner must be refused: {other:?}"),
        }
        drop(lock);
        assert_eq!(ownership(&state).expect("look"), Ownership::Free);
        let _again = StateLock::acquire(&state, "satcast-other").expect("taken again");
        assert_eq!(ownership(&state).expect("look"), Ownership::Held(Some(Owner { pid: me.pid, program: "satcast-other".into() })));
    }
}
