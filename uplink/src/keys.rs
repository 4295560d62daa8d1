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

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::SeedableRng as _;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use satcast_protocol::key_tree::{CountySecret, KeyTree, Node};
use satcast_protocol::trust::{KeyCertificate, KeyTextError, NetworkKey, RootKey, RootPublicKey, SigningKey};

use crate::report::utc_text;

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
/// The next network key and when it activates, while a rotation is announced
/// (`keys rotate-network-key`); the running daemon airs it and switches to it then.
pub const NEXT_NETWORK_KEY_FILE: &str = "network.key.next";
/// The network key a rotation replaced and when the switch was, for the handover
/// (`activated <unix seconds>`, then the key): until [`NETWORK_KEY_HANDOVER_SECS`] after
/// the switch the daemon also airs the new key's announcement under it.
pub const PREVIOUS_NETWORK_KEY_FILE: &str = "network.key.previous";
/// How long after a switch the announcement of the new key is also aired under the old
/// one: a county off the air through the whole announcement (a long power cut, a dish
/// out of service) still follows if it comes back within this time.
pub const NETWORK_KEY_HANDOVER_SECS: u64 = 30 * 86_400;
/// Private CA certificate for QUIC mutual TLS (PEM).
pub const CA_CERT_FILE: &str = "ca.cert.pem";
/// Private CA key (PEM).
pub const CA_KEY_FILE: &str = "ca.key.pem";
/// The uplink's QUIC server certificate (PEM), signed by the private CA.
pub const UPLINK_CERT_FILE: &str = "uplink.cert.pem";
/// The uplink's QUIC server key (PEM).
pub const UPLINK_KEY_FILE: &str = "uplink.key.pem";
/// A county's own X25519 secret for confidential broadcasts (`satcast-county-secret-v1`),
/// in its bundle only.
pub const COUNTY_SECRET_FILE: &str = "county.secret";
/// The key tree of confidential broadcasts: every enrolled county's public key and every
/// group key (docs/protocol.md 8.5). Secret; rewritten whole (fsync) at every change.
pub const KEY_TREE_FILE: &str = "key-tree.state";
/// The first bytes of [`KEY_TREE_FILE`]; a BLAKE3 of the rest follows, then the tree.
pub const KEY_TREE_MAGIC: &[u8; 8] = b"SCKTREE1";

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
    /// Revoking the active signing key: refused unless forced, because of what follows.
    #[error(
        "serial {serial} is the active signing key: every county would refuse everything signed by it (every broadcast and heartbeat) until a `keys rotate`; rotate first, or pass --force"
    )]
    RevokeActive {
        /// The active key's serial.
        serial: u64,
    },
    /// Revoking a serial this key directory never issued: refused unless forced.
    #[error(
        "serial {serial} was never issued (the active signing key is serial {active}; rotations issue the next serial): if a rotation reaches it, every county would refuse everything signed by it until the next rotation; pass --force if that is meant"
    )]
    RevokeUnissued {
        /// The serial asked for.
        serial: u64,
        /// The active key's serial, the highest issued.
        active: u64,
    },
    /// The key directory holds more signing certificates than [`SIGNING_CERTS_MAX`].
    #[error("{} holds more than {SIGNING_CERTS_MAX} signing certificates", dir.display())]
    TooManyCertificates {
        /// The key directory.
        dir: PathBuf,
    },
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
    /// `network.key.next` does not start with its activation time, or
    /// `network.key.previous` with the time of the switch.
    #[error("{}: the first line is not `{field} <unix seconds>`", path.display())]
    DatedNetworkKey {
        /// The file.
        path: PathBuf,
        /// The word the first line must start with.
        field: &'static str,
    },
    /// The key tree file is damaged, or the tree refused an operation.
    #[error("{}: {why}", path.display())]
    KeyTree {
        /// The key tree file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
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

/// The multicast group the uplink airs on unless told otherwise.
pub const DEFAULT_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 192, 0, 1), 5600);
/// The acknowledgement endpoint a bundle names unless told otherwise.
pub const DEFAULT_ACK_UPLINK: &str = "127.0.0.1:5700";
/// The receiver's state folder in a bundle unless told otherwise: the one the shipped
/// systemd unit creates (`StateDirectory=satcast-receiver`) and lets the daemon write.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/satcast-receiver";
/// The delivery folder in a bundle unless told otherwise: under `/srv/satcast`, which the
/// shipped unit's `ReadWritePaths` lets the daemon (and its hooks) write.
pub const DEFAULT_DELIVER_DIR: &str = "/srv/satcast/deliver";
/// Longest host name accepted in `--uplink` (the DNS limit).
pub const HOST_NAME_BYTES_MAX: usize = 253;

