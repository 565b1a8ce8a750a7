#!/bin/bash
# bench/copy.sh: `gnbd copy` against Debian's nbdcopy (libnbd 1.14), same
# machine, same run, alternating; writes its section of bench/RESULTS.md
# (between the "gnbd copy" markers, replaced on each run) and the raw
# figures to build-bench/bench/copy-raw.json.  About five minutes on 2 cores.
#
#   bash bench/copy.sh             3 rounds
#   bash bench/copy.sh --rounds 5  more rounds, steadier medians
#
# Builds the gnbd command in build-bench (buildtype=release) unless
# BENCH_BUILD names another directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source bench/build.sh
bench_build -Dgnbd=enabled -- tools/gnbd bench/ceiling
exec python3 bench/copy.py "$@"
