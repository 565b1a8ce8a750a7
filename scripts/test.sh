#!/bin/bash
# test.sh: the whole test suite, as CI runs it (.ci/run calls exactly this).
#
# Installs what is missing (scripts/deps.sh), then for each enabled pass
# configures a build directory under the repository root, builds it with
# -Dwerror=true and the features CI must test forced on (-Dtls=enabled: a
# build that silently lost GnuTLS would skip every TLS test), and runs
# `meson test`.  Any sanitizer report is fatal.
#
# Skips are not green.  Every skip, of a whole program ("1..0 # SKIP ...")
# or of one TAP test inside one ("ok N # SKIP ..."), is listed after its
# pass, and a skip that no entry of tests/skip-allowlist.txt allows fails
# its test (scripts/testlog-count.py reads meson's log).  Each pass also
# names the suites that must have run: a missing dependency can drop tests
# from the build without a skip (Debian's libnbd, for compat-libnbd).
# Exits non-zero if any pass fails; ends with one "total: N passed, N
# failed, N skipped; skips: N allowed, N not allowed" line (passed, failed
# and skipped count test programs; skips count both kinds).
#
# Passes (run all enabled ones, or name some: bash scripts/test.sh asan):
#   asan      build-asan, -Db_sanitize=address,undefined      enabled
#   tsan      build-tsan, -Db_sanitize=thread                 enabled: the suites
#             where threads meet a handle (writer, examples, aio, compat, tls,
#             threads, gnbd)
#   valgrind  build-valgrind (no sanitizer), the 'hostile' suite    enabled
#             under valgrind (memcheck; definite and indirect leaks fatal)
#   fuzz      build-fuzz, clang, -Dfuzzing=true: the 'fuzz' suite        enabled
#             (seed corpus and crashes replayed), then libFuzzer for
#             FUZZ_SECONDS (150) on a copy of the seed corpus
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

# The passes that work today.  A later issue enables one by adding it here.
default_passes=(asan tsan valgrind fuzz bindings)

export ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1:print_stacktrace=1
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
export TSAN_OPTIONS=halt_on_error=1:abort_on_error=1:second_deadlock_stack=1

total_pass=0
total_fail=0
total_skip=0
total_allowed=0
total_denied=0
failed_passes=()

# The only skips a pass accepts, each with the reason why.
skip_allowlist=tests/skip-allowlist.txt

# setup DIR MESON_ARGS...: configure DIR, or reconfigure it with the same
# arguments if it already exists.
setup () {
  local dir=$1
  shift
  if [[ -f $dir/meson-private/coredata.dat ]]; then
    meson setup --reconfigure "$dir" "$@" || return
  else
    rm -rf "$dir"
    meson setup "$dir" "$@" || return
  fi
}

# count DIR NAME [SUITE...]: add the results of pass NAME (its meson test log
# in DIR) to the totals and print "NAME: N passed, N failed, N skipped;
# skips: N allowed, N not allowed", then a line for each skip and for each
# SUITE of which no test ran.  Fails on a failed test, a skip the allow-list
# does not allow (its test counts as failed), a missing SUITE or a malformed
# allow-list.
count () {
  local dir=$1 name=$2 log out rc=0
  shift 2
  local pass=0 fail=0 skip=0 allowed=0 denied=0 broken=0
  # meson appends the wrapper's name to the log base (testlog-valgrind-valgrind).
  log=$(ls -t "$dir/meson-logs/testlog-$name"*.json 2>/dev/null | head -n 1 || true)
  if [[ -z $log ]]; then
    echo "$name: no test log"
    return 1
  fi
  out=$(python3 "$root/scripts/testlog-count.py" "$log" "$skip_allowlist" "$@") || {
    echo "$name: cannot read $log"
    return 1
  }
  read -r pass fail skip allowed denied broken <<<"${out%%$'\n'*}"
  echo "$name: $pass passed, $fail failed, $skip skipped; skips: $allowed allowed," \
    "$denied not allowed"
  [[ $out != *$'\n'* ]] || echo "${out#*$'\n'}"
  total_pass=$((total_pass + pass))
  total_fail=$((total_fail + fail))
  total_skip=$((total_skip + skip))
  total_allowed=$((total_allowed + allowed))
  total_denied=$((total_denied + denied))
  # A missing suite or a malformed allow-list fails the pass on its own.
  ((broken == 0)) || total_fail=$((total_fail + 1))
  ((fail == 0 && broken == 0)) || rc=1
  return $rc
}

