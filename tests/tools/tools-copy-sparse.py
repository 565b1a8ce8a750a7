#!/usr/bin/python3
"""tools-copy-sparse: holes survive gnbd copy.  A sparse qcow2 (through
qemu-nbd) copied to an nbdkit memory disk, to a local file and to another
qcow2: the contents are equal, the destination's map shows holes (or
zeroes) where the source had them, and the progress lines count them as
skipped.  nbdkit's sparse-random plugin likewise.  Zero detection finds
zeroes that the source calls data (-S, --sparse 0 turns it off), and
nbdkit's log filter shows --destination-is-zero sending no zero request
and --no-extents asking no block status."""
import errno
import json
import os
import subprocess

import tooltest as t

t.start()
M = 1 << 20
SIZE = (64 * M) if t.SLOW else (1 << 30)
ALIGN = 64 * 1024   # a qcow2 cluster; nbdkit memory pages are smaller


def src_map(uri):
    return t.nbdinfo_json("--map", "--", uri)


def zero_ranges(extents):
    """The ranges that read as zeroes (flag 2), aligned inwards to ALIGN."""
    out = []
    for e in extents:
        if e["type"] & 2:
            a = -(-e["offset"] // ALIGN) * ALIGN
            b = (e["offset"] + e["length"]) // ALIGN * ALIGN
            if b > a:
                out.append((a, b))
    return out


def covered(extents, ranges, mask):
    """Whether every byte of @ranges has a type with @mask set in @extents."""
    for a, b in ranges:
        for e in extents:
            lo, hi = max(a, e["offset"]), min(b, e["offset"] + e["length"])
            if lo < hi and not e["type"] & mask:
                return False
    return True


def copy_checked(name, src, dst, *opts):
    c = t.Copy(*opts, *src, *dst)
    code = c.wait()
    t.eq(code, 0, f"{name}: exit 0")
    return c.last()


# A sparse qcow2: data at the start, in the middle and at the end, an
# explicit zero write, and unallocated space.
qcow = t.path("src.qcow2")
t.run(["qemu-img", "create", "-f", "qcow2", qcow, str(SIZE)], stdout=subprocess.DEVNULL)
t.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 16M 2M",
       "-c", "write -z 24M 4M", "-c", f"write -P 0x33 {SIZE - M} 1M", qcow],
      stdout=subprocess.DEVNULL)
src = t.qemu_nbd("-r", "-f", "qcow2", qcow)
smap = src_map(src.uri())
zeroes = zero_ranges(smap)
zero_bytes = sum(e["length"] for e in smap if e["type"] & 2)
want = t.sha256_nbd(src.uri())
t.ok(zero_bytes >= SIZE - 8 * M, "the source is mostly holes", smap)

# -> nbdkit memory
mem = t.nbdkit("memory", str(SIZE))
last = copy_checked("qcow2 -> nbdkit memory", [src.uri()], [mem.uri()])
t.eq(t.sha256_nbd(mem.uri()), want, "qcow2 -> memory: same contents")
t.eq(last and last["skipped"], zero_bytes,
     "qcow2 -> memory: the holes and zeroes of the source were skipped, not written as data")
dmap = src_map(mem.uri())
t.ok(covered(dmap, zeroes, 1), "qcow2 -> memory: the destination's map has holes there",
     json.dumps(dmap))
mem.stop()

# -> a local file
img = t.path("dst.raw")
copy_checked("qcow2 -> local file", [src.uri()], [img])
t.eq(t.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", qcow, img]).returncode, 0,
     "qcow2 -> file: qemu-img compare finds them equal")
st = os.stat(img) if os.path.exists(img) else None
t.ok(st and st.st_blocks * 512 <= 8 * M, "qcow2 -> file: the file is sparse",
     st and f"{st.st_blocks * 512} bytes allocated")