/// `host:port` of the uplink's acknowledgement server, as a county's receiver.toml names
/// it: a DNS name, an IPv4 address or a bracketed IPv6 address, and a port from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckUplink(String);

impl AckUplink {
    /// The text, as written into receiver.toml.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for AckUplink {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let expected = "expected HOST:PORT, e.g. uplink.example.gov.cn:5700 or 10.0.0.5:5700";
        let (host, port) = text.rsplit_once(':').ok_or_else(|| expected.to_owned())?;
        match port.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("port {port:?} is not 1 to 65535; {expected}")),
            Ok(_) => {}
        }
        let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            // A DNS name or dotted IPv4: letters, digits, '-' and '.', nothing a TOML string
            // or a resolver would read differently.
            !host.is_empty()
                && host.len() <= HOST_NAME_BYTES_MAX
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        };
        if !host_ok {
            return Err(format!("host {host:?} is not a DNS name, an IPv4 address or a [bracketed] IPv6 address; {expected}"));
        }
        Ok(AckUplink(text.to_owned()))
    }
}

/// Parses `--group`: a multicast IPv4 address and a port from 1.
pub fn parse_group(text: &str) -> Result<SocketAddrV4, String> {
    let group: SocketAddrV4 = text.parse().map_err(|_| "expected a multicast ADDR:PORT, e.g. 239.192.0.1:5600".to_owned())?;
    if !group.ip().is_multicast() {
        return Err(format!("{} is not a multicast address (224.0.0.0 to 239.255.255.255)", group.ip()));
    }
    if group.port() == 0 {
        return Err("the port must be 1 to 65535".to_owned());
    }
    Ok(group)
}

/// Parses `--interface`: the IPv4 address of the local interface to join the group on.
pub fn parse_interface(text: &str) -> Result<Ipv4Addr, String> {
    text.parse().map_err(|_| {
        "expected the IPv4 address of the local interface (not its name), e.g. 10.1.2.3; 0.0.0.0 lets the kernel choose".to_owned()
    })
}

/// Parses `--state-dir` and `--deliver-dir`: a folder, absolute or relative to the
/// bundle's receiver.toml.
pub fn parse_folder(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() || text.chars().any(char::is_control) {
        return Err("expected a folder path without control characters".to_owned());
    }
    Ok(PathBuf::from(text))
}

/// What a county's receiver.toml says besides its keys: where the uplink and the downlink
/// are and where files are kept. The default matches the shipped systemd unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSettings {
    /// `[ack] uplink`.
    pub uplink: AckUplink,
    /// `[downlink] group`.
    pub group: SocketAddrV4,
    /// `[downlink] interface`.
    pub interface: Ipv4Addr,
    /// `state_dir`.
    pub state_dir: PathBuf,
    /// `deliver_dir`.
    pub deliver_dir: PathBuf,
}

impl Default for BundleSettings {
    fn default() -> Self {
        BundleSettings {
            uplink: AckUplink(DEFAULT_ACK_UPLINK.to_owned()),
            group: DEFAULT_GROUP,
            interface: Ipv4Addr::UNSPECIFIED,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            deliver_dir: PathBuf::from(DEFAULT_DELIVER_DIR),
        }
    }
}

