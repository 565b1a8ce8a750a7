#!/usr/bin/python3
"""test-tls: TLS from Python: a server that requires it refuses a client that
does not offer it with Gnbd.Error.TLS_REQUIRED (and says what to set); the
client's PSK settings negotiate it; a wrong key is Gnbd.Error.TLS_FAILED.

Server (tests/bindings/meson.build): psk, an nbdkit memory disk of 1 MiB
requiring TLS with the pre-shared key that with-nbdkit.py makes (user "gnbd",
the file in NBD_PSK_FILE).
"""
import os

import gnbdtest as t
from gnbdtest import GLib, Gnbd, GNBD_ERROR, NONE, case, check, equal


def psk_client(psk_file):
    return Gnbd.Client(tls=Gnbd.Tls.REQUIRE, tls_psk_file=psk_file, tls_username="gnbd")


@case
def tls_required_and_not_offered():
    c = Gnbd.Client()
    e = t.expect_error(lambda: c.connect_unix(t.socket_path("psk"), None), GNBD_ERROR,
                       Gnbd.Error.TLS_REQUIRED, "connect without TLS")
    check("tls" in e.message.lower(), "the message says what to set: %r" % e.message)
    equal(c.props.connected, False, "connected")


@case
def psk_negotiates_tls():
    c = psk_client(os.environ["NBD_PSK_FILE"])
    c.connect_unix(t.socket_path("psk"), None)
    equal(c.props.tls_negotiated, True, "tls-negotiated")
    c.pwrite(GLib.Bytes.new(b"tls!" * 1024), 0, NONE, None)
    equal(c.pread(0, 4096, NONE, None).get_data(), b"tls!" * 1024, "read back over TLS")
    c.shutdown(None)


@case
def a_wrong_key_fails():
    # Beside the right key, in the runner's private directory (removed after).
    bad = os.path.join(os.path.dirname(os.environ["NBD_PSK_FILE"]), "wrong-py.psk")
    with open(bad, "w") as f:
        f.write("gnbd:" + "00" * 32 + "\n")
    c = psk_client(bad)
    t.expect_error(lambda: c.connect_unix(t.socket_path("psk"), None), GNBD_ERROR,
                   Gnbd.Error.TLS_FAILED, "connect with a wrong key")
    equal(c.props.connected, False, "connected")


t.run()
