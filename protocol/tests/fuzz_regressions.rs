//! The fuzz corpus and every saved crash, replayed with plain `cargo test` on stable.
//!
//! `fuzz/` holds satcast's cargo-fuzz targets (run them with `bash fuzz/smoke.sh`). Each
//! target is a function in `fuzz/src/harness.rs`, included here as is, so these tests run
//! exactly the code libFuzzer runs, without libFuzzer: every file of `fuzz/corpus/<target>/`
//! (small valid seeds) and of `fuzz/regressions/<target>/` (inputs that once crashed a
//! target; each fixed bug keeps its input there) must pass.
//!
//! A crash found in code not fixed yet is saved under `fuzz/regressions/<target>/` too, listed
//! in [`KNOWN_BUGS`] (so the replay of the rest skips it), and given its own `#[ignore]`d test
//! naming the bug. Fixing the bug means deleting both and keeping the file.
//!
//! The two config targets (`receiver_config`, `uplink_config`) need the daemons' crates,
//! which this crate cannot depend on; `cargo test --manifest-path fuzz/Cargo.toml` replays
//! their files (and these again), and `fuzz/smoke.sh` runs it.

#[path = "../../fuzz/src/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

/// Saved inputs of bugs not fixed yet: (target, file name under `fuzz/regressions/<target>/`).
const KNOWN_BUGS: &[(&str, &str)] = &[];

/// The targets replayed elsewhere (see the module documentation).
const CONFIG_TARGETS: [&str; 2] = ["receiver_config", "uplink_config"];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The corpus and regression files of `target`, sorted.
fn files(target: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["corpus", "regressions"]
        .iter()
        .filter_map(|dir| std::fs::read_dir(fuzz_dir().join(dir).join(target)).ok())
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file() && !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    files
}

fn target(name: &str) -> fn(&[u8]) {
    harness::TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f).unwrap_or_else(|| panic!("no fuzz target {name}"))
}

/// Runs one file through `name`'s target; the panic message, if any, is printed above.
fn run_file(name: &str, file: &Path) -> bool {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let run = target(name);
    std::panic::catch_unwind(|| run(&bytes)).is_ok()
}

/// Replays every file of `name` except the known bugs; fails listing each file that panics.
fn replay(name: &str) {
    let files = files(name);
    assert!(!files.is_empty(), "fuzz/corpus/{name}/ is empty");
    let failed: Vec<String> = files
        .iter()
        .filter(|file| {
            let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            !KNOWN_BUGS.contains(&(name, file_name.as_str()))
        })
        .filter(|file| !run_file(name, file))
        .map(|file| file.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{name}: these inputs fail (replay one with `cargo fuzz run {name} <file>` in fuzz/): {failed:#?}");
}

/// Every target has a libFuzzer entry point and seeds, and every corpus or regression
/// directory belongs to a target.
#[test]
fn every_target_has_an_entry_point_and_seeds() {
    let names: Vec<&str> = harness::TARGETS.iter().map(|(n, _)| *n).chain(CONFIG_TARGETS).collect();
    for name in &names {
        let entry = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(entry.is_file(), "{} missing", entry.display());
        assert!(!files(name).is_empty(), "no seeds for {name}");
    }
    for dir in ["corpus", "regressions"] {
        for entry in std::fs::read_dir(fuzz_dir().join(dir)).into_iter().flatten().flatten() {
            let dir_name = entry.file_name().to_string_lossy().into_owned();
            assert!(!entry.path().is_dir() || names.contains(&dir_name.as_str()), "fuzz/{dir}/{dir_name} is not a fuzz target");
        }
    }
}

#[test]
fn wire_parse() {
    replay("wire_parse");
}

#[test]
fn wire_sealed() {
    replay("wire_sealed");
}

#[test]
fn manifest() {
    replay("manifest");
}

#[test]
fn parse_targets() {
    replay("parse_targets");
}

#[test]
fn signed_manifest() {
    replay("signed_manifest");
}

#[test]
fn revocation() {
    replay("revocation");
}

#[test]
fn key_wraps() {
    replay("key_wraps");
}

#[test]
fn network_key() {
    replay("network_key");
}

#[test]
fn certificate() {
    replay("certificate");
}

#[test]
fn heartbeat() {
    replay("heartbeat");
}

#[test]
fn key_text() {
    replay("key_text");
}

#[test]
fn feedback() {
    replay("feedback");
}

#[test]
fn oti() {
    replay("oti");
}

#[test]
fn fec_decode() {
    replay("fec_decode");
}

#[test]
fn reception() {
    replay("reception");
}

/// The reception seeds reach what they were written for (so a change to the harness's
/// input layout cannot silently leave the fuzzer starting from shallow states).
#[test]
fn reception_seeds_reach_deep_states() {
    let seed = |name: &str| std::fs::read(fuzz_dir().join("corpus/reception").join(name)).expect("reception seed");
    let object = harness::reception_with_memory(&seed("object"), &|| None);
    assert_eq!((object.accepted, object.completed), (1, 1), "{object:?}");
    let vectors = harness::reception_with_memory(&seed("vectors"), &|| None);
    assert_eq!((vectors.accepted, vectors.heartbeats), (1, 1), "{vectors:?}");
    let hostile = harness::reception_with_memory(&seed("hostile"), &|| None);
    assert!(hostile.rejected >= 2 && hostile.poisoned >= 1, "{hostile:?}");
    let revoked = harness::reception_with_memory(&seed("revoked"), &|| None);
    assert_eq!((revoked.accepted, revoked.completed), (1, 0), "{revoked:?}");
}
