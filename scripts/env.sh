# Sourced by RegionDB's scripts (run.sh, test.sh, .ci/run): makes a fresh machine able to build.
#
# 1. rocksdb's bindgen step needs libclang; a fresh machine lacks it. Installed once from
#    Debian's packages (idempotent: nothing happens when it is already there).
# 2. RocksDB's C++ takes most of a cold build (~15-20 minutes on 2 cores). After the first
#    build, the static library is kept in a cache outside the clone
#    ($REGIONDB_CACHE, default ~/.cache/regiondb), keyed by the librocksdb-sys version, and
#    later builds link it instead of compiling it again (ROCKSDB_LIB_DIR). With no cache the
#    build compiles RocksDB as usual and fills the cache afterwards (regiondb_save_rocksdb).
#    Cargo.toml builds RocksDB with the same flags in every profile, so one copy serves dev
#    and release builds.

REGIONDB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Installs Debian packages (as root, or through sudo).
regiondb_apt_install() {
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq >&2 &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2
}

regiondb_ensure_libclang() {
    if ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'; then
        return 0
    fi
    echo "regiondb: installing libclang (needed by RocksDB's bindgen step)" >&2
    regiondb_apt_install libclang1-14 libclang-common-14-dev
}

regiondb_rocksdb_version() {
    awk '/^name = "librocksdb-sys"$/ { getline; gsub(/version = |"/, ""); print; exit }' \
        "$REGIONDB_ROOT/Cargo.lock"
}

REGIONDB_CACHE="${REGIONDB_CACHE:-${HOME:-/tmp}/.cache/regiondb}"
REGIONDB_ROCKSDB_CACHE="$REGIONDB_CACHE/librocksdb-sys-$(regiondb_rocksdb_version)"

regiondb_use_rocksdb_cache() {
    if [ -z "${REGIONDB_NO_CACHE:-}" ] && [ -f "$REGIONDB_ROCKSDB_CACHE/librocksdb.a" ]; then
        export ROCKSDB_LIB_DIR="$REGIONDB_ROCKSDB_CACHE"
        export ROCKSDB_STATIC=1
    fi
}

# After a build that compiled RocksDB: keep the library for the next clone.
regiondb_save_rocksdb() {
    [ -n "${REGIONDB_NO_CACHE:-}" ] && return 0
    [ -f "$REGIONDB_ROCKSDB_CACHE/librocksdb.a" ] && return 0
    local built
    built=$(ls -t "${CARGO_TARGET_DIR:-$REGIONDB_ROOT/target}"/*/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -n 1)
    [ -n "$built" ] || return 0
    mkdir -p "$REGIONDB_ROCKSDB_CACHE" &&
        cp "$built" "$REGIONDB_ROCKSDB_CACHE/librocksdb.a.tmp" &&
        mv "$REGIONDB_ROCKSDB_CACHE/librocksdb.a.tmp" "$REGIONDB_ROCKSDB_CACHE/librocksdb.a" &&
        echo "regiondb: cached RocksDB's static library in $REGIONDB_ROCKSDB_CACHE" >&2
}

# The isolation tests compare RegionDB with a PostgreSQL server of the same machine: its
# server binaries (initdb, pg_ctl) come from Debian's packages when missing.
regiondb_ensure_postgres() {
    if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
        return 0
    fi
    echo "regiondb: installing PostgreSQL (the isolation tests compare against it)" >&2
    regiondb_apt_install postgresql
}

regiondb_ensure_libclang || { echo "regiondb: could not install libclang" >&2; return 1 2>/dev/null || exit 1; }
regiondb_use_rocksdb_cache
