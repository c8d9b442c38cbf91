#!/usr/bin/env bash
# Put `prometheus` and `promtool` into .tools/bin/ of this repository (idempotent).
#
# They come from Debian's `prometheus` package: `apt-get download` fetches the .deb without
# installing it (no root needed when the apt lists exist), `dpkg-deb -x` unpacks it into a
# temporary directory, and only the two binaries are copied. Both are Go programs that need
# nothing but libc, so none of the package's Depends (JavaScript libraries for the old web UI,
# adduser, init-system-helpers) are needed to check rules or to run a server that scrapes.
#
# Usage: scripts/fetch-prometheus.sh        (then .tools/bin/promtool --version)
# Env:   TOOLS_DIR=/some/dir  to put the binaries elsewhere (default: <repo>/.tools/bin)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="${TOOLS_DIR:-$repo_root/.tools/bin}"
hint="install Prometheus yourself (Debian/Ubuntu: 'sudo apt-get install prometheus'; elsewhere the official release tarball) and put prometheus and promtool on PATH or in $tools_dir"

works() { [[ -x "$1" ]] && "$1" --version >/dev/null 2>&1; }

if works "$tools_dir/promtool" && works "$tools_dir/prometheus"; then
    echo "prometheus and promtool already in $tools_dir"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    echo "fetch-prometheus: apt-get/dpkg-deb not found; $hint" >&2
    exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# apt-get download writes into the current directory; as root it warns that the _apt sandbox
# user cannot write there, which is harmless, so let _apt in when we are root.
[[ "$(id -u)" == 0 ]] && chmod 0777 "$tmp"

download() { (cd "$tmp" && apt-get download -q prometheus >"$tmp/apt.log" 2>&1); }

if ! download; then
    if [[ "$(id -u)" == 0 ]]; then
        echo "fetch-prometheus: apt-get download failed, running apt-get update first" >&2
        apt-get update -q >/dev/null
        download || { cat "$tmp/apt.log" >&2; echo "fetch-prometheus: cannot download the Debian package prometheus; $hint" >&2; exit 1; }
    else
        cat "$tmp/apt.log" >&2
        echo "fetch-prometheus: cannot download the Debian package prometheus (apt lists missing? run 'sudo apt-get update' once); or $hint" >&2
        exit 1
    fi
fi

deb="$(find "$tmp" -maxdepth 1 -name 'prometheus_*.deb' | head -n 1)"
[[ -n "$deb" ]] || { echo "fetch-prometheus: no prometheus_*.deb downloaded; $hint" >&2; exit 1; }
dpkg-deb -x "$deb" "$tmp/root"

mkdir -p "$tools_dir"
for bin in prometheus promtool; do
    src="$tmp/root/usr/bin/$bin"
    [[ -x "$src" ]] || { echo "fetch-prometheus: $(basename "$deb") has no usr/bin/$bin; $hint" >&2; exit 1; }
    # Copy under a temporary name and rename, so a concurrent run never sees half a binary.
    install -m 0755 "$src" "$tools_dir/.$bin.new"
    mv -f "$tools_dir/.$bin.new" "$tools_dir/$bin"
done

works "$tools_dir/promtool" && works "$tools_dir/prometheus" || {
    echo "fetch-prometheus: the copied binaries do not run on this machine; $hint" >&2
    exit 1
}
echo "installed $("$tools_dir/promtool" --version 2>&1 | head -n 1) and prometheus into $tools_dir"
