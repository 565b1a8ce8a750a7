"""gnbdtest: what the Python binding tests share.

Owns the TAP output (one line per case), the servers' URIs (the environment
that tests/servers/with-nbdkit.py sets), waiting on the main loop for an
async call with a bound, and how much C memory the process has in use.  Each case is a
function; a failed check raises AssertionError with what was expected and
what came back, which ends that case only.
"""
import ctypes
import os
import sys
import threading
import traceback

import gi
gi.require_version("Gnbd", "1.0")
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib, Gnbd  # noqa: E402

# Every wait on the main loop gives up after this long: a hang is a failure,
# and a loaded 2-core machine is slow, so it is generous.
WAIT_SECONDS = 60
NONE = Gnbd.CommandFlags.NONE
MAIN_THREAD = threading.get_ident()

_cases = []


def case(fn):
    """Register fn as a test case, run in the order of definition."""
    _cases.append(fn)
    return fn


def run():
    print("1..%d" % len(_cases), flush=True)
    failed = 0
    for n, fn in enumerate(_cases, 1):
        name = fn.__name__.replace("_", " ")
        try:
            fn()
            print("ok %d - %s" % (n, name), flush=True)
        except Exception:
            failed += 1
            print("not ok %d - %s" % (n, name), flush=True)
            for line in traceback.format_exc().splitlines():
                print("# " + line, flush=True)
    sys.exit(1 if failed else 0)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def equal(got, expected, what):
    if got != expected:
        raise AssertionError("%s: expected %r, got %r" % (what, expected, got))


def uri(name):
    return os.environ["NBD_URI_" + name.upper()]


def socket_path(name):
    return os.environ["NBD_SOCKET_" + name.upper()]


def server_pid(name):
    return int(os.environ["NBD_PID_" + name.upper()])


def connect(name, **props):
    client = Gnbd.Client(**props)
    client.connect_uri(uri(name), None)
    return client


def spin(done, what):
    """Iterate the thread-default context until done() is true, at most
    WAIT_SECONDS."""
    ctx = GLib.MainContext.ref_thread_default()
    expired = []
    timer = GLib.timeout_source_new_seconds(WAIT_SECONDS)
    timer.set_callback(lambda *a: expired.append(True) or False)
    timer.attach(ctx)
    try:
        while not done():
            if expired:
                raise AssertionError("%s: nothing after %d s" % (what, WAIT_SECONDS))
            ctx.iteration(True)
    finally:
        timer.destroy()


def wait(start, what="the async call"):
    """start(callback) begins an async call; return (source, result) once
    the callback has run, checking it ran on this thread."""
    box = []

    def callback(source, result):
        box.append((source, result, threading.get_ident()))

    start(callback)
    spin(lambda: box, what)
    source, result, thread = box[0]
    equal(thread, threading.get_ident(), "the thread the callback ran in")
    return source, result


def expect_error(fn, domain, code, what):
    """fn() must raise GLib.Error in domain (a quark) with code; returns it."""
    try:
        fn()
    except GLib.Error as e:
        if not e.matches(domain, code):
            raise AssertionError("%s: expected %s %d, got %s %d: %s"
                                 % (what, GLib.quark_to_string(domain), code,
                                    e.domain, e.code, e.message))
        check(e.message, "%s: the error has a message" % what)
        return e
    raise AssertionError("%s: expected %s %d, got no error"
                         % (what, GLib.quark_to_string(domain), code))


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = _Mallinfo2


def malloc_in_use():
    """Bytes malloc has handed out and not got back, over all arenas (glibc's
    mallinfo2): what gnbd and GLib hold, exactly, unlike the resident size,
    which hides a buffer that was allocated and never touched."""
    m = _libc.mallinfo2()
    return m.uordblks + m.hblkhd


GNBD_ERROR = Gnbd.error_quark()
IO_ERROR = Gio.io_error_quark()
