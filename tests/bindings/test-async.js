// test-async.js: the _async/_finish calls from GJS, as Promises
// (Gio._promisify) and as callbacks, and cancellation.
//
// Servers (tests/bindings/meson.build): rw, an nbdkit memory disk of 1 MiB;
// slow, the same behind the delay filter, each read answered after 500 ms.
import * as t from './gnbdtest.js';
const {GLib, Gio, Gnbd, NONE, MIB, check, equal} = t;
const IO_ERROR = Gio.io_error_quark();

async function connectAsync(name) {
    const c = new Gnbd.Client();
    equal(await c.connect_uri_async(t.uri(name), null), true, 'connect_uri_async');
    return c;
}

t.test('every request, as promises', async () => {
    const c = await connectAsync('rw');
    equal(c.connected, true, 'connected');
    const payload = t.filled(0x61, 6000);
    equal(await c.pwrite_async(payload, 4096, NONE, null), true, 'pwrite');
    check(t.sameBytes(await c.pread_async(4096, 6000, NONE, null), payload), 'pread');
    equal(await c.flush_async(NONE, null), true, 'flush');
    equal(await c.trim_async(4096, 4096, NONE, null), true, 'trim');
    equal(await c.zero_async(8192, 4096, NONE, null), true, 'zero');
    equal(await c.cache_async(0, MIB, NONE, null), true, 'cache');
    check(t.sameBytes(await c.pread_async(4096, 8192, NONE, null), t.filled(0, 8192)),
        'trimmed and zeroed');
    const extents = await c.block_status_async(0, MIB, null, NONE, null);
    check(extents.length >= 1 && extents[0].get_offset() === 0, 'extents from offset 0');
    equal(await c.shutdown_async(null), true, 'shutdown');
    equal(c.connected, false, 'connected after shutdown');
});

t.test('a callback, with its source object', async () => {
    const c = await connectAsync('rw');
    const [source, data] = await new Promise((resolve, reject) => {
        c.pread_async(0, 512, NONE, null, (obj, res) => {
            try {
                resolve([obj, obj.pread_finish(res)]);
            } catch (e) {
                reject(e);
            }
        });
    });
    check(source === c, 'the source object is the client');
    equal(data.get_size(), 512, 'size');
    c.shutdown(null);
});

t.test('list_exports_async', async () => {
    const exports = await new Gnbd.Client().list_exports_async(t.uri('rw'), null);
    equal(exports.map(e => e.get_name()), [''], 'nbdkit memory lists the default export');
});

t.test('64 reads in flight', async () => {
    const c = await connectAsync('rw');
    const blocks = 64;
    for (let i = 0; i < blocks; i++)
        c.pwrite(t.filled(i, 4096), i * 4096, NONE, null);
    const reads = [];
    for (let i = 0; i < blocks; i++)
        reads.push(c.pread_async(i * 4096, 4096, NONE, null));
    const results = await Promise.all(reads);
    results.forEach((data, i) => check(t.sameBytes(data, t.filled(i, 4096)), `block ${i}`));
    c.shutdown(null);
});

t.test('cancelled before the call', async () => {
    const c = t.connect('rw');
    const cancellable = new Gio.Cancellable();
    cancellable.cancel();
    await t.expectError(() => c.pread(0, 512, NONE, cancellable), IO_ERROR,
        Gio.IOErrorEnum.CANCELLED, 'sync pread, cancelled before');
    const e = await t.expectError(() => c.pwrite_async(t.filled(1, 512), 0, NONE, cancellable),
        IO_ERROR, Gio.IOErrorEnum.CANCELLED, 'async pwrite, cancelled before');
    check(e.matches(Gio.IOErrorEnum, Gio.IOErrorEnum.CANCELLED), 'matches (Gio.IOErrorEnum, CANCELLED)');
    check(t.sameBytes(c.pread(0, 512, NONE, null), t.filled(0, 512)), 'the write never happened');
    c.shutdown(null);
});

t.test('cancelled while in flight', async () => {
    const c = t.connect('slow');
    c.pwrite(t.filled(0x4c, 4096), 0, NONE, null);
    const cancellable = new Gio.Cancellable();
    const read = c.pread_async(0, 4096, NONE, cancellable);
    // The read is on its way (the server sits on it for 500 ms): cancel it.
    cancellable.cancel();
    await t.expectError(() => read, IO_ERROR, Gio.IOErrorEnum.CANCELLED,
        'async pread, cancelled in flight');
    // The late reply is discarded; the next requests get their own answers.
    c.pwrite(t.filled(0x4e, 4096), 4096, NONE, null);
    check(t.sameBytes(await c.pread_async(4096, 4096, NONE, null), t.filled(0x4e, 4096)), 'the next read');
    check(t.sameBytes(c.pread(0, 4096, NONE, null), t.filled(0x4c, 4096)), 'the first block again');
    c.shutdown(null);
});

t.test('64-bit offsets: Number and BigInt', () => {
    const c = t.connect('rw');
    equal(c.pread(MIB - 512, 512, NONE, null).get_size(), 512, 'a Number');
    equal(c.pread(BigInt(MIB - 512), 512, NONE, null).get_size(), 512, 'a BigInt');
    c.shutdown(null);
});

await t.run();
