#!/usr/bin/env bash
# Smoke-runs every cargo-fuzz target of satcast for a short time (CI: .ci/run).
#
#   bash fuzz/smoke.sh                  # every target, FUZZ_SECONDS (15) each
#   FUZZ_SECONDS=60 bash fuzz/smoke.sh reception wire_sealed
#   FUZZ_BUILD_ARGS=--no-default-features bash fuzz/smoke.sh   # protocol targets only
#
# Builds the fuzz crate once (cargo fuzz build -O: release with AddressSanitizer, debug
# assertions and overflow checks as fuzz/Cargo.toml's release profile says), then runs each target for FUZZ_SECONDS seconds starting from its seeds
# (fuzz/corpus/<target>/) and its saved crashes (fuzz/regressions/<target>/), which libFuzzer
# replays first. New coverage goes to fuzz/work/ (ignored by git), never into the committed
# corpus. Exits non-zero if any target crashes, times out or runs out of memory, and prints
# where libFuzzer saved the input (fuzz/artifacts/<target>/) and how to replay it.
#
# The machine has the stable toolchain only; cargo-fuzz passes nightly -Z flags to rustc, which
# RUSTC_BOOTSTRAP=1 allows. libFuzzer itself comes from the libfuzzer-sys crate (built with the
# C++ compiler), so nothing is needed from apt.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never
seconds=${FUZZ_SECONDS:-15}
# -O: the release profile of fuzz/Cargo.toml decides where debug assertions are on.
read -r -a build_args <<<"-O ${FUZZ_BUILD_ARGS:-}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

build_start=$(date +%s)
cargo fuzz build "${build_args[@]}"
echo "fuzz: built every target in $(( $(date +%s) - build_start )) s"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
    if [[ " ${build_args[*]} " == *" --no-default-features "* ]]; then
        # The config targets need the default "config" feature.
        mapfile -t targets < <(printf '%s\n' "${targets[@]}" | grep -v '_config$')
    fi
fi

work=$root/fuzz/work
rm -rf "$work"
mkdir -p "$work"
failed=()
run_start=$(date +%s)
for target in "${targets[@]}"; do
    corpora=("$work/corpus/$target" "$root/fuzz/corpus/$target")
    mkdir -p "$work/corpus/$target"
    if [ -d "$root/fuzz/regressions/$target" ]; then
        corpora+=("$root/fuzz/regressions/$target")
    fi
    log=$work/$target.log
    start=$(date +%s)
    # -timeout: an input that runs for 10 s is a hang, and a bug like a crash.
    if cargo fuzz run "${build_args[@]}" "$target" "${corpora[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
        echo "fuzz: $target ok in $(( $(date +%s) - start )) s (${execs:-?} runs, ${cov:-cov: ?})"
    else
        failed+=("$target")
        echo "fuzz: $target FAILED; the end of its log ($log):"
        tail -n 60 "$log" | sed 's/^/    /'
        grep -h 'Test unit written to' "$log" | sed 's/^.*Test unit written to /    crashing input: /' || true
        echo "    replay: RUSTC_BOOTSTRAP=1 cargo fuzz run ${build_args[*]} $target <crashing input>"
        echo "    keep it: copy it to fuzz/regressions/$target/ (replayed by protocol/tests/fuzz_regressions.rs)"
    fi
done
echo "fuzz: ran ${#targets[@]} targets in $(( $(date +%s) - run_start )) s"

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashes in: ${failed[*]}"
    exit 1
fi
