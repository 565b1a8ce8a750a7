// gnbdtest.js: what the GJS binding tests share.
//
// Owns the TAP output (one line per case), the servers' URIs (the
// environment that tests/servers/with-nbdkit.py sets), promisified gnbd
// calls, a bound on every wait, and the process's resident size.  Each case
// is an async function; a failed check throws an Error saying what was
// expected and what came back, which ends that case only.
import GLib from 'gi://GLib';
import Gio from 'gi://Gio';
import Gnbd from 'gi://Gnbd?version=1.0';
import System from 'system';

export {GLib, Gio, Gnbd, System};

// Every wait gives up after this long: a hang is a failure, and a loaded
// 2-core machine is slow, so it is generous.
export const WAIT_SECONDS = 60;
export const NONE = Gnbd.CommandFlags.NONE;
export const MIB = 1024 * 1024;

// Called without the callback, each of these returns a Promise.
for (const name of ['connect_uri', 'connect_unix', 'connect_command', 'pread', 'pwrite',
    'flush', 'trim', 'zero', 'cache', 'block_status', 'list_exports', 'shutdown'])
    Gio._promisify(Gnbd.Client.prototype, `${name}_async`, `${name}_finish`);

const cases = [];

export function test(name, fn) {
    cases.push([name, fn]);
}

// Settle @promise, or reject after WAIT_SECONDS.
export function bounded(promise, what) {
    let id = 0;
    const timeout = new Promise((_, reject) => {
        id = GLib.timeout_add_seconds(GLib.PRIORITY_DEFAULT, WAIT_SECONDS, () => {
            id = 0;
            reject(new Error(`${what}: nothing after ${WAIT_SECONDS} s`));
            return GLib.SOURCE_REMOVE;
        });
    });
    return Promise.race([promise, timeout]).finally(() => {
        if (id)
            GLib.source_remove(id);
    });
}

export async function run() {
    print(`1..${cases.length}`);
    let failed = 0;
    for (const [i, [name, fn]] of cases.entries()) {
        try {
            // eslint-disable-next-line no-await-in-loop
            await bounded(fn(), name);
            print(`ok ${i + 1} - ${name}`);
        } catch (e) {
            failed++;
            print(`not ok ${i + 1} - ${name}`);
            for (const line of `${e}\n${e.stack ?? ''}`.trimEnd().split('\n'))
                print(`# ${line}`);
        }
    }
    System.exit(failed ? 1 : 0);
}

export function check(cond, what) {
    if (!cond)
        throw new Error(what);
}

export function equal(got, expected, what) {
    const g = JSON.stringify(got), e = JSON.stringify(expected);
    if (g !== e)
        throw new Error(`${what}: expected ${e}, got ${g}`);
}

export function uri(name) {
    return GLib.getenv(`NBD_URI_${name.toUpperCase()}`);
}

export function socketPath(name) {
    return GLib.getenv(`NBD_SOCKET_${name.toUpperCase()}`);
}

export function serverPid(name) {
    return GLib.getenv(`NBD_PID_${name.toUpperCase()}`);
}

export function connect(name, props = {}) {
    const c = new Gnbd.Client(props);
    c.connect_uri(uri(name), null);
    return c;
}

// @fn (sync, or async) must throw a GLib.Error matching @domain and @code;
// returns it.
export async function expectError(fn, domain, code, what) {
    try {
        await fn();
    } catch (e) {
        if (!(e instanceof GLib.Error))
            throw new Error(`${what}: expected a GLib.Error, got ${e}`);
        if (!e.matches(domain, code))
            throw new Error(`${what}: expected ${GLib.quark_to_string(domain)} ${code}, ` +
                            `got ${GLib.quark_to_string(e.domain)} ${e.code}: ${e.message}`);
        check(e.message.length > 0, `${what}: the error has a message`);
        return e;
    }
    throw new Error(`${what}: expected ${GLib.quark_to_string(domain)} ${code}, got no error`);
}

export function bytes(u8) {
    return new GLib.Bytes(u8);
}

export function filled(value, length) {
    return new Uint8Array(length).fill(value);
}

export function sameBytes(gbytes, u8) {
    const a = gbytes.toArray();
    return a.length === u8.length && a.every((v, i) => v === u8[i]);
}

// VmRSS of this process, in bytes, after a garbage collection (GJS frees
// the wrappers of returned arrays when it collects them).
export function rssBytes() {
    System.gc();
    const [, contents] = GLib.file_get_contents('/proc/self/status');
    const m = new TextDecoder().decode(contents).match(/^VmRSS:\s+(\d+) kB/m);
    return Number(m[1]) * 1024;
}
