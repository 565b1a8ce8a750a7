// test-copy.js: GnbdCopy from GJS: NBD to NBD as a Promise, to a file and
// to an in-memory stream synchronously, holes skipped, a failed write as a
// GLib.Error naming the destination, the progress signal, and cancellation
// from it.
//
// Servers (tests/bindings/meson.build): pattern, nbdkit's pattern disk of
// 8 MiB; mem, a memory disk of 8 MiB; holes, another (the test writes data
// at 0 and 4 MiB, the rest stays holes); eio, a memory disk whose writes all
// fail with EIO; slow, a 16 MiB pattern behind the rate filter (about a
// second); big and big2, memory disks of 16 MiB.
import * as t from './gnbdtest.js';
const {GLib, Gio, Gnbd, NONE, MIB, check, equal} = t;
const GNBD_ERROR = Gnbd.error_quark();
const IO_ERROR = Gio.io_error_quark();

Gio._promisify(Gnbd.Copy.prototype, 'run_async', 'run_finish');

// nbdkit's pattern: each 8-byte word holds its offset, big endian.
function pattern(offset, length) {
    const u8 = new Uint8Array(length);
    const view = new DataView(u8.buffer);
    for (let i = 0; i < length; i += 8)
        view.setBigUint64(i, BigInt(offset + i));
    return u8;
}

t.test('NBD to NBD, as a promise', async () => {
    const src = t.connect('pattern'), dst = t.connect('mem');
    const copy = Gnbd.Copy.new();
    copy.set_source_client(src, t.uri('pattern'));
    copy.set_destination_client(dst, null);
    copy.request_size = 256 * 1024;
    equal(await copy.run_async(null), true, 'run_async');
    equal(copy.bytes_copied, 8 * MIB, 'bytes-copied');
    equal(copy.bytes_total, 8 * MIB, 'bytes-total');
    for (const off of [0, 3 * MIB + 512, 8 * MIB - 4096])
        check(t.sameBytes(dst.pread(off, 4096, NONE, null), pattern(off, 4096)),
            `the destination at ${off}`);
});

t.test('holes, to a file, sync', async () => {
    const src = t.connect('holes');
    const data = pattern(0, MIB);
    src.pwrite(data, 0, NONE, null);
    src.pwrite(data, 4 * MIB, NONE, null);
    const dir = GLib.Dir.make_tmp('gnbd-copy-XXXXXX');
    const file = Gio.File.new_for_path(GLib.build_filenamev([dir, 'copy.img']));
    const copy = Gnbd.Copy.new();
    copy.set_source_client(src, null);
    copy.set_destination_file(file);
    equal(copy.run(null), true, 'run');
    equal(copy.bytes_skipped, 6 * MIB, 'bytes-skipped: the holes');
    const [, out] = file.load_contents(null);
    file.delete(null);
    Gio.File.new_for_path(dir).delete(null);
    equal(out.length, 8 * MIB, "the file's size");
    check(t.sameBytes(new GLib.Bytes(out.subarray(0, MIB)), data), 'the data at 0');
    check(t.sameBytes(new GLib.Bytes(out.subarray(4 * MIB, 5 * MIB)), data), 'the data at 4 MiB');
    check(out.subarray(MIB, 4 * MIB).every(b => b === 0), 'the holes read as zeroes');
});

t.test('into a memory stream', async () => {
    const out = Gio.MemoryOutputStream.new_resizable();
    const copy = Gnbd.Copy.new();
    copy.set_source_client(t.connect('pattern'), null);
    copy.set_destination_stream(out);
    equal(copy.run(null), true, 'run');
    out.close(null);
    check(t.sameBytes(out.steal_as_bytes(), pattern(0, 8 * MIB)), "the stream's contents");
});

t.test('from a memory stream', async () => {
    const dst = t.connect('mem');
    const data = new Uint8Array(MIB + 4).map((_, i) => (i * 7) & 0xff);
    const copy = Gnbd.Copy.new();
    copy.set_source_stream(Gio.MemoryInputStream.new_from_bytes(new GLib.Bytes(data)));
    copy.set_destination_client(dst, null);
    equal(await copy.run_async(null), true, 'run_async');
    equal(copy.bytes_total, data.length, "bytes-total: the stream's length, at its end");
    check(t.sameBytes(dst.pread(0, data.length, NONE, null), data), 'the destination');
});

t.test('a failed write names the destination', async () => {
    const copy = Gnbd.Copy.new();
    copy.set_source_client(t.connect('pattern'), null);
    copy.set_destination_client(t.connect('eio'), null);
    const e = await t.expectError(() => copy.run_async(null), GNBD_ERROR, Gnbd.Error.IO,
        'a failed write');
    check(e.message.startsWith('Writing the destination at offset '), e.message);
});

t.test('progress', async () => {
    const copy = Gnbd.Copy.new();
    copy.set_source_client(t.connect('slow'), null);
    copy.set_destination_client(t.connect('big'), null);
    const seen = [];
    copy.connect('progress', (c, copied, total) => seen.push([copied, total]));
    equal(await copy.run_async(null), true, 'run_async');
    check(seen.length >= 1, 'progress was signalled during a copy of about a second');
    check(seen.every(s => s[1] === 16 * MIB), 'bytes-total in every signal');
    check(seen.every((s, i) => i === 0 || s[0] >= seen[i - 1][0]), 'bytes-copied only grows');
});

t.test('cancelled from the progress signal', async () => {
    const copy = Gnbd.Copy.new();
    const dst = t.connect('big2');
    copy.set_source_client(t.connect('slow'), null);
    copy.set_destination_client(dst, null);
    const cancellable = new Gio.Cancellable();
    copy.connect('progress', (c, copied) => {
        if (copied > 0)
            cancellable.cancel();
    });
    await t.expectError(() => copy.run_async(cancellable), IO_ERROR,
        Gio.IOErrorEnum.CANCELLED, 'a cancelled copy');
    const n = copy.bytes_copied;
    check(n > 0 && n < 16 * MIB, `stopped mid-way: ${n} bytes copied`);
    check(t.sameBytes(dst.pread(0, n, NONE, null), pattern(0, n)),
        'the destination up to bytes-copied');
});

await t.run();
