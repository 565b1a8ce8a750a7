// gnbd-randread.js: the benchmark's 4 KiB random-read workload from GJS
// through gnbd, for the gnbd rows of bench/RESULTS.md (bench/gnbd.py runs
// it).  QD reads in flight with pread_async and a callback that issues the
// next one, on a GLib.MainLoop: what a script pays on top of the C API.
// Prints one line of key=value figures in bench.c's format.
//
//   gjs -m gnbd-randread.js SOCKET [SECONDS [QD [BS]]]
import GLib from 'gi://GLib';
import Gnbd from 'gi://Gnbd?version=1.0';
import System from 'system';

const [sock, seconds = '1', qdArg = '64', bsArg = '4096'] = System.programArgs;
const qd = Number(qdArg), bs = Number(bsArg);
const client = new Gnbd.Client();
client.connect_unix(sock, null);
const blocks = Math.floor(Math.min(client.size, 2 ** 30) / bs);
const loop = new GLib.MainLoop(null, false);
let inFlight = 0, completed = 0, deadline = 0, failure = null;

function issue() {
    const offset = Math.floor(Math.random() * blocks) * bs;
    client.pread_async(offset, bs, Gnbd.CommandFlags.NONE, null, done);
    inFlight++;
}

function done(c, result) {
    try {
        c.pread_finish(result);
    } catch (e) {
        failure ??= e;
    }
    inFlight--;
    completed++;
    if (failure === null && GLib.get_monotonic_time() < deadline)
        issue();
    else if (inFlight === 0)
        loop.quit();
}

// Run QD in flight for @secs seconds, then drain; returns [completed, seconds].
function phase(secs) {
    const c0 = completed, t0 = GLib.get_monotonic_time();
    deadline = t0 + secs * 1e6;
    for (let i = 0; i < qd; i++)
        issue();
    loop.run();
    if (failure !== null)
        throw failure;
    return [completed - c0, (GLib.get_monotonic_time() - t0) / 1e6];
}

phase(Math.min(Number(seconds) / 10, 0.1));
const [ops, secs] = phase(Number(seconds));
print(`lib=gjs version=${System.version} server=external transport=unix conns=1 ` +
      `workload=randread bs=${bs} qd=${qd} writer=1 pin=-1 ops=${ops} secs=${secs.toFixed(6)} ` +
      `ops_s=${(ops / secs).toFixed(1)} mib_s=${(ops * bs / 1048576 / secs).toFixed(2)}`);
client.shutdown(null);
