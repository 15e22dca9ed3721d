#!/usr/bin/env bash
# scripts/bootstrap.sh — set up, build and run keel on a fresh Debian machine.
#
#   scripts/bootstrap.sh demo   install deps, build, run keel's main job
#   scripts/bootstrap.sh test   install deps, build (warnings are errors),
#                               run every test with ctest
#   scripts/bootstrap.sh build  install deps and build only
#
# Idempotent: packages already installed are not reinstalled, the build
# directory is reused. Environment: BUILD_DIR (default: build), JOBS
# (default: nproc), KEEL_DEMO_DIR (default: demo-state).
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}

say() { printf '==> %s\n' "$*"; }

PACKAGES=(build-essential cmake pkg-config clang-format
          liblmdb-dev libxxhash-dev libzstd-dev check libuv1-dev
          libjansson-dev libmicrohttpd-dev libsystemd-dev python3-xxhash)

install_deps() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
            grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "dependencies already installed"
        return
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    say "installing: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
        "${missing[@]}"
}

build() {
    say "configuring $BUILD_DIR (warnings are errors)"
    cmake -S . -B "$BUILD_DIR" -DKEEL_WERROR=ON >/dev/null
    say "building with $JOBS jobs"
    cmake --build "$BUILD_DIR" -j "$JOBS"
}

demo() {
    local keel="$BUILD_DIR/keel"
    local dir=${KEEL_DEMO_DIR:-demo-state}
    say "fresh kernel state in $dir (LMDB store + write-ahead log)"
    rm -rf "$dir"
    say "running the five-hop chain: $keel run $dir --config vats/chain5.json"
    "$keel" run "$dir" --config vats/chain5.json
    say "its state: $keel status $dir"
    "$keel" status "$dir"
    say "a message from outside, answered once durable: $keel send $dir provider record {\"sig\":42} --wait"
    "$keel" send "$dir" provider record '{"sig":42}' --wait
    say "verifying its write-ahead log: $keel wal verify $dir/wal"
    "$keel" wal verify "$dir/wal"
    say "its last transactions: $keel wal dump $dir/wal --from 30"
    "$keel" wal dump "$dir/wal" --from 30
}

run_tests() {
    say "running the tests: ctest --output-on-failure"
    (cd "$BUILD_DIR" && ctest --output-on-failure -j "$JOBS")
}

case "${1:-}" in
demo)
    install_deps
    build
    demo
    ;;
test)
    install_deps
    build
    run_tests
    ;;
build)
    install_deps
    build
    ;;
*)
    echo "usage: scripts/bootstrap.sh demo|test|build" >&2
    exit 2
    ;;
esac