# [required_suites='SUITE...'] run_tests DIR NAME [MESON_TEST_ARGS...]:
# meson test, then count (each of required_suites must have run a test).
run_tests () {
  local dir=$1 name=$2 rc=0
  shift 2
  rm -f "$dir/meson-logs/testlog-$name"*.json
  meson test -C "$dir" --print-errorlogs --logbase "testlog-$name" "$@" || rc=$?
  # shellcheck disable=SC2086  # one word per suite
  count "$dir" "$name" ${required_suites:-} || rc=1
  return $rc
}

# Each pass chains its steps with || return: it runs inside `if`, where
# set -e does not apply.
# asan runs every test; these suites must be among them.
asan_suites=(core compat compat-libnbd tls writer faults threads hostile install examples servers gnbd slow tools)
pass_asan () {
  setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true \
    -Dtls=enabled -Dgnbd=enabled || return
  meson compile -C build-asan || return
  required_suites="${asan_suites[*]}" run_tests build-asan asan --timeout-multiplier 2
}

# ThreadSanitizer: its own build, since it cannot be combined with ASan.
# Only the suites where threads meet a handle (the concurrent writer and
# the examples, the aio deadlock tests, the libnbd programs with threads,
# TLS with the writer, 'threads': the other programs that start threads,
# listed in tests/core/threads.tests, gnbd, and the gnbd command, whose
# copies run GnbdCopy's threads under load; its tests copy less under TSan):
# the single-threaded rest gains nothing from TSan and would double the
# pass's time.  Any report fails its test (halt_on_error).
# gnbd:gnbd is the suite 'gnbd' of project 'gnbd': a bare 'gnbd' names the
# whole project to meson and would select every test.
tsan_suites=(writer examples aio compat tls threads gnbd:gnbd tools)
pass_tsan () {
  local suites=() s
  setup build-tsan -Db_sanitize=thread -Db_lundef=false -Dwerror=true -Dtls=enabled \
    -Dgnbd=enabled || return
  meson compile -C build-tsan || return
  for s in "${tsan_suites[@]}"; do suites+=(--suite "$s"); done
  required_suites="${tsan_suites[*]}" run_tests build-tsan tsan --timeout-multiplier 3 \
    "${suites[@]}"
}

# valgrind needs a build without sanitizers; it uses build-valgrind and
# meson's own wrapper (--wrapper), with leaks and errors fatal.  Only the
# 'hostile' suite (the client against a server that breaks the protocol,
# where error paths leak if anything does): its tests take seconds, the
# build is most of the pass.
pass_valgrind () {
  setup build-valgrind -Dwerror=true -Dtls=enabled || return
  meson compile -C build-valgrind || return
  required_suites=hostile run_tests build-valgrind valgrind --suite hostile \
    --timeout-multiplier 10 \
    --wrapper 'valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect'
}

