//! How the command lines fail: every error is one line on standard error with the
//! documented exit code, `--json` errors are a JSON object on standard output, a closed
//! pipe (`list | head -3`) ends a command quietly with status 141 instead of a panic, a
//! closed standard error neither changes an exit code nor stops a daemon, and daemons
//! logging to a file (systemd, the tests) write no terminal colour codes.
//!
//! Real binaries: build first (`cargo build --workspace`), then `cargo test --test cli`.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use satcast::{Cluster, ClusterOptions, bin, free_udp_addr, make_county, run, seed, wait_until, write_uplink_config};
use satcast_sim::relay::LossModel;

/// The exit status of a command whose standard output or error was a closed pipe.
const EXIT_BROKEN_PIPE: i32 = 141;
const MISSING: &str = "/nonexistent/satcast/daemon.toml";

fn command(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(bin(program).expect("binary"));
    command.args(args).stdin(Stdio::null());
    command
}

fn output(program: &str, args: &[&str]) -> Output {
    command(program, args).output().expect("run")
}

/// Runs with standard output (or error) already closed at the other end when the command
/// starts, as `list | head -3` is once head has gone. A socket pair whose other end is
/// dropped before the spawn: writing fails with EPIPE as on a pipe whose reader is gone, and
/// no quick command can write before it is closed (`Stdio::piped` closes after the spawn).
fn with_closed(program: &str, args: &[&str], stdout: bool) -> Output {
    let (closed, other_end) = UnixStream::pair().expect("socket pair");
    drop(other_end);
    let closed = Stdio::from(OwnedFd::from(closed));
    let mut command = command(program, args);
    if stdout {
        command.stdout(closed).stderr(Stdio::piped());
    } else {
        command.stdout(Stdio::piped()).stderr(closed);
    }
    command.output().expect("run")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_missing_config_is_one_line_on_stderr_with_exit_code_1() {
    let cases: [(&str, &[&str]); 5] = [
        ("satcast-uplink", &["serve", "--config", MISSING]),
        ("satcast-uplink", &["list", "--config", MISSING]),
        ("satcast-uplink", &["status", "4b0601073e0fa23e", "--config", MISSING]),
        ("satcast-receiver", &["run", "--config", MISSING]),
        ("satcast-receiver", &["status", "--config", MISSING]),
    ];
    for (program, args) in cases {
        let out = output(program, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{program} {args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{program} {args:?}: one line, not:\n{stderr}");
        assert!(stderr.starts_with(&format!("error: cannot read config {MISSING}: ")), "{program} {args:?}: {stderr}");
        assert_eq!(stderr.matches("os error 2").count(), 1, "{program} {args:?}: the cause once: {stderr}");
        assert!(out.stdout.is_empty(), "{program} {args:?}: nothing on stdout without --json");
    }
}

#[test]
fn json_errors_are_a_json_object_on_stdout() {
    let cases: [(&str, &[&str]); 3] = [
        ("satcast-uplink", &["list", "--json", "--config", MISSING]),
        ("satcast-uplink", &["receivers", "--json", "--config", MISSING]),
        ("satcast-receiver", &["status", "--json", "--config", MISSING]),
    ];
    for (program, args) in cases {
        let out = output(program, args);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{program} {args:?}: {stderr}");
        let error: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{program} {args:?}: {e}: {stdout:?}"));
        assert_eq!(error["exit_code"], 1, "{stdout}");
        let message = error["error"].as_str().unwrap_or_default();
        assert!(message.starts_with(&format!("cannot read config {MISSING}: ")), "{stdout}");
        assert_eq!(stderr.lines().count(), 1, "and the one line on stderr: {stderr}");
    }
}

#[test]
fn a_closed_stderr_keeps_the_exit_code_and_does_not_panic() {
    for program in ["satcast-uplink", "satcast-receiver"] {
        let args: &[&str] = if program == "satcast-uplink" { &["list", "--config", MISSING] } else { &["status", "--config", MISSING] };
        let out = with_closed(program, args, false);
        assert_eq!(out.status.code(), Some(1), "{program}: a panic exits 101");
    }
}

#[test]
fn daemons_run_on_with_a_closed_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    run("satcast-uplink", &["keys", "init", "--dir", "keys"], dir.path()).expect("keys");
    let uplink_config = write_uplink_config(dir.path(), free_udp_addr().expect("addr"), 1_000_000, 1).expect("uplink config");
    let county_config = make_county(dir.path(), "410102", free_udp_addr().expect("addr"), None).expect("county");
    let uplink_config = uplink_config.to_string_lossy().into_owned();
    let status_file = county_config.with_file_name("state").join("status.json");
    let county_config = county_config.to_string_lossy().into_owned();
    let start = |program: &str, args: &[&str]| {
        let (closed, other_end) = UnixStream::pair().expect("socket pair");
        drop(other_end);
        command(program, args).current_dir(dir.path()).stdout(Stdio::null()).stderr(OwnedFd::from(closed)).spawn().expect("spawn")
    };
    let mut uplink = start("satcast-uplink", &["serve", "--config", &uplink_config]);
    let mut receiver = start("satcast-receiver", &["run", "--config", &county_config]);
    // Both have logged that they started (into the closed pipe) once they answer.
    let stopped = |child: &mut std::process::Child| matches!(child.try_wait(), Ok(Some(_)));
    let answers = || output("satcast-uplink", &["list", "--config", &uplink_config]).status.success();
    assert!(wait_until(Duration::from_secs(20), || stopped(&mut uplink) || answers()), "the uplink never answered");
    assert!(wait_until(Duration::from_secs(20), || stopped(&mut receiver) || status_file.exists()), "the receiver never ran");
    for (name, child) in [("uplink", &mut uplink), ("receiver", &mut receiver)] {
        assert_eq!(child.try_wait().expect("try_wait"), None, "{name} stopped (a panic exits 101)");
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        assert!(wait_until(Duration::from_secs(10), || stopped(child)), "{name} did not stop");
        let _ = child.kill();
        assert_eq!(child.wait().expect("wait").code(), Some(0), "{name}: stopped cleanly on SIGTERM");
    }
}

#[test]
fn a_closed_stdout_ends_a_simulation_quietly() {
    let args = ["run", "--receivers", "2", "--size", "1500", "--seed", "1", "--json"];
    let out = with_closed("satcast-sim", &args, true);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(EXIT_BROKEN_PIPE), "{stderr}");
}

#[test]
fn a_closed_stdout_ends_listings_quietly_and_daemon_logs_have_no_colour_codes() {
    let seed = seed("SATCAST_CLI_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ClusterOptions {
        counties: vec!["410102".into()],
        loss: vec![LossModel::None],
        link_rate_bits_per_sec: 2_000_000,
        passes: 1,
        seed,
        extra_uplink_config: String::new(),
        acks: false,
    };
    let mut cluster = Cluster::start(dir.path(), &options).expect("cluster");
    let config = cluster.uplink_config.to_string_lossy().into_owned();
    assert!(wait_until(Duration::from_secs(10), || cluster.uplink_cli(&["list"]).is_ok()), "the uplink never answered");

    let county_config = cluster.counties[0].config.to_string_lossy().into_owned();
    let cases: [(&str, &[&str]); 4] = [
        ("satcast-uplink", &["list", "--config", &config]),
        ("satcast-uplink", &["receivers", "--all", "--config", &config]),
        ("satcast-uplink", &["receivers", "--all", "--json", "--config", &config]),
        ("satcast-receiver", &["status", "--config", &county_config]),
    ];
    for (program, args) in cases {
        let out = with_closed(program, args, true);
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{program} {args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(EXIT_BROKEN_PIPE), "{program} {args:?}: {stderr}");
        assert!(stderr.is_empty(), "{program} {args:?}: quietly: {stderr}");
    }

    // An error the daemon reports (unknown id: exit code 4) in JSON too.
    let out = output("satcast-uplink", &["status", "4b0601073e0fa23e", "--json", "--config", &config]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let error: serde_json::Value = serde_json::from_str(&text(&out.stdout)).expect("json error");
    assert_eq!(error["exit_code"], 4, "{error}");

    cluster.stop();
    let mut logs = vec![cluster.uplink.as_ref().expect("uplink").log.clone()];
    logs.extend(cluster.counties.iter().filter_map(|c| c.daemon.as_ref().map(|d| d.log.clone())));
    for log in logs {
        let raw = std::fs::read_to_string(&log).expect("log");
        assert!(!raw.is_empty(), "{} is empty", log.display());
        assert!(!raw.contains("\x1b["), "colour codes in {}:\n{raw}", log.display());
    }
}

#[test]
fn a_command_line_that_does_not_parse_is_one_line_with_exit_code_2() {
    let cases: [(&str, &[&str]); 3] =
        [("satcast-uplink", &["list", "--bogus"]), ("satcast-uplink", &["status"]), ("satcast-receiver", &["run", "--config"])];
    for (program, args) in cases {
        let out = output(program, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{program} {args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{program} {args:?}: one line, not:\n{stderr}");
        assert!(stderr.starts_with("error: ") && stderr.trim_end().ends_with("(see --help)"), "{program} {args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{program} {args:?}: nothing on stdout without --json");
    }
    let out = output("satcast-uplink", &["list", "--json", "--bogus"]);
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON error on stdout");
    assert_eq!(error["exit_code"], 2);
    assert!(error["error"].as_str().is_some_and(|e| e.contains("--bogus")), "{error}");
}

#[test]
fn help_into_a_closed_pipe_exits_141_without_a_panic() {
    for program in ["satcast-uplink", "satcast-receiver"] {
        let out = with_closed(program, &["--help"], true);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_BROKEN_PIPE), "{program}: {stderr}");
        assert!(!stderr.contains("panicked"), "{program}: {stderr}");
    }
}

#[test]
fn the_demo_runs_to_its_end_with_a_closed_stderr() {
    let seed = seed("DEMO_SEED");
    let out = with_closed("satcast-sim", &["demo", "--receivers", "2", "--seed", &seed.to_string()], false);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{}", text(&out.stdout));
}
