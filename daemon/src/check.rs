//! What `satcast-uplink check` and `satcast-receiver check` share: a report of what was
//! checked and every problem found, one line each, printed as text or JSON; and checks of
//! the folders a daemon writes. Each daemon's own `check` module loads its config exactly
//! as the daemon does and decides what to look at.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::{self, OutputError};

/// Exit status of a `check` that found a problem.
pub const EXIT_PROBLEMS: u8 = 1;

/// What a `check` found: each item looked at, and each problem, one line each.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// The config file checked, as given.
    pub config: PathBuf,
    /// Whether nothing is wrong.
    pub ok: bool,
    /// What was looked at and found usable, one line each.
    pub checked: Vec<String>,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
    /// What will not stop the daemon but will fail later (a hook program that is not
    /// there), one line each. Warnings alone leave the report ok.
    pub warnings: Vec<String>,
}

impl CheckReport {
    /// An empty report for the config file at `config`.
    pub fn new(config: &Path) -> CheckReport {
        CheckReport { config: config.to_owned(), ok: true, checked: Vec::new(), problems: Vec::new(), warnings: Vec::new() }
    }

    /// `what` was looked at and is usable.
    pub fn passed(&mut self, what: impl Into<String>) {
        self.checked.push(what.into());
    }

    /// `what` is wrong; the report is no longer ok.
    pub fn problem(&mut self, what: impl Into<String>) {
        // One line each, whatever the error text held.
        self.problems.push(what.into().replace('\n', " "));
        self.ok = false;
    }

    /// `what` will fail later without stopping the daemon; the report stays ok.
    pub fn warning(&mut self, what: impl Into<String>) {
        self.warnings.push(what.into().replace('\n', " "));
    }

    /// Records `result` for the item `what`: passed, or a problem naming the error (with its
    /// causes, on one line). Returns the value when there is one.
    pub fn record<T, E: std::error::Error + 'static>(&mut self, what: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => {
                self.passed(what);
                Some(value)
            }
            Err(error) => {
                self.problem(format!("{what}: {}", cli::one_line(&error)));
                None
            }
        }
    }

    /// Prints the report: `ok: ...`, `warning: ...` and `problem: ...` lines and a summary, or one JSON
    /// object. Returns the exit status: 0 when ok, [`EXIT_PROBLEMS`] otherwise.
    pub fn print(&self, json: bool) -> Result<u8, OutputError> {
        if json {
            cli::print(&format!("{}\n", serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))))?;
        } else {
            let mut text = String::new();
            for line in &self.checked {
                text.push_str(&format!("ok: {line}\n"));
            }
            for line in &self.warnings {
                text.push_str(&format!("warning: {line}\n"));
            }
            for line in &self.problems {
                text.push_str(&format!("problem: {line}\n"));
            }
            match self.problems.len() {
                0 => text.push_str(&format!("{}: no problems found\n", self.config.display())),
                n => text.push_str(&format!("{}: {n} problem(s) found\n", self.config.display())),
            }
            cli::print(&text)?;
        }
        Ok(if self.ok { 0 } else { EXIT_PROBLEMS })
    }
}

/// Checks that the daemon can write in the folder `path` (the config's `name`): it is a
/// folder this process can create a file in, or it does not exist yet and its nearest
/// existing parent is such a folder (the daemon creates it at start). Writing is tried for
/// real (a probe file, removed at once): permissions, ACLs and read-only mounts all count.
pub fn folder(report: &mut CheckReport, name: &str, path: &Path) {
    let mut existing = path;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => {
                report.problem(format!("{name} {}: no part of it exists", path.display()));
                return;
            }
        }
    }
    if !existing.is_dir() {
        report.problem(format!("{name} {}: {} is not a folder", path.display(), existing.display()));
        return;
    }
    match probe_write(existing) {
        Ok(()) if existing == path => report.passed(format!("{name} {} is writable", path.display())),
        Ok(()) => report.passed(format!("{name} {} does not exist yet; it can be created in {}", path.display(), existing.display())),
        Err(error) if existing == path => report.problem(format!("{name} {} is not writable: {error}", path.display())),
        Err(error) => {
            report.problem(format!("{name} {} does not exist and cannot be created in {}: {error}", path.display(), existing.display()))
        }
    }
}

/// Creates and removes a file in `dir`.
fn probe_write(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".satcast-check.{}", std::process::id()));
    std::fs::OpenOptions::new().write(true).create_new(true).open(&probe)?;
    std::fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_writable_creatable_or_a_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut report = CheckReport::new(Path::new("x.toml"));
        folder(&mut report, "state_dir", dir.path());
        folder(&mut report, "deliver_dir", &dir.path().join("a/b"));
        assert!(report.ok, "{report:?}");
        assert!(report.checked[1].contains("does not exist yet"), "{report:?}");
        let file = dir.path().join("file");
        std::fs::write(&file, "x").expect("write");
        folder(&mut report, "state_dir", &file.join("below"));
        assert!(!report.ok);
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert!(report.problems[0].contains("is not a folder"), "{report:?}");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1, "the probe file is removed");
    }
}
