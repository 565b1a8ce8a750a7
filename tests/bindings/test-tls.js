// test-tls.js: TLS from GJS: a server that requires it refuses a client
// that does not offer it with Gnbd.Error.TLS_REQUIRED (and says what to
// set); the client's PSK settings negotiate it; a wrong key is
// Gnbd.Error.TLS_FAILED.
//
// Server (tests/bindings/meson.build): psk, an nbdkit memory disk of 1 MiB
// requiring TLS with the pre-shared key that with-nbdkit.py makes (user
// "gnbd", the file in NBD_PSK_FILE).
import * as t from './gnbdtest.js';
const {GLib, Gnbd, NONE, check, equal} = t;
const GNBD_ERROR = Gnbd.error_quark();

function pskClient(pskFile) {
    return new Gnbd.Client({tls: Gnbd.Tls.REQUIRE, tls_psk_file: pskFile, tls_username: 'gnbd'});
}

t.test('TLS required and not offered', async () => {
    const c = new Gnbd.Client();
    const e = await t.expectError(() => c.connect_unix_async(t.socketPath('psk'), null), GNBD_ERROR,
        Gnbd.Error.TLS_REQUIRED, 'connect without TLS');
    check(/tls/i.test(e.message), `the message says what to set: ${e.message}`);
    equal(c.connected, false, 'connected');
});

t.test('PSK negotiates TLS', async () => {
    const c = pskClient(GLib.getenv('NBD_PSK_FILE'));
    await c.connect_unix_async(t.socketPath('psk'), null);
    equal(c.tls_negotiated, true, 'tls-negotiated');
    await c.pwrite_async(t.filled(0x54, 4096), 0, NONE, null);
    check(t.sameBytes(await c.pread_async(0, 4096, NONE, null), t.filled(0x54, 4096)),
        'read back over TLS');
    await c.shutdown_async(null);
});

t.test('a wrong key fails', async () => {
    // Beside the right key, in the runner's private directory (removed after).
    const bad = GLib.build_filenamev([GLib.path_get_dirname(GLib.getenv('NBD_PSK_FILE')), 'wrong-js.psk']);
    GLib.file_set_contents(bad, `gnbd:${'00'.repeat(32)}\n`);
    const c = pskClient(bad);
    await t.expectError(() => c.connect_unix(t.socketPath('psk'), null), GNBD_ERROR,
        Gnbd.Error.TLS_FAILED, 'connect with a wrong key');
    equal(c.connected, false, 'connected');
});

await t.run();
