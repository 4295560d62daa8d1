//! Loading a daemon's TOML configuration file: read, parse into the daemon's own schema,
//! and errors that name the file (and, from the parser, the line and column). Each daemon
//! checks its values and resolves relative paths against the file's folder with
//! [`resolve_relative`].

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use thiserror::Error;

/// Why the configuration could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (with the line and column).
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config {path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

impl ConfigError {
    /// A value in the file at `path` is wrong: `why` names it.
    pub fn invalid(path: &Path, why: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { path: path.to_owned(), why: why.into() }
    }
}

/// Reads and parses the TOML file at `path` into `T` (whose serde attributes say which
/// fields are required and which are refused).
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })
}

/// The folder relative paths in the config file at `path` are resolved against.
pub fn config_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Makes each relative path in `paths` relative to the folder of the config file at
/// `config_path`, so a config means the same whatever folder the daemon starts in.
pub fn resolve_relative<'a>(config_path: &Path, paths: impl IntoIterator<Item = &'a mut PathBuf>) {
    let base = config_dir(config_path);
    for p in paths {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Schema {
        #[allow(dead_code)] // only its parsing is tested
        rate: u64,
    }

    #[test]
    fn errors_name_the_file_and_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.toml");
        let missing = load_toml::<Schema>(&path).expect_err("no file").to_string();
        assert!(missing.starts_with(&format!("cannot read config {}: ", path.display())), "{missing}");
        std::fs::write(&path, "rate = 1\n\nbogus = 2\n").expect("write");
        let unknown = load_toml::<Schema>(&path).expect_err("unknown field").to_string();
        assert!(unknown.starts_with(&format!("invalid config {}: ", path.display())), "{unknown}");
        assert!(unknown.contains("line 3") && unknown.contains("bogus"), "{unknown}");
        assert_eq!(
            ConfigError::invalid(&path, "rate must be positive").to_string(),
            format!("invalid config {}: rate must be positive", path.display())
        );
    }

    #[test]
    fn relative_paths_are_resolved_against_the_config_folder() {
        let (mut relative, mut absolute) = (PathBuf::from("state"), PathBuf::from("/srv/keys"));
        resolve_relative(Path::new("/etc/satcast/uplink.toml"), [&mut relative, &mut absolute]);
        assert_eq!((relative, absolute), (PathBuf::from("/etc/satcast/state"), PathBuf::from("/srv/keys")));
        let mut bare = PathBuf::from("state");
        resolve_relative(Path::new("uplink.toml"), [&mut bare]);
        assert_eq!(bare, PathBuf::from("state"), "a config in the current folder");
    }
}
