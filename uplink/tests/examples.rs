//! The annotated example config stays valid, and bad values are refused with their name.

use satcast_uplink::UplinkConfig;

#[test]
fn the_annotated_example_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/uplink.toml");
    let config = UplinkConfig::load(&path).expect("examples/uplink.toml is valid");
    assert_eq!(config.downlink.link_rate_bits_per_sec, 20_000_000);
    assert_eq!(config.downlink.mtu, 1500);
}

#[test]
fn bad_values_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("uplink.toml");
    for (text, needle) in [
        ("state_dir = \"s\"\nkeys_dir = \"k\"\n[downlink]\ndestination = \"127.0.0.1:1\"\nlink_rate_bits_per_sec = 5\n", "link_rate"),
        (
            "state_dir = \"s\"\nkeys_dir = \"k\"\n[downlink]\ndestination = \"127.0.0.1:1\"\nlink_rate_bits_per_sec = 1000000\nmtu = 60\n",
            "mtu",
        ),
        (
            "state_dir = \"s\"\nkeys_dir = \"k\"\n[downlink]\ndestination = \"127.0.0.1:1\"\nlink_rate_bits_per_sec = 1000000\n[carousel]\npasses = 0\n",
            "passes",
        ),
        ("state_dir = \"s\"\nkeys_dir = \"k\"\n", "downlink"),
        (
            "state_dir = \"s\"\nkeys_dir = \"k\"\n[downlink]\ndestination = \"127.0.0.1:1\"\nlink_rate_bits_per_sec = 1000000\n[coding]\nconfidential_kinds = [\"poem\"]\n",
            "confidential_kinds",
        ),
    ] {
        std::fs::write(&path, text).expect("write");
        let err = UplinkConfig::load(&path).expect_err("must be refused").to_string();
        assert!(err.contains(needle), "{err} should name {needle}");
    }
}

#[test]
fn confidential_kinds_set_the_default_per_kind() {
    use satcast_protocol::manifest::Kind;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("uplink.toml");
    let text = "state_dir = \"s\"\nkeys_dir = \"k\"\n[downlink]\ndestination = \"127.0.0.1:1\"\nlink_rate_bits_per_sec = 1000000\n";
    std::fs::write(&path, text).expect("write");
    let config = UplinkConfig::load(&path).expect("loads");
    assert!(
        Kind::ALL.iter().all(|k| !config.coding.confidential_by_default(*k)),
        "nothing sealed by default while receivers do not decrypt"
    );
    std::fs::write(&path, format!("{text}[coding]\nconfidential_kinds = [\"policy\"]\n")).expect("write");
    let config = UplinkConfig::load(&path).expect("loads");
    assert!(config.coding.confidential_by_default(Kind::Policy));
    assert!(!config.coding.confidential_by_default(Kind::Software));
}
