/* vala-client: gnbd from Vala, through gnbd-1.0.vapi (made from the GIR).
 *
 * A TAP program: what a Vala user writes, checked.  Connects synchronously
 * and with `yield`, writes and reads GLib.Bytes, maps allocation
 * (a GenericArray of Gnbd.Extent), catches a Gnbd.Error by its code and
 * sees the closed signal.
 *
 *   vala-client RW-URI RO-URI
 * RW-URI: a writable export of at least 1 MiB; RO-URI: a read-only one.
 */
const uint64 MIB = 1024 * 1024;

int tests_run = 0;
int tests_failed = 0;

void ok (bool cond, string what) {
    tests_run++;
    if (!cond)
        tests_failed++;
    stdout.printf ("%sok %d - %s\n", cond ? "" : "not ", tests_run, what);
}

async void run (string rw, string ro) {
    try {
        var client = new Gnbd.Client ();
        client.connect_uri (rw, null);
        ok (client.connected && client.size >= MIB, "sync connect; size %llu".printf (client.size));

        uint8[] payload = new uint8[4096];
        for (int i = 0; i < payload.length; i++)
            payload[i] = (uint8) (i * 7);
        client.pwrite (new Bytes (payload), 65536, Gnbd.CommandFlags.NONE, null);
        var back = yield client.pread_async (65536, payload.length, Gnbd.CommandFlags.NONE, null);
        ok (back.compare (new Bytes (payload)) == 0, "pwrite, then pread_async with yield");

        var extents = yield client.block_status_async (0, MIB, null, Gnbd.CommandFlags.NONE, null);
        ok (extents.length >= 2 && extents[0].get_offset () == 0
            && (extents[0].get_flags () & 1) == 1 && extents[1].get_flags () == 0,
            "block_status: a hole, then the data");

        Error? closed_with = null;
        bool closed = false;
        client.closed.connect ((error) => { closed = true; closed_with = error; });
        yield client.shutdown_async (null);
        while (!closed)
            MainContext.default ().iteration (true);
        ok (closed_with == null && !client.connected, "shutdown_async: closed, without an error");
    } catch (Error e) {
        ok (false, "unexpected error: %s".printf (e.message));
    }

    try {
        var client = new Gnbd.Client ();
        yield client.connect_uri_async (ro, null);
        try {
            client.pwrite (new Bytes ("no".data), 0, Gnbd.CommandFlags.NONE, null);
            ok (false, "a write to a read-only export succeeded");
        } catch (Gnbd.Error.PERMISSION e) {
            ok (true, "Gnbd.Error.PERMISSION caught by its code: %s".printf (e.message));
        }
        client.shutdown (null);
    } catch (Error e) {
        ok (false, "unexpected error: %s".printf (e.message));
    }
}

int main (string[] args) {
    if (args.length != 3) {
        stderr.printf ("usage: vala-client RW-URI RO-URI\n");
        return 2;
    }
    var loop = new MainLoop ();
    stdout.printf ("1..5\n");
    run.begin (args[1], args[2], (obj, res) => { run.end (res); loop.quit (); });
    loop.run ();
    return tests_failed == 0 && tests_run == 5 ? 0 : 1;
}
