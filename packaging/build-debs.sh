#!/usr/bin/env bash
# Builds the .deb packages: target/debian/satcast-uplink_<version>_<arch>.deb and
# target/debian/satcast-receiver_<version>_<arch>.deb, printing their paths.
#
#   bash packaging/build-debs.sh                        # release build (for operators)
#   bash packaging/build-debs.sh --profile dev          # the dev binaries (CI, tests)
#   bash packaging/build-debs.sh --deb-version 0.1.1-1  # another version of the same code
#   bash packaging/build-debs.sh --out DIR              # elsewhere than target/debian/
#                                                       # (cargo-deb removes other versions)
#
# Needs cargo-deb (`cargo install cargo-deb --locked`). It builds the two binaries with the
# profile (a no-op when they are built already), has each write its shell completions and
# man pages into target/<profile>/satcast-assets/<package>/ (generate-assets, from its clap
# definition), then runs cargo-deb on the built binary (--no-build) with the assets,
# systemd unit, sysusers.d and tmpfiles.d files and maintainer scripts named in
# uplink/Cargo.toml and receiver/Cargo.toml ([package.metadata.deb]).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
deb_version=
out=
while [ $# -gt 0 ]; do
	case "$1" in
	--profile) profile="$2"; shift 2 ;;
	--deb-version) deb_version="$2"; shift 2 ;;
	--out) out="$2"; shift 2 ;;
	*) echo "error: unknown argument $1 (--profile NAME, --deb-version VERSION, --out DIR)" >&2; exit 2 ;;
	esac
done
if ! command -v cargo-deb >/dev/null; then
	echo "error: cargo-deb is not installed: cargo install cargo-deb --locked" >&2
	exit 1
fi
target_dir="${CARGO_TARGET_DIR:-target}"
out="${out:-$target_dir/debian}"
case "$profile" in
dev | debug) profile=dev; profile_dir=debug ;;
*) profile_dir="$profile" ;;
esac
# Another --deb-version is stamped into the receiver too (SATCAST_VERSION, read by its
# main.rs: only the binary is rebuilt), so a county upgraded over the air says it.
env ${deb_version:+SATCAST_VERSION="$deb_version"} cargo build --profile "$profile" -p satcast-uplink -p satcast-receiver --bins
for package in satcast-uplink satcast-receiver; do
	# Beside the binary, where cargo-deb looks for "target/release/..." assets.
	assets="$target_dir/$profile_dir/satcast-assets/$package"
	rm -rf "$assets"
	"$target_dir/$profile_dir/$package" generate-assets --out "$assets"
	# With --profile dev cargo-deb warns that it is meant for release builds: CI packages
	# the binaries it has built already instead of spending many minutes on a release build.
	cargo deb -p "$package" --no-build --profile "$profile" --output "$out/" \
		${deb_version:+--deb-version "$deb_version"}
done
ls "$out"/*.deb
