#!/bin/bash
# bench/gnbd.sh: build what gnbd's rows of the benchmark need and run them
# (bench/gnbd.py); writes the gnbd section of bench/RESULTS.md and leaves
# the rest of the file as bench/run.sh wrote it.  About four minutes on 2
# cores.  bench/run.sh runs it too, after its own part.
#
#   bash bench/gnbd.sh            the full run
#   bash bench/gnbd.sh --quick    a short smoke run (build-bench/bench/RESULTS-quick.md)
#
# Builds in build-bench (buildtype=release, gnbd and its typelib, for the
# GJS and Python rows) unless BENCH_BUILD names another directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source bench/build.sh
bench_build -Dgnbd=enabled -Dintrospection=enabled -Ddocs=disabled -Dvapi=disabled -- \
  bench/gnbd-bench bench/bench-core bench/sink-server introspection/Gnbd-1.0.typelib \
  bench/bench-libnbd
exec python3 bench/gnbd.py "$@"
