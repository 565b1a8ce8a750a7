// test-closed.js: the closed signal from GJS, for a shutdown (no error) and
// for a server killed with a request in flight (a Gio.IOErrorEnum, for the
// request and for the signal).
//
// Servers (tests/bindings/meson.build): rw, an nbdkit memory disk of 1 MiB;
// victim, a memory disk behind the delay filter that sits 30 s on each
// read, killed here by its PID.
import * as t from './gnbdtest.js';
const {GLib, Gio, NONE, check, equal} = t;
const IO_ERROR = Gio.io_error_quark();

// Every emission of @client's closed signal, and a Promise of the first.
function watch(client) {
    const seen = [];
    let first;
    const firstEmission = new Promise(resolve => {
        first = resolve;
    });
    client.connect('closed', (c, error) => {
        seen.push(error);
        first(error);
    });
    return [seen, firstEmission];
}

t.test('shutdown emits closed without an error', async () => {
    const c = t.connect('rw');
    const [seen, closed] = watch(c);
    const notified = [];
    c.connect('notify::connected', () => notified.push(c.connected));
    await c.shutdown_async(null);
    equal(await closed, null, 'closed carries no error');
    equal(c.connected, false, 'connected');
    equal(notified.slice(-1), [false], 'notify::connected');
    try {
        c.pread(0, 512, NONE, null);
        throw new Error('pread after shutdown succeeded');
    } catch (e) {
        check(e instanceof GLib.Error, `pread after shutdown: a GLib.Error: ${e}`);
    }
    equal(seen.length, 1, 'emissions');
});

t.test('server killed with a request in flight', async () => {
    const c = t.connect('victim');
    const [, closed] = watch(c);
    const read = c.pread_async(0, 4096, NONE, null);
    // Kill it once the read is on its way.  Whether the kill lands before or
    // after the server has read the request, the request must fail.
    Gio.Subprocess.new(['kill', '-KILL', t.serverPid('victim')], Gio.SubprocessFlags.NONE).wait_check(null);
    try {
        await read;
        throw new Error('the read on a killed server succeeded');
    } catch (e) {
        check(e instanceof GLib.Error && e.domain === IO_ERROR,
            `the read fails with a Gio.IOErrorEnum: ${e}`);
    }
    const error = await closed;
    check(error !== null && error.domain === IO_ERROR,
        `closed carries a Gio.IOErrorEnum: ${error}`);
    equal(c.connected, false, 'connected');
});

await t.run();
