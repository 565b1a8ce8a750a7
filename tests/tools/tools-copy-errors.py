#!/usr/bin/python3
"""tools-copy-errors: a copy never fails silently (CVE-2022-0485 in
nbdcopy).  Reads that fail from a known offset on, every write refused,
reads and writes failing at random (nbdkit's error filter), on either side and
for both kinds of server: exit 1, the message names the side, an offset
where the failure is, and the cause; the progress lines end with
status=failed and never claim bytes past the failure; the servers run as
[ CMD ] are stopped."""
import re

import tooltest as t

t.start()
M = 1 << 20


def pidfile(name):
    return ["-P", t.path(name)]


def server_gone(name):
    with open(t.path(name)) as f:
        pid = int(f.read())
    return not t.pid_running(pid)


def check_failure(what, side, argv, cause, lo, hi):
    c = t.Copy(*argv)
    code = c.wait()
    m = re.search(r"gnbd copy: (.*)at offset (\d+): (.*)", c.err)
    t.ok(code == 1 and m is not None, f"{what}: exit 1 with a message", f"exit {code}: {c.err}")
    if not m:
        return
    t.ok(side in m[1].lower(), f"{what}: names the {side}", m[0])
    off = int(m[2])
    t.ok(lo <= off < hi, f"{what}: an offset where the failure is ({off})")
    t.ok(cause in m[3], f"{what}: the cause, {cause!r}", m[3])
    last = c.last()
    t.ok(last and last["status"] == "failed" and last["copied"] <= lo,
         f"{what}: the last progress line says failed, and no more than {lo} bytes", last)


# Reads fail from 32 MiB on (nbdkit's eval plugin), the source a [ CMD ].
fail_at = 32 * M
check_failure("reads fail from 32 MiB", "source",
              ["[", "nbdkit", *pidfile("eval.pid"), "eval", "get_size=echo 64M",
               f"pread=if [ $4 -ge {fail_at} ]; then echo 'EIO boom' >&2; exit 1; fi; "
               "head -c $3 /dev/zero", "]", "null:"],
              "Input/output error", fail_at, 64 * M)
t.ok(server_gone("eval.pid"), "the [ nbdkit ] source was stopped")

# Every write refused: ENOSPC on an nbdkit destination, a [ CMD ].
check_failure("every write refused (ENOSPC)", "destination",
              ["[", "nbdkit", "pattern", "64M", "]",
               "[", "nbdkit", *pidfile("full.pid"), "--filter=error", "memory", "64M",
               "error-pwrite=ENOSPC", "error-pwrite-rate=100%", "]"],
              "No space left on device", 0, 64 * M)
t.ok(server_gone("full.pid"), "the [ nbdkit ] destination was stopped")

# qemu-nbd as the failing destination: a read-only export.
img = t.path("ro.img")
with open(img, "wb") as f:
    f.truncate(16 * M)
q = t.qemu_nbd("-r", "-f", "raw", img)
c = t.Copy("[", "nbdkit", "pattern", "16M", "]", q.uri())
code = c.wait()
t.ok(code == 1 and "destination" in c.err.lower(),
     "qemu-nbd read-only as the destination: exit 1, names the destination", c.err)
q.stop()

# Errors at random on either side, by URI: never exit 0.  (256 or 1024
# requests of 256 KiB: the chance that none fails is below 1e-9.)
SIZE, RATE = ("64M", "8%") if t.SLOW else ("256M", "2%")
src = t.nbdkit("--filter=error", "pattern", SIZE, "error-pread=EIO", f"error-pread-rate={RATE}")
c = t.Copy("-R", "8", src.uri(), "null:")
code = c.wait()
t.ok(code == 1 and re.search(r"source .*at offset \d+: .*Input/output error", c.err),
     f"{RATE} of reads fail: exit 1, source, offset, EIO", c.err)
src.stop()
dst = t.nbdkit("--filter=error", "memory", SIZE, "error-pwrite=EIO",
               f"error-pwrite-rate={RATE}")
c = t.Copy("[", "nbdkit", "pattern", SIZE, "]", dst.uri())
code = c.wait()
t.ok(code == 1 and re.search(r"destination .*at offset \d+: .*Input/output error", c.err),
     f"{RATE} of writes fail: exit 1, destination, offset, EIO", c.err)
dst.stop()

t.done()
