#!/bin/bash
# install-check: libnbd-core as a user gets it.  Installs the build into a
# private destdir, then builds examples/write-read.c — a libnbd program —
# with nothing but `pkg-config --cflags --libs libnbd-core`, checks that the
# header it got is libnbd-core's (not /usr/include/libnbd.h), and runs it.
# Arguments: BUILD_ROOT SOURCE_ROOT SANITIZE (meson's b_sanitize value).
set -euo pipefail
build=$1 src=$2 sanitize=$3
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT

echo "1..4"
meson install -C "$build" --destdir "$dest" --no-rebuild --quiet
pc=$(dirname "$(find "$dest" -name libnbd-core.pc | head -n 1)")
[[ -f $pc/libnbd-core.pc ]] && echo "ok 1 - libnbd-core.pc installed" || { echo "not ok 1 - no libnbd-core.pc"; exit 1; }

export PKG_CONFIG_SYSROOT_DIR=$dest PKG_CONFIG_PATH=$pc
flags=$(pkg-config --cflags --libs libnbd-core)
san=()
[[ $sanitize != none && -n $sanitize ]] && san=(-fsanitize="$sanitize")
printf '#include <libnbd.h>\n#ifndef LIBNBD_CORE\n#error not libnbd-core\n#endif\nint main (void) { return 0; }\n' > "$dest/which.c"
if cc "${san[@]}" "$dest/which.c" $flags -o "$dest/which"; then
  echo "ok 2 - #include <libnbd.h> with pkg-config finds libnbd-core's header"
else
  echo "not ok 2 - the header found is not libnbd-core's"; exit 1
fi
if cc "${san[@]}" -D_GNU_SOURCE "$src/examples/write-read.c" $flags -o "$dest/write-read"; then
  echo "ok 3 - a libnbd program builds unchanged against the installed library"
else
  echo "not ok 3 - write-read.c does not build against the installed library"; exit 1
fi
libdir=$(dirname "$(find "$dest" -name 'libnbd-core.so.0' | head -n 1)")
if LD_LIBRARY_PATH=$libdir "$dest/write-read" 4 >&2; then
  echo "ok 4 - and runs: writes and reads back through nbdkit"
else
  echo "not ok 4 - write-read failed against the installed library"; exit 1
fi
