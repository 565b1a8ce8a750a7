#!/usr/bin/python3
"""tools-copy-stdio: '-' as either side.  An export streamed to stdout into
a pipe, a pipe and a regular file on stdin streamed to an export, the
size of a stream source learnt at its end (progress total), stdout on a
terminal refused, and a reader that goes away failing the copy loudly
(destination, offset) instead of killing it."""
import os
import pty
import subprocess

import tooltest as t

t.start()
SIZE = (16 << 20) if t.SLOW else (128 << 20)
want = t.sha256_pattern(SIZE)
pattern = ["[", "nbdkit", "pattern", str(SIZE), "]"]

# Export -> stdout (a pipe).
p = t.gnbd("copy", *pattern, "-")
t.eq(p.returncode, 0, "[ nbdkit pattern ] -> stdout: exit 0")
import hashlib
t.eq(hashlib.sha256(p.stdout).hexdigest(), want, "stdout carries the pattern")

# A pipe on stdin -> export.
img = t.path("pattern.img")
with open(img, "wb") as f:
    f.write(p.stdout)
mem = t.nbdkit("memory", str(SIZE))
cat = subprocess.Popen(["cat", img], stdout=subprocess.PIPE)
c = t.Copy("-", mem.uri(), stdin=cat.stdout)
cat.stdout.close()
t.eq(c.wait(), 0, "a pipe on stdin -> nbdkit memory: exit 0")
cat.wait(t.WAIT)
t.eq(t.sha256_nbd(mem.uri()), want, "the export holds what came through the pipe")
first = t.parse_progress(c.lines[0])
t.eq(first and first["total"], 0, "a stream's size is unknown at first (total=0)")
t.eq(c.last() and (c.last()["copied"], c.last()["total"], c.last()["status"]),
     (SIZE, SIZE, "done"), "and known at its end")
mem.stop()

# A regular file on stdin.
mem = t.nbdkit("memory", str(SIZE))
with open(img, "rb") as f:
    c = t.Copy("-", mem.uri(), stdin=f)
    t.eq(c.wait(), 0, "a file on stdin -> nbdkit memory: exit 0")
t.eq(t.sha256_nbd(mem.uri()), want, "the export holds the file")
mem.stop()

# stdout on a terminal: refused before any server is run.
master, slave = pty.openpty()
pidfile = t.path("never.pid")
p = t.run([t.GNBD, "copy", "[", "nbdkit", "-P", pidfile, "pattern", "1M", "]", "-"],
          stdout=slave)
os.close(slave)
os.close(master)
t.ok(p.returncode == 3 and "terminal" in p.err, "stdout on a terminal: exit 3, says why", p.err)
t.ok(not os.path.exists(pidfile), "and the source server was never started")

# The reader goes away after a few bytes: the copy fails, naming the
# destination, and does not hang.
big = ["[", "nbdkit", "pattern", "1G", "]"]
gp = subprocess.Popen([t.GNBD, "copy", *big, "-"], stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)
head = gp.stdout.read(4096)
gp.stdout.close()
err = gp.stderr.read().decode()
code = gp.wait(t.WAIT)
t.eq(len(head), 4096, "the reader got the first bytes")
t.ok(code == 1 and "destination" in err and "offset" in err,
     "the reader went away: exit 1, the destination and the offset named", err)

t.done()
