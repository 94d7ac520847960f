#!/usr/bin/env bash
# Installs the build tree into a temporary DESTDIR and uses the result the way a user would:
# the installed daemon and CLI run, a consumer project builds against the installed library with
# find_package(shmlease) and with pkg-config and runs, the installed Python module imports, and
# the service files are where systemd looks for them. Nothing is written outside the temporary
# directory.
#
# Environment (set by tests/deploy/CMakeLists.txt): BUILD_DIR, SOURCE_DIR, CMAKE, CXX, PREFIX,
# BINDIR, LIBDIR, INCLUDEDIR, DOCDIR, UNITDIR, SYSUSERSDIR, TMPFILESDIR (full install paths),
# SANITIZE, PYTHON, PYTHON_INSTALL_DIR (empty without the Python module).
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

command -v pkg-config >/dev/null || fail "pkg-config is not installed (./scripts/dev deps installs it)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/shmlease-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root

step "cmake --install with DESTDIR"
DESTDIR=$root "$CMAKE" --install "$BUILD_DIR" >"$tmp/install.log" || { cat "$tmp/install.log"; fail "install"; }

expect=(
  "$BINDIR/shmleased" "$BINDIR/shmlease"
  "$LIBDIR/libshmlease.a" "$LIBDIR/libshmlease_common.a"
  "$LIBDIR/cmake/shmlease/shmleaseConfig.cmake" "$LIBDIR/cmake/shmlease/shmleaseConfigVersion.cmake"
  "$LIBDIR/cmake/shmlease/shmleaseTargets.cmake" "$LIBDIR/pkgconfig/shmlease.pc"
  "$UNITDIR/shmleased.service" "$UNITDIR/shmleased.socket"
  "$SYSUSERSDIR/shmlease.conf" "$TMPFILESDIR/shmlease.conf"
  "$DOCDIR/shmleased.toml.example" "$DOCDIR/SERVICE.md"
)
# Every public header of client/ and common/.
for h in "$SOURCE_DIR"/client/include/shmlease/*.hpp "$SOURCE_DIR"/common/include/shmlease/*.hpp; do
  expect+=("$INCLUDEDIR/shmlease/$(basename "$h")")
done
if [[ -n $PYTHON_INSTALL_DIR ]]; then
  expect+=("$PYTHON_INSTALL_DIR/shmlease/__init__.py")
fi
for f in "${expect[@]}"; do
  [[ -e $root$f ]] || fail "not installed: $f"
done
# The wire protocol (protocol.hpp, codec.hpp) and every other internal header stay internal: a
# wire change is no API break. Each installed header includes only installed ones, so the
# consumers below compile without the sources.
for h in protocol.hpp codec.hpp "$SOURCE_DIR"/common/internal/shmlease/*.hpp; do
  h=$(basename "$h")
  [[ ! -e $root$INCLUDEDIR/shmlease/$h ]] || fail "internal header installed: $INCLUDEDIR/shmlease/$h"
done
for h in "$root$INCLUDEDIR"/shmlease/*; do
  while read -r inc; do
    [[ -e $root$INCLUDEDIR/$inc ]] || fail "installed $(basename "$h") includes $inc, which is not installed"
  done < <(sed -n 's/^#include "\(shmlease\/[^"]*\)".*/\1/p' "$h")
done
# Nothing may land outside the prefix except the Python package.
while read -r f; do
  f=${f#"$root"}
  [[ $f == "$PREFIX"/* || ( -n $PYTHON_INSTALL_DIR && $f == "$PYTHON_INSTALL_DIR"/* ) ]] ||
    fail "installed outside $PREFIX: $f"
done < <(find "$root" -type f)

step "installed programs run"
"$root$BINDIR/shmleased" --version
"$root$BINDIR/shmlease" --help >/dev/null
grep -qx "ExecStart=$BINDIR/shmleased" "$root$UNITDIR/shmleased.service" ||
  fail "installed shmleased.service does not start $BINDIR/shmleased"

# A sanitizer build's static libraries need the sanitizer runtime in the consumer too.
san_flags=()
case $SANITIZE in
  address) san_flags=(-fsanitize=address,undefined) ;;
  thread) san_flags=(-fsanitize=thread) ;;
esac
nobody=$tmp/nobody.sock  # no daemon: the consumer must get kDaemonUnavailable

step "consumer with find_package(shmlease CONFIG)"
"$CMAKE" -S "$SOURCE_DIR/tests/deploy/consumer" -B "$tmp/cmake-consumer" \
  -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_PREFIX_PATH="$root$PREFIX" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF \
  -DCMAKE_CXX_FLAGS="${san_flags[*]}" -DCMAKE_EXE_LINKER_FLAGS="${san_flags[*]}" \
  >"$tmp/consumer-configure.log" 2>&1 || { cat "$tmp/consumer-configure.log"; fail "configure consumer"; }
found=$(sed -n 's/^shmlease_DIR:PATH=//p' "$tmp/cmake-consumer/CMakeCache.txt")
[[ $found == "$root$LIBDIR/cmake/shmlease" ]] || fail "find_package found $found, not the installed package"
"$CMAKE" --build "$tmp/cmake-consumer" >"$tmp/consumer-build.log" 2>&1 ||
  { cat "$tmp/consumer-build.log"; fail "build consumer"; }
"$tmp/cmake-consumer/consumer" "$nobody"

step "consumer with pkg-config"
# PKG_CONFIG_LIBDIR: only the installed .pc; SYSROOT_DIR: its paths are under DESTDIR.
pc_flags=$(PKG_CONFIG_PATH='' PKG_CONFIG_LIBDIR="$root$LIBDIR/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$root" \
  pkg-config --cflags --libs shmlease) || fail "pkg-config does not know shmlease"
echo "pkg-config --cflags --libs shmlease: $pc_flags"
# shellcheck disable=SC2086  # the flags are words
"$CXX" -std=c++20 "${san_flags[@]}" -o "$tmp/pc-consumer" "$SOURCE_DIR/tests/deploy/consumer/main.cpp" $pc_flags
"$tmp/pc-consumer" "$nobody"

if [[ -n $PYTHON_INSTALL_DIR && -z $SANITIZE ]]; then
  step "installed Python module imports"
  # -I: ignore PYTHON* variables and the user's site-packages; only the installed copy is found.
  "$PYTHON" -I -c '
import sys
sys.path.insert(0, sys.argv[1])
import shmlease
assert shmlease.__file__.startswith(sys.argv[1]), shmlease.__file__
try:
    shmlease.connect(sys.argv[2])
except shmlease.DaemonUnavailableError as e:
    print("ok:", e)
else:
    raise SystemExit("connected to a socket nobody serves")
' "$root$PYTHON_INSTALL_DIR" "$nobody"
fi
echo "PASS"
