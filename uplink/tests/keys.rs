//! Key directory tests: `init` writes a complete, private key directory and refuses to
//! overwrite one; `receiver` exports a bundle whose files parse and whose keys work with
//! the uplink's.

use std::path::Path;

use satcast_protocol::manifest::{Compression, Kind, Manifest};
use satcast_protocol::trust::verify_manifest;
use satcast_uplink::keys::{self, KeysError};

const NOW: u64 = 1_750_000_000;
const COUNTY: &str = "410102";

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Decodes the first PEM block of `pem` (no base64 crate in this workspace's uplink).
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in body.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The subject key identifier of a DER certificate (OID 2.5.29.14, then OCTET STRING
/// wrapping an OCTET STRING).
fn subject_key_id(der: &[u8]) -> Vec<u8> {
    let oid = [0x06, 0x03, 0x55, 0x1d, 0x0e];
    let at = der.windows(oid.len()).position(|w| w == oid).expect("certificate has an SKI") + oid.len();
    let rest = &der[at..];
    assert_eq!((rest[0], rest[2]), (0x04, 0x04), "SKI layout");
    rest[4..4 + usize::from(rest[3])].to_vec()
}

fn manifest() -> Manifest {
    Manifest {
        object_id: 1,
        kind: Kind::CodeTable,
        name: "divisions.csv".to_owned(),
        version: 1,
        size_bytes: 10,
        compression: Compression::None,
        oti: [0; 12],
        object_hash: [0; 32],
        block_hashes: vec![[0; 32]],
        targets: vec!["41".to_owned()],
        created_unix_secs: NOW,
        expires_unix_secs: NOW + 86_400,
    }
}

#[test]
fn init_writes_a_private_complete_key_directory() {
    let tmp = tempdir();
    let dir = tmp.path().join("keys");
    keys::init(&dir, NOW, 90).expect("init");

    let secrets = ["root.secret", "signing.secret", "network.key", "ca.key.pem", "uplink.key.pem"];
    let publics = ["root.public", "signing.cert", "ca.cert.pem", "uplink.cert.pem"];
    for name in secrets.iter().chain(&publics) {
        assert!(dir.join(name).is_file(), "{name} written");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |name: &str| std::fs::metadata(dir.join(name)).expect("metadata").permissions().mode() & 0o777;
        for name in secrets {
            assert_eq!(mode(name), 0o600, "{name} is private");
        }
        assert_eq!(mode("."), 0o700, "the key directory is private");
    }
    // No temporary files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("read_dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let signing = keys::load_signing_key(&dir).expect("signing key loads");
    let body = signing.certificate().body;
    assert_eq!((body.not_before_unix_secs, body.not_after_unix_secs), (NOW, NOW + 90 * 86_400));
    let root = keys::load_root_public(&dir.join("root.public")).expect("root loads");
    signing.certificate().verify(&root, NOW).expect("certified by the root");

    let uplink_der = pem_der(&read(&dir.join("uplink.cert.pem")));
    assert!(contains(&uplink_der, b"satcast-uplink"));
    assert!(contains(&uplink_der, b"localhost"));
    assert!(contains(&uplink_der, &[0x87, 0x04, 127, 0, 0, 1]), "IP SAN 127.0.0.1");
    let ca_der = pem_der(&read(&dir.join("ca.cert.pem")));
    assert!(contains(&uplink_der, &subject_key_id(&ca_der)), "issued by the CA");
}

#[test]
fn init_refuses_to_overwrite() {
    let tmp = tempdir();
    let dir = tmp.path().join("keys");
    keys::init(&dir, NOW, 30).expect("init");
    let before = read(&dir.join("root.secret"));
    let result = keys::init(&dir, NOW, 30);
    assert!(matches!(result, Err(KeysError::Exists { .. })), "{result:?}");
    assert_eq!(read(&dir.join("root.secret")), before, "root key untouched");

    // One stray key file is enough to refuse, and nothing else is written.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::write(other.join("network.key"), "keep me").expect("write");
    let result = keys::init(&other, NOW, 30);
    assert!(matches!(&result, Err(KeysError::Exists { path }) if path.ends_with("network.key")), "{result:?}");
    assert_eq!(std::fs::read_dir(&other).expect("read_dir").count(), 1);

    let result = keys::init(&tmp.path().join("zero"), NOW, 0);
    assert!(matches!(result, Err(KeysError::ValidityDays(0))), "{result:?}");
}

#[test]
fn receiver_bundle_parses_and_works_with_the_uplink_keys() {
    let tmp = tempdir();
    let dir = tmp.path().join("keys");
    let out = tmp.path().join("county-410102");
    keys::init(&dir, NOW, 30).expect("init");
    keys::receiver(&dir, COUNTY, &out, &keys::BundleSettings::default()).expect("bundle");

    for name in ["root.public", "network.key", "ca.cert.pem", "client.cert.pem", "client.key.pem", "county.secret", "receiver.toml"] {
        assert!(out.join(name).is_file(), "{name} written");
    }
    for secret in ["root.secret", "signing.secret", "signing.cert", "ca.key.pem", "uplink.key.pem"] {
        assert!(!out.join(secret).exists(), "{secret} must not leave the uplink");
    }

    // The client certificate names the county in its CN and its DNS SAN, and chains to
    // the CA the bundle carries.
    let client_der = pem_der(&read(&out.join("client.cert.pem")));
    assert!(contains(&client_der, COUNTY.as_bytes()));
    assert!(contains(&client_der, b"410102.county.satcast"));
    assert!(contains(&client_der, b"satcast private CA"), "issuer name");
    assert_eq!(read(&out.join("ca.cert.pem")), read(&dir.join("ca.cert.pem")));
    let ca_der = pem_der(&read(&out.join("ca.cert.pem")));
    assert!(contains(&client_der, &subject_key_id(&ca_der)), "authority key id is the CA's");
    rcgen::KeyPair::from_pem(&read(&out.join("client.key.pem"))).expect("client key parses");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for name in ["client.key.pem", "network.key", "county.secret"] {
            let mode = std::fs::metadata(out.join(name)).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name} is private");
        }
    }

    // Keys load back and agree with the uplink's.
    let root = keys::load_root_public(&out.join("root.public")).expect("root loads");
    assert_eq!(keys::load_network_key(&out).expect("loads"), keys::load_network_key(&dir).expect("loads"));
    let signing = keys::load_signing_key(&dir).expect("signing key loads");
    let signed = signing.sign_manifest(&manifest()).expect("valid manifest");
    let verified = verify_manifest(&signed.to_bytes(), &root, COUNTY, NOW + 60, None).expect("verifies");
    assert_eq!(verified, manifest());

    assert_eq!(read(&out.join("receiver.toml")), EXPECTED_CONFIG);

    let result = keys::receiver(&dir, COUNTY, &out, &keys::BundleSettings::default());
    assert!(matches!(result, Err(KeysError::Exists { .. })), "{result:?}");
}

