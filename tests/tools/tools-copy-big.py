#!/usr/bin/python3
"""tools-copy-big: a 1 GiB image along a chain of copies, pattern -> memory
-> file -> NBD (nbdkit's pattern, an nbdkit memory disk, a local file,
qemu-nbd on a raw file), each step checked against the pattern's SHA-256
computed here; the reading side of each check is Debian's nbdcopy or the
file itself, never gnbd.  (64 MiB under ThreadSanitizer.)"""
import os

import tooltest as t

t.start()
SIZE = (64 << 20) if t.SLOW else (1 << 30)
want = t.sha256_pattern(SIZE)

mem = t.nbdkit("memory", str(SIZE))
p = t.gnbd("copy", "[", "nbdkit", "pattern", str(SIZE), "]", mem.uri())
t.eq(p.returncode, 0, f"[ nbdkit pattern {SIZE} ] -> nbdkit memory: exit 0")
t.eq(t.sha256_nbd(mem.uri()), want, "the memory disk holds the pattern")

img = t.path("copy.img")
p = t.gnbd("copy", mem.uri(), img)
t.eq(p.returncode, 0, "nbdkit memory -> a new local file: exit 0")
t.eq(os.path.exists(img) and os.path.getsize(img), SIZE, "the file has the source's size")
t.eq(os.path.exists(img) and t.sha256_file(img), want, "the file holds the pattern")
mem.stop()

out = t.path("out.raw")
with open(out, "wb") as f:
    f.truncate(SIZE)
q = t.qemu_nbd("-f", "raw", "--cache=none", "--aio=threads", out)
p = t.gnbd("copy", "--flush", img, q.uri())
t.eq(p.returncode, 0, "the local file -> qemu-nbd (raw file), --flush: exit 0")
q.stop()
t.eq(t.sha256_file(out), want, "qemu-nbd's file holds the pattern")

t.done()
