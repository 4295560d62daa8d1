//! Key material on disk for the uplink: `satcast-uplink keys init` creates the key
//! directory, `keys receiver` exports one county's receiver bundle, and the daemon loads
//! its signing key, network key and pinned root from here.
//!
//! Files are written whole or not at all (temporary file, fsync, rename, fsync of the
//! directory) and never overwritten: replacing a key by accident would cut every county
//! off. Secret files are created mode 0600 from the start.
//!
//! The root secret is generated here for convenience but belongs offline: after `init`,
//! move `root.secret` to offline storage; only `root.public` is needed online.

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::SeedableRng as _;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use satcast_protocol::trust::{KeyCertificate, KeyTextError, NetworkKey, RootKey, RootPublicKey, SigningKey};

/// Root secret key, `satcast-root-secret-v1 <hex>`; move it offline after `init`.
pub const ROOT_SECRET_FILE: &str = "root.secret";
/// Root public key, `satcast-root-public-v1 <hex>`; pinned by receivers.
pub const ROOT_PUBLIC_FILE: &str = "root.public";
/// Online signing key secret, `satcast-signing-secret-v1 <hex>`.
pub const SIGNING_SECRET_FILE: &str = "signing.secret";
/// Certificate of the signing key, `satcast-certificate-v1 <hex>`.
pub const SIGNING_CERT_FILE: &str = "signing.cert";
/// Datagram tag key, `satcast-network-key-v1 <hex>`.
pub const NETWORK_KEY_FILE: &str = "network.key";
/// Private CA certificate for QUIC mutual TLS (PEM).
pub const CA_CERT_FILE: &str = "ca.cert.pem";
/// Private CA key (PEM).
pub const CA_KEY_FILE: &str = "ca.key.pem";
/// The uplink's QUIC server certificate (PEM), signed by the private CA.
pub const UPLINK_CERT_FILE: &str = "uplink.cert.pem";
/// The uplink's QUIC server key (PEM).
pub const UPLINK_KEY_FILE: &str = "uplink.key.pem";
/// A receiver's QUIC client certificate (PEM), naming its county code.
pub const CLIENT_CERT_FILE: &str = "client.cert.pem";
/// A receiver's QUIC client key (PEM).
pub const CLIENT_KEY_FILE: &str = "client.key.pem";
/// The receiver's example configuration.
pub const RECEIVER_CONFIG_FILE: &str = "receiver.toml";

/// Name the uplink's server certificate carries and receivers check.
pub const UPLINK_SERVER_NAME: &str = "satcast-uplink";
/// Common name of the private CA. The receiver bundle re-creates the CA's issuer name from
/// it, so it must never change for an existing key directory.
pub const CA_COMMON_NAME: &str = "satcast private CA";
/// DNS suffix of client certificates: `<county code>.county.satcast`.
pub const COUNTY_DNS_SUFFIX: &str = "county.satcast";

/// Longest signing key validity accepted by [`init`], in days.
pub const VALIDITY_DAYS_MAX: u32 = 3660;
/// Validity of the QUIC certificates, in days. Receivers run unattended for months; an
/// expired client certificate would silently stop acknowledgements, so these are long.
pub const TLS_CERT_VALIDITY_DAYS: u64 = 3650;
/// How far before "now" QUIC certificates start, for clocks that lag.
pub const TLS_CERT_BACKDATE_SECS: u64 = 86_400;
/// Largest key file read back, in bytes; key files are one short line or one PEM block.
pub const KEY_FILE_BYTES_MAX: u64 = 16 * 1024;

const DAY_SECS: u64 = 86_400;

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The revocation list cannot be read, verified or signed.
    #[error("revocation list: {0}")]
    Revocation(String),
    /// A file that would be written already exists; nothing is overwritten.
    #[error("{} already exists; refusing to overwrite key material", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading, writing or syncing a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A key file is larger than [`KEY_FILE_BYTES_MAX`] or not UTF-8.
    #[error("{} is not a key file (too large or not text)", path.display())]
    NotKeyFile {
        /// The file.
        path: PathBuf,
    },
    /// A key file does not parse.
    #[error("{}: {source}", path.display())]
    KeyText {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyTextError,
    },
    /// The county code is not exactly 6 ASCII digits.
    #[error("county code {0:?} is not 6 digits")]
    CountyCode(String),
    /// The signing key validity is 0 or more than [`VALIDITY_DAYS_MAX`] days.
    #[error("validity of {0} days is outside 1 to {VALIDITY_DAYS_MAX}")]
    ValidityDays(u32),
    /// The time is outside what X.509 certificates can express (or the system clock is
    /// before 1970).
    #[error("time {0} (unix seconds) cannot be put in a certificate")]
    Time(u64),
    /// The operating system could not provide randomness.
    #[error("no operating system randomness: {0}")]
    Random(String),
    /// rcgen could not make or sign a QUIC certificate or parse the CA key.
    #[error("quic certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// Creates the uplink key directory `dir` (mode 0700 if new) holding a fresh root key, a
