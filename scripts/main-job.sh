#!/bin/bash
# main-job.sh: build the gnbd command (release) and show it at work.
#
#   bash scripts/main-job.sh            the demo below
#   bash scripts/main-job.sh SRC DST    gnbd copy --progress -v SRC DST instead
#
# The demo needs no server of yours: the source is nbdkit's sparse-random
# disk (2 GiB, about 10% data, the rest holes: the shape of a real VM
# image), run by gnbd itself for the duration.  gnbd shows what the server
# says and the disk's map, copies it into a local sparse image with a live
# progress bar, and the image is then checked against the source: its
# SHA-256 against the one of the source as Debian's nbdcopy (libnbd) reads
# it, and its holes (allocated size far below the apparent size).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/deps.sh

if [[ -f build-release/meson-private/coredata.dat ]]; then
  meson setup --reconfigure build-release --buildtype=release -Dgnbd=enabled >/dev/null
else
  rm -rf build-release
  meson setup build-release --buildtype=release -Dgnbd=enabled >/dev/null
fi
meson compile -C build-release tools/gnbd
gnbd=$PWD/build-release/tools/gnbd

if (($# > 0)); then
  exec "$gnbd" copy --progress -v "$@"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gnbd-main-job-XXXXXX")
trap 'rm -rf "$work"' EXIT
image=$work/disk.img
source=("[" nbdkit sparse-random 2G seed=2024 "]")

step () {
  printf '\n\033[1m$ %s\033[0m\n' "$*"
}

step gnbd info "${source[@]}"
"$gnbd" info "${source[@]}"

step gnbd map --totals "${source[@]}"
"$gnbd" map --totals "${source[@]}"

step gnbd copy --progress -v "${source[@]}" "$image"
"$gnbd" copy --progress -v "${source[@]}" "$image"

step "checking the image against the source (read by nbdcopy)"
want=$(nbdcopy -- "${source[@]}" - | sha256sum | cut -d' ' -f1)
got=$(sha256sum "$image" | cut -d' ' -f1)
apparent=$(stat -c %s "$image")
allocated=$(($(stat -c %b "$image") * $(stat -c %B "$image")))
echo "source SHA-256: $want"
echo "image  SHA-256: $got"
echo "image: $apparent bytes, of which $allocated allocated (the holes stayed holes)"
if [[ $want != "$got" ]]; then
  echo "main-job: the image differs from the source" >&2
  exit 1
fi
if ((allocated * 2 > apparent)); then
  echo "main-job: the image is not sparse" >&2
  exit 1
fi
echo "main-job: the copy is exact"
