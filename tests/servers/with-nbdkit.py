#!/usr/bin/python3
"""with-nbdkit: run a command against nbdkit servers this script starts.

Owns the nbdkit processes it starts for one command (the gnbd examples, the
GJS and Python binding tests, the Vala program), their private directories,
and the check of the command's output.  It never stops a process it did not
start: each nbdkit is stopped by its own PID.

    with-nbdkit.py [--server NAME 'NBDKIT ARGS']... [--expect REGEX]...
                   -- COMMAND [ARG]...

Each --server starts `nbdkit -f --exit-with-parent -U SOCK -P PIDFILE ARGS`
(ARGS split like a shell would) in its own directory under
$LIBNBD_CORE_TEST_TMP (else $TMPDIR, else /tmp) and waits until it accepts
connections (its pid file is written; 10 s at most).  The command then gets, for each NAME:
  - the argument @NAME@ replaced by the server's URI, nbd+unix:///?socket=SOCK;
  - the environment NBD_URI_NAME, NBD_SOCKET_NAME and NBD_PID_NAME (NAME in
    upper case), so a test can also connect by path, or kill the server by
    its PID to see what a client makes of that.
If any server's ARGS name @psk@, a TLS pre-shared key file is made first
("gnbd:" and a fresh random key, nbdkit's --tls-psk format), @psk@ in the
server's and the command's arguments becomes its path, and the command gets
it in NBD_PSK_FILE (user name "gnbd").
With --expect, the command's standard output is captured, echoed, and must
match every REGEX (re.MULTILINE); a miss fails the run.  The exit status is
the command's (1 for a missed --expect, 77 -- skip -- if nbdkit is missing).
Every server is stopped afterwards (SIGTERM, 5 s, SIGKILL), also when the
command fails, times out (meson's SIGTERM) or this script is killed (nbdkit's
--exit-with-parent).
"""
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import secrets
import tempfile
import time

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def scratch_dir(prefix):
    base = os.environ.get("LIBNBD_CORE_TEST_TMP") or os.environ.get("TMPDIR") or "/tmp"
    os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def make_psk():
    """A private directory holding a PSK file; returns (directory, file)."""
    d = scratch_dir("nbdkit-psk-")
    path = os.path.join(d, "keys.psk")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("gnbd:%s\n" % secrets.token_hex(32))
    return d, path


class Server:
    def __init__(self, name, args, psk):
        self.name = name
        self.args = [a.replace("@psk@", psk or "@psk@") for a in shlex.split(args)]
        self.proc = None
        self.dir = scratch_dir("nbdkit-%s-" % name)
        self.sock = os.path.join(self.dir, "sock")
        self.uri = "nbd+unix:///?socket=" + self.sock

    def start(self):
        pidfile = os.path.join(self.dir, "pid")
        cmd = ["nbdkit", "-f", "--exit-with-parent", "-U", self.sock,
               "-P", pidfile] + self.args
        # nbdkit's output goes to stderr, never into the command's TAP stream.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=sys.stderr)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nbdkit %s exited with status %d: %s"
                                   % (self.name, self.proc.returncode,
                                      shlex.join(cmd)))
            # nbdkit writes the pid file once it accepts connections (nbdkit(1)
            # -P); a probing connect() would make it log a broken handshake.
            try:
                with open(pidfile) as f:
                    if f.read().endswith("\n"):
                        return
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        raise RuntimeError("nbdkit %s did not listen within %.0f s"
                           % (self.name, START_TIMEOUT))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        shutil.rmtree(self.dir, ignore_errors=True)


def usage():
    sys.exit("usage: with-nbdkit.py [--server NAME ARGS]... [--expect REGEX]... "
             "-- COMMAND [ARG]...")


def parse(argv):
    servers, expects = [], []
    i = 0
    while i < len(argv) and argv[i] != "--":
        if argv[i] == "--server" and i + 2 < len(argv):
            if not re.fullmatch(r"[a-z][a-z0-9_]*", argv[i + 1]):
                sys.exit("with-nbdkit: server names are [a-z][a-z0-9_]*: %r"
                         % argv[i + 1])
            servers.append((argv[i + 1], argv[i + 2]))
            i += 3
        elif argv[i] == "--expect" and i + 1 < len(argv):
            expects.append(argv[i + 1])
            i += 2
        else:
            usage()
    if i + 1 >= len(argv):
        usage()
    return servers, expects, argv[i + 1:]


def main():
    specs, expects, command = parse(sys.argv[1:])
    if shutil.which("nbdkit") is None:
        print("1..0 # SKIP nbdkit is not installed")
        return 77
    # meson stops a test that times out with SIGTERM: stop the servers too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    servers = []
    psk_dir = psk = None
    try:
        env = dict(os.environ)
        if any("@psk@" in args for _, args in specs):
            psk_dir, psk = make_psk()
            env["NBD_PSK_FILE"] = psk
            command = [a.replace("@psk@", psk) for a in command]
        for name, args in specs:
            s = Server(name, args, psk)
            servers.append(s)
            s.start()
            env["NBD_URI_" + name.upper()] = s.uri
            env["NBD_SOCKET_" + name.upper()] = s.sock
            env["NBD_PID_" + name.upper()] = str(s.proc.pid)
        for s in servers:
            command = [a.replace("@%s@" % s.name, s.uri) for a in command]
        sys.stdout.flush()
        if not expects:
            return subprocess.call(command, env=env)
        run = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
        sys.stdout.write(run.stdout)
        if run.returncode != 0:
            return run.returncode
        missing = [e for e in expects if not re.search(e, run.stdout, re.MULTILINE)]
        for e in missing:
            print("with-nbdkit: the output does not match %r" % e, file=sys.stderr)
        return 1 if missing else 0
    finally:
        for s in servers:
            s.stop()
        if psk_dir:
            shutil.rmtree(psk_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
