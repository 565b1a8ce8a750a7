"""tooltest.py: what the tests of the `gnbd` command share.

Owns: TAP output (a plan at the end), a watchdog for the whole program,
a scratch directory under $LIBNBD_CORE_TEST_TMP, the real servers a test
starts (nbdkit, qemu-nbd on Unix sockets in it, stopped by PID at exit and
killed with the test: PR_SET_PDEATHSIG), running gnbd and the reference
tools (Debian's nbdinfo and nbdcopy) with a bound, and the checksums the
tests compare (nbdkit's pattern computed here, independently).

Every wait is bounded by WAIT seconds: a bound for a loaded 2-core machine
under a sanitizer, never a performance claim.
"""
import array
import atexit
import ctypes
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

GNBD = os.environ["GNBD_TOOL"]
WAIT = 300
# Under ThreadSanitizer everything is ten times slower: the tests copy less.
SLOW = os.environ.get("GNBD_TEST_SANITIZER") == "thread"

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# ---- TAP -------------------------------------------------------------------

_count = 0
_failed = 0


def ok(cond, desc, diag=None):
    """One TAP test point; @diag (anything) is printed when it fails."""
    global _count, _failed
    _count += 1
    if cond:
        print(f"ok {_count} - {desc}", flush=True)
    else:
        _failed += 1
        print(f"not ok {_count} - {desc}", flush=True)
        if diag is not None:
            for line in str(diag).splitlines() or [""]:
                print(f"# {line}", flush=True)
    return bool(cond)


def eq(got, want, desc):
    return ok(got == want, desc, f"got:  {got!r}\nwant: {want!r}")


def note(msg):
    for line in str(msg).splitlines():
        print(f"# {line}", flush=True)


def skip_all(why):
    print(f"1..0 # SKIP {why}", flush=True)
    sys.exit(0)


def done():
    print(f"1..{_count}", flush=True)
    sys.exit(1 if _failed else 0)


def _watchdog(signum, frame):
    print("Bail out! the test ran too long", flush=True)
    _stop_all()
    os._exit(1)


def start(seconds=WAIT * 3):
    """Call first: the watchdog, and a check that the servers exist."""
    signal.signal(signal.SIGALRM, _watchdog)
    signal.alarm(seconds)
    for prog in ("nbdkit", "qemu-nbd", "nbdinfo", "nbdcopy"):
        if not shutil.which(prog):
            skip_all(f"{prog} is not installed")


# ---- Scratch ---------------------------------------------------------------

_scratch = None


def scratch():
    """This program's private directory, removed at exit."""
    global _scratch
    if _scratch is None:
        base = os.environ.get("LIBNBD_CORE_TEST_TMP") or None
        if base:
            os.makedirs(base, exist_ok=True)
        _scratch = tempfile.mkdtemp(prefix="tools-", dir=base)
        atexit.register(shutil.rmtree, _scratch, True)
    return _scratch


def path(name):
    return os.path.join(scratch(), name)


# ---- Servers ---------------------------------------------------------------

_servers = []
_serial = 0


class Server:
    """A server listening on a Unix socket in the scratch directory."""

    def __init__(self, argv, sock, export=""):
        self.argv = argv
        self.sock = sock
        self.export = export
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sys.stderr,
                                     stderr=sys.stderr, preexec_fn=_die_with_parent)
        _servers.append(self)
        end = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {self.proc.returncode}: {argv}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(sock)
                break
            except OSError:
                if time.monotonic() > end:
                    raise RuntimeError(f"{argv[0]} did not listen within 60 s")
                time.sleep(0.02)

    def uri(self, export=None, scheme="nbd+unix", query=""):
        e = self.export if export is None else export
        q = f"socket={self.sock}" + (f"&{query}" if query else "")
        return f"{scheme}:///{e}?{q}"

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self in _servers:
            _servers.remove(self)


def _stop_all():
    for s in list(_servers):
        try:
            s.stop()
        except Exception:
            pass


atexit.register(_stop_all)


def _sock(name):
    global _serial
    _serial += 1
    return path(f"{name}-{_serial}.sock")


def nbdkit(*args, export=""):
    """nbdkit -f --exit-with-parent -U SOCK ARGS..."""
    sock = _sock("nbdkit")
    return Server(["nbdkit", "-f", "--exit-with-parent", "-U", sock, *args], sock, export)


