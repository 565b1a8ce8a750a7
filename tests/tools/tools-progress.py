#!/usr/bin/python3
"""tools-progress: the progress output of gnbd copy.  --progress=FD: every
line in the documented format, a first line at once, counters that only
grow, a constant total, the percentage as documented, at most ten updates
a second (by the lines' own clock), a last line 100/100 status=done; holes
counted as skipped.  -p: nothing when stderr is not a terminal, a bar that
ends its line on one.  A progress reader that goes away does not stop the
copy."""
import os
import pty
import subprocess

import tooltest as t

t.start()
M = 1 << 20
SIZE = 32 * M
slow = ["[", "nbdkit", "--filter=delay", "pattern", str(SIZE), "rdelay=20ms", "]"]

c = t.Copy("-R", "2", *slow, "null:")
code = c.wait()
t.eq(code, 0, "a slow copy to null:: exit 0")
parsed = [t.parse_progress(line) for line in c.lines]
t.ok(c.lines and all(parsed), "every line has the documented format",
     [line for line, p in zip(c.lines, parsed) if not p])
parsed = [p for p in parsed if p]
t.ok(len(parsed) >= 3, f"several lines ({len(parsed)})")
t.ok(parsed and parsed[0]["copied"] == 0 and parsed[0]["status"] == "running",
     "the first line comes before any data", parsed[:1])
t.ok(all(a["copied"] <= b["copied"] and a["skipped"] <= b["skipped"] and
         a["seconds"] <= b["seconds"] for a, b in zip(parsed, parsed[1:])),
     "copied, skipped and seconds never go back")
totals = {p["total"] for p in parsed if p["total"]}
t.eq(totals, {SIZE}, "total is the source's size once known")
t.ok(all(p["percent"] == (min(99, p["copied"] * 100 // p["total"]) if p["total"] else 0)
         for p in parsed[:-1]), "percent: copied * 100 / total rounded down, below 100 "
                                "while running")
t.ok(all(p["status"] == "running" for p in parsed[:-1]), "status=running until the last line")
last = parsed[-1] if parsed else None
t.ok(last and (last["percent"], last["copied"], last["status"]) == (100, SIZE, "done"),
     "the last line: 100/100, everything copied, status=done", last)
# The start, the end, and at most ten updates a second between them.
t.ok(last and len(parsed) <= 10 * last["seconds"] + 3,
     f"at most ten lines a second ({len(parsed)} lines in {last and last['seconds']} s)")

# Holes are counted as skipped.
c = t.Copy("[", "nbdkit", "data", "1 @33554432 2", "size=64M", "]", "null:")
t.eq(c.wait(), 0, "a sparse source: exit 0")
t.ok(c.last() and c.last()["skipped"] >= 64 * M - 2 * 32768,
     "a sparse source: its holes are skipped", c.last())

# -p without a terminal: nothing on stderr.
p = t.gnbd("copy", "-p", "[", "nbdkit", "pattern", "8M", "]", "null:")
t.ok(p.returncode == 0 and p.err == "", "-p with stderr not a terminal: nothing", p.err)

# -p on a terminal: a bar redrawn in place, its line ended at the end.
master, slave = pty.openpty()
gp = subprocess.Popen([t.GNBD, "copy", "-p", *slow, "null:"], stdout=subprocess.DEVNULL,
                      stderr=slave)
os.close(slave)
out = b""
while True:
    try:
        data = os.read(master, 65536)
    except OSError:         # EIO: every writer of the terminal is gone
        break
    if not data:
        break
    out += data
os.close(master)
code = gp.wait(t.WAIT)
text = out.decode(errors="replace")
t.eq(code, 0, "-p on a terminal: exit 0")
t.ok(text.count("\r[") >= 2 and "100%" in text and "done" in text and text.endswith("\n"),
     "-p on a terminal: a bar redrawn with \\r, 100% done at the end, then a newline",
     repr(text[-300:]))
t.ok("/s" in text and "ETA" in text, "-p: the rate and the time left", repr(text[:300]))

# The progress reader goes away: the copy goes on, with one warning.
r, w = os.pipe()
os.close(r)
p = t.run([t.GNBD, "copy", f"--progress={w}", "[", "nbdkit", "pattern", "8M", "]", "null:"],
          pass_fds=(w,))
os.close(w)
t.ok(p.returncode == 0 and p.err.count("progress file descriptor") == 1,
     "the progress reader went away: exit 0, one warning", p.err)

t.done()