/// signing key certified by it from `now_unix_secs` for `validity_days` days, a network
/// key, a private CA for QUIC mutual TLS, and the uplink's QUIC server certificate
/// (SANs `satcast-uplink`, `localhost`, 127.0.0.1). Refuses, before writing anything, if
/// any of these files already exists.
pub fn init(dir: &Path, now_unix_secs: u64, validity_days: u32) -> Result<(), KeysError> {
    if !(1..=VALIDITY_DAYS_MAX).contains(&validity_days) {
        return Err(KeysError::ValidityDays(validity_days));
    }
    let names = [
        ROOT_SECRET_FILE,
        ROOT_PUBLIC_FILE,
        SIGNING_SECRET_FILE,
        SIGNING_CERT_FILE,
        NETWORK_KEY_FILE,
        CA_CERT_FILE,
        CA_KEY_FILE,
        UPLINK_CERT_FILE,
        UPLINK_KEY_FILE,
    ];
    refuse_existing(dir, &names)?;

    let mut rng = os_rng()?;
    let root = RootKey::generate(&mut rng);
    let not_after_unix_secs = now_unix_secs.saturating_add(u64::from(validity_days) * DAY_SECS);
    let signing = SigningKey::generate(&mut rng, &root, 1, now_unix_secs, not_after_unix_secs);
    let network = NetworkKey::generate(&mut rng);

    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params(now_unix_secs)?.self_signed(&ca_key)?;
    let uplink_key = KeyPair::generate()?;
    let mut uplink_params = CertificateParams::new(vec![UPLINK_SERVER_NAME.to_owned(), "localhost".to_owned(), "127.0.0.1".to_owned()])?;
    uplink_params.distinguished_name = common_name(UPLINK_SERVER_NAME);
    uplink_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    uplink_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    uplink_params.use_authority_key_identifier_extension = true;
    set_tls_validity(&mut uplink_params, now_unix_secs)?;
    let uplink_cert = uplink_params.signed_by(&uplink_key, &ca_cert, &ca_key)?;

    create_dir(dir)?;
    write_new(dir, ROOT_SECRET_FILE, root.to_text().as_bytes(), Secrecy::Secret)?;
    write_new(dir, ROOT_PUBLIC_FILE, root.public().to_text().as_bytes(), Secrecy::Public)?;
    write_new(dir, SIGNING_SECRET_FILE, signing.secret_to_text().as_bytes(), Secrecy::Secret)?;
    write_new(dir, SIGNING_CERT_FILE, signing.certificate().to_text().as_bytes(), Secrecy::Public)?;
    write_new(dir, NETWORK_KEY_FILE, network.to_text().as_bytes(), Secrecy::Secret)?;
    write_new(dir, CA_CERT_FILE, ca_cert.pem().as_bytes(), Secrecy::Public)?;
    write_new(dir, CA_KEY_FILE, ca_key.serialize_pem().as_bytes(), Secrecy::Secret)?;
    write_new(dir, UPLINK_CERT_FILE, uplink_cert.pem().as_bytes(), Secrecy::Public)?;
    write_new(dir, UPLINK_KEY_FILE, uplink_key.serialize_pem().as_bytes(), Secrecy::Secret)?;
    sync_dir(dir)
}

