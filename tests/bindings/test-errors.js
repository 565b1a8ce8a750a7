// test-errors.js: GError matching from GJS.  Requests that the client or
// the server refuses throw GLib.Error in the Gnbd.Error domain and leave
// the connection usable; a transport that cannot be reached is a
// Gio.IOErrorEnum.
//
// Servers (tests/bindings/meson.build): rw, an nbdkit memory disk of 1 MiB;
// ro, the same read-only; eio, a memory disk behind the error filter, every
// read failing with EIO; nocache, a memory disk that does not offer cache
// (the nocache filter, cachemode=none).
import * as t from './gnbdtest.js';
const {GLib, Gio, Gnbd, NONE, MIB, check, equal} = t;
const GNBD_ERROR = Gnbd.error_quark();
const IO_ERROR = Gio.io_error_quark();

t.test('the domain is registered', () => {
    equal(GLib.quark_to_string(GNBD_ERROR), 'gnbd-error-quark', 'the quark');
    for (const code of ['FAILED', 'PERMISSION', 'IO', 'NO_MEMORY', 'INVALID', 'NO_SPACE',
        'OVERFLOW', 'NOT_SUPPORTED', 'SHUTDOWN', 'PROTOCOL'])
        check(typeof Gnbd.Error[code] === 'number', `Gnbd.Error.${code} exists`);
});

t.test('write to a read-only export', async () => {
    const c = t.connect('ro');
    const e = await t.expectError(() => c.pwrite(t.filled(1, 512), 0, NONE, null),
        GNBD_ERROR, Gnbd.Error.PERMISSION, 'pwrite on ro');
    // The enum stands for its domain, as GLib's own domains do.
    check(e.matches(Gnbd.Error, Gnbd.Error.PERMISSION), 'matches (Gnbd.Error, PERMISSION)');
    check(!e.matches(Gio.IOErrorEnum, Gio.IOErrorEnum.PERMISSION_DENIED), 'not a Gio.IOErrorEnum');
    await t.expectError(() => c.pwrite_async(t.filled(2, 512), 0, NONE, null), GNBD_ERROR,
        Gnbd.Error.PERMISSION, 'pwrite_async on ro');
    // As libnbd: the export does not offer zero (can-zero is false), which
    // the client checks before read-only.
    await t.expectError(() => c.zero(0, 512, NONE, null), GNBD_ERROR, Gnbd.Error.INVALID,
        'zero on ro');
    equal(c.pread(0, 512, NONE, null).get_size(), 512, 'usable after');
    c.shutdown(null);
});

t.test('read beyond the end', async () => {
    const c = t.connect('rw');
    await t.expectError(() => c.pread(MIB - 512, 1024, NONE, null), GNBD_ERROR,
        Gnbd.Error.INVALID, 'pread past the end');
    equal(c.pread(MIB - 512, 512, NONE, null).get_size(), 512, 'usable after');
    c.shutdown(null);
});

t.test('the server reports EIO', async () => {
    const c = t.connect('eio');
    const e = await t.expectError(() => c.pread_async(0, 4096, NONE, null), GNBD_ERROR,
        Gnbd.Error.IO, 'pread from the error filter');
    check(/server/i.test(e.message), `the message says the server failed: ${e.message}`);
    equal(c.pwrite(t.filled(0x77, 4096), 0, NONE, null), true, 'writes still work on that connection');
    c.shutdown(null);
});

t.test('cache the server does not offer', async () => {
    const c = t.connect('nocache');
    equal(c.can_cache, false, 'can-cache');
    // As libnbd: the client refuses it (EINVAL) without asking the server.
    await t.expectError(() => c.cache(0, 4096, NONE, null), GNBD_ERROR,
        Gnbd.Error.INVALID, 'cache without can-cache');
    equal(c.pread(0, 512, NONE, null).get_size(), 512, 'usable after');
    c.shutdown(null);
});

t.test('a request before connecting', async () => {
    await t.expectError(() => new Gnbd.Client().pread(0, 512, NONE, null), IO_ERROR,
        Gio.IOErrorEnum.NOT_CONNECTED, 'pread before connect');
});

t.test('no server at that socket', async () => {
    const c = new Gnbd.Client();
    const missing = GLib.build_filenamev([GLib.path_get_dirname(t.socketPath('rw')), 'nobody-here']);
    try {
        await c.connect_unix_async(missing, null);
        throw new Error('connect_unix to a missing socket succeeded');
    } catch (e) {
        check(e instanceof GLib.Error, `a GLib.Error: ${e}`);
        check(e.matches(IO_ERROR, Gio.IOErrorEnum.NOT_FOUND) ||
              e.matches(IO_ERROR, Gio.IOErrorEnum.CONNECTION_REFUSED),
        `NOT_FOUND or CONNECTION_REFUSED, got ${GLib.quark_to_string(e.domain)} ${e.code}: ${e.message}`);
    }
    equal(c.connected, false, 'connected');
});

await t.run();
