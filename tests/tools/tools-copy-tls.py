#!/usr/bin/python3
"""tools-copy-tls: gnbd copy with TLS on either side: from nbdkit with
X.509 to qemu-nbd with pre-shared keys, and back from qemu-nbd (X.509) to
nbdkit (PSK); checksums of both.  A side that needs TLS and is not given
it, or does not trust the server, fails naming that side."""
import subprocess

import tooltest as t

t.start()
SIZE = (16 << 20) if t.SLOW else (128 << 20)
want = t.sha256_pattern(SIZE)
tls = t.tls_material()


def psk_uri(server):
    return f"nbds+unix://alice@/?socket={server.sock}&tls-psk-file={tls['psk']}"


def x509_uri(server):
    return server.uri(scheme="nbds+unix", query=f"tls-certificates={tls['client']}")


# nbdkit (X.509) -> qemu-nbd (PSK), into a raw file.
src = t.nbdkit("--tls=require", f"--tls-certificates={tls['server']}", "pattern", str(SIZE))
out = t.path("out.raw")
with open(out, "wb") as f:
    f.truncate(SIZE)
dst = t.qemu_nbd("--object", f"tls-creds-psk,id=tls0,endpoint=server,dir={tls['psk_dir']}",
                 "--tls-creds", "tls0", "-f", "raw", out)
p = t.gnbd("copy", x509_uri(src), psk_uri(dst))
t.eq(p.returncode, 0, "nbdkit X.509 -> qemu-nbd PSK: exit 0")
for uri in (x509_uri(src), psk_uri(dst)):
    t.eq(t.gnbd("info", "--is", "tls", uri).returncode, 0, f"gnbd info --is tls {uri[:40]}...")
dst.stop()
t.eq(t.sha256_file(out), want, "the file behind qemu-nbd holds the pattern")

# Refused: no TLS asked for, or no trust in the server's authority.
p = t.gnbd("copy", src.uri(), "null:")
t.ok(p.returncode == 1 and "source" in p.err and "TLS" in p.err,
     "a plain URI to a server that requires TLS: exit 1, source, says TLS", p.err)
p = t.gnbd("copy", src.uri(scheme="nbds+unix"), "null:")
t.ok(p.returncode == 1 and "source" in p.err,
     "no certificates to trust the server with: exit 1, source named", p.err)
src.stop()

# qemu-nbd (X.509) -> nbdkit (PSK).
src = t.qemu_nbd("--object", f"tls-creds-x509,id=tls0,endpoint=server,dir={tls['server']}",
                 "--tls-creds", "tls0", "-r", "-f", "raw", out)
dst = t.nbdkit("--tls=require", f"--tls-psk={tls['psk']}", "memory", str(SIZE))
p = t.gnbd("copy", x509_uri(src), psk_uri(dst))
t.eq(p.returncode, 0, "qemu-nbd X.509 -> nbdkit PSK: exit 0")
t.eq(t.sha256_nbd(psk_uri(dst)), want, "nbdkit's memory holds the pattern (read over TLS)")
p = t.gnbd("copy", x509_uri(src), dst.uri())
t.ok(p.returncode == 1 and "destination" in p.err and "TLS" in p.err,
     "a destination that requires TLS, not asked for: exit 1, destination, says TLS", p.err)

t.done()
