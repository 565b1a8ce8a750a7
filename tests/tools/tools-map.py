#!/usr/bin/python3
"""tools-map: gnbd map against nbdkit and qemu-nbd, checked against
nbdinfo --map on the same server: the same extents (text and JSON), the
same totals, across the 2 GiB chunks gnbd asks for, for base:allocation
and for qemu:allocation-depth on a qcow2 with a backing file; a context
the server lacks is an error naming it."""
import subprocess

import tooltest as t

t.start()


def compare(name, target, context=None):
    ctx = ["--context", context] if context else []
    ref_ctx = [f"--map={context}"] if context else ["--map"]
    ours = t.gnbd_json("map", *ctx, *target)
    ref = t.nbdinfo_json(*ref_ctx, "--", *target)
    t.eq(ours, ref, f"{name}: JSON map as nbdinfo --map --json")
    p = t.gnbd("map", *ctx, *target)
    q = t.run(["nbdinfo", *ref_ctx, "--", *target])
    t.eq(p.stdout.decode(), q.stdout.decode(), f"{name}: text map as nbdinfo --map")
    ours = t.gnbd_json("map", "--totals", *ctx, *target)
    ref = t.nbdinfo_json(*ref_ctx, "--totals", "--", *target)
    if ours is not None:
        t.eq([{k: v for k, v in e.items() if k != "percent"} for e in ours],
             [{k: v for k, v in e.items() if k != "percent"} for e in ref],
             f"{name}: totals as nbdinfo --map --totals --json")
        t.ok(all(abs(a["percent"] - b["percent"]) < 1e-3 for a, b in zip(ours, ref)),
             f"{name}: the same percentages", f"{ours}\n{ref}")
    p = t.gnbd("map", "--totals", *ctx, *target)
    q = t.run(["nbdinfo", *ref_ctx, "--totals", "--", *target])
    t.eq(p.stdout.decode(), q.stdout.decode(), f"{name}: text totals as nbdinfo")
    return ours


# Data, holes, data again; 8 GiB: four chunks of 2 GiB, merged.
data = "1 @1048576 2 @5368709120 1 2 3 @8589934590 9 9"
s = t.nbdkit("data", data, "size=8G")
compare("nbdkit data, 8 GiB", [s.uri()])
s.stop()
compare("[ nbdkit data ]", ["[", "nbdkit", "data", data, "size=8G", "]"])

# All one hole.
m = t.gnbd_json("map", "[", "nbdkit", "memory", "3G", "]")
t.eq(m, [{"offset": 0, "length": 3 << 30, "type": 3, "description": "hole,zero"}],
     "an empty 3 GiB memory disk is one hole, across two chunks")

# qcow2 with a backing file: data here, data in the backing file, zeroes,
# nothing.
base = t.path("base.qcow2")
top = t.path("top.qcow2")
t.run(["qemu-img", "create", "-f", "qcow2", base, "64M"], stdout=subprocess.DEVNULL)
t.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 8M 2M", base],
      stdout=subprocess.DEVNULL)
t.run(["qemu-img", "create", "-f", "qcow2", "-b", base, "-F", "qcow2", top],
      stdout=subprocess.DEVNULL)
t.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 512K 1M", "-c", "write -z 32M 4M", top],
      stdout=subprocess.DEVNULL)
s = t.qemu_nbd("-f", "qcow2", "-A", "-r", top)
compare("qemu-nbd qcow2 base:allocation", [s.uri()])
depth = compare("qemu-nbd qcow2 qemu:allocation-depth", [s.uri()], "qemu:allocation-depth")
t.eq(sorted({e["description"] for e in depth or []}),
     ["absent", "backing depth 2", "local"],
     "allocation depth: local, in the backing file, absent")

p = t.gnbd("map", "--context", "qemu:dirty-bitmap:nope", s.uri())
t.ok(p.returncode == 1 and 'metadata context "qemu:dirty-bitmap:nope"' in p.err,
     "a context the server lacks: exit 1, named", p.err)
s.stop()

t.done()
