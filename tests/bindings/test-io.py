#!/usr/bin/python3
"""test-io: connecting, the export's facts and every request, synchronously,
from Python.

Servers (tests/bindings/meson.build): rw, an nbdkit memory disk of 1 MiB
advertising block sizes 512, 4096 and 1 MiB (the blocksize-policy filter);
ro, nbdkit's pattern plugin read-only (each 8-byte word holds its own offset,
big-endian); exports, a memory disk behind the exportname filter listing
"a" and "b" with one description.
"""
import struct

import gnbdtest as t
from gnbdtest import GLib, Gnbd, NONE, case, check, equal

MIB = 1024 * 1024


def pattern(offset, length):
    return b"".join(struct.pack(">Q", o) for o in range(offset, offset + length, 8))


@case
def connect_uri_and_facts():
    c = Gnbd.Client()
    equal(c.props.connected, False, "connected before connecting")
    c.connect_uri(t.uri("rw"), None)
    p = c.props
    equal(p.connected, True, "connected")
    equal(p.size, MIB, "size")
    equal(p.read_only, False, "read-only")
    for fact in ("can_flush", "can_fua", "can_trim", "can_zero", "can_cache",
                 "can_multi_conn"):
        equal(getattr(p, fact), True, fact)
    equal(p.protocol, "newstyle-fixed", "protocol")
    equal(p.tls_negotiated, False, "tls-negotiated")
    equal(p.structured_replies_negotiated, True, "structured-replies-negotiated")
    equal((p.block_size_minimum, p.block_size_preferred, p.block_size_maximum),
          (512, 4096, MIB), "block sizes")
    c.shutdown(None)


@case
def settings_are_properties():
    c = Gnbd.Client(export_name="disk", tls=Gnbd.Tls.ALLOW,
                    meta_contexts=["base:allocation"], handle_name="py-test",
                    concurrent_writer=False)
    p = c.props
    equal(p.export_name, "disk", "export-name")
    equal(p.tls, Gnbd.Tls.ALLOW, "tls")
    equal(list(p.meta_contexts), ["base:allocation"], "meta-contexts")
    equal(p.handle_name, "py-test", "handle-name")
    equal(p.concurrent_writer, False, "concurrent-writer")
    equal(Gnbd.Client().props.concurrent_writer, True, "concurrent-writer by default")
    # NULL in C (base:allocation); PyGObject shows a NULL GStrv as [].
    equal(Gnbd.Client().props.meta_contexts, [], "meta-contexts by default")


@case
def connect_unix_read_only_pattern():
    c = Gnbd.Client()
    c.connect_unix(t.socket_path("ro"), None)
    equal(c.props.read_only, True, "read-only")
    data = c.pread(8192, 4096, NONE, None)
    check(isinstance(data, GLib.Bytes), "pread returns GLib.Bytes, not %r" % type(data))
    equal(data.get_data(), pattern(8192, 4096), "the pattern at 8192")
    c.shutdown(None)


@case
def connect_command_takes_an_argv_list():
    c = Gnbd.Client()
    c.connect_command(["nbdkit", "-s", "--exit-with-parent", "memory", "size=3M"], None)
    equal(c.props.size, 3 * MIB, "size of the subprocess's disk")
    c.pwrite(GLib.Bytes.new(b"cmd" * 100), 0, NONE, None)
    equal(c.pread(0, 300, NONE, None).get_data(), b"cmd" * 100, "read back")
    c.shutdown(None)


@case
def pwrite_pread_flush_trim_zero_cache():
    c = t.connect("rw")
    payload = bytes(range(256)) * 64  # 16 KiB
    equal(c.pwrite(GLib.Bytes.new(payload), 65536, NONE, None), True, "pwrite")
    equal(c.pread(65536, len(payload), NONE, None).get_data(), payload, "read back")
    equal(c.pwrite(GLib.Bytes.new(payload[:512]), 0, Gnbd.CommandFlags.FUA, None), True,
          "pwrite with FUA")
    equal(c.flush(NONE, None), True, "flush")
    equal(c.trim(65536, 4096, NONE, None), True, "trim")
    equal(c.pread(65536, 4096, NONE, None).get_data(), bytes(4096), "trimmed reads as zero")
    equal(c.zero(65536 + 4096, 4096, Gnbd.CommandFlags.NO_HOLE, None), True, "zero")
    equal(c.pread(65536, 8192, NONE, None).get_data(), bytes(8192), "zeroed reads as zero")
    equal(c.pread(65536 + 8192, 4096, NONE, None).get_data(), payload[8192:12288],
          "beyond the zeroed range the data stays")
    equal(c.cache(65536, MIB - 65536, NONE, None), True, "cache")
    c.shutdown(None)


@case
def the_same_with_the_writer_off():
    c = Gnbd.Client(concurrent_writer=False)
    c.connect_uri(t.uri("rw"), None)
    payload = bytes(range(256)) * 32
    equal(c.pwrite(GLib.Bytes.new(payload), 4096, NONE, None), True, "pwrite")
    equal(c.pread(4096, len(payload), NONE, None).get_data(), payload, "read back")
    equal(c.flush(NONE, None), True, "flush")
    c.shutdown(None)


@case
def block_status_returns_extents():
    c = t.connect("rw")
    # The memory plugin maps in 32 KiB pages: data, hole, data, hole...
    c.pwrite(GLib.Bytes.new(b"\x01" * 4096), 0, NONE, None)
    c.pwrite(GLib.Bytes.new(b"\x02" * 4096), 65536, NONE, None)
    extents = c.block_status(0, MIB, None, NONE, None)
    check(len(extents) >= 4, "at least 4 extents, got %d" % len(extents))
    check(all(isinstance(e, Gnbd.Extent) for e in extents), "elements are Gnbd.Extent")
    got = [(e.get_offset(), e.get_length(), e.get_flags()) for e in extents[:4]]
    equal(got, [(0, 32768, 0), (32768, 32768, 3), (65536, 32768, 0), (98304, MIB - 98304, 3)],
          "the map")
    # A context by name, and REQ_ONE: one extent only.
    one = c.block_status(32768, MIB - 32768, "base:allocation", Gnbd.CommandFlags.REQ_ONE, None)
    equal([(e.get_offset(), e.get_flags()) for e in one], [(32768, 3)], "REQ_ONE")
    c.shutdown(None)


@case
def list_exports_on_an_unconnected_client():
    exports = Gnbd.Client().list_exports(t.uri("exports"), None)
    check(all(isinstance(e, Gnbd.Export) for e in exports), "elements are Gnbd.Export")
    equal([(e.get_name(), e.get_description()) for e in exports],
          [("a", "gnbd exports"), ("b", "gnbd exports")], "the list")


@case
def facts_of_a_named_export():
    c = Gnbd.Client(export_name="b")
    c.connect_uri(t.uri("exports"), None)
    equal(c.props.export_name, "b", "export-name")
    equal(c.props.size, MIB, "size")
    c.shutdown(None)


t.run()
