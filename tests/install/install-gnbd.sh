#!/bin/bash
# install-gnbd: gnbd as a user gets it after `meson install`.  Installs the
# build into a private destdir, then:
#  - builds examples/gio-copy.c with nothing but
#    `pkg-config --cflags --libs gnbd-1.0` and runs it against nbdkit;
#  - when the build has introspection (never with a sanitizer), checks the
#    GIR and the typelib are installed, and that /usr/bin/python3 does
#    gi.require_version('Gnbd', '1.0') with GI_TYPELIB_PATH and
#    LD_LIBRARY_PATH pointing into the destdir (and loads that typelib, not
#    another), then talks to nbdkit through it;
#  - when the build has the VAPI, checks it is installed.
# What the build does not have is not planned (no TAP skips: the build's
# options decide, and the bindings pass requires both).
# The installed .pc files name the configured prefix; a copy of each with
# the prefix moved into the destdir stands in for a real install there
# (PKG_CONFIG_SYSROOT_DIR would also move gio-2.0's system paths).
# Arguments: BUILD_ROOT SOURCE_ROOT SANITIZE (meson's b_sanitize value)
#            GIR (yes/no) VAPI (yes/no)
set -euo pipefail
build=$1 src=$2 sanitize=$3 gir=$4 vapi=$5
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT

plan=4
[[ $gir == yes ]] && plan=$((plan + 1))
[[ $vapi == yes ]] && plan=$((plan + 1))
echo "1..$plan"
n=4
meson install -C "$build" --destdir "$dest" --no-rebuild --quiet

pcfile=$(find "$dest" -name gnbd-1.0.pc | head -n 1)
if [[ -n $pcfile && -f $(dirname "$pcfile")/libnbd-core.pc ]]; then
  echo "ok 1 - gnbd-1.0.pc installed"
else
  echo "not ok 1 - no gnbd-1.0.pc (or no libnbd-core.pc beside it)"; exit 1
fi
prefix=$(sed -n 's/^prefix=//p' "$pcfile")
mkdir "$dest/pc"
for pc in "$(dirname "$pcfile")"/*.pc; do
  sed "s|^prefix=.*|prefix=$dest$prefix|" "$pc" > "$dest/pc/$(basename "$pc")"
done
export PKG_CONFIG_PATH=$dest/pc
libdir=$(pkg-config --variable=libdir gnbd-1.0)

if [[ -f $(pkg-config --variable=includedir gnbd-1.0)/gnbd-1.0/gnbd/gnbd.h ]]; then
  echo "ok 2 - <gnbd/gnbd.h> installed under includedir/gnbd-1.0"
else
  echo "not ok 2 - no gnbd-1.0/gnbd/gnbd.h under $(pkg-config --variable=includedir gnbd-1.0)"; exit 1
fi

san=()
[[ $sanitize != none && -n $sanitize ]] && san=(-fsanitize="$sanitize")
# -rpath-link: the linker looks for libgnbd's own libnbd-core.so.0 in the
# system's directories, where a real install into the prefix would be.
# shellcheck disable=SC2046  # pkg-config's output is a list of words
if cc "${san[@]}" "$src/examples/gio-copy.c" $(pkg-config --cflags --libs gnbd-1.0) \
    -Wl,-rpath-link,"$libdir" -o "$dest/gio-copy"; then
  echo "ok 3 - a GIO program builds with pkg-config --cflags --libs gnbd-1.0 alone"
else
  echo "not ok 3 - gio-copy.c does not build against the installed gnbd"; exit 1
fi
if LD_LIBRARY_PATH=$libdir "$src/tests/servers/with-nbdkit.py" \
    --server src 'pattern size=4M' --server dst 'memory size=4M' \
    --expect '^verified' -- "$dest/gio-copy" @src@ @dst@ >&2; then
  echo "ok 4 - and copies between two nbdkit exports, verified"
else
  echo "not ok 4 - gio-copy failed against the installed library"; exit 1
fi

if [[ $gir == yes ]]; then
  n=$((n + 1))
  typelibdir=$libdir/girepository-1.0
  girdir=$dest$prefix/share/gir-1.0
  if [[ -f $typelibdir/Gnbd-1.0.typelib && -f $girdir/Gnbd-1.0.gir ]]; then
    :
  else
    echo "not ok $n - Gnbd-1.0.typelib or Gnbd-1.0.gir not installed"; exit 1
  fi
  if GI_TYPELIB_PATH=$typelibdir LD_LIBRARY_PATH=$libdir /usr/bin/python3 - "$typelibdir" <<'EOF' >&2
import sys
import gi
gi.require_version("GIRepository", "2.0")
gi.require_version("Gnbd", "1.0")
from gi.repository import GIRepository, Gnbd
path = GIRepository.Repository.get_default().get_typelib_path("Gnbd")
assert path.startswith(sys.argv[1]), "the typelib came from %s" % path
c = Gnbd.Client()
c.connect_command(["nbdkit", "-s", "--exit-with-parent", "memory", "size=1M"], None)
assert c.props.size == 1 << 20, c.props.size
c.shutdown(None)
print("python: Gnbd from", path)
EOF
  then
    echo "ok $n - python3: gi.require_version('Gnbd', '1.0') finds the installed typelib and library"
  else
    echo "not ok $n - python3 cannot use the installed Gnbd typelib"; exit 1
  fi
fi

if [[ $vapi == yes ]]; then
  n=$((n + 1))
  if [[ -f $dest$prefix/share/vala/vapi/gnbd-1.0.vapi ]]; then
    echo "ok $n - gnbd-1.0.vapi installed"
  else
    echo "not ok $n - no share/vala/vapi/gnbd-1.0.vapi"; exit 1
  fi
fi