#[test]
fn bundles_enrol_their_county_in_the_durable_key_tree_and_revocation_rekeys_its_path() {
    use satcast_protocol::key_tree::{CountySecret, KeyRing, Node};
    let tmp = tempdir();
    let dir = tmp.path().join("keys");
    keys::init(&dir, NOW, 30).expect("init");
    let mut rings = Vec::new();
    for code in ["410102", "410103", "420101"] {
        let out = tmp.path().join(code);
        keys::receiver(&dir, code, &out, &keys::BundleSettings::default()).expect("bundle");
        let secret = CountySecret::from_text(&read(&out.join("county.secret"))).expect("county secret parses");
        rings.push(KeyRing::new(Node::county(code).expect("code"), secret));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join(keys::KEY_TREE_FILE)).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key tree is secret");
    }
    // Read back from disk: every bundle's county learns its path from the tree's wraps.
    let tree = keys::load_key_tree(&dir).expect("loads");
    let mut rng = rand::rng();
    let wraps = tree.edge_wraps(&mut rng).expect("wraps");
    for ring in &mut rings {
        assert_eq!(ring.learn(&wraps), 3, "{}", ring.county());
    }
    let province = Node::from_prefix("41").expect("p");
    let before = tree.group(&province).expect("group").epoch;
    assert_eq!(keys::revoke_receiver(&dir, "410103").expect("revokes"), 1);
    let tree = keys::load_key_tree(&dir).expect("loads");
    assert!(!tree.is_enrolled(&Node::county("410103").expect("code")));
    assert_eq!(tree.group(&province).expect("group").epoch, before + 1, "its path is re-keyed");
    let wraps = tree.edge_wraps(&mut rng).expect("wraps");
    assert_eq!(rings[1].learn(&wraps), 0, "the revoked county learns nothing new");
    assert_eq!(rings[0].learn(&wraps), 3, "its neighbour learns the new keys");
    // The uplink stops waiting for it; a new bundle for it makes it a county again.
    let revoked = keys::revoked_counties(&dir).expect("lists");
    assert_eq!(revoked.into_iter().collect::<Vec<_>>(), ["410103"]);
    keys::receiver(&dir, "410103", &tmp.path().join("410103-again"), &keys::BundleSettings::default()).expect("bundle");
    assert!(keys::revoked_counties(&dir).expect("lists").is_empty(), "a county with a valid certificate is not revoked");
    // A damaged tree is an error, never replaced by an empty one.
    let path = dir.join(keys::KEY_TREE_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).expect("write");
    let error = keys::load_key_tree(&dir).expect_err("damaged");
    assert!(error.to_string().contains("checksum"), "{error}");
    assert!(keys::receiver(&dir, "110101", &tmp.path().join("110101"), &keys::BundleSettings::default()).is_err());
}

