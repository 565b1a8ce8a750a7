#!/bin/bash
# fuzz-replay.sh: the crash-regression runner.  Runs the libFuzzer harness
# once on every file in the given directories (the seed corpus, and the
# crashes found so far in crashes/), one process per file, and speaks TAP:
# an input that crashes, leaks, times out or trips a sanitizer fails.
#
#   fuzz-replay.sh FUZZ_CLIENT DIR...
set -uo pipefail

exe=$1
shift
files=()
for d in "$@"; do
  [[ -d $d ]] || continue
  while IFS= read -r -d '' f; do
    files+=("$f")
  done < <(find "$d" -maxdepth 1 -type f ! -name '.*' ! -name 'README*' -print0 | sort -z)
done

echo "1..${#files[@]}"
n=0
for f in "${files[@]}"; do
  n=$((n + 1))
  if out=$("$exe" -timeout=10 -rss_limit_mb=2048 "$f" 2>&1); then
    echo "ok $n - $(basename "$(dirname "$f")")/$(basename "$f")"
  else
    echo "not ok $n - $f"
    printf '%s\n' "$out" | tail -n 80 | sed 's/^/# /'
  fi
done