def qemu_nbd(*args, export=""):
    """qemu-nbd -t -k SOCK ARGS... (-x EXPORT if @export)."""
    sock = _sock("qemu")
    extra = ["-x", export] if export else []
    return Server(["qemu-nbd", "-t", "-k", sock, *extra, *args], sock, export)


def pid_running(pid):
    """Whether @pid is a live process (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# ---- Programs --------------------------------------------------------------

def run(argv, input=None, timeout=WAIT, stdout=subprocess.PIPE, pass_fds=(), **kw):
    """Run @argv to completion (bounded); its stderr is kept and echoed
    to ours, for the log."""
    p = subprocess.run(argv, input=input, stdout=stdout, stderr=subprocess.PIPE,
                       timeout=timeout, pass_fds=pass_fds, **kw)
    err = p.stderr.decode(errors="replace")
    if err:
        sys.stderr.write(f"[{os.path.basename(argv[0])} {argv[1] if len(argv) > 1 else ''}] "
                         f"{err}")
    p.err = err
    return p


def gnbd(*args, **kw):
    return run([GNBD, *args], **kw)


def gnbd_json(*args):
    """gnbd ARGS --json, parsed; None (with a failed test point) if not."""
    p = gnbd(*args, "--json")
    try:
        return json.loads(p.stdout)
    except json.JSONDecodeError as e:
        ok(False, f"gnbd {' '.join(args)} --json prints JSON", f"{e}\n{p.stdout!r}")
        return None


def nbdinfo_json(*args):
    p = run(["nbdinfo", "--json", *args])
    if p.returncode != 0:
        raise RuntimeError(f"nbdinfo {args} failed: {p.err}")
    return json.loads(p.stdout)


# ---- Checksums -------------------------------------------------------------

def sha256_file(name):
    h = hashlib.sha256()
    with open(name, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def sha256_nbd(uri):
    """The export's contents as read by Debian's nbdcopy (libnbd), not by
    the code under test."""
    p = subprocess.Popen(["nbdcopy", uri, "-"], stdout=subprocess.PIPE,
                         stderr=sys.stderr)
    h = hashlib.sha256()
    while chunk := p.stdout.read(1 << 22):
        h.update(chunk)
    if p.wait(WAIT) != 0:
        raise RuntimeError(f"nbdcopy {uri} - failed")
    return h.hexdigest()


def pattern_bytes(offset, length):
    """nbdkit-pattern-plugin's bytes: each 8-byte word holds its own
    offset, big-endian.  @offset a multiple of 8."""
    a = array.array("Q", range(offset, offset + length, 8))
    if sys.byteorder == "little":
        a.byteswap()
    return a.tobytes()[:length]


def sha256_pattern(size):
    h = hashlib.sha256()
    step = 1 << 20
    for off in range(0, size, step):
        h.update(pattern_bytes(off, min(step, size - off)))
    return h.hexdigest()


def sha256_nbd_prefix(server, length):
    """The first @length bytes of @server's export, read by nbdcopy through
    nbdkit's nbd plugin and truncate filter (so only they are read)."""
    return sha256_nbd_cmd(["[", "nbdkit", "-r", "--filter=truncate", "nbd",
                           f"socket={server.sock}", f"export={server.export}",
                           f"truncate={length}", "]"])


def sha256_nbd_cmd(target):
    p = subprocess.Popen(["nbdcopy", "--", *target, "-"], stdout=subprocess.PIPE,
                         stderr=sys.stderr)
    h = hashlib.sha256()
    while chunk := p.stdout.read(1 << 22):
        h.update(chunk)
    if p.wait(WAIT) != 0:
        raise RuntimeError(f"nbdcopy {target} - failed")
    return h.hexdigest()


# ---- Progress lines --------------------------------------------------------

PROGRESS_RE = re.compile(
    r"^(\d{1,3})/100 copied=(\d+) skipped=(\d+) total=(\d+) seconds=(\d+\.\d\d) "
    r"status=(running|done|failed|cancelled)$")


def parse_progress(line):
    """A progress line as a dict, or None if it does not match the
    documented format."""
    m = PROGRESS_RE.match(line)
    if not m:
        return None
    return {"percent": int(m[1]), "copied": int(m[2]), "skipped": int(m[3]),
            "total": int(m[4]), "seconds": float(m[5]), "status": m[6]}


