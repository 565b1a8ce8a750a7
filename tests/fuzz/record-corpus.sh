#!/bin/bash
# record-corpus.sh: re-record the seed corpus — every fuzz-record scenario
# against its real server, then the few seeds derive-seeds.py makes from
# those recordings.  `meson compile -C BUILDDIR fuzz-corpus` runs it.
#
#   record-corpus.sh FUZZ_RECORD CORPUS_DIR
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
"$1" "$2" >/dev/null
/usr/bin/python3 "$here/derive-seeds.py" "$2"
ls "$2" | wc -l | sed 's/$/ seeds/'