/// Writes the receiver bundle for `county_code` (exactly 6 ASCII digits) into `out`, using
/// the key directory `dir` made by [`init`]: `root.public`, `network.key`, `ca.cert.pem`, a
/// client certificate and key whose subject CN is the county code and whose SAN is
/// `<code>.county.satcast`, and an annotated `receiver.toml` with `settings`. Refuses to
/// overwrite files in `out`. The client certificate's validity starts from the system clock.
pub fn receiver(dir: &Path, county_code: &str, out: &Path, settings: &BundleSettings) -> Result<(), KeysError> {
    if county_code.len() != 6 || !county_code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(KeysError::CountyCode(county_code.chars().take(32).collect()));
    }
    let names =
        [ROOT_PUBLIC_FILE, NETWORK_KEY_FILE, CA_CERT_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, COUNTY_SECRET_FILE, RECEIVER_CONFIG_FILE];
    refuse_existing(out, &names)?;
    let config = receiver_config(county_code, settings)?;

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
    let mut rng = os_rng()?;
    let county_secret = CountySecret::generate(&mut rng);
    let county = Node::county(county_code).map_err(|e| KeysError::CountyCode(e.to_string()))?;
    let mut tree = load_key_tree(dir)?;

    create_dir(out)?;
    write_new(out, ROOT_PUBLIC_FILE, root.to_text().as_bytes(), Secrecy::Public)?;
    write_new(out, NETWORK_KEY_FILE, network.to_text().as_bytes(), Secrecy::Secret)?;
    write_new(out, CA_CERT_FILE, ca_cert_pem.as_bytes(), Secrecy::Public)?;
    write_new(out, CLIENT_CERT_FILE, client_cert.pem().as_bytes(), Secrecy::Public)?;
    write_new(out, CLIENT_KEY_FILE, client_key.serialize_pem().as_bytes(), Secrecy::Secret)?;
    write_new(out, COUNTY_SECRET_FILE, format!("{}\n", county_secret.to_text()).as_bytes(), Secrecy::Secret)?;
    write_new(out, RECEIVER_CONFIG_FILE, config.as_bytes(), Secrecy::Public)?;
    sync_dir(out)?;
    record_issued(dir, county_code, client_cert.der())?;
    // Enrolled last: a bundle that was not written leaves no key in the tree. A new bundle
    // for an enrolled county replaces its key (the old bundle's key can read nothing aired
    // from now on: the path is re-keyed).
    tree.enroll(&mut rng, county, county_secret.public())
        .map_err(|e| KeysError::KeyTree { path: dir.join(KEY_TREE_FILE), why: e.to_string() })?;
    save_key_tree(dir, &tree)
}

/// The key tree in `dir`, or a new empty one (with a fresh pseudonym key) if there is none
/// yet. A damaged file is an error, never silently replaced: the counties' keys are in it.
pub fn load_key_tree(dir: &Path) -> Result<KeyTree, KeysError> {
    let path = dir.join(KEY_TREE_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeyTree::new(&mut os_rng()?)),
        Err(source) => return Err(KeysError::Io { path, source }),
    };
    let damaged = |why: &str| KeysError::KeyTree { path: path.clone(), why: why.to_owned() };
    let header = KEY_TREE_MAGIC.len() + 32;
    if bytes.len() < header || &bytes[..KEY_TREE_MAGIC.len()] != KEY_TREE_MAGIC {
        return Err(damaged("not a key tree file"));
    }
    if blake3::hash(&bytes[header..]).as_bytes() != &bytes[KEY_TREE_MAGIC.len()..header] {
        return Err(damaged("checksum mismatch: the file is damaged"));
    }
    KeyTree::from_bytes(&bytes[header..]).map_err(|e| damaged(&e.to_string()))
}