# ---- TLS -------------------------------------------------------------------

def tls_material():
    """Fresh TLS material in the scratch directory, made with certtool and
    psktool (ECDSA keys: fast): {"server": dir for nbdkit
    --tls-certificates and qemu-nbd's tls-creds-x509, "client": dir for
    the tls-certificates URI parameter, "psk": a psktool file for user
    alice, "psk_dir": the same as keys.psk}; skips the program without
    the tools."""
    if not (shutil.which("certtool") and shutil.which("psktool")):
        skip_all("certtool or psktool is missing (gnutls-bin)")
    base = path("tls")
    dirs = {d: os.path.join(base, d) for d in ("ca", "server", "client", "psk_dir")}
    for d in dirs.values():
        os.makedirs(d, mode=0o700)

    def certtool(*args):
        p = run(["certtool", *args], stdout=subprocess.DEVNULL)
        if p.returncode != 0:
            raise RuntimeError(f"certtool {args} failed")

    def key(name):
        certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", name)

    def template(name, text):
        with open(name, "w") as f:
            f.write(text + "expiration_days = 30\n")

    ca_key, ca_cert = os.path.join(dirs["ca"], "ca-key.pem"), os.path.join(dirs["ca"], "ca-cert.pem")
    key(ca_key)
    template(path("ca.info"), "cn = gnbd tools test CA\nca\ncert_signing_key\n")
    certtool("--generate-self-signed", "--load-privkey", ca_key, "--template", path("ca.info"),
             "--outfile", ca_cert)
    for who, info in (("server", "cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\n"
                                 "tls_www_server\nencryption_key\nsigning_key\n"),
                      ("client", "cn = client.local\ntls_www_client\nencryption_key\nsigning_key\n")):
        d = dirs[who]
        key(os.path.join(d, f"{who}-key.pem"))
        template(path(f"{who}.info"), info)
        certtool("--generate-certificate", "--load-ca-certificate", ca_cert, "--load-ca-privkey",
                 ca_key, "--load-privkey", os.path.join(d, f"{who}-key.pem"), "--template",
                 path(f"{who}.info"), "--outfile", os.path.join(d, f"{who}-cert.pem"))
        shutil.copy(ca_cert, os.path.join(d, "ca-cert.pem"))
    psk = os.path.join(dirs["psk_dir"], "keys.psk")
    if run(["psktool", "-u", "alice", "-p", psk], stdout=subprocess.DEVNULL).returncode != 0:
        raise RuntimeError("psktool failed")
    return {"server": dirs["server"], "client": dirs["client"], "psk": psk,
            "psk_dir": dirs["psk_dir"]}


class Copy:
    """gnbd copy ARGS running in the background, its progress lines on a
    pipe (--progress=FD is added) read as they come."""

    def __init__(self, *args, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL):
        r, w = os.pipe()
        # A file, not a pipe: servers run by gnbd share its stderr and may
        # write a lot to it while nobody reads.
        self._errfile = tempfile.TemporaryFile(dir=scratch())
        self.proc = subprocess.Popen([GNBD, "copy", f"--progress={w}", *args], pass_fds=(w,),
                                     stdin=stdin, stdout=stdout, stderr=self._errfile)
        os.close(w)
        self.lines = []
        self._r = r
        self._buf = b""

    def next_line(self):
        """The next progress line, or None once the pipe ends; waits at most
        WAIT seconds for it."""
        while b"\n" not in self._buf:
            ready, _, _ = select.select([self._r], [], [], WAIT)
            if not ready:
                raise RuntimeError(f"no progress line within {WAIT} s")
            data = os.read(self._r, 65536)
            if not data:
                return None
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        self.lines.append(line.decode())
        return self.lines[-1]

    def wait(self):
        """Read every line left, wait for the end (bounded); the exit code."""
        while self.next_line() is not None:
            pass
        os.close(self._r)
        code = self.proc.wait(WAIT)
        self._errfile.seek(0)
        self.err = self._errfile.read().decode(errors="replace")
        self._errfile.close()
        if self.err:
            sys.stderr.write(f"[gnbd copy] {self.err}")
        return code

    def last(self):
        return parse_progress(self.lines[-1]) if self.lines else None
