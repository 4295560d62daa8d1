//! satcast's cargo-fuzz targets, as plain functions: `fuzz_targets/<name>.rs` runs one under
//! libFuzzer; the regression tests replay the corpus and the saved crashes through the same
//! functions without libFuzzer (see README.md in this directory).

#[cfg(feature = "config")]
pub mod config;
pub mod harness;

use std::path::{Path, PathBuf};

/// Every target, protocol and config, by name.
pub fn targets() -> impl Iterator<Item = (&'static str, fn(&[u8]))> {
    #[cfg(feature = "config")]
    let config = config::TARGETS;
    #[cfg(not(feature = "config"))]
    let config: &[(&str, fn(&[u8]))] = &[];
    harness::TARGETS.iter().chain(config).copied()
}

/// The files of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`, sorted.
pub fn replay_files(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = ["corpus", "regressions"]
        .iter()
        .filter_map(|dir| std::fs::read_dir(root.join(dir).join(target)).ok())
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file() && !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    /// Replays every corpus and regression file of every target (the protocol ones are
    /// also replayed by `protocol/tests/fuzz_regressions.rs`; the config ones only here).
    #[test]
    fn replay_corpus_and_regressions() {
        let mut failures = Vec::new();
        for (name, target) in super::targets() {
            let files = super::replay_files(name);
            assert!(!files.is_empty(), "no corpus for {name}");
            for file in files {
                let bytes = std::fs::read(&file).expect("read corpus file");
                if std::panic::catch_unwind(|| target(&bytes)).is_err() {
                    failures.push(file.display().to_string());
                }
            }
        }
        assert!(failures.is_empty(), "inputs that fail: {failures:#?}");
    }
}
