#!/bin/bash
# uninstalled-check: libnbd-core straight from a build tree, as a developer
# uses it before installing: PKG_CONFIG_PATH=BUILD/meson-uninstalled.  A
# program built with `pkg-config --cflags --libs libnbd-core` there must get
# libnbd-core's own header (libnbd-core/include/libnbd.h in the source tree),
# never /usr/include/libnbd.h, which would compile but describe another
# library.  Then examples/write-read.c builds against it and runs.
# Arguments: BUILD_ROOT SOURCE_ROOT SANITIZE (meson's b_sanitize value).
set -euo pipefail
build=$(realpath "$1") src=$(realpath "$2") sanitize=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "1..4"
export PKG_CONFIG_PATH=$build/meson-uninstalled
unset PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_DISABLE_UNINSTALLED
if pkg-config --uninstalled libnbd-core; then
  echo "ok 1 - pkg-config finds libnbd-core-uninstalled.pc in $PKG_CONFIG_PATH"
else
  echo "not ok 1 - no uninstalled libnbd-core in $PKG_CONFIG_PATH"; exit 1
fi
cflags=$(pkg-config --cflags libnbd-core)
libs=$(pkg-config --libs libnbd-core)
san=()
[[ $sanitize != none && -n $sanitize ]] && san=(-fsanitize="$sanitize")

# The header the preprocessor actually opens for #include <libnbd.h>.
want=$src/libnbd-core/include/libnbd.h
printf '#include <libnbd.h>\n' > "$tmp/which.c"
# shellcheck disable=SC2086 # pkg-config output is a list of flags
got=$(cc -E -M $cflags "$tmp/which.c" | tr -s ' \\\n' '\n' | grep '/libnbd\.h$' | head -n 1 || true)
[[ -n $got ]] && got=$(realpath "$got")
if [[ $got == "$want" ]]; then
  echo "ok 2 - #include <libnbd.h> opens $want"
else
  echo "not ok 2 - #include <libnbd.h> opens $got, not $want (Cflags: $cflags)"; exit 1
fi

# shellcheck disable=SC2086
if cc "${san[@]}" -D_GNU_SOURCE "$src/examples/write-read.c" $cflags $libs -o "$tmp/write-read"; then
  echo "ok 3 - a libnbd program builds unchanged against the build tree"
else
  echo "not ok 3 - write-read.c does not build against the build tree"; exit 1
fi
if LD_LIBRARY_PATH=$build/libnbd-core "$tmp/write-read" 4 >&2; then
  echo "ok 4 - and runs: writes and reads back through nbdkit"
else
  echo "not ok 4 - write-read failed against the build tree's library"; exit 1
fi
