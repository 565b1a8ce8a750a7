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

source bench/build.sh
bench_build -- bench/bench-core bench/bench-libnbd

exec python3 bench/tls.py "$@"
