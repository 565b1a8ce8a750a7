#!/usr/bin/python3
"""info.py: what an NBD server says about an export, from Python through gnbd.

Lists the server's exports (on a client that is not connected), connects to
the URI, prints the export's facts (the client's read-only properties) and
its allocation map (block_status over the whole export).  Callback style, as
PyGObject 3.42 has no awaitables: each *_async call names the function that
calls the matching *_finish, and a GLib.MainLoop runs until the last one.

    /usr/bin/python3 info.py URI

From a build tree: meson devenv -C build --workdir . /usr/bin/python3 examples/python/info.py URI
"""
import sys

import gi
gi.require_version("Gnbd", "1.0")
from gi.repository import GLib, Gnbd  # noqa: E402

FACTS = ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero",
         "can_cache", "can_df", "can_multi_conn", "is_rotational")


def allocation(flags):
    """base:allocation flags (NBD_STATE_HOLE, NBD_STATE_ZERO) in words."""
    words = [w for bit, w in ((1, "hole"), (2, "zero")) if flags & bit]
    return ",".join(words) or "data"


class Info:
    def __init__(self, uri):
        self.uri = uri
        self.loop = GLib.MainLoop()
        self.error = None
        self.client = Gnbd.Client()
        self.offset = 0
        # Listing needs a client of its own: it must not be connected yet.
        Gnbd.Client().list_exports_async(uri, None, self.listed)

    def fail(self, error):
        self.error = error
        self.loop.quit()

    def listed(self, lister, result):
        try:
            exports = lister.list_exports_finish(result)
        except GLib.Error as e:
            return self.fail(e)
        print("exports on the server: %d" % len(exports))
        for e in exports:
            print('  export "%s": %s' % (e.get_name(),
                                         e.get_description() or "(no description)"))
        self.client.connect_uri_async(self.uri, None, self.connected)

    def connected(self, client, result):
        try:
            client.connect_uri_finish(result)
        except GLib.Error as e:
            return self.fail(e)
        p = client.props
        print("size: %d" % p.size)
        print("read-only: %s" % p.read_only)
        for fact in FACTS:
            print("%s: %s" % (fact.replace("_", "-"), getattr(p, fact)))
        print("protocol: %s" % p.protocol)
        print("tls: %s" % p.tls_negotiated)
        print("structured replies: %s" % p.structured_replies_negotiated)
        print("block sizes: minimum %d, preferred %d, maximum %d"
              % (p.block_size_minimum, p.block_size_preferred, p.block_size_maximum))
        print("description: %s" % (p.export_description or "(none)"))
        print("allocation map (base:allocation):")
        self.map_next()

    def map_next(self):
        """One request covers at most what the server maps in one reply: ask
        again from where the last answer ended."""
        size = self.client.props.size
        if self.offset >= size:
            self.client.shutdown_async(None, self.closed)
            return
        count = min(size - self.offset, 1 << 30)
        self.client.block_status_async(self.offset, count, None,
                                       Gnbd.CommandFlags.NONE, None, self.mapped)

    def mapped(self, client, result):
        try:
            extents = client.block_status_finish(result)
        except GLib.Error as e:
            return self.fail(e)
        if not extents:
            return self.fail(GLib.Error("no extents at offset %d" % self.offset))
        for e in extents:
            print("%14d %14d  %s" % (e.get_offset(), e.get_length(),
                                     allocation(e.get_flags())))
        self.offset = extents[-1].get_offset() + extents[-1].get_length()
        self.map_next()

    def closed(self, client, result):
        try:
            client.shutdown_finish(result)
        except GLib.Error as e:
            return self.fail(e)
        self.loop.quit()


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: info.py URI")
    info = Info(sys.argv[1])
    info.loop.run()
    if info.error is not None:
        sys.exit("info.py: %s" % info.error.message)


if __name__ == "__main__":
    main()
