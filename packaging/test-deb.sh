#!/usr/bin/env bash
# Installs the Debian package on this machine and checks it: files, places, modes, the
# first-install `walua init`, an upgrade that keeps the operator's files, `walua --version`,
# `walua check`, completions, man pages, and a symbolised backtrace from the stripped
# binary. Root, no systemd needed (CI runs it in a container-like machine).
#
#   packaging/test-deb.sh [PATH.deb]     # default: the newest target/debian/walua_*.deb
#
# It refuses to run where walua is installed or /etc/walua exists, and purges the package
# and removes /etc/walua when done (KEEP=1 keeps them, to look around).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
deb=${1:-$(ls -t "$target"/debian/walua_*.deb 2>/dev/null | head -1)}
[ -n "$deb" ] && [ -f "$deb" ] || { echo "test-deb: no package (packaging/build-deb.sh makes it)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "test-deb: must run as root (it installs the package)" >&2; exit 1; }
if dpkg-query -W -f='${Status}' walua 2>/dev/null | grep -q installed || [ -e /etc/walua ]; then
  echo "test-deb: walua is installed here, or /etc/walua exists: not touching them" >&2
  exit 1
fi

failures=0
ok() { echo "ok: $*"; }
fail() { echo "FAILED: $*" >&2; failures=$((failures + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }
mode_is() { [ "$(stat -c '%a %U:%G' "$1")" = "$2" ] || { echo "  $1: $(stat -c '%a %U:%G' "$1"), expected $2" >&2; return 1; }; }

tmp=$(mktemp -d)
cleanup() {
  rm -rf "$tmp"
  if [ "${KEEP:-0}" != 1 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq walua >/dev/null 2>&1 || dpkg --purge walua >/dev/null 2>&1 || true
    rm -rf /etc/walua
  fi
}
trap cleanup EXIT

echo "== installing $deb"
# apt resolves the Depends line; no systemd runs here, so postinst only writes /etc/walua.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$(realpath "$deb")" > "$tmp/install.log" 2>&1 \
  || { cat "$tmp/install.log" >&2; echo "FAILED: apt-get install" >&2; exit 1; }
grep '^walua:' "$tmp/install.log" || true

echo "== the binary"
check "/usr/bin/walua is root's, 0755" mode_is /usr/bin/walua "755 root:root"
check "walua is on PATH at /usr/bin" [ "$(command -v walua)" = /usr/bin/walua ]
version=$(walua --version) || fail "walua --version exits 0"
echo "$version" | sed 's/^/  /'
pkgver=$(dpkg-query -W -f='${Version}' walua)
check "--version names the package's version" grep -q "^walua ${pkgver%%-*}\$" <<<"$(echo "$version" | head -1)"
check "--version names the git commit" grep -Eq '^commit: ([0-9a-f]{7,}|unknown)$' <<<"$version"
check "--version names the Lua version" grep -Eq '^Lua: +5\.[0-9]+\.[0-9]+ ' <<<"$version"
check "--version names the redb version" grep -Eq '^redb: +[0-9]+\.[0-9]+\.[0-9]+$' <<<"$version"
check "the binary is stripped of its debug info" sh -c '! objdump -h /usr/bin/walua | grep -q "\.debug_line"'
check "its debug info is in /usr/lib/debug/.build-id" sh -c 'ls /usr/lib/debug/.build-id/*/*.debug >/dev/null 2>&1'
# A panic (stdout is /dev/full) in the stripped binary: the backtrace still has file:line,
# read from the separate debug file.
RUST_BACKTRACE=1 walua init "$tmp/panic" > /dev/full 2> "$tmp/panic.txt" || true
check "a panic's backtrace is symbolised (src/main.rs:LINE)" grep -q 'src/main.rs:[0-9]' "$tmp/panic.txt"

echo "== the unit"
unit=/usr/lib/systemd/system/walua.service
check "$unit is installed, 0644" mode_is "$unit" "644 root:root"
check "its ExecStart is /usr/bin/walua" grep -q '^ExecStart=/usr/bin/walua serve --config /etc/walua/walua.toml$' "$unit"
check "its state directory comes from StateDirectory=walua" grep -q '^StateDirectory=walua$' "$unit"
check "the unit is not enabled" sh -c '! ls /etc/systemd/system/*.wants/walua.service >/dev/null 2>&1'
check "the package ships no /var/lib/walua (systemd makes it, StateDirectory=)" sh -c '! dpkg -L walua | grep -q "^/var/lib"'

echo "== /etc/walua, from walua init on the first install"
check "/etc/walua is 0755" mode_is /etc/walua "755 root:root"
check "/etc/walua/walua.toml is 0644 (the service reads it)" mode_is /etc/walua/walua.toml "644 root:root"
check "/etc/walua/credentials is 0700 root" mode_is /etc/walua/credentials "700 root:root"
check "the store goes to /var/lib/walua" grep -q '^path = "/var/lib/walua/walua.redb"' /etc/walua/walua.toml
check "scripts and templates are there" test -f /etc/walua/scripts/on_message.lua -a -f /etc/walua/scripts/types/walua.lua -a -d /etc/walua/templates
check "every file under /etc/walua is readable by the service" sh -c '[ -z "$(find /etc/walua -path /etc/walua/credentials -prune -o ! -perm -o+r -print)" ]'
check "no conffiles" [ -z "$(dpkg-query -W -f='${Conffiles}' walua)" ]
check "walua check --config /etc/walua/walua.toml" walua check --config /etc/walua/walua.toml

echo "== /usr/share"
check "the defaults in /usr/share/walua" test -f /usr/share/walua/walua.toml -a -f /usr/share/walua/scripts/on_message.lua -a -f /usr/share/walua/scripts/.luarc.json -a -d /usr/share/walua/templates
check "the shipped scripts are the ones walua init wrote" diff -r /usr/share/walua/scripts /etc/walua/scripts
check "the README in /usr/share/doc/walua" test -f /usr/share/doc/walua/README.md
check "bash completion" bash -c 'source /usr/share/bash-completion/completions/walua && complete -p walua >/dev/null'
check "zsh completion" grep -q '^#compdef walua' /usr/share/zsh/vendor-completions/_walua
check "fish completion" grep -q 'complete -c walua' /usr/share/fish/vendor_completions.d/walua.fish
check "the completions offer the commands" grep -qw serve /usr/share/bash-completion/completions/walua
check "the completions hide the packaging commands" sh -c '! grep -qw completions /usr/share/fish/vendor_completions.d/walua.fish'
check "man page walua(1)" sh -c 'zcat /usr/share/man/man1/walua.1.gz | grep -q "^\.TH walua 1"'
check "man page walua-serve(1)" test -f /usr/share/man/man1/walua-serve.1.gz

echo "== an upgrade keeps the operator's files"
echo "# the operator's line" >> /etc/walua/walua.toml
echo "-- the operator's script" > /etc/walua/scripts/on_message.lua
echo secret > /etc/walua/credentials/access_token
dpkg -i "$deb" > "$tmp/upgrade.log" 2>&1 || { cat "$tmp/upgrade.log" >&2; fail "reinstall (dpkg -i again)"; }
check "walua.toml kept" grep -q "^# the operator's line" /etc/walua/walua.toml
check "scripts kept" grep -q "the operator's script" /etc/walua/scripts/on_message.lua
check "credentials kept" test -f /etc/walua/credentials/access_token
check "no prompt, no init on upgrade" sh -c '! grep -q "^walua: wrote" '"$tmp/upgrade.log"

if [ "$failures" -ne 0 ]; then
  echo "test-deb: $failures check(s) FAILED" >&2
  exit 1
fi
echo "test-deb: all checks passed"
