#!/usr/bin/python3
"""test-errors: GError matching from Python.  Requests that the client or the
server refuses raise GLib.Error in the Gnbd.Error domain and leave the
connection usable; a transport that cannot be reached is a Gio.IOErrorEnum.

Servers (tests/bindings/meson.build): rw, an nbdkit memory disk of 1 MiB;
ro, the same read-only; eio, a memory disk behind the error filter, every
read failing with EIO; nocache, a memory disk that does not offer cache
(the nocache filter, cachemode=none).
"""
import os

import gnbdtest as t
from gnbdtest import GLib, Gio, Gnbd, GNBD_ERROR, IO_ERROR, NONE, case, check, equal, wait

MIB = 1024 * 1024


@case
def the_domain_is_registered():
    equal(GLib.quark_to_string(GNBD_ERROR), "gnbd-error-quark", "the quark")
    for code in ("FAILED", "PERMISSION", "IO", "NO_MEMORY", "INVALID", "NO_SPACE",
                 "OVERFLOW", "NOT_SUPPORTED", "SHUTDOWN", "PROTOCOL"):
        check(hasattr(Gnbd.Error, code), "Gnbd.Error.%s exists" % code)


@case
def write_to_a_read_only_export():
    c = t.connect("ro")
    e = t.expect_error(lambda: c.pwrite(GLib.Bytes.new(b"x" * 512), 0, NONE, None),
                       GNBD_ERROR, Gnbd.Error.PERMISSION, "pwrite on ro")
    equal(e.domain, "gnbd-error-quark", "e.domain")
    _, r = wait(lambda cb: c.pwrite_async(GLib.Bytes.new(b"y" * 512), 0, NONE, None, cb))
    t.expect_error(lambda: c.pwrite_finish(r), GNBD_ERROR, Gnbd.Error.PERMISSION,
                   "pwrite_async on ro")
    # As libnbd: the export does not offer zero (can-zero is false), which
    # the client checks before read-only.
    t.expect_error(lambda: c.zero(0, 512, NONE, None), GNBD_ERROR, Gnbd.Error.INVALID,
                   "zero on ro")
    equal(c.pread(0, 512, NONE, None).get_size(), 512, "usable after")
    c.shutdown(None)


@case
def read_beyond_the_end():
    c = t.connect("rw")
    t.expect_error(lambda: c.pread(MIB - 512, 1024, NONE, None), GNBD_ERROR,
                   Gnbd.Error.INVALID, "pread past the end")
    equal(c.pread(MIB - 512, 512, NONE, None).get_size(), 512, "usable after")
    c.shutdown(None)


@case
def server_reports_eio():
    c = t.connect("eio")
    _, r = wait(lambda cb: c.pread_async(0, 4096, NONE, None, cb))
    e = t.expect_error(lambda: c.pread_finish(r), GNBD_ERROR, Gnbd.Error.IO,
                       "pread from the error filter")
    check("server" in e.message.lower(), "the message says the server failed: %r" % e.message)
    equal(c.pwrite(GLib.Bytes.new(b"w" * 4096), 0, NONE, None), True,
          "writes still work on that connection")
    c.shutdown(None)


@case
def cache_the_server_does_not_offer():
    c = t.connect("nocache")
    equal(c.props.can_cache, False, "can-cache")
    # As libnbd: the client refuses it (EINVAL) without asking the server.
    t.expect_error(lambda: c.cache(0, 4096, NONE, None), GNBD_ERROR,
                   Gnbd.Error.INVALID, "cache without can-cache")
    equal(c.pread(0, 512, NONE, None).get_size(), 512, "usable after")
    c.shutdown(None)


@case
def request_before_connecting():
    c = Gnbd.Client()
    t.expect_error(lambda: c.pread(0, 512, NONE, None), IO_ERROR,
                   Gio.IOErrorEnum.NOT_CONNECTED, "pread before connect")


@case
def no_server_at_that_socket():
    c = Gnbd.Client()
    missing = os.path.join(os.path.dirname(t.socket_path("rw")), "nobody-here")
    try:
        c.connect_unix(missing, None)
    except GLib.Error as e:
        equal(e.domain, "g-io-error-quark", "the domain of %r" % e.message)
        check(e.code in (Gio.IOErrorEnum.NOT_FOUND, Gio.IOErrorEnum.CONNECTION_REFUSED),
              "NOT_FOUND or CONNECTION_REFUSED, got %d: %s" % (e.code, e.message))
    else:
        raise AssertionError("connect_unix to a missing socket succeeded")
    equal(c.props.connected, False, "connected")


t.run()
