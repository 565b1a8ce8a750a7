#!/usr/bin/python3
"""tools-info: gnbd info against nbdkit and qemu-nbd (URI, [ CMD ] and TLS),
checked against Debian's nbdinfo on the same server: the JSON keys they
share hold the same values, --size prints the same number, every --can and
--is flag exits as nbdinfo's does, and the text output says what the JSON
says."""
import os
import subprocess

import tooltest as t

t.start()

SHARED_TOP = ["protocol", "TLS", "structured"]
FLAGS = ["is_rotational", "is_read_only", "can_cache", "can_df", "can_fast_zero", "can_flush",
         "can_fua", "can_multi_conn", "can_trim", "can_zero"]
SIZES = ["block_size_minimum", "block_size_preferred", "block_size_maximum"]
CAN = ["cache", "connect", "df", "fast-zero", "flush", "fua", "multi-conn", "read",
       "structured-reply", "trim", "write", "zero"]
IS = ["read-only", "rotational", "tls"]
TEXT_LABELS = {"is_rotational": "rotational", "is_read_only": "read-only",
               "can_cache": "can cache", "can_df": "can df", "can_fast_zero": "can fast-zero",
               "can_flush": "can flush", "can_fua": "can fua",
               "can_multi_conn": "can multi-conn", "can_trim": "can trim", "can_zero": "can zero"}


def text_fields(out):
    """'key:   value' lines of gnbd info's text output as a dict."""
    fields = {}
    for line in out.splitlines():
        k, _, v = line.partition(":")
        fields[k.strip()] = v.strip()
    return fields


def check(name, target, extra_contexts=(), asked=("base:allocation", "qemu:allocation-depth")):
    """@target: the argv of an NBD operand (a URI, or [ CMD ])."""
    ctx_args = [a for c in extra_contexts for a in ("--context", c)]
    ours = t.gnbd_json("info", *ctx_args, *target)
    ref = t.nbdinfo_json("--", *target)
    if ours is None:
        return
    for k in SHARED_TOP:
        t.eq(ours.get(k), ref.get(k), f"{name}: {k} as nbdinfo")
    t.eq(len(ours["exports"]), 1, f"{name}: one export")
    o, r = ours["exports"][0], ref["exports"][0]
    for k in ["export-name", "description", *FLAGS, *SIZES, "export-size"]:
        t.eq(o.get(k), r.get(k), f"{name}: {k} as nbdinfo")
    want_ctx = [c for c in r.get("contexts", []) if c in (*asked, *extra_contexts)]
    t.eq(sorted(o["contexts"]), sorted(want_ctx),
         f"{name}: contexts: those of nbdinfo's that gnbd asked for")

    p = t.gnbd("info", "--size", *target)
    q = t.run(["nbdinfo", "--size", "--", *target])
    t.ok(p.returncode == 0 and p.stdout == q.stdout, f"{name}: --size prints nbdinfo's number",
         f"{p.stdout!r} vs {q.stdout!r}")
    for kind, flags in (("--can", CAN), ("--is", IS)):
        got = {f: t.gnbd("info", kind, f, *target).returncode for f in flags}
        want = {f: t.run(["nbdinfo", kind, f, "--", *target]).returncode for f in flags}
        t.eq(got, want, f"{name}: every {kind} FLAG exits as nbdinfo's (0 true, 2 false)")

    p = t.gnbd("info", *ctx_args, *target)
    text = text_fields(p.stdout.decode())
    t.eq(text.get("size", "").split(" ")[0], str(o["export-size"]), f"{name}: text: size")
    t.eq({k: text.get(v) for k, v in TEXT_LABELS.items()},
         {k: "yes" if o[k] else "no" for k in TEXT_LABELS}, f"{name}: text: every flag")
    t.eq(text.get("TLS"), "yes" if ours["TLS"] else "no", f"{name}: text: TLS")
    t.eq(text.get("meta contexts"), ", ".join(o["contexts"]) or "none",
         f"{name}: text: meta contexts")
    t.eq(text.get("description"), o.get("description"), f"{name}: text: description")


# nbdkit: block sizes stated, multi-conn, a description.
img = t.path("disk.raw")
with open(img, "wb") as f:
    f.truncate(64 << 20)
s = t.nbdkit("--filter=blocksize-policy", "--filter=exportname", "memory", "64M",
             "blocksize-minimum=512", "blocksize-preferred=64K", "blocksize-maximum=32M",
             "exportdesc=fixed:a memory disk")
check("nbdkit memory", [s.uri()])
s.stop()

# Read-only, no flush or trim, through [ CMD ] on both sides.
check("[ nbdkit -r null ]", ["[", "nbdkit", "-r", "null", "1G", "]"])

# qemu-nbd: a named export, a description, qemu:allocation-depth.
s = t.qemu_nbd("-f", "raw", "-D", "a qemu disk", "-A", img, export="disk0")
check("qemu-nbd raw", [s.uri()])
s.stop()

# qemu-nbd with a dirty bitmap: shown when asked for with --context.
qcow = t.path("bitmap.qcow2")
t.run(["qemu-img", "create", "-f", "qcow2", qcow, "16M"], stdout=subprocess.DEVNULL)
t.run(["qemu-img", "bitmap", "--add", qcow, "b0"], stdout=subprocess.DEVNULL)
s = t.qemu_nbd("-f", "qcow2", "-B", "b0", "-r", qcow)
check("qemu-nbd qcow2 --context qemu:dirty-bitmap:b0", [s.uri()],
      extra_contexts=["qemu:dirty-bitmap:b0"])
ours = t.gnbd_json("info", s.uri())
t.ok(ours and "qemu:dirty-bitmap:b0" not in ours["exports"][0]["contexts"],
     "without --context, the bitmap is not asked for")
s.stop()

# TLS (X.509): nbds+unix with the client's certificates.
tls = t.tls_material()
s = t.nbdkit("--tls=require", f"--tls-certificates={tls['server']}", "memory", "16M")
uri = s.uri(scheme="nbds+unix", query=f"tls-certificates={tls['client']}")
check("nbdkit TLS X.509", [uri])
p = t.gnbd("info", s.uri())
t.ok(p.returncode == 1 and "TLS" in p.err, "the same server without TLS: exit 1, says TLS",
     p.err)
s.stop()

t.done()
