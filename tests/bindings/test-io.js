// test-io.js: connecting, the export's facts and every request,
// synchronously, from GJS.
//
// Servers (tests/bindings/meson.build): rw, an nbdkit memory disk of 1 MiB
// advertising block sizes 512, 4096 and 1 MiB (the blocksize-policy filter);
// ro, nbdkit's pattern plugin read-only (each 8-byte word holds its own
// offset, big-endian); exports, a memory disk behind the exportname filter
// listing "a" and "b" with one description.
import * as t from './gnbdtest.js';
const {GLib, Gnbd, NONE, MIB, check, equal} = t;

function pattern(offset, length) {
    const u8 = new Uint8Array(length);
    const view = new DataView(u8.buffer);
    for (let i = 0; i < length; i += 8)
        view.setBigUint64(i, BigInt(offset + i));
    return u8;
}

t.test('connect_uri and facts', () => {
    const c = new Gnbd.Client();
    equal(c.connected, false, 'connected before connecting');
    c.connect_uri(t.uri('rw'), null);
    equal(c.connected, true, 'connected');
    equal(c.size, MIB, 'size');
    equal(c.read_only, false, 'read-only');
    for (const fact of ['can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_cache', 'can_multi_conn'])
        equal(c[fact], true, fact);
    equal(c.protocol, 'newstyle-fixed', 'protocol');
    equal(c.tls_negotiated, false, 'tls-negotiated');
    equal(c.structured_replies_negotiated, true, 'structured-replies-negotiated');
    equal([c.block_size_minimum, c.block_size_preferred, c.block_size_maximum], [512, 4096, MIB],
        'block sizes');
    c.shutdown(null);
});

t.test('settings are properties', () => {
    const c = new Gnbd.Client({
        export_name: 'disk', tls: Gnbd.Tls.ALLOW, meta_contexts: ['base:allocation'],
        handle_name: 'gjs-test', concurrent_writer: false,
    });
    equal(c.export_name, 'disk', 'export-name');
    equal(c.tls, Gnbd.Tls.ALLOW, 'tls');
    equal(c.meta_contexts, ['base:allocation'], 'meta-contexts');
    equal(c.handle_name, 'gjs-test', 'handle-name');
    equal(c.concurrent_writer, false, 'concurrent-writer');
    equal(new Gnbd.Client().concurrent_writer, true, 'concurrent-writer by default');
    // NULL in C (base:allocation); GJS shows a NULL GStrv as [].
    equal(new Gnbd.Client().meta_contexts, [], 'meta-contexts by default');
});

t.test('connect_unix, read-only, the pattern', () => {
    const c = new Gnbd.Client();
    c.connect_unix(t.socketPath('ro'), null);
    equal(c.read_only, true, 'read-only');
    const data = c.pread(8192, 4096, NONE, null);
    check(data instanceof GLib.Bytes, `pread returns GLib.Bytes, not ${data}`);
    check(t.sameBytes(data, pattern(8192, 4096)), 'the pattern at 8192');
    c.shutdown(null);
});

t.test('connect_command takes an argv array', () => {
    const c = new Gnbd.Client();
    c.connect_command(['nbdkit', '-s', '--exit-with-parent', 'memory', 'size=3M'], null);
    equal(c.size, 3 * MIB, "size of the subprocess's disk");
    c.pwrite(t.filled(7, 300), 0, NONE, null);
    check(t.sameBytes(c.pread(0, 300, NONE, null), t.filled(7, 300)), 'read back');
    c.shutdown(null);
});

t.test('pwrite, pread, flush, trim, zero, cache', () => {
    const c = t.connect('rw');
    const payload = new Uint8Array(16384).map((_, i) => i & 0xff);
    // A Uint8Array goes in where the C API takes GBytes; so does a GLib.Bytes.
    equal(c.pwrite(payload, 65536, NONE, null), true, 'pwrite of a Uint8Array');
    check(t.sameBytes(c.pread(65536, payload.length, NONE, null), payload), 'read back');
    equal(c.pwrite(t.bytes(payload.slice(0, 512)), 0, Gnbd.CommandFlags.FUA, null), true,
        'pwrite of a GLib.Bytes with FUA');
    equal(c.flush(NONE, null), true, 'flush');
    equal(c.trim(65536, 4096, NONE, null), true, 'trim');
    check(t.sameBytes(c.pread(65536, 4096, NONE, null), t.filled(0, 4096)), 'trimmed reads as zero');
    equal(c.zero(65536 + 4096, 4096, Gnbd.CommandFlags.NO_HOLE, null), true, 'zero');
    check(t.sameBytes(c.pread(65536, 8192, NONE, null), t.filled(0, 8192)), 'zeroed reads as zero');
    check(t.sameBytes(c.pread(65536 + 8192, 4096, NONE, null), payload.slice(8192, 12288)),
        'beyond the zeroed range the data stays');
    equal(c.cache(65536, MIB - 65536, NONE, null), true, 'cache');
    c.shutdown(null);
});

t.test('the same with the writer off', () => {
    const c = new Gnbd.Client({concurrent_writer: false});
    c.connect_uri(t.uri('rw'), null);
    const payload = new Uint8Array(8192).map((_, i) => (i * 3) & 0xff);
    equal(c.pwrite(payload, 4096, NONE, null), true, 'pwrite');
    check(t.sameBytes(c.pread(4096, payload.length, NONE, null), payload), 'read back');
    equal(c.flush(NONE, null), true, 'flush');
    c.shutdown(null);
});

t.test('block_status returns extents', () => {
    const c = t.connect('rw');
    // The memory plugin maps in 32 KiB pages: data, hole, data, hole...
    c.pwrite(t.filled(1, 4096), 0, NONE, null);
    c.pwrite(t.filled(2, 4096), 65536, NONE, null);
    const extents = c.block_status(0, MIB, null, NONE, null);
    check(extents.length >= 4, `at least 4 extents, got ${extents.length}`);
    check(extents.every(e => e instanceof Gnbd.Extent), 'elements are Gnbd.Extent');
    equal(extents.slice(0, 4).map(e => [e.get_offset(), e.get_length(), e.get_flags()]),
        [[0, 32768, 0], [32768, 32768, 3], [65536, 32768, 0], [98304, MIB - 98304, 3]], 'the map');
    const one = c.block_status(32768, MIB - 32768, 'base:allocation', Gnbd.CommandFlags.REQ_ONE, null);
    equal(one.map(e => [e.get_offset(), e.get_flags()]), [[32768, 3]], 'REQ_ONE');
    c.shutdown(null);
});

t.test('list_exports on an unconnected client', () => {
    const exports = new Gnbd.Client().list_exports(t.uri('exports'), null);
    check(exports.every(e => e instanceof Gnbd.Export), 'elements are Gnbd.Export');
    equal(exports.map(e => [e.get_name(), e.get_description()]),
        [['a', 'gnbd exports'], ['b', 'gnbd exports']], 'the list');
});

t.test('facts of a named export', () => {
    const c = new Gnbd.Client({export_name: 'b'});
    c.connect_uri(t.uri('exports'), null);
    equal(c.export_name, 'b', 'export-name');
    equal(c.size, MIB, 'size');
    c.shutdown(null);
});

await t.run();