/// Writes the receiver bundle for `county_code` (exactly 6 ASCII digits) into `out`, using
/// the key directory `dir` made by [`init`]: `root.public`, `network.key`, `ca.cert.pem`, a
/// client certificate and key whose subject CN is the county code and whose SAN is
/// `<code>.county.satcast`, and an annotated `receiver.toml`. Refuses to overwrite files
/// in `out`. The client certificate's validity starts from the system clock.
pub fn receiver(dir: &Path, county_code: &str, out: &Path) -> Result<(), KeysError> {
    if county_code.len() != 6 || !county_code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(KeysError::CountyCode(county_code.chars().take(32).collect()));
    }
    let names = [ROOT_PUBLIC_FILE, NETWORK_KEY_FILE, CA_CERT_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, RECEIVER_CONFIG_FILE];
    refuse_existing(out, &names)?;

    // Parse before copying so a damaged key directory is caught here, not in a county.
    let root = load_root_public(&dir.join(ROOT_PUBLIC_FILE))?;
    let network = load_network_key(dir)?;
    let ca_cert_pem = read_key_file(&dir.join(CA_CERT_FILE))?;
    let ca_key_path = dir.join(CA_KEY_FILE);
    let ca_key = KeyPair::from_pem(&read_key_file(&ca_key_path)?)?;
    // rcgen 0.13 cannot parse a certificate without x509-parser, so rebuild the CA's
    // issuer identity (same name, same key, hence the same key identifier) to sign with;
    // only its name and key reach the client certificate.
    let now_unix_secs = system_now_unix_secs()?;
    let ca_issuer = ca_params(now_unix_secs)?.self_signed(&ca_key)?;

    let client_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![format!("{county_code}.{COUNTY_DNS_SUFFIX}")])?;
    params.distinguished_name = common_name(county_code);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    set_tls_validity(&mut params, now_unix_secs)?;
    let client_cert = params.signed_by(&client_key, &ca_issuer, &ca_key)?;

    create_dir(out)?;
    write_new(out, ROOT_PUBLIC_FILE, root.to_text().as_bytes(), Secrecy::Public)?;
    write_new(out, NETWORK_KEY_FILE, network.to_text().as_bytes(), Secrecy::Secret)?;
    write_new(out, CA_CERT_FILE, ca_cert_pem.as_bytes(), Secrecy::Public)?;
    write_new(out, CLIENT_CERT_FILE, client_cert.pem().as_bytes(), Secrecy::Public)?;
    write_new(out, CLIENT_KEY_FILE, client_key.serialize_pem().as_bytes(), Secrecy::Secret)?;
    write_new(out, RECEIVER_CONFIG_FILE, receiver_config(county_code).as_bytes(), Secrecy::Public)?;
    sync_dir(out)?;
    record_issued(dir, county_code, client_cert.der())
}

/// Which client certificates were issued to which county: `<code> <BLAKE3 of the DER>`
/// per line, so a county's certificates can be revoked later.
pub const ISSUED_FILE: &str = "issued-receivers.txt";
/// Fingerprints of revoked client certificates, one per line (`<BLAKE3 hex> <code>`); the
/// acknowledgement server refuses a connection presenting one.
pub const REVOKED_RECEIVERS_FILE: &str = "revoked-receivers.txt";

/// The fingerprint the issued and revoked lists use: BLAKE3 of the certificate's DER.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    blake3::hash(der).to_hex().to_string()
}

