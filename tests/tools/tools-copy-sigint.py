#!/usr/bin/python3
"""tools-copy-sigint: SIGINT mid-copy cancels cleanly.  Once the progress
lines show data moving, SIGINT: gnbd exits 130 within the bound, its last
progress line says cancelled, the message says how far the destination
holds the source, that prefix of the destination really is the source's
(read back by nbdcopy), and the server gnbd ran is stopped.  SIGTERM: 143."""
import signal

import tooltest as t

t.start()
M = 1 << 20
BIG = "64G"


def slow_source(pidfile):
    # 4 requests of 256 KiB in flight, each read 50 ms late: about 20 MB/s,
    # so the copy is far from done when the signal comes.
    return ["[", "nbdkit", "-P", pidfile, "--filter=delay", "pattern", BIG, "rdelay=50ms", "]"]


for sig, code_want, name in ((signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")):
    dst = t.nbdkit("memory", BIG)
    pidfile = t.path(f"src-{name}.pid")
    c = t.Copy("-R", "4", *slow_source(pidfile), dst.uri())
    first = t.parse_progress(c.next_line() or "")
    t.ok(first and first["status"] == "running", f"{name}: the first progress line came", first)
    # Event-driven: wait (bounded by next_line) until data has moved.
    while True:
        line = c.next_line()
        p = t.parse_progress(line or "")
        if not p or p["copied"] >= M:
            break
    t.ok(p and p["status"] == "running" and p["copied"] >= M,
         f"{name}: data is moving ({p and p['copied']} bytes)")
    c.proc.send_signal(sig)
    code = c.wait()
    last = c.last()
    t.eq(code, code_want, f"{name}: exit {code_want}")
    t.ok(last and last["status"] == "cancelled", f"{name}: the last progress line says cancelled",
         c.lines[-3:])
    copied = last["copied"] if last else 0
    t.ok(f"interrupted by {name}: the destination holds the source's first {copied} bytes"
         in c.err, f"{name}: the message says how far the destination holds the source", c.err)
    with open(pidfile) as f:
        pid = int(f.read())
    t.ok(not t.pid_running(pid), f"{name}: the server gnbd ran is stopped")
    if sig == signal.SIGINT:
        t.eq(t.sha256_nbd_prefix(dst, copied), t.sha256_pattern(copied),
             f"{name}: the destination's first {copied} bytes are the source's")
    dst.stop()

t.done()
