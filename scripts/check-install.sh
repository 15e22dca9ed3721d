#!/usr/bin/env bash
# scripts/check-install.sh — install keel from a build directory into a
# temporary prefix and use it the way someone outside this tree would
# (docs/install.md):
#
#   1. `cmake --install BUILD --prefix TMP`: the keel program, libkeel.so
#      (with its SONAME) and libkeel.a, include/keel/*.h (exactly the
#      headers of include/keel/), keel.pc and the CMake package;
#   2. libkeel.so exports exactly the KEEL_API functions of include/keel/
#      (`nm -D --defined-only`): no internal keel__* symbol, none missing;
#   3. keel.pc: `pkg-config --cflags --libs keel`, its version, and the
#      dependencies `--static` adds for libkeel.a;
#   4. examples/vat-counter built out of tree twice, with its Makefile
#      (pkg-config) and with its CMakeLists.txt (find_package(keel) through
#      CMAKE_PREFIX_PATH), warnings as errors;
#   5. each build's vat run in-process by the installed `keel run`, its
#      state checked (`keel status --json`, `keel send ... get --wait`
#      answers the vatstore's count), and its host programs (libkeel.so,
#      libkeel.a) run against a state of their own.
#
# Usage: scripts/check-install.sh [BUILD_DIR]   (default: $BUILD_DIR or
# build; it is built first if it is not). Exits 1 naming the first check
# that failed; the temporary directory is kept then (its path is printed).
set -euo pipefail

cd "$(dirname "$0")/.."
src=$(pwd)
build=${1:-${BUILD_DIR:-build}}
build=$(cd "$build" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-install.XXXXXX")
ok=0
trap 'if [ "$ok" -eq 1 ]; then rm -rf "$tmp"; else echo "check-install: left $tmp" >&2; fi' EXIT

say() { printf 'check-install: %s\n' "$*"; }
die() {
    printf 'check-install: FAILED: %s\n' "$*" >&2
    exit 1
}
# expect WHAT EXPECTED ACTUAL
expect() {
    [ "$2" = "$3" ] || die "$1: expected [$2], got [$3]"
}

version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")
[ -n "$version" ] || die "$build/CMakeCache.txt: no CMAKE_PROJECT_VERSION (not a keel build directory?)"
prefix=$tmp/prefix

say "1. cmake --install $build --prefix $prefix"
cmake --build "$build" -j "${JOBS:-$(nproc)}" --target keel_cli keel_shared keel >/dev/null
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log"
keel=$prefix/bin/keel
[ -x "$keel" ] || die "$keel: not installed"
expect "installed keel --version" "keel $version" "$("$keel" --version)"
pc=$(find "$prefix" -name keel.pc -path '*/pkgconfig/*')
[ -n "$pc" ] || die "keel.pc: not installed under $prefix"
libdir=$(dirname "$(dirname "$pc")")
for f in libkeel.so libkeel.a cmake/keel/keelConfig.cmake \
    cmake/keel/keelConfigVersion.cmake cmake/keel/keelTargets.cmake \
    cmake/keel/keelStaticTargets.cmake; do
    [ -e "$libdir/$f" ] || die "$libdir/$f: not installed"
done
soname=$(readelf -d "$libdir/libkeel.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
case "$soname" in
libkeel.so.[0-9]*) [ -e "$libdir/$soname" ] || die "$libdir/$soname: SONAME file missing" ;;
*) die "$libdir/libkeel.so: SONAME [$soname], expected libkeel.so.<version>" ;;
esac
expect "installed headers" "$(cd include/keel && ls ./*.h)" \
    "$(cd "$prefix/include/keel" && ls ./*.h)"