/// Writes the key tree whole: temporary file (mode 0600), fsync, rename over the old one,
/// fsync of the directory.
pub fn save_key_tree(dir: &Path, tree: &KeyTree) -> Result<(), KeysError> {
    let body = tree.to_bytes();
    let mut bytes = Vec::with_capacity(KEY_TREE_MAGIC.len() + 32 + body.len());
    bytes.extend_from_slice(KEY_TREE_MAGIC);
    bytes.extend_from_slice(blake3::hash(&body).as_bytes());
    bytes.extend_from_slice(&body);
    let tmp = dir.join(format!(".{KEY_TREE_FILE}.tmp"));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(KeysError::Io { path: tmp, source }),
    }
    write_new(dir, &format!(".{KEY_TREE_FILE}.tmp"), &bytes, Secrecy::Secret)?;
    let path = dir.join(KEY_TREE_FILE);
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    sync_dir(dir)
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
    // Out of the key tree first: its path is re-keyed, so it reads nothing aired from now on.
    if let Ok(county) = Node::county(county_code) {
        let mut tree = load_key_tree(dir)?;
        if tree.is_enrolled(&county) {
            tree.revoke(&mut os_rng()?, county).map_err(|e| KeysError::KeyTree { path: dir.join(KEY_TREE_FILE), why: e.to_string() })?;
            save_key_tree(dir, &tree)?;
        }
    }
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

/// The counties every certificate of which is revoked: the uplink stops waiting for them
/// (a county given a new bundle after its revocation counts again). Missing files are
/// empty lists.
pub fn revoked_counties(dir: &Path) -> Result<BTreeSet<String>, KeysError> {
    let read = |path: PathBuf| match fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io_error(&path)(e)),
    };
    let revoked: BTreeSet<String> =
        read(dir.join(REVOKED_RECEIVERS_FILE))?.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect();
    let mut counties: BTreeMap<String, bool> = BTreeMap::new();
    for line in read(dir.join(ISSUED_FILE))?.lines() {
        let mut fields = line.split_whitespace();
        if let (Some(code), Some(fingerprint)) = (fields.next(), fields.next()) {
            let all_revoked = counties.entry(code.to_owned()).or_insert(true);
            *all_revoked &= revoked.contains(fingerprint);
        }
    }
    Ok(counties.into_iter().filter(|(_, all_revoked)| *all_revoked).map(|(code, _)| code).collect())
}

/// The root-signed revocation list the daemon airs.
pub const REVOCATIONS_FILE: &str = "revocations.signed";

/// Whether [`revoke`] checks the serials against the key directory first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeCheck {
    /// Refuse the active signing key and serials never issued: either would make every
    /// county refuse everything the uplink signs, now or after a later rotation.
    Refuse,
    /// Revoke whatever is named (`--force`): a stolen active key, revoked before rotating.
    Force,
}

/// Revokes signing keys by serial: the root key in `dir` (bring it online for this only)
/// signs a new cumulative list with a higher sequence, written to `revocations.signed`,
/// which the running daemon airs after every heartbeat. Unless `check` is
/// [`RevokeCheck::Force`], nothing is signed if a serial is the active key's or was never
/// issued. Returns the list's sequence and every serial it names.
pub fn revoke(dir: &Path, serials: &[u64], now_unix_secs: u64, check: RevokeCheck) -> Result<(u64, Vec<u64>), KeysError> {
    if check == RevokeCheck::Refuse {
        // Serials are issued 1, 2, 3... by `init` and each `rotate`: the active one is the highest.
        let active = load_certificate(&dir.join(SIGNING_CERT_FILE))?.body.serial;
        for &serial in serials {
            if serial == active {
                return Err(KeysError::RevokeActive { serial });
            }
            if serial == 0 || serial > active {
                return Err(KeysError::RevokeUnissued { serial, active });
            }
        }
    }
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

/// Most signing certificates [`list`] reads from a key directory (one per rotation).
pub const SIGNING_CERTS_MAX: usize = 10_000;

/// One signing key as [`list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SigningKeyEntry {
    /// The certificate's serial.
    pub serial: u64,
    /// Start of validity, if the certificate is kept.
    pub not_before_unix_secs: Option<u64>,
    /// End of validity (inclusive), if the certificate is kept.
    pub not_after_unix_secs: Option<u64>,
    /// The key the daemon signs with (`signing.cert`).
    pub active: bool,
    /// Named by the revocation list.
    pub revoked: bool,
    /// Issued by this key directory (serial 1 up to the active key's).
    pub issued: bool,
    /// Past its validity.
    pub expired: bool,
}