#[test]
fn receiver_rejects_bad_county_codes_and_missing_keys() {
    let tmp = tempdir();
    let dir = tmp.path().join("keys");
    keys::init(&dir, NOW, 30).expect("init");
    for code in ["", "4101", "4101020", "41010x", "４１０１０２"] {
        let result = keys::receiver(&dir, code, &tmp.path().join("out"), &keys::BundleSettings::default());
        assert!(matches!(result, Err(KeysError::CountyCode(_))), "{code:?}: {result:?}");
    }
    assert!(!tmp.path().join("out").exists());

    let result = keys::receiver(&tmp.path().join("nowhere"), COUNTY, &tmp.path().join("out2"), &keys::BundleSettings::default());
    assert!(matches!(result, Err(KeysError::Io { .. })), "{result:?}");

    std::fs::write(dir.join("network.key"), "satcast-root-public-v1 00").expect("write");
    let result = keys::load_network_key(&dir);
    assert!(matches!(result, Err(KeysError::KeyText { .. })), "{result:?}");
    std::fs::write(dir.join("signing.cert"), vec![b'0'; 100_000]).expect("write");
    let result = keys::load_signing_key(&dir);
    assert!(matches!(result, Err(KeysError::NotKeyFile { .. })), "{result:?}");
}

const EXPECTED_CONFIG: &str = r#"# satcast receiver configuration for county 410102
county_code = "410102"
# Where spool, cache and trust state live, and where finished files are delivered.
# Relative paths are resolved against this file's folder. The shipped systemd unit
# (satcast-receiver.service, ProtectSystem=strict) lets the daemon write only under
# /var/lib/satcast-receiver and /srv/satcast: add other folders to its ReadWritePaths.
state_dir = "/var/lib/satcast-receiver"
deliver_dir = "/srv/satcast/deliver"

[downlink]
# The multicast group and port the uplink airs on, and the local interface address to join on.
group = "239.192.0.1:5600"
interface = "0.0.0.0"
# For tests and relays, bind a unicast address instead of joining a group:
# bind = "127.0.0.1:5600"

[ack]
# The uplink's QUIC acknowledgement endpoint over the terrestrial WAN.
uplink = "127.0.0.1:5700"
server_name = "satcast-uplink"

[keys]
root_public = "root.public"
network_key = "network.key"
ca_cert = "ca.cert.pem"
client_cert = "client.cert.pem"
client_key = "client.key.pem"
# This county's own key for confidential broadcasts (bundles made before it have none).
county_secret = "county.secret"
"#;

/// Runs the built `satcast-uplink` with `args`; returns its exit code, stdout and stderr.
fn uplink(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_satcast-uplink")).args(args).output().expect("run satcast-uplink");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
}

