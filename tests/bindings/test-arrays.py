#!/usr/bin/python3
"""test-arrays: calls returning arrays of boxed elements, and data, many
times over, from Python.  Both arrays are (transfer container): PyGObject
frees each element once; with (transfer full) it would free them twice and
crash.  The C memory in use stays flat, so nothing leaks either.

Server (tests/bindings/meson.build): rw, an nbdkit memory disk of 16 MiB.
"""
import gnbdtest as t
from gnbdtest import GLib, Gnbd, NONE, case, check, equal

MIB = 1024 * 1024
# The memory plugin maps in 32 KiB pages: 4 KiB written every 64 KiB over
# 8 MiB gives 256 extents per call.
STRIDE = 65536
SPAN = 8 * MIB
# Leaking anything per call costs more than this over the calls below: an
# extent is tens of bytes (2000 calls of 256), a read 64 KiB, a listing's
# connection a handle with its 64 KiB receive buffer.
GROWTH_LIMIT = MIB


def flat(what, calls, one):
    for _ in range(max(20, calls // 10)):  # warm up: caches, the allocator
        one()
    before = t.malloc_in_use()
    for _ in range(calls):
        one()
    growth = t.malloc_in_use() - before
    check(growth < GROWTH_LIMIT, "C memory in use grew by %d bytes over %d %s"
          % (growth, calls, what))


@case
def two_thousand_block_status_calls():
    c = t.connect("rw")
    for off in range(0, SPAN, STRIDE):
        c.pwrite(GLib.Bytes.new(b"\xaa" * 4096), off, NONE, None)
    expected = 2 * SPAN // STRIDE

    def one():
        extents = c.block_status(0, SPAN, None, NONE, None)
        check(len(extents) >= expected, "at least %d extents, got %d" % (expected, len(extents)))
        check(extents[1].get_offset() == 32768 and extents[1].get_flags() == 3,
              "the second extent is the first hole")

    flat("block_status calls", 2000, one)
    c.shutdown(None)


@case
def three_hundred_list_exports_calls():
    client = Gnbd.Client()

    def one():
        exports = client.list_exports(t.uri("rw"), None)
        equal([e.get_name() for e in exports], [""], "the list")

    flat("list_exports calls", 300, one)


@case
def two_thousand_preads():
    c = t.connect("rw")
    flat("reads", 2000, lambda: equal(c.pread(0, 65536, NONE, None).get_size(), 65536, "size"))
    c.shutdown(None)


t.run()
