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

source bench/build.sh
bench_build -- bench/bench-core bench/sink-server bench/ceiling bench/bench-libnbd

python3 bench/run.py "$@"
# Then gnbd's rows: a section of the same file (bench/gnbd.sh).
bash bench/gnbd.sh "$@" --command "bash bench/run.sh"
# Then TLS, the writer thread encrypting or not (bench/tls.sh, its section).
if [[ " $* " == *" --quick "* ]]; then tls_args=(--quick); else tls_args=(); fi
bash bench/tls.sh "${tls_args[@]}"
