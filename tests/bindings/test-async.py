#!/usr/bin/python3
"""test-async: the _async/_finish calls from Python, cancellation, and sync
calls from another thread.

Servers (tests/bindings/meson.build): rw, an nbdkit memory disk of 1 MiB;
slow, the same behind the delay filter, each read answered after 500 ms.
"""
import threading

import gnbdtest as t
from gnbdtest import Gio, GLib, Gnbd, IO_ERROR, NONE, case, check, equal, wait

MIB = 1024 * 1024


def connect_async(name):
    c = Gnbd.Client()
    src, res = wait(lambda cb: c.connect_uri_async(t.uri(name), None, cb), "connect_uri_async")
    equal(src, c, "the callback's source object")
    equal(c.connect_uri_finish(res), True, "connect_uri_finish")
    return c


@case
def every_request_async():
    c = connect_async("rw")
    equal(c.props.connected, True, "connected")
    payload = GLib.Bytes.new(b"async!" * 1000)
    _, r = wait(lambda cb: c.pwrite_async(payload, 4096, NONE, None, cb))
    equal(c.pwrite_finish(r), True, "pwrite_finish")
    _, r = wait(lambda cb: c.pread_async(4096, 6000, NONE, None, cb))
    equal(c.pread_finish(r).get_data(), b"async!" * 1000, "pread_finish")
    _, r = wait(lambda cb: c.flush_async(NONE, None, cb))
    equal(c.flush_finish(r), True, "flush_finish")
    _, r = wait(lambda cb: c.trim_async(4096, 4096, NONE, None, cb))
    equal(c.trim_finish(r), True, "trim_finish")
    _, r = wait(lambda cb: c.zero_async(8192, 4096, NONE, None, cb))
    equal(c.zero_finish(r), True, "zero_finish")
    _, r = wait(lambda cb: c.cache_async(0, MIB, NONE, None, cb))
    equal(c.cache_finish(r), True, "cache_finish")
    _, r = wait(lambda cb: c.pread_async(4096, 8192, NONE, None, cb))
    equal(c.pread_finish(r).get_data(), bytes(8192), "trimmed and zeroed")
    _, r = wait(lambda cb: c.block_status_async(0, MIB, None, NONE, None, cb))
    extents = c.block_status_finish(r)
    check(len(extents) >= 1 and extents[0].get_offset() == 0,
          "block_status_finish: extents from offset 0")
    _, r = wait(lambda cb: c.shutdown_async(None, cb))
    equal(c.shutdown_finish(r), True, "shutdown_finish")
    equal(c.props.connected, False, "connected after shutdown")


@case
def list_exports_async():
    c = Gnbd.Client()
    _, r = wait(lambda cb: c.list_exports_async(t.uri("rw"), None, cb))
    exports = c.list_exports_finish(r)
    equal([e.get_name() for e in exports], [""], "nbdkit memory lists the default export")


@case
def sixty_four_in_flight():
    c = connect_async("rw")
    blocks = 64
    for i in range(blocks):
        c.pwrite(GLib.Bytes.new(bytes([i]) * 4096), i * 4096, NONE, None)
    results = {}

    def read_done(client, result, i):
        results[i] = (client.pread_finish(result).get_data(), threading.get_ident())

    for i in range(blocks):
        c.pread_async(i * 4096, 4096, NONE, None, read_done, i)
    t.spin(lambda: len(results) == blocks, "64 reads")
    for i in range(blocks):
        equal(results[i][0], bytes([i]) * 4096, "block %d" % i)
        equal(results[i][1], t.MAIN_THREAD, "callback thread of block %d" % i)
    c.shutdown(None)


@case
def cancelled_before_the_call():
    c = t.connect("rw")
    cancellable = Gio.Cancellable()
    cancellable.cancel()
    t.expect_error(lambda: c.pread(0, 512, NONE, cancellable), IO_ERROR,
                   Gio.IOErrorEnum.CANCELLED, "sync pread, cancelled before")
    _, r = wait(lambda cb: c.pwrite_async(GLib.Bytes.new(b"x" * 512), 0, NONE, cancellable, cb))
    t.expect_error(lambda: c.pwrite_finish(r), IO_ERROR, Gio.IOErrorEnum.CANCELLED,
                   "async pwrite, cancelled before")
    # Nothing was sent, and the connection is as good as before.
    equal(c.pread(0, 512, NONE, None).get_data(), bytes(512), "the write never happened")
    c.shutdown(None)


@case
def cancelled_while_in_flight():
    c = t.connect("slow")
    c.pwrite(GLib.Bytes.new(b"late" * 1024), 0, NONE, None)
    cancellable = Gio.Cancellable()
    box = []
    c.pread_async(0, 4096, NONE, cancellable, lambda s, r: box.append(r))
    # The read is on its way (the server sits on it for 500 ms): cancel it.
    cancellable.cancel()
    t.spin(lambda: box, "the cancelled read")
    t.expect_error(lambda: c.pread_finish(box[0]), IO_ERROR, Gio.IOErrorEnum.CANCELLED,
                   "async pread, cancelled in flight")
    # The late reply is discarded; the next requests get their own answers.
    c.pwrite(GLib.Bytes.new(b"next" * 1024), 4096, NONE, None)
    equal(c.pread(4096, 4096, NONE, None).get_data(), b"next" * 1024, "the next read")
    equal(c.pread(0, 4096, NONE, None).get_data(), b"late" * 1024, "the first block again")
    c.shutdown(None)


@case
def cancelled_sync_call_from_another_thread():
    c = t.connect("slow")
    cancellable = Gio.Cancellable()
    errors = []

    def reader():
        try:
            c.pread(0, 4096, NONE, cancellable)
            errors.append(None)
        except GLib.Error as e:
            errors.append(e)

    th = threading.Thread(target=reader)
    th.start()
    # Races the read on purpose: cancelled before it is sent, while it is in
    # flight, or (on a slow machine) after the reply; never a hang.
    cancellable.cancel()
    th.join(t.WAIT_SECONDS)
    check(not th.is_alive(), "the sync pread returned")
    if errors[0] is not None:
        check(errors[0].matches(IO_ERROR, Gio.IOErrorEnum.CANCELLED),
              "expected G_IO_ERROR_CANCELLED, got %s" % errors[0].message)
    equal(len(c.pread(0, 512, NONE, None).get_data()), 512, "usable after")
    c.shutdown(None)


@case
def sync_calls_from_threads_without_a_main_loop():
    c = t.connect("rw")
    results = []

    def worker(i):
        c.pwrite(GLib.Bytes.new(bytes([i + 1]) * 4096), i * 4096, NONE, None)
        results.append(c.pread(i * 4096, 4096, NONE, None).get_data() == bytes([i + 1]) * 4096)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(t.WAIT_SECONDS)
    equal(results, [True] * 8, "each thread read back its own block")
    c.shutdown(None)


t.run()
