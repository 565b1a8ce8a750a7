#!/bin/bash
# deps.sh: the one list of Debian 12 packages this project needs, installed
# when something is missing.  README's commands, scripts/test.sh,
# scripts/main-job.sh and .ci/run all go through here, so they cannot drift.
#
#   bash scripts/deps.sh           install what is missing (quiet if nothing is)
#   bash scripts/deps.sh --list    print the list, one package a line
set -euo pipefail

packages=(
  # build
  meson ninja-build pkg-config gcc
  # fuzzing and sanitizers (ASan/UBSan/TSan runtimes for clang)
  clang libclang-rt-14-dev
  # core TLS: GnuTLS, and certtool/psktool for the TLS tests
  libgnutls28-dev gnutls-bin
  # test servers: nbdkit, qemu-nbd/qemu-img/qemu-io, nbd-server
  nbdkit qemu-utils nbd-server
  # the reference library: man pages, nbdinfo/nbdcopy, benchmark baseline
  libnbd-dev libnbd-bin
  # diagnostics
  strace valgrind
  # gnbd (GLib/GIO), its GIR and typelib, the GJS and Python tests, the API
  # docs and the VAPI
  libglib2.0-dev gobject-introspection libgirepository1.0-dev gjs python3-gi gi-docgen valac
)

if [[ ${1:-} == --list ]]; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  [[ $status == ii* ]] || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

if ((EUID == 0)); then
  sudo=()
elif command -v sudo >/dev/null; then
  sudo=(sudo)
else
  echo "deps.sh: missing ${missing[*]}, and not root and no sudo to install them" >&2
  exit 1
fi

echo "deps.sh: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
