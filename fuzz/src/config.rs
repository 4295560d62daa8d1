//! The fuzz targets for the two daemons' TOML configurations. Their checks are reachable
//! only through `ReceiverConfig::load` and `UplinkConfig::load`, which read a file, so each
//! input is written to a scratch file in a per-process directory under the system temporary
//! directory and loaded from there.

use std::path::PathBuf;
use std::sync::OnceLock;

use satcast_receiver::ReceiverConfig;
use satcast_uplink::UplinkConfig;

/// Every config target, by name (as in [`crate::harness::TARGETS`]).
pub const TARGETS: &[(&str, fn(&[u8]))] = &[("receiver_config", receiver_config), ("uplink_config", uplink_config)];

/// A scratch file named `name` in this process's own directory.
fn scratch(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("satcast-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        dir
    });
    dir.join(name)
}

/// `ReceiverConfig::load` on the input as a file: an accepted config satisfies every check
/// `load` promises, and every path in it is absolute (resolved against the file's folder).
pub fn receiver_config(data: &[u8]) {
    let path = scratch("receiver.toml");
    std::fs::write(&path, data).expect("write the scratch config");
    let Ok(config) = ReceiverConfig::load(&path) else { return };
    assert_eq!(config.county_code.len(), 6);
    assert!(config.county_code.bytes().all(|b| b.is_ascii_digit()));
    match (config.downlink.group, config.downlink.bind) {
        (Some(group), None) => assert!(group.ip().is_multicast()),
        (None, Some(_)) => {}
        other => panic!("downlink {other:?} accepted"),
    }
    assert!(config.limits.partial_objects_max >= 1);
    let keys = &config.keys;
    for p in
        [&config.state_dir, &config.deliver_dir, &keys.root_public, &keys.network_key, &keys.ca_cert, &keys.client_cert, &keys.client_key]
    {
        assert!(p.is_absolute(), "relative path {p:?} left unresolved");
    }
}

/// `UplinkConfig::load` on the input as a file: an accepted config satisfies every check
/// `load` promises, and its paths are absolute.
pub fn uplink_config(data: &[u8]) {
    let path = scratch("uplink.toml");
    std::fs::write(&path, data).expect("write the scratch config");
    let Ok(config) = UplinkConfig::load(&path) else { return };
    assert!(config.downlink.link_rate_bits_per_sec >= 10_000);
    assert!(satcast_protocol::wire::symbol_size_for_mtu(config.downlink.mtu).is_some());
    assert!((0.0..0.9).contains(&config.carousel.target_loss));
    assert!(config.carousel.passes >= 1);
    assert!(config.carousel.manifest_interval_ms > 0 && config.carousel.heartbeat_interval_ms > 0);
    assert!(config.state_dir.is_absolute() && config.keys_dir.is_absolute());
}
