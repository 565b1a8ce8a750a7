# bench/build.sh: sourced by the benchmark scripts (run.sh, gnbd.sh,
# copy.sh, tls.sh), from the repository root.
#
#   bench_build [MESON_OPTION...] -- TARGET...
#
# Installs what the benchmarks need (scripts/deps.sh: nbdkit, libnbd-dev,
# gnutls-bin, valgrind, strace...), then builds TARGET... in $BENCH_BUILD
# (build-bench unless set), buildtype=release without the tests, with the
# extra meson options; bench/bench-libnbd only if Debian's libnbd-dev is
# installed.  Exports BENCH_BUILD as an absolute path for the Python side.
bench_build () {
  local opts=(-Dbuildtype=release -Dtests=false) targets=() t
  while [[ $# -gt 0 && $1 != -- ]]; do opts+=("$1"); shift; done
  shift
  for t in "$@"; do
    if [[ $t != bench/bench-libnbd ]] || pkg-config --exists libnbd; then
      targets+=("$t")
    fi
  done
  bash scripts/deps.sh
  BENCH_BUILD=${BENCH_BUILD:-build-bench}
  if [[ -f $BENCH_BUILD/build.ninja ]]; then
    meson configure "$BENCH_BUILD" "${opts[@]}" >/dev/null
  else
    meson setup "$BENCH_BUILD" "${opts[@]}" >/dev/null
  fi
  ninja -C "$BENCH_BUILD" "${targets[@]}" >/dev/null
  BENCH_BUILD=$(realpath "$BENCH_BUILD")
  export BENCH_BUILD
}
