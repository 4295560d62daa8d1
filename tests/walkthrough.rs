//! The README's walkthrough, run verbatim: the shell block between
//! `<!-- walkthrough:begin -->` and `<!-- walkthrough:end -->` in README.md, from "install
//! the packages" to "the county has the Chinese-named file", as a newcomer would type it.
//!
//! Where it runs: a scratch system made of this machine's own /usr, /etc and /var under
//! overlays (writes go to a temporary folder; the host is untouched), empty /run, /srv and
//! /tmp, in new mount and network namespaces whose loopback carries multicast (so the
//! example configs' fixed ports and group are free). There is no systemd there, so
//! `systemctl restart UNIT` is a stand-in (below) that starts the installed unit's ExecStart
//! as its User and Group, stopping an earlier one first; every other command is the real
//! one. CI builds the packages first (`bash packaging/build-debs.sh --profile dev`).
//!
//! Needs root; without the packages or root it fails under CI (`CI` set) and says so loudly
//! elsewhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The whole walkthrough takes a few seconds; this bounds a hang (a county that never
/// says hello loops in `until`) on a loaded CI machine.
const WALKTHROUGH_GENEROUS: Duration = Duration::from_secs(300);

const BEGIN: &str = "<!-- walkthrough:begin -->";
const END: &str = "<!-- walkthrough:end -->";

/// Sets up the scratch system, then runs the README's block ($1 scratch folder, $2 the
/// repository). The daemons the stand-in started are stopped on the way out, whatever
/// happens, and their logs shown if the block failed.
const PRELUDE: &str = r#"set -eu
scratch="$1"; repository="$2"
for dir in usr etc var; do
    mkdir -p "$scratch/$dir/upper" "$scratch/$dir/work"
    mount -t overlay overlay -o "lowerdir=/$dir,upperdir=$scratch/$dir/upper,workdir=$scratch/$dir/work" "/$dir"
done
# The repository stays reachable under /run whatever /tmp hides (CI may check out in /tmp).
mount -t tmpfs tmpfs /run
mkdir -p /run/walkthrough/repository
mount --bind "$repository" /run/walkthrough/repository
for dir in /srv /tmp; do mount -t tmpfs tmpfs "$dir"; done
ip link set lo up
ip link set lo multicast on
ip route add 224.0.0.0/4 dev lo
cat >/run/walkthrough/systemctl <<'STANDIN'
#!/bin/sh
# systemctl's stand-in for tests/walkthrough.rs: "restart UNIT" only.
set -eu
[ "$1" = restart ] || { echo "systemctl stand-in: only 'restart UNIT'" >&2; exit 1; }
name="${2%.service}"
unit="/usr/lib/systemd/system/$name.service"
pidfile="/run/walkthrough/$name.pid"
if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
fi
user=$(sed -n 's/^User=//p' "$unit"); group=$(sed -n 's/^Group=//p' "$unit")
setpriv --reuid="$user" --regid="$group" --init-groups $(sed -n 's/^ExecStart=//p' "$unit") \
    >>"/run/walkthrough/$name.log" 2>&1 </dev/null &
echo $! >"$pidfile"
STANDIN
chmod +x /run/walkthrough/systemctl
export PATH="/run/walkthrough:$PATH"
finish() {
    status=$?
    for pidfile in /run/walkthrough/*.pid; do
        [ -f "$pidfile" ] && kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    done
    for pidfile in /run/walkthrough/*.pid; do
        [ -f "$pidfile" ] || continue
        while kill -0 "$(cat "$pidfile")" 2>/dev/null; do sleep 0.1; done
    done
    if [ "$status" -ne 0 ]; then
        for log in /run/walkthrough/*.log; do echo "== $log" >&2; cat "$log" >&2 || true; done
    fi
}
trap finish EXIT
cd /run/walkthrough/repository
set -x
"#;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails under CI; elsewhere says loudly that the test is skipped (the caller returns).
fn fail_in_ci_or_skip(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what}");
    }
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED walkthrough test (CI fails here): {what}");
}

/// The shell lines of the README's walkthrough block, without the code fences.
fn walkthrough(readme: &str) -> String {
    let start = readme.find(BEGIN).expect("README.md has a walkthrough:begin marker") + BEGIN.len();
    let end = readme[start..].find(END).expect("README.md has a walkthrough:end marker") + start;
    readme[start..end].lines().filter(|line| !line.trim_start().starts_with("```")).collect::<Vec<_>>().join("\n")
}

fn packages_built(repository: &Path) -> bool {
    let debian = repository.join("target/debian");
    ["satcast-uplink_", "satcast-receiver_"].iter().all(|prefix| {
        std::fs::read_dir(&debian).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(prefix) && e.path().extension().is_some_and(|x| x == "deb"))
        })
    })
}

#[test]
fn the_readme_walkthrough_delivers_a_chinese_named_file_to_a_county() {
    let repository = repository();
    let readme = std::fs::read_to_string(repository.join("README.md")).expect("README.md");
    let block = walkthrough(&readme);
    if !packages_built(&repository) {
        return fail_in_ci_or_skip("no packages in target/debian: `bash packaging/build-debs.sh --profile dev` (needs cargo-deb)");
    }
    let uid = Command::new("id").arg("-u").output().expect("id");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return fail_in_ci_or_skip("the walkthrough test needs root (namespaces, overlays, apt-get); CI runs as root");
    }

    let scratch = tempfile::tempdir().expect("tempdir");
    let stdout_path = scratch.path().join("stdout");
    let stderr_path = scratch.path().join("stderr");
    let mut child = Command::new("unshare")
        .args(["--mount", "--net", "--propagation", "private", "sh", "-c", &format!("{PRELUDE}\n{block}\n"), "walkthrough"])
        .arg(scratch.path().join("system"))
        .arg(&repository)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("run the walkthrough");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > WALKTHROUGH_GENEROUS {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the walkthrough did not end within {WALKTHROUGH_GENEROUS:?}:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "the walkthrough failed ({status}):\n{stdout}\n{stderr}");
    println!("{stdout}");
    assert!(
        stdout.lines().last() == Some("关于做好元旦春节期间困难群众生活保障工作的通知"),
        "the walkthrough's last command prints the delivered notice:\n{stdout}"
    );
}
