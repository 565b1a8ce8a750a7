// info.js: what an NBD server says about an export, from GJS through gnbd.
//
// Lists the server's exports (on a client that is not connected), connects
// to the URI, prints the export's facts (the client's read-only properties)
// and its allocation map (block_status over the whole export).  Every call
// is asynchronous: Gio._promisify turns each _async/_finish pair into a
// method that returns a Promise when called without a callback, and the
// module's top-level await runs the main loop until they settle.
//
//   gjs -m info.js URI
//
// From a build tree: meson devenv -C build --workdir . gjs -m examples/gjs/info.js URI
import Gio from 'gi://Gio';
import Gnbd from 'gi://Gnbd?version=1.0';
import System from 'system';

for (const name of ['connect_uri', 'list_exports', 'block_status', 'shutdown'])
    Gio._promisify(Gnbd.Client.prototype, `${name}_async`, `${name}_finish`);

// base:allocation flags (NBD_STATE_HOLE, NBD_STATE_ZERO).
function describeAllocation(flags) {
    const words = [];
    if (flags & 1)
        words.push('hole');
    if (flags & 2)
        words.push('zero');
    return words.length ? words.join(',') : 'data';
}

async function main(uri) {
    // Listing needs a client of its own: it must not be connected yet.
    // Always pass the cancellable (null): without it the arguments shift.
    const exports = await new Gnbd.Client().list_exports_async(uri, null);
    print(`exports on the server: ${exports.length}`);
    for (const e of exports)
        print(`  export "${e.get_name()}": ${e.get_description() ?? '(no description)'}`);

    const client = new Gnbd.Client();
    await client.connect_uri_async(uri, null);
    // 64-bit values arrive as Numbers: exact up to 2^53 bytes (8 PiB).
    print(`size: ${client.size}`);
    print(`read-only: ${client.read_only}`);
    for (const fact of ['can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_fast_zero',
        'can_cache', 'can_df', 'can_multi_conn', 'is_rotational'])
        print(`${fact.replace(/_/g, '-')}: ${client[fact]}`);
    print(`protocol: ${client.protocol}`);
    print(`tls: ${client.tls_negotiated}`);
    print(`structured replies: ${client.structured_replies_negotiated}`);
    print(`block sizes: minimum ${client.block_size_minimum}, ` +
          `preferred ${client.block_size_preferred}, maximum ${client.block_size_maximum}`);
    print(`description: ${client.export_description ?? '(none)'}`);

    // One request covers at most what the server maps in one reply: ask
    // again from where the last answer ended.
    print('allocation map (base:allocation):');
    for (let offset = 0; offset < client.size;) {
        const count = Math.min(client.size - offset, 0x40000000);
        // eslint-disable-next-line no-await-in-loop
        const extents = await client.block_status_async(offset, count, null,
            Gnbd.CommandFlags.NONE, null);
        if (extents.length === 0)
            throw new Error(`no extents at offset ${offset}`);
        for (const e of extents) {
            print(`${String(e.get_offset()).padStart(14)} ${String(e.get_length()).padStart(14)}  ` +
                  describeAllocation(e.get_flags()));
        }
        const last = extents[extents.length - 1];
        offset = last.get_offset() + last.get_length();
    }
    await client.shutdown_async(null);
}

if (System.programArgs.length !== 1) {
    printerr('usage: gjs -m info.js URI');
    System.exit(2);
}
try {
    await main(System.programArgs[0]);
} catch (e) {
    printerr(`info.js: ${e.message}`);
    System.exit(1);
}