/// The signing keys of a key directory, its revocation list and where a rotation of the
/// network key stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SigningKeyList {
    /// The active key's serial.
    pub active_serial: u64,
    /// The revocation list's sequence, if one was signed.
    pub revocation_sequence: Option<u64>,
    /// When the root signed it.
    pub revocation_issued_unix_secs: Option<u64>,
    /// Every kept certificate and every revoked serial, by serial.
    pub keys: Vec<SigningKeyEntry>,
    /// While a network-key rotation is announced: when it switches.
    pub network_key_switches_unix_secs: Option<u64>,
    /// While a switch's handover lasts: when it ends (see [`NETWORK_KEY_HANDOVER_SECS`]).
    pub network_key_handover_until_unix_secs: Option<u64>,
}

/// Lists the signing keys in `dir`: the active one (`signing.cert`), those kept by
/// rotations (`signing.<serial>.cert`) and every serial the revocation list names (checked
/// against `root.public`). Needs no secret.
pub fn list(dir: &Path, now_unix_secs: u64) -> Result<SigningKeyList, KeysError> {
    let active = load_certificate(&dir.join(SIGNING_CERT_FILE))?.body;
    let mut bodies = vec![active];
    let entries = fs::read_dir(dir).map_err(io_error(dir))?;
    for entry in entries {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(serial) = name.to_str().and_then(|n| n.strip_prefix("signing.")).and_then(|n| n.strip_suffix(".cert")) else {
            continue;
        };
        if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if bodies.len() >= SIGNING_CERTS_MAX {
            return Err(KeysError::TooManyCertificates { dir: dir.to_owned() });
        }
        bodies.push(load_certificate(&entry.path())?.body);
    }
    let revocation = load_revocation(dir)?;
    let revoked = revocation.as_ref().map(|r| r.revoked_serials.clone()).unwrap_or_default();
    let mut keys: Vec<SigningKeyEntry> = bodies
        .iter()
        .map(|body| SigningKeyEntry {
            serial: body.serial,
            not_before_unix_secs: Some(body.not_before_unix_secs),
            not_after_unix_secs: Some(body.not_after_unix_secs),
            active: body.serial == active.serial,
            revoked: revoked.contains(&body.serial),
            issued: (1..=active.serial).contains(&body.serial),
            expired: now_unix_secs > body.not_after_unix_secs,
        })
        .collect();
    for &serial in &revoked {
        if !keys.iter().any(|k| k.serial == serial) {
            keys.push(SigningKeyEntry {
                serial,
                not_before_unix_secs: None,
                not_after_unix_secs: None,
                active: false,
                revoked: true,
                issued: (1..=active.serial).contains(&serial),
                expired: false,
            });
        }
    }
    // A serial twice (a retired copy of the active certificate) is shown once, as active.
    keys.sort_by_key(|k| (k.serial, !k.active));
    keys.dedup_by_key(|k| k.serial);
    Ok(SigningKeyList {
        active_serial: active.serial,
        revocation_sequence: revocation.as_ref().map(|r| r.sequence),
        revocation_issued_unix_secs: revocation.as_ref().map(|r| r.issued_unix_secs),
        keys,
        network_key_switches_unix_secs: load_next_network_key(dir)?.map(|(at, _)| at),
        network_key_handover_until_unix_secs: load_previous_network_key(dir)?.map(|(at, _)| at.saturating_add(NETWORK_KEY_HANDOVER_SECS)),
    })
}

