#!/bin/bash
# main-job.sh: build everything (release) and run the main job.
#
# For now the main job is examples/write-read: it starts its own nbdkit,
# writes 64 MiB of a pattern through libnbd-core and reads it back,
# verifying.  The `gnbd` tool copying an image will replace it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/deps.sh

if [[ -f build-release/meson-private/coredata.dat ]]; then
  meson setup --reconfigure build-release --buildtype=release
else
  rm -rf build-release
  meson setup build-release --buildtype=release
fi
meson compile -C build-release

./build-release/examples/write-read "$@"
