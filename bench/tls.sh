#!/bin/bash
# bench/tls.sh: TLS with the concurrent writer, and the writer thread
# encrypting (nbd_set_concurrent_writer_encrypt), against libnbd 1.14 and
# libnbd-core without a writer; writes its section of bench/RESULTS.md
# (between the "TLS" markers, replaced on each run) and the raw figures to
# build-bench/bench/tls-raw.json.  About two minutes on 2 cores.
#
#   bash bench/tls.sh              5 rounds
#   bash bench/tls.sh --rounds 9   steadier medians
#   bash bench/tls.sh --quick      a smoke run
#
# Builds in build-bench (buildtype=release) unless BENCH_BUILD names
# another directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# nbdkit, gnutls-bin (certtool, psktool) and libnbd-dev are in the list.
bash scripts/deps.sh

build=${BENCH_BUILD:-build-bench}
if [[ -f $build/build.ninja ]]; then
  meson configure "$build" -Dbuildtype=release -Dtests=false >/dev/null
else
  meson setup "$build" --buildtype=release -Dtests=false >/dev/null
fi
targets=(bench/bench-core)
pkg-config --exists libnbd && targets+=(bench/bench-libnbd)
ninja -C "$build" "${targets[@]}" >/dev/null

BENCH_BUILD=$(realpath "$build") exec python3 bench/tls.py "$@"
