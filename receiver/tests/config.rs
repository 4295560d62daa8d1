//! The receiver refuses bad configuration with a clear error instead of starting half-set-up.

use satcast_receiver::ReceiverConfig;

const KEYS: &str = "[keys]\nroot_public = \"r\"\nnetwork_key = \"n\"\nca_cert = \"c\"\nclient_cert = \"cc\"\nclient_key = \"ck\"\n";

fn load(text: &str) -> Result<ReceiverConfig, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("receiver.toml");
    std::fs::write(&path, text).expect("write");
    ReceiverConfig::load(&path).map_err(|e| e.to_string())
}

#[test]
fn a_valid_config_resolves_paths_against_its_folder() {
    let text = format!(
        "county_code = \"410102\"\nstate_dir = \"state\"\ndeliver_dir = \"/srv/deliver\"\n[downlink]\nbind = \"127.0.0.1:5600\"\n{KEYS}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("receiver.toml");
    std::fs::write(&path, text).expect("write");
    let config = ReceiverConfig::load(&path).expect("valid");
    assert_eq!(config.state_dir, dir.path().join("state"));
    assert_eq!(config.deliver_dir, std::path::PathBuf::from("/srv/deliver"));
    assert_eq!(config.keys.root_public, dir.path().join("r"));
    assert_eq!(config.limits.partial_objects_max, 8);
}

#[test]
fn bad_values_are_named_in_the_error() {
    let base = |code: &str, downlink: &str| {
        format!("county_code = \"{code}\"\nstate_dir = \"s\"\ndeliver_dir = \"d\"\n[downlink]\n{downlink}\n{KEYS}")
    };
    let err = load(&base("4101", "bind = \"127.0.0.1:1\"")).expect_err("short code");
    assert!(err.contains("county_code"), "{err}");
    let err = load(&base("410102", "")).expect_err("no downlink");
    assert!(err.contains("group") && err.contains("bind"), "{err}");
    let err = load(&base("410102", "group = \"10.0.0.1:5600\"")).expect_err("unicast group");
    assert!(err.contains("not a multicast"), "{err}");
    let err = load(&base("410102", "bind = \"127.0.0.1:1\"\nbogus = 1")).expect_err("unknown key");
    assert!(err.contains("bogus"), "{err}");
    let err = load("this is not toml").expect_err("garbage");
    assert!(err.contains("invalid config"), "{err}");
}

#[test]
fn the_annotated_example_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/receiver.toml");
    let config = ReceiverConfig::load(&path).expect("examples/receiver.toml is valid");
    assert_eq!(config.county_code, "410102");
    assert!(config.downlink.group.is_some());
    assert_eq!(config.heartbeat_warn_after_secs, 60);
    let policy = config.hooks.policy.as_ref().expect("the example shows a policy hook");
    assert_eq!(policy.timeout_secs, 60);
    assert!(config.hooks.software.is_none() && config.hooks.codetable.is_none());
}

#[test]
fn hooks_and_heartbeat_settings_are_checked() {
    let base = |extra_top: &str, tables: &str| {
        format!(
            "county_code = \"410102\"\n{extra_top}\nstate_dir = \"s\"\ndeliver_dir = \"d\"\n[downlink]\nbind = \"127.0.0.1:1\"\n{KEYS}{tables}"
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("receiver.toml");
    let hooks = "[hooks.codetable]\ncommand = [\"./reload.sh\", \"--all\"]\n[hooks.software]\ncommand = [\"systemctl\", \"restart\", \"x\"]\ntimeout_secs = 5\n";
    std::fs::write(&path, base("heartbeat_warn_after_secs = 5", hooks)).expect("write");
    let config = ReceiverConfig::load(&path).expect("valid");
    assert_eq!(config.heartbeat_warn_after_secs, 5);
    let codetable = config.hooks.codetable.as_ref().expect("codetable hook");
    assert_eq!(
        codetable.command,
        vec![dir.path().join("reload.sh").to_string_lossy().into_owned(), "--all".into()],
        "relative to the config"
    );
    assert_eq!(codetable.timeout_secs, 300, "default timeout");
    assert_eq!(config.hooks.software.as_ref().expect("software hook").command[0], "systemctl", "bare names stay for PATH");
    assert!(config.hooks.policy.is_none());

    let err = load(&base("", "[hooks.policy]\ncommand = []\n")).expect_err("empty command");
    assert!(err.contains("hooks.policy.command"), "{err}");
    let err = load(&base("", "[hooks.policy]\ncommand = [\"x\"]\ntimeout_secs = 0\n")).expect_err("zero timeout");
    assert!(err.contains("timeout_secs"), "{err}");
    let err = load(&base("", "[hooks.polcy]\ncommand = [\"x\"]\n")).expect_err("misspelt kind");
    assert!(err.contains("polcy"), "{err}");
    let err = load(&base("", "[hooks.policy]\ncommand = \"x --y\"\n")).expect_err("a string, not an array");
    assert!(err.contains("invalid config"), "{err}");
    let err = load(&base("heartbeat_warn_after_secs = 0", "")).expect_err("zero");
    assert!(err.contains("heartbeat_warn_after_secs"), "{err}");
}
