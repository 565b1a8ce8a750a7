#!/usr/bin/python3
"""gnbd-randread.py: the benchmark's 4 KiB random-read workload from Python
through gnbd, for the gnbd rows of bench/RESULTS.md (bench/gnbd.py runs it).
QD reads in flight with pread_async and a callback that issues the next
one, on a GLib.MainLoop: what a script pays on top of the C API.  Prints
one line of key=value figures in bench.c's format.

    /usr/bin/python3 gnbd-randread.py SOCKET [SECONDS [QD [BS]]]
"""
import random
import sys

import gi
gi.require_version("Gnbd", "1.0")
from gi.repository import GLib, Gnbd  # noqa: E402


class Bench:
    def __init__(self, sock, qd, bs):
        self.qd, self.bs = qd, bs
        self.client = Gnbd.Client()
        self.client.connect_unix(sock, None)
        self.blocks = min(self.client.props.size, 1 << 30) // bs
        self.loop = GLib.MainLoop()
        self.in_flight = self.completed = 0
        self.deadline = 0
        self.failure = None

    def issue(self):
        offset = random.randrange(self.blocks) * self.bs
        self.client.pread_async(offset, self.bs, Gnbd.CommandFlags.NONE, None, self.done)
        self.in_flight += 1

    def done(self, client, result):
        try:
            client.pread_finish(result)
        except GLib.Error as e:
            self.failure = self.failure or e
        self.in_flight -= 1
        self.completed += 1
        if self.failure is None and GLib.get_monotonic_time() < self.deadline:
            self.issue()
        elif self.in_flight == 0:
            self.loop.quit()

    def phase(self, secs):
        """QD in flight for secs seconds, then drain: (completed, seconds)."""
        c0, t0 = self.completed, GLib.get_monotonic_time()
        self.deadline = t0 + secs * 1e6
        for _ in range(self.qd):
            self.issue()
        self.loop.run()
        if self.failure is not None:
            raise self.failure
        return self.completed - c0, (GLib.get_monotonic_time() - t0) / 1e6


def main():
    args = sys.argv[1:] + ["1", "64", "4096"][len(sys.argv) - 2:]
    sock, seconds, qd, bs = args[0], float(args[1]), int(args[2]), int(args[3])
    b = Bench(sock, qd, bs)
    b.phase(min(seconds / 10, 0.1))
    ops, secs = b.phase(seconds)
    print("lib=python version=%s server=external transport=unix conns=1 workload=randread "
          "bs=%d qd=%d writer=1 pin=-1 ops=%d secs=%.6f ops_s=%.1f mib_s=%.2f"
          % (sys.version.split()[0], bs, qd, ops, secs, ops / secs, ops * bs / 1048576 / secs))
    b.client.shutdown(None)


if __name__ == "__main__":
    main()
