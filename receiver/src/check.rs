//! `satcast-receiver check --config receiver.toml`: everything the daemon needs before it
//! can start, checked without starting it. The config is loaded exactly as `run` loads it;
//! then every key file it names is read and parsed, the QUIC client certificate is checked
//! against its key, the CA, the clock and the county code, the folders are checked for
//! writing, the trust state is read, and each hook's program is looked for.

use std::path::{Path, PathBuf};

use satcast_daemon::check::{self, CheckReport};
use satcast_daemon::tls;
use satcast_protocol::feedback::county_dns_name;
use satcast_protocol::key_tree::CountySecret;
use satcast_protocol::manifest::Kind;
use satcast_protocol::trust::{NetworkKey, RootPublicKey};
use satcast_store::TrustState;

use crate::ReceiverConfig;

/// Checks the config at `path` and all it names; the report says what was found.
pub fn check(path: &Path) -> CheckReport {
    let mut report = CheckReport::new(path);
    // The load error names the file (and the line) already.
    let config = match ReceiverConfig::load(path) {
        Ok(config) => config,
        Err(error) => {
            report.problem(satcast_daemon::cli::one_line(&error));
            return report;
        }
    };
    report.passed(format!("config {}", path.display()));
    let keys = &config.keys;
    let root = key_text(&keys.root_public).and_then(|text| RootPublicKey::from_text(&text).map_err(|e| e.to_string()));
    record_text(&mut report, "keys.root_public", &keys.root_public, root);
    let network = key_text(&keys.network_key).and_then(|text| NetworkKey::from_text(&text).map_err(|e| e.to_string()));
    record_text(&mut report, "keys.network_key", &keys.network_key, network);
    match &keys.county_secret {
        // Not needed for clear broadcasts: a missing file is a warning, a damaged one a problem.
        Some(path) if !path.exists() => {
            report.warning(format!("keys.county_secret {} is missing: this county cannot read confidential broadcasts", path.display()))
        }
        Some(path) => {
            let secret = key_text(path).and_then(|text| CountySecret::from_text(&text).map_err(|e| e.to_string()));
            record_text(&mut report, "keys.county_secret", path, secret);
        }
        None => report.warning("no keys.county_secret: this county cannot read confidential broadcasts (a bundle from before them)"),
    }
    if config.ack.is_some() {
        let dns_name = county_dns_name(&config.county_code);
        let result =
            tls::check(&keys.ca_cert, &keys.client_cert, &keys.client_key, tls::Role::Client { dns_name: &dns_name }, tls::UnixTime::now());
        report.record(&format!("keys.ca_cert, keys.client_cert, keys.client_key (for {dns_name})"), result);
    } else {
        report.warning("no [ack] section: acknowledgements stay in the outbox until one is configured");
    }
    check::folder(&mut report, "state_dir", &config.state_dir);
    check::folder(&mut report, "deliver_dir", &config.deliver_dir);
    let trust_state = config.state_dir.join("trust.state");
    report.record(&format!("trust state {}", trust_state.display()), TrustState::load(&trust_state));
    for kind in Kind::ALL {
        if let Some(hook) = config.hooks.for_kind(kind) {
            hook_program(&mut report, kind, hook.command.first().map(String::as_str).unwrap_or_default());
        }
    }
    report
}

fn key_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

fn record_text<T>(report: &mut CheckReport, what: &str, path: &Path, result: Result<T, String>) {
    match result {
        Ok(_) => report.passed(format!("{what} {}", path.display())),
        Err(why) => report.problem(format!("{what} {}: {why}", path.display())),
    }
}

/// A hook that is not there does not stop the daemon, but every delivery of its kind would
/// report the hook failed: a warning.
fn hook_program(report: &mut CheckReport, kind: Kind, program: &str) {
    let found = if program.contains('/') {
        Some(PathBuf::from(program))
    } else {
        std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(program)).find(|p| is_executable(p)))
    };
    match found {
        Some(path) if is_executable(&path) => report.passed(format!("hooks.{kind}.command {}", path.display())),
        Some(path) => report.warning(format!(
            "hooks.{kind}.command {}: not an executable file; every {kind} delivery will report the hook failed",
            path.display()
        )),
        None => {
            report.warning(format!("hooks.{kind}.command {program}: not found in PATH; every {kind} delivery will report the hook failed"))
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