fn append_line(path: &Path, line: &str) -> Result<(), KeysError> {
    let mut file = fs::OpenOptions::new().create(true).append(true).open(path).map_err(io_error(path))?;
    file.write_all(format!("{line}\n").as_bytes()).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

fn record_issued(dir: &Path, county_code: &str, der: &[u8]) -> Result<(), KeysError> {
    append_line(&dir.join(ISSUED_FILE), &format!("{county_code} {}", certificate_fingerprint(der)))
}

/// Revokes every client certificate issued to `county_code`: the acknowledgement server
/// refuses them from then on (it rereads the list when it changes). Returns how many.
pub fn revoke_receiver(dir: &Path, county_code: &str) -> Result<usize, KeysError> {
    let issued_path = dir.join(ISSUED_FILE);
    let issued = fs::read_to_string(&issued_path).map_err(io_error(&issued_path))?;
    let revoked_path = dir.join(REVOKED_RECEIVERS_FILE);
    let already = fs::read_to_string(&revoked_path).unwrap_or_default();
    let mut count = 0;
    for line in issued.lines() {
        let mut fields = line.split_whitespace();
        if let (Some(code), Some(fingerprint)) = (fields.next(), fields.next()) {
            if code == county_code && !already.contains(fingerprint) {
                append_line(&revoked_path, &format!("{fingerprint} {code}"))?;
                count += 1;
            }
        }
    }
    Ok(count)
}

/// The root-signed revocation list the daemon airs.
pub const REVOCATIONS_FILE: &str = "revocations.signed";

/// Revokes signing keys by serial: the root key in `dir` (bring it online for this only)
/// signs a new cumulative list with a higher sequence, written to `revocations.signed`,
/// which the running daemon airs after every heartbeat. Returns the list's sequence and
/// every serial it names.
pub fn revoke(dir: &Path, serials: &[u64], now_unix_secs: u64) -> Result<(u64, Vec<u64>), KeysError> {
    let root_path = dir.join(ROOT_SECRET_FILE);
    let root = RootKey::from_text(&read_key_file(&root_path)?).map_err(|source| KeysError::KeyText { path: root_path, source })?;
    let path = dir.join(REVOCATIONS_FILE);
    let previous = match fs::read(&path) {
        Ok(bytes) => Some(
            satcast_protocol::trust::verify_revocation(&bytes, &root.public())
                .map_err(|e| KeysError::Revocation(format!("{}: {e}", path.display())))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(KeysError::Io { path, source }),
    };
    let mut revoked: Vec<u64> = previous.as_ref().map(|r| r.revoked_serials.clone()).unwrap_or_default();
    revoked.extend_from_slice(serials);
    revoked.sort_unstable();
    revoked.dedup();
    let revocation = satcast_protocol::trust::Revocation {
        sequence: previous.map_or(1, |r| r.sequence + 1),
        issued_unix_secs: now_unix_secs,
        revoked_serials: revoked.clone(),
    };
    let sequence = revocation.sequence;
    let signed = root.sign_revocation(revocation).map_err(|e| KeysError::Revocation(e.to_string()))?;
    satcast_store::fsutil::write_atomic(&path, &signed.to_bytes()).map_err(io_error(&path))?;
    Ok((sequence, revoked))
}

/// Replaces the online signing key with a new one certified by the root key in `dir`
/// (root.secret must be there: bring it online for the rotation only). The old pair is kept
/// as `signing.<serial>.secret` and `.cert`. Returns the new key's serial.
pub fn rotate(dir: &Path, now_unix_secs: u64, validity_days: u32) -> Result<u64, KeysError> {
    if !(1..=VALIDITY_DAYS_MAX).contains(&validity_days) {
        return Err(KeysError::ValidityDays(validity_days));
    }
    let root_path = dir.join(ROOT_SECRET_FILE);
    let root = RootKey::from_text(&read_key_file(&root_path)?).map_err(|source| KeysError::KeyText { path: root_path, source })?;
    let old = load_signing_key(dir)?;
    let old_serial = old.certificate().body.serial;
    let serial = old_serial + 1;
    let not_after = now_unix_secs + u64::from(validity_days) * 86_400;
    let new = SigningKey::generate(&mut os_rng()?, &root, serial, now_unix_secs, not_after);
    for (name, kept) in
        [(SIGNING_SECRET_FILE, format!("signing.{old_serial}.secret")), (SIGNING_CERT_FILE, format!("signing.{old_serial}.cert"))]
    {
        let from = dir.join(name);
        let to = dir.join(kept);
        fs::rename(&from, &to).map_err(io_error(&from))?;
    }
    write_new(dir, SIGNING_SECRET_FILE, new.secret_to_text().as_bytes(), Secrecy::Secret)?;
    // The certificate last: the daemon reloads when it changes, and finds the secret ready.
    write_new(dir, SIGNING_CERT_FILE, new.certificate().to_text().as_bytes(), Secrecy::Public)?;
    sync_dir(dir)?;
    Ok(serial)
}

/// Loads the online signing key (`signing.secret` and `signing.cert`) from `dir`, checking
/// that the two belong together. Validity against the clock is checked by the caller
/// ([`KeyCertificate::verify`]).
pub fn load_signing_key(dir: &Path) -> Result<SigningKey, KeysError> {
    let secret_path = dir.join(SIGNING_SECRET_FILE);
    let secret = read_key_file(&secret_path)?;
    let cert_path = dir.join(SIGNING_CERT_FILE);
    let cert = read_key_file(&cert_path)?;
    // Attribute a certificate problem to the certificate file, anything else to the secret.
    if let Err(source) = KeyCertificate::from_text(&cert) {
        return Err(KeysError::KeyText { path: cert_path, source });
    }
    SigningKey::from_text(&secret, &cert).map_err(|source| KeysError::KeyText { path: secret_path, source })
}

/// Loads the network key (`network.key`) from `dir`.
pub fn load_network_key(dir: &Path) -> Result<NetworkKey, KeysError> {
    let path = dir.join(NETWORK_KEY_FILE);
    let text = read_key_file(&path)?;
    NetworkKey::from_text(&text).map_err(|source| KeysError::KeyText { path, source })
}

/// Loads a root public key file (`root.public`) from `path`.
pub fn load_root_public(path: &Path) -> Result<RootPublicKey, KeysError> {
    let text = read_key_file(path)?;
    RootPublicKey::from_text(&text).map_err(|source| KeysError::KeyText { path: path.to_owned(), source })
}

/// The annotated example receiver configuration for `county_code`; paths are relative to
/// the configuration file.
pub fn receiver_config(county_code: &str) -> String {
    format!(
        r#"# satcast receiver configuration for county {county_code}
county_code = "{county_code}"
# Where spool, cache and trust state live, and where finished files are delivered.
state_dir = "state"
deliver_dir = "deliver"

[downlink]
# The multicast group and port the uplink airs on, and the local interface address to join on.
group = "239.192.0.1:5600"
interface = "0.0.0.0"
# For tests and relays, bind a unicast address instead of joining a group:
# bind = "127.0.0.1:5600"

[ack]
# The uplink's QUIC acknowledgement endpoint over the terrestrial WAN.
uplink = "127.0.0.1:5700"
server_name = "{UPLINK_SERVER_NAME}"

[keys]
root_public = "{ROOT_PUBLIC_FILE}"
network_key = "{NETWORK_KEY_FILE}"
ca_cert = "{CA_CERT_FILE}"
client_cert = "{CLIENT_CERT_FILE}"
client_key = "{CLIENT_KEY_FILE}"
"#
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Secrecy {
    Secret,
    Public,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeysError + '_ {
    move |source| KeysError::Io { path: path.to_owned(), source }
}

fn os_rng() -> Result<rand::rngs::StdRng, KeysError> {
    rand::rngs::StdRng::try_from_os_rng().map_err(|e| KeysError::Random(e.to_string()))
}

fn system_now_unix_secs() -> Result<u64, KeysError> {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).map_err(|_| KeysError::Time(0))
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// The private CA's parameters. Everything but the validity must stay the same across
/// calls: [`receiver`] rebuilds the issuer from it.
fn ca_params(now_unix_secs: u64) -> Result<CertificateParams, KeysError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    set_tls_validity(&mut params, now_unix_secs)?;
    Ok(params)
}

/// Sets a validity from `now_unix_secs` minus [`TLS_CERT_BACKDATE_SECS`] to plus
/// [`TLS_CERT_VALIDITY_DAYS`]. Dates are built from rcgen's epoch without naming the `time`
/// crate; rcgen's own date helper panics on out-of-range dates, this returns an error.
fn set_tls_validity(params: &mut CertificateParams, now_unix_secs: u64) -> Result<(), KeysError> {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let at = |unix_secs: u64| {
        let offset = Duration::from_secs(unix_secs).try_into().map_err(|_| KeysError::Time(unix_secs))?;
        epoch.checked_add(offset).ok_or(KeysError::Time(unix_secs))
    };
    params.not_before = at(now_unix_secs.saturating_sub(TLS_CERT_BACKDATE_SECS))?;
    let not_after = now_unix_secs.checked_add(TLS_CERT_VALIDITY_DAYS * DAY_SECS).ok_or(KeysError::Time(now_unix_secs))?;
    params.not_after = at(not_after)?;
    Ok(())
}

fn refuse_existing(dir: &Path, names: &[&str]) -> Result<(), KeysError> {
    for name in names {
        let path = dir.join(name);
        // symlink_metadata: a dangling symlink counts as existing too.
        match fs::symlink_metadata(&path) {
            Ok(_) => return Err(KeysError::Exists { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(KeysError::Io { path, source }),
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), KeysError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        // The directory holds secrets: nobody else needs to list it.
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_error(dir))
}

/// Writes `name` in `dir` whole: temporary file (created with its final mode), fsync,
/// rename. The caller has checked that `name` does not exist and syncs `dir` afterwards.
fn write_new(dir: &Path, name: &str, contents: &[u8], secrecy: Secrecy) -> Result<(), KeysError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    // A temporary file left by a crashed run holds nothing anyone depends on.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(KeysError::Io { path: tmp, source }),
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secrecy == Secrecy::Secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secrecy;
    let mut file = options.open(&tmp).map_err(io_error(&tmp))?;
    file.write_all(contents).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_error(&path))
}

fn sync_dir(dir: &Path) -> Result<(), KeysError> {
    #[cfg(unix)]
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn read_key_file(path: &Path) -> Result<String, KeysError> {
    let file = fs::File::open(path).map_err(io_error(path))?;
    let mut bytes = Vec::new();
    file.take(KEY_FILE_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(io_error(path))?;
    if bytes.len() as u64 > KEY_FILE_BYTES_MAX {
        return Err(KeysError::NotKeyFile { path: path.to_owned() });
    }
    String::from_utf8(bytes).map_err(|_| KeysError::NotKeyFile { path: path.to_owned() })
}