for h in include/keel/*.h; do
    cmp -s "$h" "$prefix/$h" || die "$prefix/$h: differs from $h"
done

say "2. libkeel.so ($soname) exports exactly KEEL_API"
nm -D --defined-only "$libdir/libkeel.so" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' |
    sort -u >"$tmp/exported"
cat include/keel/*.h | perl -0ne \
    'while (/\bKEEL_API\b[^;{]*?\b(keel_\w+)\s*\(/g) { print "$1\n" }' |
    sort -u >"$tmp/declared"
[ -s "$tmp/declared" ] || die "include/keel/*.h: no KEEL_API declaration found"
if ! diff "$tmp/declared" "$tmp/exported" >"$tmp/symbols.diff"; then
    cat "$tmp/symbols.diff" >&2
    die "libkeel.so exports differ from KEEL_API in include/keel/ ('<' declared only, '>' exported only)"
fi
say "   $(wc -l <"$tmp/exported") symbols, all KEEL_API"

say "3. pkg-config keel"
export PKG_CONFIG_PATH=$libdir/pkgconfig
expect "pkg-config --modversion keel" "$version" "$(pkg-config --modversion keel)"
pkg-config --cflags --libs keel >/dev/null || die "pkg-config --cflags --libs keel"
static_libs=" $(pkg-config --static --libs keel) "
for l in -lkeel -llmdb -lxxhash -lzstd -luv -ljansson; do
    case "$static_libs" in
    *" $l "*) ;;
    *) die "pkg-config --static --libs keel: no $l in [$static_libs]" ;;
    esac
done
expect "pkg-config includedir" "$(cd "$prefix/include" && pwd)" \
    "$(cd "$(pkg-config --variable=includedir keel)" && pwd)"

cflags="-O2 -g -Wall -Wextra -Werror"
say "4a. examples/vat-counter with make and pkg-config"
mkdir "$tmp/make"
make -s -C "$tmp/make" -f "$src/examples/vat-counter/Makefile" \
    CFLAGS="$cflags" >"$tmp/make.log" 2>&1 ||
    { cat "$tmp/make.log" >&2; die "make -f examples/vat-counter/Makefile"; }

say "4b. examples/vat-counter with cmake and find_package(keel)"
cmake -S examples/vat-counter -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_C_FLAGS="$cflags" \
    >"$tmp/cmake.log" 2>&1 ||
    { cat "$tmp/cmake.log" >&2; die "cmake -S examples/vat-counter"; }
expect "find_package(keel) found" "$libdir/cmake/keel" \
    "$(sed -n 's/^keel_DIR:PATH=//p' "$tmp/cmake/CMakeCache.txt")"
cmake --build "$tmp/cmake" >>"$tmp/cmake.log" 2>&1 ||
    { cat "$tmp/cmake.log" >&2; die "cmake --build (examples/vat-counter)"; }

# needed FILE: the shared libraries FILE names (NEEDED), one a line.
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }

for how in make cmake; do
    out=$tmp/$how
    say "5. ($how) the installed keel run loads $out/libvat_counter.so"
    for f in libvat_counter.so counter-host counter-host-static counter.json; do
        [ -e "$out/$f" ] || die "$how build: $out/$f missing"
    done
    if needed "$out/libvat_counter.so" | grep -q '^libkeel'; then
        die "$how build: libvat_counter.so links libkeel (a vat links nothing)"
    fi
    needed "$out/counter-host" | grep -qx "$soname" ||
        die "$how build: counter-host does not link $soname"
    if needed "$out/counter-host-static" | grep -q '^libkeel'; then
        die "$how build: counter-host-static links libkeel.so (expected libkeel.a)"
    fi

    state=$tmp/state-$how
    "$keel" run "$state" --config "$out/counter.json" >"$tmp/run-$how.log" 2>&1 ||
        { cat "$tmp/run-$how.log" >&2; die "$how build: keel run --config $out/counter.json"; }
    grep -qx 'stopped: idle (nothing left to do)' "$tmp/run-$how.log" ||
        { cat "$tmp/run-$how.log" >&2; die "$how build: keel run did not end idle"; }
    "$keel" status "$state" --json >"$tmp/status-$how.json"
    python3 - "$tmp/status-$how.json" <<'EOF' || die "$how build: keel status --json: $(cat "$tmp/status-$how.json")"
import json, sys
s = json.load(open(sys.argv[1]))
# bootstrap + three incr() it sent itself: four cranks, nothing left
assert s["booted"] and s["crank"] == 4 and s["run_queue"] == 0, s
assert [(v["name"], v["state"]) for v in s["vats"]] == [("counter", "alive")], s["vats"]
EOF
    expect "$how build: keel send counter get" 'fulfilled: {"value":3}' \
        "$("$keel" send "$state" counter get '{}' --wait)"
    expect "$how build: keel send counter incr" 'fulfilled: {"value":4}' \
        "$("$keel" send "$state" counter incr '{}' --wait)"
    expect "$how build: keel send counter nope" 'rejected: {"error":"unknown method"}' \
        "$("$keel" send "$state" counter nope '{}' --wait)"

    for host in counter-host counter-host-static; do
        say "5. ($how) $host (embeds libkeel) runs the vat"
        hstate=$tmp/state-$how-$host
        expect "$how build: $host (boot)" \
            "$(printf 'count after run: 3\nincr: {"value":4}\ncount: 4')" \
            "$(env -u LD_LIBRARY_PATH "$out/$host" "$hstate" "$out/counter.json")"
        expect "$how build: $host (reopened)" \
            "$(printf 'count after run: 4\nincr: {"value":5}\ncount: 5')" \
            "$(env -u LD_LIBRARY_PATH "$out/$host" "$hstate" "$out/counter.json")"
    done
done

ok=1
say "ok: installed, exported only KEEL_API, example built with pkg-config and CMake and run"
