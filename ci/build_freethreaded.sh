#!/usr/bin/env bash
# Build (once) and cache a free-threaded CPython 3.13 (`./configure --disable-gil`), then print the
# path of its interpreter on stdout. Later runs find the cached build and cost nothing.
#
# Source: Debian trixie's python3.13 source package (its upstream tarball, without Debian's
# patches), fetched with apt through a PRIVATE sources list and private apt state: the system's
# sources and lists are not touched. Build dependencies are the machine's own packages
# (Debian bookworm: libssl-dev libffi-dev zlib1g-dev libbz2-dev liblzma-dev libsqlite3-dev
# libreadline-dev libncurses-dev uuid-dev); the script checks the modules they provide and fails
# with the list of what to install.
#
#   ci/build_freethreaded.sh            # -> /root/.cache/pytest-hpcdemo/cpython-3.13t/bin/python3.13t
#   HPCDEMO_FT_PREFIX=/opt/py313t ci/build_freethreaded.sh
#
# A python3.13t/python3.14t already on PATH is used as is. All of stdout is the interpreter's path;
# the build's log goes to stderr (and to <prefix>.log).
set -euo pipefail

PREFIX="${HPCDEMO_FT_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/pytest-hpcdemo/cpython-3.13t}"
DEBIAN_MIRROR="${HPCDEMO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
KEYRING=/usr/share/keyrings/debian-archive-trixie-stable.gpg
READY="$PREFIX/.hpcdemo-build-complete"
# The extension modules the test suite and pip need; each names the -dev package it is built from.
NEEDED_MODULES="ssl:libssl-dev _ctypes:libffi-dev zlib:zlib1g-dev bz2:libbz2-dev lzma:liblzma-dev
sqlite3:libsqlite3-dev readline:libreadline-dev _curses:libncurses-dev _uuid:uuid-dev"

say() { echo "build_freethreaded: $*" >&2; }

is_free_threaded() {  # $1: an interpreter; true when it was built with --disable-gil
    "$1" -c 'import sys, sysconfig; sys.exit(0 if sysconfig.get_config_var("Py_GIL_DISABLED") else 1)' \
        2>/dev/null
}

for candidate in python3.14t python3.13t; do
    if found=$(command -v "$candidate") && is_free_threaded "$found"; then
        say "using $found from PATH"
        echo "$found"
        exit 0
    fi
done

mkdir -p "$(dirname "$PREFIX")"
exec 9>"$PREFIX.lock"
flock 9  # a second CI run on the same machine waits for the first one's build instead of racing it

if [[ -f "$READY" ]] && is_free_threaded "$PREFIX/bin/python3.13t"; then
    say "cached build at $PREFIX"
    echo "$PREFIX/bin/python3.13t"
    exit 0
fi

say "no free-threaded interpreter: building CPython 3.13 --disable-gil into $PREFIX (about 6-10 min on 2 cores)"
rm -rf "$PREFIX"  # an interrupted build left it incomplete
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hpcdemo-cpython-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
exec 3>&2 2> >(tee "$PREFIX.log" >&3)  # the log goes to stderr and to a file kept after the build

for tool in apt-get gcc make tar; do
    command -v "$tool" >/dev/null || {
        say "needs $tool (a Debian/Ubuntu machine with build-essential), or a python3.13t on PATH"; exit 1; }
done
[[ -r "$KEYRING" ]] || { say "missing $KEYRING: apt-get install debian-archive-keyring"; exit 1; }
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/src"
echo "deb-src [signed-by=$KEYRING] $DEBIAN_MIRROR trixie main" >"$WORK/apt/sources.list"
APT=(apt-get -q -o "Dir::Etc::SourceList=$WORK/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache"
     -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
"${APT[@]}" update >&2
(cd "$WORK/src" && "${APT[@]}" source --download-only python3.13 >&2)
shopt -s nullglob
orig=("$WORK"/src/python3.13_*.orig.tar.[gx]z)
[[ ${#orig[@]} -eq 1 ]] || { say "expected one python3.13 upstream tarball, got: ${orig[*]:-none}"; exit 1; }
say "source: $(basename "${orig[0]}")"
mkdir "$WORK/cpython"
tar -xf "${orig[0]}" -C "$WORK/cpython" --strip-components=1

cd "$WORK/cpython"
# --disable-test-modules: neither the _test* extensions nor Lib/test: less to compile and to byte-compile
./configure --disable-gil --disable-test-modules --prefix="$PREFIX" --with-ensurepip=install >&2
make -j"$(nproc)" >&2
make install >&2

missing=()
for pair in $NEEDED_MODULES; do
    "$PREFIX/bin/python3.13t" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    say "the build lacks modules; install and run again: apt-get install ${missing[*]}"
    exit 1
fi
is_free_threaded "$PREFIX/bin/python3.13t" || { say "$PREFIX/bin/python3.13t has the GIL built in"; exit 1; }
touch "$READY"
say "built $("$PREFIX/bin/python3.13t" -VV)"
echo "$PREFIX/bin/python3.13t"
