#!/usr/bin/env bash
# Builds the Debian package: target/debian/walua_VERSION-1_ARCH.deb (under $CARGO_TARGET_DIR
# when set).
#
#   packaging/build-deb.sh              # cargo build --release, then the package
#   packaging/build-deb.sh --no-build   # package target/release/walua as it is
#
# Needs cargo-deb (`cargo install --locked cargo-deb --version 3.8.0`, as .ci/run does),
# dpkg-dev (dpkg-shlibdeps, for the Depends line) and binutils (objcopy: the debug info
# goes to /usr/lib/debug/.build-id/). What goes where: `[package.metadata.deb]` in Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}

if [ "${1:-}" != --no-build ]; then
  cargo build --release --locked --bin walua
fi
bin=$target/release/walua
[ -x "$bin" ] || { echo "build-deb: no $bin (build it, or drop --no-build)" >&2; exit 1; }

# Completions and man pages, generated from the command definitions of this very binary.
extra=$target/release/deb-extra
rm -rf "$extra"
mkdir -p "$extra/completions" "$extra/man"
"$bin" completions bash > "$extra/completions/walua"
"$bin" completions zsh > "$extra/completions/_walua"
"$bin" completions fish > "$extra/completions/walua.fish"
"$bin" man --dir "$extra/man" > /dev/null
gzip -9n "$extra"/man/*.1

cargo deb --no-build
