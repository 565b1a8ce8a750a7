// copy.js: copy one NBD export to another from GJS through gnbd, with
// REQUESTS requests in flight, then verify the copy.
//
// Each of REQUESTS async workers takes the next chunk, awaits its read from
// SRC and then its write to DST; the reads of one worker overlap the writes
// of another, so REQUESTS requests are in flight at any time.  The GLib.Bytes
// a read returns goes to the write as it is: gnbd sends it without a copy.
// Then DST is flushed and both exports are read back and compared.
//
//   gjs -m copy.js SRC-URI DST-URI [REQUESTS [CHUNK_BYTES]]
//
// From a build tree: meson devenv -C build --workdir . gjs -m examples/gjs/copy.js SRC DST
import Gio from 'gi://Gio';
import GLib from 'gi://GLib';
import Gnbd from 'gi://Gnbd?version=1.0';
import System from 'system';

for (const name of ['connect_uri', 'pread', 'pwrite', 'flush', 'shutdown'])
    Gio._promisify(Gnbd.Client.prototype, `${name}_async`, `${name}_finish`);

const NONE = Gnbd.CommandFlags.NONE;

// Compares through toArray(): GJS 1.74 keeps a GLib.Bytes alive for good
// once one of GLib's own methods (equal, get_data...) was called on it.
function sameBytes(a, b) {
    const x = a.toArray(), y = b.toArray();
    return x.length === y.length && x.every((v, i) => v === y[i]);
}

// Run REQUESTS workers over [0, size) in chunks; each calls job(offset, len).
function forEachChunk(size, chunk, requests, job) {
    let next = 0;
    const worker = async () => {
        while (next < size) {
            const offset = next;
            const len = Math.min(chunk, size - offset);
            next += len;
            // eslint-disable-next-line no-await-in-loop
            await job(offset, len);
        }
    };
    return Promise.all(Array.from({length: requests}, worker));
}

async function main(srcUri, dstUri, requests, chunk) {
    const src = new Gnbd.Client();
    const dst = new Gnbd.Client();
    // Always pass the cancellable (null): without it the arguments shift.
    await Promise.all([src.connect_uri_async(srcUri, null), dst.connect_uri_async(dstUri, null)]);
    if (dst.read_only)
        throw new Error('the destination export is read-only');
    if (dst.size < src.size)
        throw new Error(`the destination (${dst.size} bytes) is smaller than the source (${src.size} bytes)`);

    const size = src.size;
    const started = GLib.get_monotonic_time();
    await forEachChunk(size, chunk, requests, async (offset, len) => {
        const data = await src.pread_async(offset, len, NONE, null);
        await dst.pwrite_async(data, offset, NONE, null);
    });
    const seconds = (GLib.get_monotonic_time() - started) / 1e6;
    print(`copied ${size} bytes in ${seconds.toFixed(3)} s with ${requests} requests in flight`);
    if (dst.can_flush)
        await dst.flush_async(NONE, null);

    await forEachChunk(size, chunk, requests, async (offset, len) => {
        const [a, b] = await Promise.all([src.pread_async(offset, len, NONE, null),
            dst.pread_async(offset, len, NONE, null)]);
        if (!sameBytes(a, b))
            throw new Error(`the copy differs from the source in the ${len} bytes at offset ${offset}`);
    });
    print('verified: the copy equals the source');
    await Promise.all([src.shutdown_async(null), dst.shutdown_async(null)]);
}

const args = System.programArgs;
const requests = Number(args[2] ?? 16);
const chunk = Number(args[3] ?? 256 * 1024);
if (args.length < 2 || args.length > 4 || !(requests >= 1) || !(chunk >= 1)) {
    printerr('usage: gjs -m copy.js SRC-URI DST-URI [REQUESTS [CHUNK_BYTES]]');
    System.exit(2);
}
try {
    await main(args[0], args[1], requests, chunk);
} catch (e) {
    printerr(`copy.js: ${e.message}`);
    System.exit(1);
}
