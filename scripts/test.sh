#!/bin/bash
# test.sh: the whole test suite, as CI runs it (.ci/run calls exactly this).
#
# Installs what is missing (scripts/deps.sh), then for each enabled pass
# configures a build directory under the repository root, builds it with
# -Dwerror=true and runs `meson test`.  Any sanitizer report is fatal.
# Exits non-zero if any pass fails; ends with one "total: N passed, N failed"
# line.
#
# Passes (run all enabled ones, or name some: bash scripts/test.sh asan):
#   asan      build-asan, -Db_sanitize=address,undefined      enabled
#   tsan      build-tsan, -Db_sanitize=thread                 enabled: the suites
#             where threads meet a handle (writer, examples, aio, compat, tls,
#             gnbd)
#   valgrind  build-valgrind (no sanitizer), the 'hostile' suite    enabled
#             under valgrind (memcheck; definite and indirect leaks fatal)
#   fuzz      build-fuzz, clang, -Dfuzzing=true: the 'fuzz' suite        enabled
#             (seed corpus and crashes replayed), then libFuzzer for
#             FUZZ_SECONDS (150) on a copy of the seed corpus
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

# The passes that work today.  A later issue enables one by adding it here.
default_passes=(asan tsan valgrind fuzz)

export ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1:print_stacktrace=1
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
export TSAN_OPTIONS=halt_on_error=1:abort_on_error=1:second_deadlock_stack=1

total_pass=0
total_fail=0
total_skip=0
failed_passes=()

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

# count DIR NAME: add the results of pass NAME (its meson test log in DIR)
# to the totals and print "NAME: N passed, N failed, N skipped".
count () {
  local dir=$1 name=$2 log
  local pass=0 fail=0 skip=0
  # meson appends the wrapper's name to the log base (testlog-valgrind-valgrind).
  log=$(ls -t "$dir/meson-logs/testlog-$name"*.json 2>/dev/null | head -n 1 || true)
  if [[ -n $log ]]; then
    read -r pass fail skip < <(python3 - "$log" <<'EOF'
import json, sys
p = f = s = 0
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"):
        p += 1
    elif r == "SKIP":
        s += 1
    else:
        f += 1
print(p, f, s)
EOF
    )
  fi
  echo "$name: $pass passed, $fail failed, $skip skipped"
  total_pass=$((total_pass + pass))
  total_fail=$((total_fail + fail))
  total_skip=$((total_skip + skip))
}

# run_tests DIR NAME [MESON_TEST_ARGS...]
run_tests () {
  local dir=$1 name=$2 rc=0
  shift 2
  rm -f "$dir/meson-logs/testlog-$name"*.json
  meson test -C "$dir" --print-errorlogs --logbase "testlog-$name" "$@" || rc=$?
  count "$dir" "$name"
  return $rc
}

# Each pass chains its steps with || return: it runs inside `if`, where
# set -e does not apply.
pass_asan () {
  setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true -Dgnbd=enabled || return
  meson compile -C build-asan || return
  run_tests build-asan asan --timeout-multiplier 2
}

# ThreadSanitizer: its own build, since it cannot be combined with ASan.
# Only the suites where threads meet a handle (the concurrent writer and
# the examples, the aio deadlock tests, the libnbd programs with threads,
# TLS with the writer, gnbd, and the gnbd command, whose copies run
# GnbdCopy's threads under load; its tests copy less under TSan):
# the single-threaded rest gains nothing from TSan and would double the
# pass's time.  Any report fails its test (halt_on_error).
# gnbd:gnbd is the suite 'gnbd' of project 'gnbd': a bare 'gnbd' names the
# whole project to meson and would select every test.
tsan_suites=(writer examples aio compat tls gnbd:gnbd tools)
pass_tsan () {
  local suites=() s
  setup build-tsan -Db_sanitize=thread -Db_lundef=false -Dwerror=true -Dgnbd=enabled || return
  meson compile -C build-tsan || return
  for s in "${tsan_suites[@]}"; do suites+=(--suite "$s"); done
  run_tests build-tsan tsan --timeout-multiplier 3 "${suites[@]}"
}

# valgrind needs a build without sanitizers; it uses build-valgrind and
# meson's own wrapper (--wrapper), with leaks and errors fatal.  Only the
# 'hostile' suite (the client against a server that breaks the protocol,
# where error paths leak if anything does): its tests take seconds, the
# build is most of the pass.
pass_valgrind () {
  setup build-valgrind -Dwerror=true || return
  meson compile -C build-valgrind || return
  run_tests build-valgrind valgrind --suite hostile --timeout-multiplier 10 \
    --wrapper 'valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect'
}

# libFuzzer: its own build with clang, where tests/fuzz builds the harness
# against the core compiled again with -fsanitize=fuzzer-no-link,address,
# undefined.  First the 'fuzz' suite (every seed and every input in
# tests/fuzz/crashes/ replayed once; the recorder against real servers),
# then a bounded run on a copy of the seed corpus: a crash, leak, timeout or
# out-of-memory makes libFuzzer exit non-zero and leave the input in
# build-fuzz/fuzz-artifacts/, and fails the pass.
fuzz_seconds=${FUZZ_SECONDS:-150}
pass_fuzz () {
  local work=build-fuzz/fuzz-corpus art=build-fuzz/fuzz-artifacts
  local log=build-fuzz/meson-logs/fuzz-run.log rc=0
  CC=clang setup build-fuzz -Dfuzzing=true -Db_lundef=false || return
  meson compile -C build-fuzz || return
  run_tests build-fuzz fuzz --suite fuzz || return
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
  echo "total: $total_pass passed, $total_fail failed, $total_skip skipped"
  ((${#failed_passes[@]} == 0 && total_fail == 0))
}

main "$@"