fn list_json(dir: &str) -> serde_json::Value {
    let (code, out, err) = uplink(&["keys", "list", "--dir", dir, "--json"]);
    assert_eq!(code, 0, "keys list: {out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("keys list --json: {e}: {out}"))
}

/// (serial, active, revoked, issued) of every key `keys list --json` shows.
fn listed(dir: &str) -> Vec<(u64, bool, bool, bool)> {
    let json = list_json(dir);
    let keys = json["keys"].as_array().cloned().unwrap_or_default();
    keys.iter()
        .map(|k| {
            let flag = |name: &str| k[name].as_bool().unwrap_or_else(|| panic!("{name} in {k}"));
            (k["serial"].as_u64().expect("serial"), flag("active"), flag("revoked"), flag("issued"))
        })
        .collect()
}

#[test]
fn revoke_refuses_the_active_key_and_unissued_serials_unless_forced() {
    let tmp = tempdir();
    let dir = tmp.path().join("keys");
    let d = dir.to_str().expect("utf-8 temp path");
    keys::init(&dir, NOW, 30).expect("init");
    keys::rotate(&dir, NOW + 10, 30).expect("rotate");
    let revocations = dir.join(keys::REVOCATIONS_FILE);
    assert_eq!(listed(d), [(1, false, false, true), (2, true, false, true)]);

    // The active key, a serial never issued, or a batch holding either: refused, in one
    // line saying what would follow, and no revocation list is signed.
    for serials in [&["2"][..], &["3"], &["0"], &["1", "2"]] {
        let mut args = vec!["keys", "revoke", "--dir", d];
        for serial in serials {
            args.extend(["--serial", serial]);
        }
        let (code, out, err) = uplink(&args);
        assert_eq!(code, 1, "{serials:?} must be refused: {out}{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains("every county would refuse everything signed by it") && err.contains("--force"), "{err}");
        let why = if serials.contains(&"2") { "is the active signing key" } else { "was never issued" };
        assert!(err.contains(why), "{serials:?}: {err}");
        assert!(!revocations.exists(), "{serials:?}: nothing signed");
    }

    // A retired key is revoked at once.
    let (code, out, err) = uplink(&["keys", "revoke", "--dir", d, "--serial", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(listed(d), [(1, false, true, true), (2, true, false, true)]);
    assert_eq!(list_json(d)["revocation_sequence"], 1);

    // --force does what it is told, and the list shows it.
    let (code, out, err) = uplink(&["keys", "revoke", "--dir", d, "--serial", "2", "--serial", "9", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(listed(d), [(1, false, true, true), (2, true, true, true), (9, false, true, false)]);
    let (code, text, err) = uplink(&["keys", "list", "--dir", d]);
    assert_eq!(code, 0, "{err}");
    let line = |serial: &str| text.lines().find(|l| l.split_whitespace().next() == Some(serial)).unwrap_or_default().to_owned();
    assert!(line("2").contains("active") && line("2").contains("revoked"), "{text}");
    assert!(line("1").contains("revoked") && !line("1").contains("active"), "{text}");
    assert!(line("9").contains("never issued"), "{text}");
}

/// `keys rotate-network-key`: refused with no county to tell or while one rotation is
/// announced; the activation replaces `network.key` and ends the rotation, and doing it
/// again after a crash changes nothing.
#[test]
fn a_network_key_rotation_is_announced_once_and_its_activation_replaces_the_key() {
    let tmp = tempdir();
    let dir = tmp.path().join("keys");
    keys::init(&dir, NOW, 30).expect("init");
    let error = keys::rotate_network_key(&dir, NOW, 60).expect_err("nobody enrolled");
    assert!(error.to_string().contains("no county is enrolled"), "{error}");
    keys::receiver(&dir, "410102", &tmp.path().join("410102"), &keys::BundleSettings::default()).expect("bundle");
    let old = keys::load_network_key(&dir).expect("key");
    assert_eq!(keys::rotate_network_key(&dir, NOW, 60).expect("rotates"), NOW + 60);
    let error = keys::rotate_network_key(&dir, NOW, 60).expect_err("one at a time");
    assert!(error.to_string().contains("already exists"), "{error}");
    let (activates, next) = keys::load_next_network_key(&dir).expect("reads").expect("announced");
    assert_eq!(activates, NOW + 60);
    let listed = keys::list(&dir, NOW).expect("lists");
    assert_eq!((listed.network_key_switches_unix_secs, listed.network_key_handover_until_unix_secs), (Some(NOW + 60), None));
    assert!(keys::format_list(&listed).contains("the next one is announced and takes over at"), "{}", keys::format_list(&listed));
    assert_ne!(next, old);
    keys::activate_next_network_key(&dir, &next, activates).expect("activates");
    assert_eq!(keys::load_network_key(&dir).expect("key"), next);
    assert_eq!(keys::load_next_network_key(&dir).expect("reads"), None);
    // The key it replaced stays for the handover, and a repeat (after a crash) keeps it.
    let handover = Some((activates, old.clone()));
    assert_eq!(keys::load_previous_network_key(&dir).expect("reads"), handover);
    keys::activate_next_network_key(&dir, &next, activates).expect("again");
    assert_eq!(keys::load_network_key(&dir).expect("key"), next);
    assert_eq!(keys::load_previous_network_key(&dir).expect("reads"), handover, "a repeat must not make the new key previous");
    let listed = keys::list(&dir, NOW + 60).expect("lists");
    let until = NOW + 60 + keys::NETWORK_KEY_HANDOVER_SECS;
    assert_eq!((listed.network_key_switches_unix_secs, listed.network_key_handover_until_unix_secs), (None, Some(until)));
    assert!(keys::format_list(&listed).contains("aired for counties that missed the switch until"), "{}", keys::format_list(&listed));
    keys::end_network_key_handover(&dir).expect("ends");
    assert_eq!(keys::load_previous_network_key(&dir).expect("reads"), None);
    // Damage is an error, not a silent rotation.
    std::fs::write(dir.join(keys::NEXT_NETWORK_KEY_FILE), "activates soon\n").expect("write");
    let error = keys::load_next_network_key(&dir).expect_err("damaged");
    assert!(error.to_string().contains("the first line is not `activates <unix seconds>`"), "{error}");
}
