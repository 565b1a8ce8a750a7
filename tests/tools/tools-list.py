#!/usr/bin/python3
"""tools-list: gnbd list against nbdkit (several exports with descriptions,
none, a plugin that lists files) and qemu-nbd, by URI and as [ CMD ]:
the names and descriptions nbdinfo --list finds on the same server, as
JSON and as text."""
import json
import os

import tooltest as t

t.start()


def check(name, target, want_names=None):
    ours = t.gnbd_json("list", *target)
    ref = t.nbdinfo_json("--list", "--", *target)
    if ours is None:
        return
    want = [{k: e[k] for k in ("export-name", "description") if k in e}
            for e in ref["exports"]]
    t.eq(ours["exports"], want, f"{name}: the exports and descriptions nbdinfo --list finds")
    if want_names is not None:
        t.eq([e["export-name"] for e in ours["exports"]], want_names,
             f"{name}: the exports the server was given")
    p = t.gnbd("list", *target)
    lines = p.stdout.decode().splitlines()
    t.eq(lines, [json.dumps(e["export-name"]) + (f"  {e['description']}" if "description" in e
                                                 else "") for e in want],
         f"{name}: text: one export a line, the name quoted, then the description")


names = ["a", "b", "with space"]
args = ["--filter=exportname", "memory", "1M", *[f"exportname={n}" for n in names],
        "exportname-list=explicit", "exportdesc=fixed:a memory disk"]
s = t.nbdkit(*args)
check("nbdkit, three exports", [s.uri()], names)
# The export of the URI does not matter.
ours = t.gnbd_json("list", s.uri(export="zzz"))
t.eq(ours and [e["export-name"] for e in ours["exports"]], names,
     "the URI's export name is ignored")
s.stop()
check("[ nbdkit ], three exports", ["[", "nbdkit", *args, "]"], names)

s = t.nbdkit("--filter=exportname", "memory", "1M", "exportname-list=empty")
check("nbdkit, no export", [s.uri()], [])
s.stop()

d = t.path("files")
os.mkdir(d)
for n in ("one.img", "two.img"):
    with open(os.path.join(d, n), "wb") as f:
        f.truncate(4096)
s = t.nbdkit("file", f"dir={d}")
check("nbdkit file dir= (no descriptions)", [s.uri()])
s.stop()

img = t.path("disk.raw")
with open(img, "wb") as f:
    f.truncate(1 << 20)
s = t.qemu_nbd("-f", "raw", "-D", "the qemu disk", img, export="disk0")
check("qemu-nbd", [s.uri()], ["disk0"])
s.stop()

t.done()
