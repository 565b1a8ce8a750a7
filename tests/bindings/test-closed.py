#!/usr/bin/python3
"""test-closed: the closed signal from Python, for a shutdown (no error) and
for a server killed with a request in flight (a Gio.IOErrorEnum, for the
request and for the signal).

Servers (tests/bindings/meson.build): rw, an nbdkit memory disk of 1 MiB;
victim, a memory disk behind the delay filter that sits 30 s on each read,
killed here by its PID.
"""
import os
import signal
import threading

import gnbdtest as t
from gnbdtest import GLib, NONE, case, check, equal


def watch(client):
    """Record every emission of client's closed signal: (error, thread)."""
    seen = []
    client.connect("closed", lambda c, error: seen.append((error, threading.get_ident())))
    return seen


@case
def shutdown_emits_closed_without_error():
    c = t.connect("rw")
    seen = watch(c)
    notified = []
    c.connect("notify::connected", lambda *a: notified.append(c.props.connected))
    c.shutdown(None)
    t.spin(lambda: seen, "the closed signal")
    equal(seen, [(None, t.MAIN_THREAD)], "closed: no error, in this thread")
    equal(c.props.connected, False, "connected")
    equal(notified[-1:], [False], "notify::connected")
    try:
        c.pread(0, 512, NONE, None)
        raise AssertionError("pread after shutdown succeeded")
    except GLib.Error as e:
        check(e.domain in ("g-io-error-quark", "gnbd-error-quark"),
              "pread after shutdown: %s %s" % (e.domain, e.message))
    # Once only.
    equal(len(seen), 1, "emissions")


@case
def server_killed_with_a_request_in_flight():
    c = t.connect("victim")
    seen = watch(c)
    box = []
    c.pread_async(0, 4096, NONE, None, lambda s, r: box.append(r))
    # Kill it once the read is on its way.  Whether the kill lands before or
    # after the server has read the request, the request must fail.
    os.kill(t.server_pid("victim"), signal.SIGKILL)
    t.spin(lambda: box and seen, "the failed read and the closed signal")
    try:
        c.pread_finish(box[0])
        raise AssertionError("the read on a killed server succeeded")
    except GLib.Error as e:
        equal(e.domain, "g-io-error-quark", "the read's error domain (%s)" % e.message)
    error, thread = seen[0]
    check(error is not None, "closed carries the error")
    equal(error.domain, "g-io-error-quark", "closed's error domain (%s)" % error.message)
    equal(thread, t.MAIN_THREAD, "closed runs in this thread")
    equal(c.props.connected, False, "connected")


t.run()