# libFuzzer: its own build with clang and -Dwerror=true, where tests/fuzz
# builds the harness against the core compiled again with
# -fsanitize=fuzzer-no-link,address,undefined.  Only the two programs the
# pass runs are built (the rest of the tree is the other passes' to build;
# here it would only cost time).  First the 'fuzz' suite (every seed and
# every input in tests/fuzz/crashes/ replayed once; the recorder against
# real servers), then a bounded run on a copy of the seed corpus: a crash,
# leak, timeout or out-of-memory makes libFuzzer exit non-zero and leave the
# input in build-fuzz/fuzz-artifacts/, and fails the pass.
fuzz_seconds=${FUZZ_SECONDS:-150}
pass_fuzz () {
  local work=build-fuzz/fuzz-corpus art=build-fuzz/fuzz-artifacts
  local log=build-fuzz/meson-logs/fuzz-run.log rc=0
  CC=clang setup build-fuzz -Dfuzzing=true -Db_lundef=false -Dwerror=true -Dtls=enabled || return
  meson compile -C build-fuzz tests/fuzz/fuzz-client tests/fuzz/fuzz-record || return
  run_tests build-fuzz fuzz --no-rebuild --suite fuzz || return
  rm -rf "$work" "$art"
  mkdir -p "$work" "$art"
  cp tests/fuzz/corpus/* "$work"/
  echo "fuzz: libFuzzer for ${fuzz_seconds}s, log in $log"
  build-fuzz/tests/fuzz/fuzz-client -max_total_time="$fuzz_seconds" -timeout=10 \
    -rss_limit_mb=2048 -dict=tests/fuzz/nbd.dict -artifact_prefix="$art/" \
    -print_final_stats=1 "$work" >"$log" 2>&1 || rc=$?
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|peak_rss_mb)' \
    "$log" || true
  if ((rc != 0)) || [[ -n $(ls -A "$art") ]]; then
    tail -n 80 "$log"
    echo "fuzz-run: FAILED (libFuzzer exit $rc); inputs: $(ls -A "$art" | tr '\n' ' ')"
    echo "  add each to tests/fuzz/crashes/ once fixed; replay: build-fuzz/tests/fuzz/fuzz-client FILE"
    total_fail=$((total_fail + 1))
    return 1
  fi
  echo "fuzz-run: no crash, leak or timeout"
  total_pass=$((total_pass + 1))
}

# gnbd through its bindings: GJS and Python cannot load a sanitizer-built
# library ("ASan runtime does not come first"), so they get a build of their
# own, without a sanitizer, where introspection, the reference and the VAPI
# are required (enabled, not auto: a missing tool fails the pass).  Runs the
# GJS and Python tests, `gi-docgen check`, the Vala program, the gnbd
# examples (C, GJS, Python) and the install checks (pkg-config gnbd-1.0,
# the typelib from /usr/bin/python3).
bindings_suites=(bindings docs vala gnbd-examples install)
pass_bindings () {
  local suites=() s
  setup build-bindings -Dwerror=true -Dtls=enabled -Dgnbd=enabled -Dintrospection=enabled \
    -Ddocs=enabled -Dvapi=enabled || return
  meson compile -C build-bindings || return
  for s in "${bindings_suites[@]}"; do suites+=(--suite "$s"); done
  required_suites="${bindings_suites[*]}" run_tests build-bindings bindings --timeout-multiplier 2 \
    "${suites[@]}"
}

main () {
  local passes=("$@")
  ((${#passes[@]})) || passes=("${default_passes[@]}")

  bash "$root/scripts/deps.sh"

  for p in "${passes[@]}"; do
    if ! declare -F "pass_$p" >/dev/null; then
      echo "test.sh: unknown pass '$p' (asan, tsan, valgrind, fuzz)" >&2
      exit 2
    fi
    echo "=== test.sh: pass $p ==="
    local fails_before=$total_fail
    if ! "pass_$p"; then
      failed_passes+=("$p")
      # A pass that failed before or besides its tests counts as one failure.
      if ((total_fail == fails_before)); then
        echo "$p: failed outside the tests (setup, build or test runner)"
        total_fail=$((total_fail + 1))
      fi
    fi
  done

  ((${#failed_passes[@]} == 0)) || echo "test.sh: failed passes: ${failed_passes[*]}"
  echo "total: $total_pass passed, $total_fail failed, $total_skip skipped;" \
    "skips: $total_allowed allowed, $total_denied not allowed"
  ((${#failed_passes[@]} == 0 && total_fail == 0))
}

main "$@"
