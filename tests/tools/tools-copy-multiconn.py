#!/usr/bin/python3
"""tools-copy-multiconn: -C/--connections.  nbdkit's log filter counts the
connections each side got: 4 with -C 4 when both advertise multi-conn,
as many as the CPUs (at most 4) with no -C, 1 with -C 1, 1 when either side does not advertise it, 1 for a [ CMD ]
side; the copies are checked by checksum."""
import os
import re

import tooltest as t

t.start()
SIZE = (32 << 20) if t.SLOW else (256 << 20)
want = t.sha256_pattern(SIZE)


def connections(log):
    return len(set(re.findall(r"connection=(\d+) Connect ", open(log).read())))


n = 0
for opts, dst_filter, want_src, want_dst, what in (
        (["-C", "4"], [], 4, 4, "-C 4, both multi-conn"),
        (["--connections=1"], [], 1, 1, "-C 1"),
        ([], [], min(4, len(os.sched_getaffinity(0))), min(4, len(os.sched_getaffinity(0))),
         "the default: as many as the CPUs, at most 4"),
        (["-C", "4"], ["--filter=multi-conn", "multi-conn-mode=disable"], 1, 1,
         "-C 4, destination without multi-conn")):
    n += 1
    slog, dlog = t.path(f"src{n}.log"), t.path(f"dst{n}.log")
    s = t.nbdkit("--filter=log", "pattern", str(SIZE), f"logfile={slog}")
    d = t.nbdkit("--filter=log", *dst_filter[:1], "memory", str(SIZE), *dst_filter[1:],
                 f"logfile={dlog}")
    t.eq(t.gnbd("copy", *opts, s.uri(), d.uri()).returncode, 0, f"{what}: exit 0")
    # Counted before the checksum's own connection.
    t.eq((connections(slog), connections(dlog)), (want_src, want_dst),
         f"{what}: connections to the source and the destination")
    t.eq(t.sha256_nbd(d.uri()), want, f"{what}: the destination holds the pattern")
    s.stop()
    d.stop()

# A server run as [ CMD ] has one connection; the other side then too.
dlog = t.path("dst-cmd.log")
d = t.nbdkit("--filter=log", "memory", str(SIZE), f"logfile={dlog}")
t.eq(t.gnbd("copy", "-C", "4", "[", "nbdkit", "pattern", str(SIZE), "]", d.uri()).returncode, 0,
     "-C 4 from [ nbdkit pattern ]: exit 0")
t.eq(connections(dlog), 1, "-C 4 from [ CMD ]: one connection to the destination")
t.eq(t.sha256_nbd(d.uri()), want, "-C 4 from [ CMD ]: the destination holds the pattern")
d.stop()

t.done()
