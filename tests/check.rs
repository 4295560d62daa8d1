//! `satcast-uplink check` and `satcast-receiver check`: each problem a line, exit 1; none,
//! exit 0; `--json` a report. Real binaries on real key files: build first
//! (`cargo build --workspace`), then `cargo test --test check`.

use std::path::Path;
use std::process::{Command, Output};

use satcast::bin;

fn check(binary: &str, config: &Path, json: bool) -> Output {
    let mut command = Command::new(bin(binary).expect("binary"));
    command.args(["check", "--config"]).arg(config);
    if json {
        command.arg("--json");
    }
    command.output().expect("run check")
}

fn problems(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.strip_prefix("problem: ")).map(str::to_owned).collect()
}

fn uplink(args: &[&str], dir: &Path) {
    let out = Command::new(bin("satcast-uplink").expect("binary")).args(args).current_dir(dir).output().expect("run");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn uplink_check_names_a_key_that_does_not_belong_and_a_broken_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    uplink(&["keys", "init", "--dir", "keys"], d);
    let config = d.join("uplink.toml");
    let text = "state_dir = \"state\"\nkeys_dir = \"keys\"\n[downlink]\ndestination = \"127.0.0.1:5600\"\nlink_rate_bits_per_sec = 1000000\n[acks]\nlisten = \"127.0.0.1:5700\"\n";
    std::fs::write(&config, text).expect("write");
    let out = check("satcast-uplink", &config, false);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no problems found"));

    // The CA's key where the server certificate's belongs.
    std::fs::copy(d.join("keys/ca.key.pem"), d.join("keys/uplink.key.pem")).expect("copy");
    let out = check("satcast-uplink", &config, false);
    assert_eq!(out.status.code(), Some(1));
    let found = problems(&out);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("uplink.key.pem does not belong to") && found[0].contains("uplink.cert.pem"), "{found:?}");
    let report: serde_json::Value = serde_json::from_slice(&check("satcast-uplink", &config, true).stdout).expect("JSON");
    assert_eq!(report["ok"], false);
    assert_eq!(report["problems"].as_array().map(Vec::len), Some(1), "{report}");

    std::fs::write(&config, format!("{text}bogus = 1\n")).expect("write");
    let out = check("satcast-uplink", &config, false);
    assert_eq!(out.status.code(), Some(1));
    assert!(problems(&out).first().is_some_and(|p| p.contains("bogus")), "{:?}", problems(&out));
}

#[test]
fn receiver_check_names_another_countys_certificate_and_a_folder_under_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    uplink(&["keys", "init", "--dir", "keys"], d);
    let folders = |id: &str| {
        let state = d.join(format!("state-{id}"));
        let deliver = d.join(format!("deliver-{id}"));
        (state.display().to_string(), deliver.display().to_string())
    };
    for id in ["410102", "410103"] {
        let (state, deliver) = folders(id);
        uplink(&["keys", "receiver", "--dir", "keys", "--id", id, "--out", id, "--state-dir", &state, "--deliver-dir", &deliver], d);
    }
    let config = d.join("410102/receiver.toml");
    let out = check("satcast-receiver", &config, false);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    // A missing hook program is a warning: the daemon runs, the deliveries report it.
    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(&config, format!("{text}\n[hooks.policy]\ncommand = [\"./no-such-hook\"]\n")).expect("write");
    let out = check("satcast-receiver", &config, false);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("warning: hooks.policy.command")));

    // The neighbour's certificate and key: they match each other and the CA, but name
    // 410103, so the uplink would refuse them for 410102. And deliver_dir under a file.
    for name in ["client.cert.pem", "client.key.pem"] {
        std::fs::copy(d.join("410103").join(name), d.join("410102").join(name)).expect("copy");
    }
    let (_, deliver) = folders("410102");
    std::fs::write(&deliver, "a file").expect("write");
    let out = check("satcast-receiver", &config, false);
    assert_eq!(out.status.code(), Some(1));
    let found = problems(&out);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|p| p.contains("does not name 410102.county.satcast")), "{found:?}");
    assert!(found.iter().any(|p| p.starts_with("deliver_dir") && p.contains("is not a folder")), "{found:?}");
}
