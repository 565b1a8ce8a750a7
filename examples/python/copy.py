#!/usr/bin/python3
"""copy.py: copy one NBD export to another from Python through gnbd, with
REQUESTS requests in flight, then verify the copy.

Callback style on a GLib.MainLoop (PyGObject 3.42 has no awaitables).  Each of
REQUESTS slots reads the next chunk from SRC and, when it arrives, writes that
GLib.Bytes to DST as it is (gnbd sends it without a copy), then takes the
next chunk.  Then DST is flushed and both exports are read back, chunk by
chunk with as many in flight, and compared.

    /usr/bin/python3 copy.py SRC-URI DST-URI [REQUESTS [CHUNK_BYTES]]

From a build tree: meson devenv -C build --workdir . /usr/bin/python3 examples/python/copy.py SRC DST
"""
import sys

import gi
gi.require_version("Gnbd", "1.0")
from gi.repository import GLib, Gnbd  # noqa: E402

NONE = Gnbd.CommandFlags.NONE


class Copy:
    def __init__(self, src_uri, dst_uri, requests, chunk):
        self.requests, self.chunk = requests, chunk
        self.loop = GLib.MainLoop()
        self.error = None
        self.src, self.dst = Gnbd.Client(), Gnbd.Client()
        self.connecting = 2
        self.src.connect_uri_async(src_uri, None, self.connected)
        self.dst.connect_uri_async(dst_uri, None, self.connected)

    def fail(self, error):
        if self.error is None:
            self.error = error

    def connected(self, client, result):
        try:
            client.connect_uri_finish(result)
        except GLib.Error as e:
            self.fail(e)
        self.connecting -= 1
        if self.connecting > 0:
            return
        if self.error is None:
            self.size = self.src.props.size
            if self.dst.props.read_only:
                self.fail(GLib.Error("the destination export is read-only"))
            elif self.dst.props.size < self.size:
                self.fail(GLib.Error("the destination (%d bytes) is smaller than the "
                                     "source (%d bytes)" % (self.dst.props.size, self.size)))
        if self.error is not None:
            return self.loop.quit()
        self.started = GLib.get_monotonic_time()
        self.run_phase(self.copy_chunk, self.copied)

    # -- a phase: every chunk through job(offset, length, done) ------------

    def run_phase(self, job, then):
        self.job, self.then = job, then
        self.next = self.busy = 0
        for _ in range(self.requests):
            self.slot_next()
        if self.busy == 0:
            then()

    def slot_next(self):
        if self.error is not None or self.next >= self.size:
            return
        offset, length = self.next, min(self.chunk, self.size - self.next)
        self.next += length
        self.busy += 1
        self.job(offset, length, self.slot_done)

    def slot_done(self):
        self.busy -= 1
        self.slot_next()
        if self.busy == 0:
            if self.error is not None:
                self.loop.quit()
            else:
                self.then()

    # -- copy --------------------------------------------------------------

    def copy_chunk(self, offset, length, done):
        def written(dst, result):
            try:
                dst.pwrite_finish(result)
            except GLib.Error as e:
                self.fail(e)
            done()

        def read(src, result):
            try:
                data = src.pread_finish(result)
            except GLib.Error as e:
                self.fail(e)
                return done()
            self.dst.pwrite_async(data, offset, NONE, None, written)

        self.src.pread_async(offset, length, NONE, None, read)

    def copied(self):
        seconds = (GLib.get_monotonic_time() - self.started) / 1e6
        print("copied %d bytes in %.3f s with %d requests in flight"
              % (self.size, seconds, self.requests))
        if not self.dst.props.can_flush:
            return self.run_phase(self.verify_chunk, self.verified)
        self.dst.flush_async(NONE, None, self.flushed)

    def flushed(self, dst, result):
        try:
            dst.flush_finish(result)
        except GLib.Error as e:
            self.fail(e)
            return self.loop.quit()
        self.run_phase(self.verify_chunk, self.verified)

    # -- verify ------------------------------------------------------------

    def verify_chunk(self, offset, length, done):
        answers = {}

        def read(client, result):
            try:
                answers[client] = client.pread_finish(result)
            except GLib.Error as e:
                self.fail(e)
                answers[client] = None
            if len(answers) < 2:
                return
            a, b = answers[self.src], answers[self.dst]
            if a is not None and b is not None and not a.equal(b):
                self.fail(GLib.Error("the copy differs from the source in the %d bytes "
                                     "at offset %d" % (length, offset)))
            done()

        self.src.pread_async(offset, length, NONE, None, read)
        self.dst.pread_async(offset, length, NONE, None, read)

    def verified(self):
        print("verified: the copy equals the source")
        self.loop.quit()


def main():
    args = sys.argv[1:]
    try:
        requests = int(args[2]) if len(args) > 2 else 16
        chunk = int(args[3]) if len(args) > 3 else 256 * 1024
    except ValueError:
        requests = chunk = 0
    if not 2 <= len(args) <= 4 or requests < 1 or chunk < 1:
        sys.exit("usage: copy.py SRC-URI DST-URI [REQUESTS [CHUNK_BYTES]]")
    copy = Copy(args[0], args[1], requests, chunk)
    copy.loop.run()
    if copy.error is None:
        try:
            copy.src.shutdown(None)
            copy.dst.shutdown(None)
        except GLib.Error as e:
            copy.error = e
    if copy.error is not None:
        sys.exit("copy.py: %s" % copy.error.message)


if __name__ == "__main__":
    main()
