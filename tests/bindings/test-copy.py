#!/usr/bin/python3
"""test-copy: GnbdCopy from Python: NBD to NBD asynchronously, to a file and
to an in-memory stream synchronously, holes skipped, a failed write as a
GLib.Error naming the destination, the progress signal on the main thread,
and cancellation from it.

Servers (tests/bindings/meson.build): pattern, nbdkit's pattern disk of
8 MiB; mem, a memory disk of 8 MiB; holes, another (the test writes data at
0 and 4 MiB, the rest stays holes); eio, a memory disk whose writes all fail
with EIO; slow, a 16 MiB pattern behind the rate filter (about a second);
big and big2, memory disks of 16 MiB.
"""
import os
import struct
import tempfile
import threading

import gnbdtest as t
from gnbdtest import Gio, GLib, Gnbd, GNBD_ERROR, IO_ERROR, NONE, case, check, equal, wait

MIB = 1024 * 1024


def pattern(offset, length):
    """nbdkit's pattern: each 8-byte word holds its offset, big endian."""
    return b"".join(struct.pack(">Q", o) for o in range(offset, offset + length, 8))


def run_async(copy, cancellable=None):
    src, res = wait(lambda cb: copy.run_async(cancellable, cb), "run_async")
    equal(src, copy, "the callback's source object")
    return copy.run_finish(res)


@case
def nbd_to_nbd_async():
    src, dst = t.connect("pattern"), t.connect("mem")
    copy = Gnbd.Copy.new()
    copy.set_source_client(src, t.uri("pattern"))
    copy.set_destination_client(dst, None)
    copy.props.request_size = 256 * 1024
    equal(run_async(copy), True, "run_finish")
    equal(copy.props.bytes_copied, 8 * MIB, "bytes-copied")
    equal(copy.props.bytes_total, 8 * MIB, "bytes-total")
    equal(copy.get_bytes_copied(), 8 * MIB, "get_bytes_copied")
    for off in (0, 3 * MIB + 512, 8 * MIB - 4096):
        equal(dst.pread(off, 4096, NONE, None).get_data(), pattern(off, 4096),
              "the destination at %d" % off)


@case
def holes_to_a_file_sync():
    src = t.connect("holes")
    data = pattern(0, MIB)
    src.pwrite(GLib.Bytes.new(data), 0, NONE, None)
    src.pwrite(GLib.Bytes.new(data), 4 * MIB, NONE, None)
    with tempfile.TemporaryDirectory(dir=os.environ.get("LIBNBD_CORE_TEST_TMP")) as d:
        path = os.path.join(d, "copy.img")
        copy = Gnbd.Copy.new()
        copy.set_source_client(src, None)
        copy.set_destination_file(Gio.File.new_for_path(path))
        equal(copy.run(None), True, "run")
        equal(copy.props.bytes_skipped, 6 * MIB, "bytes-skipped: the holes")
        with open(path, "rb") as f:
            out = f.read()
    equal(len(out), 8 * MIB, "the file's size")
    check(out[:MIB] == data and out[4 * MIB:5 * MIB] == data, "the data")
    check(out[MIB:4 * MIB] == bytes(3 * MIB) and out[5 * MIB:] == bytes(3 * MIB), "the holes")


@case
def into_a_memory_stream():
    out = Gio.MemoryOutputStream.new_resizable()
    copy = Gnbd.Copy.new()
    copy.set_source_client(t.connect("pattern"), None)
    copy.set_destination_stream(out)
    equal(copy.run(None), True, "run")
    out.close(None)
    equal(out.steal_as_bytes().get_data(), pattern(0, 8 * MIB), "the stream's contents")


@case
def from_a_memory_stream():
    dst = t.connect("mem")
    data = bytes(range(256)) * 4096 + b"tail"
    copy = Gnbd.Copy.new()
    copy.set_source_stream(Gio.MemoryInputStream.new_from_bytes(GLib.Bytes.new(data)))
    copy.set_destination_client(dst, None)
    equal(run_async(copy), True, "run_finish")
    equal(copy.props.bytes_total, len(data), "bytes-total: the stream's length, at its end")
    equal(dst.pread(0, len(data), NONE, None).get_data(), data, "the destination")


@case
def a_failed_write_names_the_destination():
    copy = Gnbd.Copy.new()
    copy.set_source_client(t.connect("pattern"), None)
    copy.set_destination_client(t.connect("eio"), None)
    e = t.expect_error(lambda: copy.run(None), GNBD_ERROR, Gnbd.Error.IO, "a failed write")
    check(e.message.startswith("Writing the destination at offset "), e.message)


@case
def progress_on_the_main_thread():
    copy = Gnbd.Copy.new()
    copy.set_source_client(t.connect("slow"), None)
    copy.set_destination_client(t.connect("big"), None)
    seen = []

    def on_progress(c, copied, total):
        seen.append((copied, total, threading.get_ident()))

    copy.connect("progress", on_progress)
    equal(run_async(copy), True, "run_finish")
    check(len(seen) >= 1, "progress was signalled during a copy of about a second")
    check(all(s[2] == t.MAIN_THREAD for s in seen), "every signal on the main thread")
    check(all(s[1] == 16 * MIB for s in seen), "bytes-total in every signal")
    copied = [s[0] for s in seen]
    equal(copied, sorted(copied), "bytes-copied only grows")


@case
def cancelled_from_the_progress_signal():
    copy = Gnbd.Copy.new()
    dst = t.connect("big2")
    copy.set_source_client(t.connect("slow"), None)
    copy.set_destination_client(dst, None)
    cancellable = Gio.Cancellable()
    copy.connect("progress", lambda c, copied, total: copied and cancellable.cancel())
    t.expect_error(lambda: run_async(copy, cancellable), IO_ERROR, Gio.IOErrorEnum.CANCELLED,
                   "a cancelled copy")
    n = copy.props.bytes_copied
    check(0 < n < 16 * MIB, "stopped mid-way: %d bytes copied" % n)
    equal(dst.pread(0, n, NONE, None).get_data(), pattern(0, n),
          "the destination up to bytes-copied")


t.run()
