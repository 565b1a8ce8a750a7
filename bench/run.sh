#!/bin/bash
# bench/run.sh: build what the benchmark needs and run it all; writes
# bench/RESULTS.md (machine, versions, date, the throughput tables, the
# deterministic figures), then gnbd's section (bench/gnbd.sh) and the TLS
# one (bench/tls.sh).  About fourteen minutes on 2 cores (the transports:
# Unix socket and TCP on 127.0.0.1; one connection and multi-conn 4; no
# writer, the copying writer and the zero-copy writer; then gnbd, about
# four of the fourteen, and TLS, about one and a half).
#
#   bash bench/run.sh            the full run
#   bash bench/run.sh --quick    a short smoke run of the same steps
#
# Builds in build-bench (buildtype=release: an optimised libnbd-core, as
# users install it) unless BENCH_BUILD names another directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# nbdkit, libnbd-dev (the reference), valgrind and strace are in the list.
bash scripts/deps.sh

build=${BENCH_BUILD:-build-bench}
if [[ -f $build/build.ninja ]]; then
  meson configure "$build" -Dbuildtype=release -Dtests=false >/dev/null
else
  meson setup "$build" --buildtype=release -Dtests=false >/dev/null
fi
targets=(bench/bench-core bench/sink-server bench/ceiling)
pkg-config --exists libnbd && targets+=(bench/bench-libnbd)
ninja -C "$build" "${targets[@]}" >/dev/null

BENCH_BUILD=$(realpath "$build") python3 bench/run.py "$@"
# Then gnbd's rows: a section of the same file (bench/gnbd.sh).
BENCH_BUILD=$(realpath "$build") bash bench/gnbd.sh "$@" --command "bash bench/run.sh"
# Then TLS, the writer thread encrypting or not (bench/tls.sh, its section).
if [[ " $* " == *" --quick "* ]]; then tls_args=(--quick); else tls_args=(); fi
BENCH_BUILD=$(realpath "$build") bash bench/tls.sh "${tls_args[@]}"