/// [`list`] as a table for people.
pub fn format_list(list: &SigningKeyList) -> String {
    let time = |t: Option<u64>| t.map_or_else(|| "-".to_owned(), utc_text);
    let mut out = format!("{:>6}  {:<20}  {:<20}  state\n", "serial", "valid from", "valid until");
    for key in &list.keys {
        let mut state = Vec::new();
        state.push(if key.active {
            "active"
        } else if !key.issued {
            "never issued"
        } else if key.not_after_unix_secs.is_none() {
            "retired (certificate not kept)"
        } else {
            "retired"
        });
        if key.revoked {
            state.push("revoked");
        }
        if key.expired {
            state.push("expired");
        }
        out.push_str(&format!(
            "{:>6}  {:<20}  {:<20}  {}\n",
            key.serial,
            time(key.not_before_unix_secs),
            time(key.not_after_unix_secs),
            state.join(", ")
        ));
    }
    match (list.revocation_sequence, list.revocation_issued_unix_secs) {
        (Some(sequence), Some(issued)) => out.push_str(&format!("revocation list {sequence}, signed {}\n", utc_text(issued))),
        _ => out.push_str("no revocation list\n"),
    }
    if let Some(at) = list.network_key_switches_unix_secs {
        out.push_str(&format!("network key: the next one is announced and takes over at {}\n", utc_text(at)));
    }
    if let Some(until) = list.network_key_handover_until_unix_secs {
        out.push_str(&format!("network key: the previous one is aired for counties that missed the switch until {}\n", utc_text(until)));
    }
    out
}

/// The verified revocation list in `dir`, if one was signed.
fn load_revocation(dir: &Path) -> Result<Option<satcast_protocol::trust::Revocation>, KeysError> {
    let path = dir.join(REVOCATIONS_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(KeysError::Io { path, source }),
    };
    let root = load_root_public(&dir.join(ROOT_PUBLIC_FILE))?;
    satcast_protocol::trust::verify_revocation(&bytes, &root)
        .map(Some)
        .map_err(|e| KeysError::Revocation(format!("{}: {e}", path.display())))
}

