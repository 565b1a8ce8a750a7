// test-arrays.js: calls returning arrays of boxed elements, and data, many
// times over, from GJS.  Both arrays are (transfer container): GJS frees
// each element once; with (transfer full) it would free them twice and
// abort.  The resident size stays flat (after a GC), so nothing leaks
// either; coarser than the Python test's count of C memory, hence more
// calls for the listing.
//
// GJS 1.74 itself keeps every GLib.Bytes alive on which a method of GLib's
// (get_size, get_data, equal) was called, even after a GC (measured: 64 KiB
// per call of get_size on 64 KiB read_bytes results of GIO's own); its
// toArray() override does not.  So the reads are looked at with toArray().
//
// Server (tests/bindings/meson.build): rw, an nbdkit memory disk of 16 MiB.
import * as t from './gnbdtest.js';
const {Gnbd, NONE, MIB, check, equal} = t;

// The memory plugin maps in 32 KiB pages: 4 KiB written every 64 KiB over
// 8 MiB gives 256 extents per call.
const STRIDE = 65536;
const SPAN = 8 * MIB;
// Leaking anything per call costs more than this over the calls below: an
// extent is tens of bytes (2000 calls of 256), a read 64 KiB, a listing's
// connection a handle (about 10 KiB of it resident).
const GROWTH_LIMIT = 8 * MIB;

function flat(what, n, one) {
    for (let i = 0; i < Math.max(20, n / 10); i++)
        one();
    const before = t.rssBytes();
    for (let i = 0; i < n; i++) {
        one();
        if (i % 200 === 199)
            t.System.gc();
    }
    const growth = t.rssBytes() - before;
    check(growth < GROWTH_LIMIT, `resident size grew by ${growth} bytes over ${n} ${what}`);
}

t.test('2000 block_status calls', () => {
    const c = t.connect('rw');
    for (let off = 0; off < SPAN; off += STRIDE)
        c.pwrite(t.filled(0xaa, 4096), off, NONE, null);
    const expected = 2 * SPAN / STRIDE;
    flat('block_status calls', 2000, () => {
        const extents = c.block_status(0, SPAN, null, NONE, null);
        check(extents.length >= expected, `at least ${expected} extents, got ${extents.length}`);
        check(extents[1].get_offset() === 32768 && extents[1].get_flags() === 3,
            'the second extent is the first hole');
    });
    c.shutdown(null);
});

t.test('1000 list_exports calls', () => {
    const client = new Gnbd.Client();
    flat('list_exports calls', 1000, () => {
        const exports = client.list_exports(t.uri('rw'), null);
        equal(exports.map(e => e.get_name()), [''], 'the list');
    });
});

t.test('2000 preads', () => {
    const c = t.connect('rw');
    flat('reads', 2000, () => equal(c.pread(0, 65536, NONE, null).toArray().length, 65536, 'size'));
    c.shutdown(null);
});

await t.run();
