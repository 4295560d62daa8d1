//! The CLI reads broadcast ids as [`satcast_protocol::ObjectId`]: a malformed id is bad
//! usage, said in one line before any config is read or the daemon is asked.

use std::process::Command;

fn uplink(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_satcast-uplink")).args(args).output().expect("run satcast-uplink");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_malformed_broadcast_id_is_bad_usage_and_any_case_of_hex_is_an_id() {
    let config = "/nonexistent/satcast/uplink.toml";
    for command in ["status", "cancel", "reair"] {
        let (code, stderr) = uplink(&[command, "4b0601073e0fa23", "--config", config]);
        assert_eq!(code, Some(2), "{command}: {stderr}");
        assert!(stderr.contains("an object id is 16 hex digits, not \"4b0601073e0fa23\""), "{command}: {stderr}");
    }
    // Upper case is the same id: parsed, then the missing config is what stops it.
    let (code, stderr) = uplink(&["status", "4B0601073E0FA23E", "--config", config]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot read config /nonexistent/satcast/uplink.toml"), "{stderr}");
}