/// Loads a signing certificate file.
fn load_certificate(path: &Path) -> Result<KeyCertificate, KeysError> {
    KeyCertificate::from_text(&read_key_file(path)?).map_err(|source| KeysError::KeyText { path: path.to_owned(), source })
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

/// Starts a rotation of the network key: a fresh key in `network.key.next`, taking over
/// `activate_in_secs` from now. The running daemon airs it sealed for every county enrolled
/// in the confidential key tree (a revoked county is not), and switches to it then. Returns
/// when it activates. Refused while another rotation is announced, or with no county enrolled.
pub fn rotate_network_key(dir: &Path, now_unix_secs: u64, activate_in_secs: u64) -> Result<u64, KeysError> {
    let path = dir.join(NEXT_NETWORK_KEY_FILE);
    if path.exists() {
        return Err(KeysError::Exists { path });
    }
    let tree = load_key_tree(dir)?;
    if tree.counties().next().is_none() {
        let why =
            "no county is enrolled in the key tree (bundles made by `keys receiver` enrol theirs), so none could learn the key".to_owned();
        return Err(KeysError::KeyTree { path: dir.join(KEY_TREE_FILE), why });
    }
    let activates = now_unix_secs.saturating_add(activate_in_secs);
    let key = NetworkKey::generate(&mut os_rng()?);
    write_new(dir, NEXT_NETWORK_KEY_FILE, format!("activates {activates}\n{}\n", key.to_text().trim()).as_bytes(), Secrecy::Secret)?;
    sync_dir(dir)?;
    Ok(activates)
}

/// The announced next network key and when it activates, if a rotation is under way.
pub fn load_next_network_key(dir: &Path) -> Result<Option<(u64, NetworkKey)>, KeysError> {
    let path = dir.join(NEXT_NETWORK_KEY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    dated_network_key(&path, "activates")
}

/// The network key a rotation replaced and when the switch was, while its handover lasts
/// (see [`PREVIOUS_NETWORK_KEY_FILE`]).
pub fn load_previous_network_key(dir: &Path) -> Result<Option<(u64, NetworkKey)>, KeysError> {
    let path = dir.join(PREVIOUS_NETWORK_KEY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    dated_network_key(&path, "activated")
}

/// A key file whose first line is `<field> <unix seconds>` and whose second is the key.
fn dated_network_key(path: &Path, field: &'static str) -> Result<Option<(u64, NetworkKey)>, KeysError> {
    let text = read_key_file(path)?;
    let mut lines = text.lines();
    let at = lines
        .next()
        .and_then(|l| l.strip_prefix(field))
        .and_then(|t| t.strip_prefix(' '))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| KeysError::DatedNetworkKey { path: path.to_owned(), field })?;
    let key =
        NetworkKey::from_text(lines.next().unwrap_or_default()).map_err(|source| KeysError::KeyText { path: path.to_owned(), source })?;
    Ok(Some((at, key)))
}

/// Makes the announced key the network key (`network.key` replaced whole), keeps the key
/// it replaces for the handover (`network.key.previous`), and ends the rotation. Done again
/// after a crash part-way, it changes nothing.
pub fn activate_next_network_key(dir: &Path, key: &NetworkKey, activates: u64) -> Result<(), KeysError> {
    let current = load_network_key(dir)?;
    if current.0 != key.0 {
        let previous = format!("activated {activates}\n{}\n", current.to_text().trim());
        write_new(dir, PREVIOUS_NETWORK_KEY_FILE, previous.as_bytes(), Secrecy::Secret)?;
        sync_dir(dir)?;
    }
    write_new(dir, NETWORK_KEY_FILE, key.to_text().as_bytes(), Secrecy::Secret)?;
    sync_dir(dir)?;
    remove_if_present(&dir.join(NEXT_NETWORK_KEY_FILE))?;
    sync_dir(dir)
}

/// Ends a rotation's handover: the previous key is forgotten.
pub fn end_network_key_handover(dir: &Path) -> Result<(), KeysError> {
    remove_if_present(&dir.join(PREVIOUS_NETWORK_KEY_FILE))?;
    sync_dir(dir)
}

fn remove_if_present(path: &Path) -> Result<(), KeysError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(KeysError::Io { path: path.to_owned(), source }),
    }
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

/// The annotated receiver configuration for `county_code` with `settings`; key paths are
/// relative to the configuration file. Fails only for a folder that is not UTF-8.
pub fn receiver_config(county_code: &str, settings: &BundleSettings) -> Result<String, KeysError> {
    let folder = |path: &Path| {
        path.to_str().map(toml_string).ok_or_else(|| KeysError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "a folder in receiver.toml must be UTF-8"),
        })
    };
    let (state_dir, deliver_dir) = (folder(&settings.state_dir)?, folder(&settings.deliver_dir)?);
    let (group, interface, uplink) = (settings.group, settings.interface, toml_string(settings.uplink.as_str()));
    Ok(format!(
        r#"# satcast receiver configuration for county {county_code}
county_code = "{county_code}"
# Where spool, cache and trust state live, and where finished files are delivered.
# Relative paths are resolved against this file's folder. The shipped systemd unit
# (satcast-receiver.service, ProtectSystem=strict) lets the daemon write only under
# /var/lib/satcast-receiver and /srv/satcast: add other folders to its ReadWritePaths.
state_dir = {state_dir}
deliver_dir = {deliver_dir}

[downlink]
# The multicast group and port the uplink airs on, and the local interface address to join on.
group = "{group}"
interface = "{interface}"
# For tests and relays, bind a unicast address instead of joining a group:
# bind = "127.0.0.1:5600"

[ack]
# The uplink's QUIC acknowledgement endpoint over the terrestrial WAN.
uplink = {uplink}
server_name = "{UPLINK_SERVER_NAME}"

[keys]
root_public = "{ROOT_PUBLIC_FILE}"
network_key = "{NETWORK_KEY_FILE}"
ca_cert = "{CA_CERT_FILE}"
client_cert = "{CLIENT_CERT_FILE}"
client_key = "{CLIENT_KEY_FILE}"
# This county's own key for confidential broadcasts (bundles made before it have none).
county_secret = "{COUNTY_SECRET_FILE}"
"#
    ))
}

/// `text` as a TOML basic string, quotes and backslashes escaped.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
/// rename. The caller has checked that `name` does not exist (or means to replace it whole,
/// as a rotation's activation replaces `network.key`) and syncs `dir` afterwards.
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