def next_data(fd, offset):
    """Where data starts at or after @offset (the end if none: ENXIO)."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise
        return os.fstat(fd).st_size


holes_kept = False
if os.path.exists(img):
    with open(img, "rb") as f:
        holes_kept = all(next_data(f.fileno(), a) >= b for a, b in zeroes)
t.ok(holes_kept, "qcow2 -> file: SEEK_DATA skips every hole of the source")

# -> another qcow2 through qemu-nbd
dst = t.path("dst.qcow2")
t.run(["qemu-img", "create", "-f", "qcow2", dst, str(SIZE)], stdout=subprocess.DEVNULL)
copy_checked("qcow2 -> qcow2, both through qemu-nbd",
             ["[", "qemu-nbd", "-r", "-f", "qcow2", qcow, "]"],
             ["[", "qemu-nbd", "-f", "qcow2", dst, "]"])
t.eq(t.run(["qemu-img", "compare", qcow, dst]).returncode, 0,
     "qcow2 -> qcow2: qemu-img compare finds them equal")
dmap = t.nbdinfo_json("--map", "--", "[", "qemu-nbd", "-r", "-f", "qcow2", dst, "]")
t.ok(covered(dmap, zeroes, 2), "qcow2 -> qcow2: the destination reads zeroes there, unwritten",
     json.dumps(dmap))
info = json.loads(t.run(["qemu-img", "info", "--output=json", dst]).stdout)
t.ok(info["actual-size"] <= 16 * M, "qcow2 -> qcow2: the destination stays small",
     info["actual-size"])
src.stop()

# nbdkit sparse-random -> memory.
sr = t.nbdkit("sparse-random", str(SIZE), "seed=4242")
smap = src_map(sr.uri())
zero_bytes = sum(e["length"] for e in smap if e["type"] & 2)
mem = t.nbdkit("memory", str(SIZE))
last = copy_checked("sparse-random -> memory", [sr.uri()], [mem.uri()])
t.eq(t.sha256_nbd(mem.uri()), t.sha256_nbd(sr.uri()), "sparse-random -> memory: same contents")
t.ok(last and last["skipped"] >= zero_bytes,
     "sparse-random -> memory: at least the source's holes were skipped",
     f"{last} vs {zero_bytes}")
t.ok(covered(src_map(mem.uri()), zero_ranges(smap), 1),
     "sparse-random -> memory: the destination's map has the holes")
mem.stop()
sr.stop()

# Zero detection: a source that calls all of its zeroes data.
ZSIZE = 64 * M
for opts, skipped, what in ((["-S", "64K", "-v"], ZSIZE, "-S 64K: every block found zero"),
                            (["--sparse", "0"], 0, "--sparse 0: zero detection off")):
    mem = t.nbdkit("memory", str(ZSIZE))
    c = t.Copy(*opts, "[", "nbdkit", "--filter=noextents", "memory", str(ZSIZE), "]", mem.uri())
    t.eq(c.wait(), 0, f"{what}: exit 0")
    t.eq(c.last() and c.last()["skipped"], skipped, f"{what}: skipped bytes")
    if "-v" in opts:
        t.ok("zero detection in blocks of 65536 bytes" in c.err, "-S 64K means 65536 bytes",
             c.err)
    mem.stop()

# --destination-is-zero sends no zero request; --no-extents asks no block
# status.
data = ["data", "1 @33554432 2", "size=64M"]
for opts, dst_has_zero, src_has_extents in (([], True, True),
                                            (["--destination-is-zero"], False, True),
                                            (["--no-extents"], True, False)):
    slog, dlog = t.path("src.log"), t.path("dst.log")
    for f in (slog, dlog):
        if os.path.exists(f):
            os.unlink(f)
    s = t.nbdkit("--filter=log", *data, f"logfile={slog}")
    d = t.nbdkit("--filter=log", "memory", "64M", f"logfile={dlog}")
    name = " ".join(opts) or "default"
    t.eq(t.gnbd("copy", *opts, s.uri(), d.uri()).returncode, 0, f"{name}: exit 0")
    s.stop()
    d.stop()
    dl, sl = open(dlog).read(), open(slog).read()
    t.eq(" Zero " in dl, dst_has_zero, f"{name}: the destination got zero requests: "
                                       f"{dst_has_zero}")
    t.eq(" Extents " in sl, src_has_extents, f"{name}: the source was asked for extents: "
                                             f"{src_has_extents}")
    t.ok(" Write " in dl, f"{name}: the data was written")

t.done()
