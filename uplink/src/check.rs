//! `satcast-uplink check --config uplink.toml`: everything `serve` needs before it can
//! start, checked without starting it. The config is loaded exactly as `serve` loads it;
//! then the signing key and its certificate (they belong together, the root key signed the
//! certificate, and it is valid now), the network key and, with `[acks]`, the QUIC server
//! certificate (its key, the CA, its name, its validity) are read from `keys_dir`, and
//! `state_dir` is checked for writing.

use std::path::Path;

use satcast_daemon::check::{self, CheckReport};
use satcast_daemon::clock::wall_unix_secs;
use satcast_daemon::tls;

use crate::UplinkConfig;
use crate::keys;

/// A signing certificate that ends within this many days is a warning: rotate it
/// (`keys rotate`) before every county refuses what it signs.
pub const SIGNING_EXPIRY_WARN_DAYS: u64 = 30;

const DAY_SECS: u64 = 86_400;

/// Checks the config at `path` and all it names; the report says what was found.
pub fn check(path: &Path) -> CheckReport {
    let mut report = CheckReport::new(path);
    // The load error names the file (and the line) already.
    let config = match UplinkConfig::load(path) {
        Ok(config) => config,
        Err(error) => {
            report.problem(satcast_daemon::cli::one_line(&error));
            return report;
        }
    };
    report.passed(format!("config {}", path.display()));
    let dir = &config.keys_dir;
    let now = wall_unix_secs();
    let signing = dir.join(keys::SIGNING_SECRET_FILE);
    let signing_key = report.record(&format!("signing key {}", signing.display()), keys::load_signing_key(dir));
    let root_path = dir.join(keys::ROOT_PUBLIC_FILE);
    let root = report.record(&format!("root public key {}", root_path.display()), keys::load_root_public(&root_path));
    if let (Some(signing_key), Some(root)) = (signing_key, root) {
        let certificate = signing_key.certificate();
        let cert_path = dir.join(keys::SIGNING_CERT_FILE);
        let not_after = certificate.body.not_after_unix_secs;
        match certificate.verify(&root, now) {
            Err(error) => report.problem(format!("signing certificate {}: {error}", cert_path.display())),
            Ok(()) if not_after.saturating_sub(now) < SIGNING_EXPIRY_WARN_DAYS * DAY_SECS => report.warning(format!(
                "signing certificate {} (serial {}) expires in {} day(s): run `satcast-uplink keys rotate`",
                cert_path.display(),
                certificate.body.serial,
                not_after.saturating_sub(now) / DAY_SECS
            )),
            Ok(()) => report.passed(format!(
                "signing certificate {} (serial {}) is signed by the root key, valid for {} more days",
                cert_path.display(),
                certificate.body.serial,
                not_after.saturating_sub(now) / DAY_SECS
            )),
        }
    }
    let network = dir.join(keys::NETWORK_KEY_FILE);
    report.record(&format!("network key {}", network.display()), keys::load_network_key(dir));
    if config.acks.is_some() {
        let (ca, cert, key) = (dir.join(keys::CA_CERT_FILE), dir.join(keys::UPLINK_CERT_FILE), dir.join(keys::UPLINK_KEY_FILE));
        let result = tls::check(&ca, &cert, &key, tls::Role::Server { dns_name: keys::UPLINK_SERVER_NAME }, tls::UnixTime::now());
        report
            .record(&format!("acknowledgement server certificate {} with {} and {}", cert.display(), key.display(), ca.display()), result);
    }
    let root_secret = dir.join(keys::ROOT_SECRET_FILE);
    if root_secret.exists() {
        report.warning(format!("{} is on this machine: keep the root key offline except to rotate or revoke", root_secret.display()));
    }
    check::folder(&mut report, "state_dir", &config.state_dir);
    report
}
