#!/usr/bin/python3
"""hostile-server.py: an NBD server that breaks the protocol on purpose.

Usage: hostile-server.py SOCKET SCENARIO

Owns one Unix socket and one connection: it listens on SOCKET, prints
"READY <pid>" on stdout once it listens, accepts exactly one client, plays
SCENARIO (a correct server up to the chosen step, then the chosen fault),
then exits.  It never talks to anything but that one client.

In the scenarios where it goes silent it prints "SILENT" on stdout once it
has sent all it ever will, so that a test can wait for that event rather
than for a quiet interval.

The exit status is the server's verdict on the client:
  0  the client did what the scenario expects of it: it hung up without
     another word after a fatal fault, carried on (and ended with
     NBD_CMD_DISC) after a survivable one, fell back to NBD_OPT_EXPORT_NAME
     when NBD_OPT_GO was refused, and so on;
  1  it did not (the reason is on stderr);
  2  usage error (unknown scenario);
  3  a time limit expired.
Every wait is bounded: 20 s per socket operation, 60 s for the whole run.

The export is SIZE bytes (unless the scenario says otherwise); the byte at
offset o reads as 1 + o % 127, so it is never 0 (what the client zeroes) and
never 0xaa (what the tests fill their buffers with).
"""

import os
import select
import signal
import socket
import struct
import sys

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OLD_VERSION = 0x0000420281861253
REP_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCTURED_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
ERR_UNSUP = 0x80000001
ERR_INVALID = 0x80000003

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_BLOCK_STATUS = 7
CMD_FLAG_REQ_ONE = 1 << 3

REPLY_FLAG_DONE = 1
T_NONE = 0
T_OFFSET_DATA = 1
T_OFFSET_HOLE = 2
T_BLOCK_STATUS = 5
T_ERROR = 32769
T_ERROR_OFFSET = 32770

NBD_EIO = 5

SIZE = 1 << 20
# HAS_FLAGS, SEND_FLUSH, SEND_FUA
EFLAGS = 0x1 | 0x4 | 0x8
BLOCK_SIZES = (1, 4096, 32 << 20)
# The one meta context this server knows, with a deliberately odd id.
META_NAME = "base:allocation"
META_ID = 7

IO_TIMEOUT = 20
RUN_TIMEOUT = 60

_CYCLE = bytes(1 + i for i in range(127))


def pattern(offset, length):
    """The export's bytes from @offset, where offsets wrap at 2^64 as the
    client's 64-bit ones do (for reads whose range reaches 2^64)."""
    offset %= 1 << 64
    if offset + length > 1 << 64:
        head = (1 << 64) - offset
        return pattern(offset, head) + pattern(0, length - head)
    start = offset % 127
    reps = (start + length) // 127 + 1
    return (_CYCLE * reps)[start:start + length]


def log(msg):
    print("hostile-server: " + msg, file=sys.stderr, flush=True)


class ClientGone(Exception):
    """The client closed the connection."""


class Misbehaved(Exception):
    """The client did something the scenario says it must not."""


class Finished(Exception):
    """The scenario has nothing more to check."""


def finish():
    raise Finished()


class Request:
    def __init__(self, flags, type_, cookie, offset, length, payload):
        self.flags = flags
        self.type = type_
        self.cookie = cookie
        self.offset = offset
        self.length = length
        self.payload = payload

    def __repr__(self):
        return (f"request type {self.type} flags 0x{self.flags:x} cookie 0x{self.cookie:x} "
                f"offset {self.offset} length {self.length}")


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.cflags = 0
        self.sr = False
        self.meta = {}
        self.in_transmission = False
        self.options_seen = []

    # ---- raw I/O ---------------------------------------------------------

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            try:
                part = self.sock.recv(n - len(buf))
            except ConnectionResetError:
                part = b""
            if not part:
                raise ClientGone(f"client closed the connection (after {len(buf)} of {n} "
                                 "bytes)")
            buf += part
        return buf

    def send(self, data):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ClientGone(f"client closed the connection while the server sent ({e})")

    def close(self):
        self.sock.close()

    def expect_eof(self, allowed=0, why="after a fatal fault"):
        """The client must hang up, sending at most @allowed more bytes."""
        got = 0
        while True:
            try:
                part = self.sock.recv(65536)
            except ConnectionResetError:
                part = b""
            if not part:
                return
            got += len(part)
            if got > allowed:
                raise Misbehaved(f"client sent {got} more bytes {why} instead of hanging up")

    def silence(self):
        """Say (on stdout, to the test) that nothing more will be sent."""
        print("SILENT", flush=True)

    def wait_hangup(self):
        """Wait until the client has closed its socket altogether (POLLHUP;
        a shutdown of its write side alone is not enough)."""
        p = select.poll()
        p.register(self.sock, select.POLLHUP)
        if not p.poll(IO_TIMEOUT * 1000):
            raise socket.timeout()

    # ---- handshake -------------------------------------------------------

    def greet(self, gflags=FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES):
        self.send(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, gflags))
        (self.cflags,) = struct.unpack(">I", self.recv_exact(4))
        self.gflags = gflags

    def read_option(self):
        magic, opt, length = struct.unpack(">QII", self.recv_exact(16))
        if magic != IHAVEOPT:
            raise Misbehaved(f"option with bad magic 0x{magic:x}")
        data = self.recv_exact(length)
        self.options_seen.append(opt)
        log(f"option {opt}, {length} bytes")
        return opt, data

    def reply(self, opt, type_, data=b"", length=None, magic=REP_MAGIC):
        if length is None:
            length = len(data)
        self.send(struct.pack(">QIII", magic, opt, type_, length) + data)

    def ack(self, opt):
        self.reply(opt, REP_ACK)

    def info_export(self, opt, size=SIZE, eflags=EFLAGS):
        self.reply(opt, REP_INFO, struct.pack(">HQH", INFO_EXPORT, size, eflags))

    def info_block_size(self, opt, sizes=BLOCK_SIZES):
        self.reply(opt, REP_INFO, struct.pack(">HIII", INFO_BLOCK_SIZE, *sizes))

    def export_name_reply(self, size=SIZE, eflags=EFLAGS):
        zeroes = b"" if self.cflags & FLAG_NO_ZEROES else bytes(124)
        self.send(struct.pack(">QH", size, eflags) + zeroes)
        self.in_transmission = True

    # ---- transmission ----------------------------------------------------

    def read_request(self):
        magic, flags, type_, cookie, offset, length = struct.unpack(">IHHQQI",
                                                                    self.recv_exact(28))
        if magic != REQUEST_MAGIC:
            raise Misbehaved(f"request with bad magic 0x{magic:x}")
        payload = self.recv_exact(length) if type_ == CMD_WRITE else b""
        req = Request(flags, type_, cookie, offset, length, payload)
        log(repr(req))
        return req

    def simple(self, cookie, error=0, data=b""):
        self.send(struct.pack(">IIQ", SIMPLE_MAGIC, error, cookie) + data)

    def chunk(self, cookie, flags, type_, payload=b"", length=None, magic=STRUCTURED_MAGIC):
        if length is None:
            length = len(payload)
        self.send(struct.pack(">IHHQI", magic, flags, type_, cookie, length) + payload)

    def data_chunk(self, cookie, offset, data, flags=0):
        self.chunk(cookie, flags, T_OFFSET_DATA, struct.pack(">Q", offset) + data)

    def hole_chunk(self, cookie, offset, size, flags=0):
        self.chunk(cookie, flags, T_OFFSET_HOLE, struct.pack(">QI", offset, size))

    def done_chunk(self, cookie):
        self.chunk(cookie, REPLY_FLAG_DONE, T_NONE)

    def error_chunk(self, cookie, error, msg, flags=REPLY_FLAG_DONE, type_=T_ERROR,
                    msglen=None, offset=None):
        msg = msg.encode()
        payload = struct.pack(">IH", error, len(msg) if msglen is None else msglen) + msg
        if offset is not None:
            payload += struct.pack(">Q", offset)
        self.chunk(cookie, flags, type_, payload)

    def block_status_chunk(self, cookie, ctx, extents, flags=REPLY_FLAG_DONE, length=None):
        payload = struct.pack(">I", ctx)
        for length_, status in extents:
            payload += struct.pack(">II", length_, status)
        self.chunk(cookie, flags, T_BLOCK_STATUS, payload, length=length)


# ---- A correct server ------------------------------------------------------

def parse_go(data):
    (namelen,) = struct.unpack(">I", data[:4])
    name = data[4:4 + namelen]
    (n,) = struct.unpack(">H", data[4 + namelen:6 + namelen])
    infos = struct.unpack(f">{n}H", data[6 + namelen:6 + namelen + 2 * n])
    return name.decode(), infos


def parse_meta(data):
    (namelen,) = struct.unpack(">I", data[:4])
    pos = 4 + namelen
    (nq,) = struct.unpack(">I", data[pos:pos + 4])
    pos += 4
    queries = []
    for _ in range(nq):
        (ql,) = struct.unpack(">I", data[pos:pos + 4])
        queries.append(data[pos + 4:pos + 4 + ql].decode())
        pos += 4 + ql
    return data[4:4 + namelen].decode(), queries


def answer_option(c, opt, data, sr=True, size=SIZE, eflags=EFLAGS, block=BLOCK_SIZES):
    """What a correct server says to @opt."""
    if opt == OPT_STRUCTURED_REPLY:
        if sr and not data:
            c.ack(opt)
            c.sr = True
        else:
            c.reply(opt, ERR_UNSUP if not sr else ERR_INVALID)
    elif opt in (OPT_SET_META_CONTEXT, OPT_LIST_META_CONTEXT):
        if not c.sr:
            c.reply(opt, ERR_INVALID)
            return
        _, queries = parse_meta(data)
        if opt == OPT_SET_META_CONTEXT:
            c.meta = {}
        for q in queries:
            # As nbdkit and qemu-nbd: "base:" lists the namespace, but selects nothing.
            if q == META_NAME or (q == "base:" and opt == OPT_LIST_META_CONTEXT):
                ctx_id = META_ID if opt == OPT_SET_META_CONTEXT else 0
                c.reply(opt, REP_META_CONTEXT, struct.pack(">I", ctx_id) + META_NAME.encode())
                if opt == OPT_SET_META_CONTEXT:
                    c.meta[META_ID] = META_NAME
        c.ack(opt)
    elif opt in (OPT_GO, OPT_INFO):
        _, infos = parse_go(data)
        c.info_export(opt, size, eflags)
        if block and INFO_BLOCK_SIZE in infos:
            c.info_block_size(opt, block)
        c.ack(opt)
        if opt == OPT_GO:
            c.in_transmission = True
    elif opt == OPT_EXPORT_NAME:
        c.export_name_reply(size, eflags)
    elif opt == OPT_LIST:
        c.reply(opt, REP_SERVER, struct.pack(">I", 0))
        c.ack(opt)
    elif opt == OPT_ABORT:
        # The client may hang up without waiting for the ACK.
        try:
            c.ack(opt)
        except ClientGone:
            pass
    else:
        c.reply(opt, ERR_UNSUP)


def negotiate(c, hook=None, gflags=FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, **kw):
    """Greet and answer options until transmission starts.  @hook(c, opt,
    data) may answer an option itself (returns True) to inject a fault."""
    c.greet(gflags)
    while not c.in_transmission:
        opt, data = c.read_option()
        if hook and hook(c, opt, data):
            continue
        answer_option(c, opt, data, **kw)
        if opt == OPT_ABORT:
            c.expect_eof(why="after NBD_OPT_ABORT")
            raise Finished()


def serve(c, req):
    """What a correct server says to @req."""
    if req.type == CMD_READ:
        data = pattern(req.offset, req.length)
        if c.sr:
            c.data_chunk(req.cookie, req.offset, data, flags=REPLY_FLAG_DONE)
        else:
            c.simple(req.cookie, 0, data)
    elif req.type == CMD_BLOCK_STATUS:
        half = req.length // 2
        c.block_status_chunk(req.cookie, META_ID, [(half, 0), (req.length - half, 3)])
    else:
        c.simple(req.cookie)


def transmission(c, faults, fatal):
    """Answer requests: the first ones with the @faults (functions of c and
    the request), then correctly.  After a @fatal fault the client must hang
    up; otherwise it must carry on and end with NBD_CMD_DISC."""
    faults_given = bool(faults)
    faults = list(faults)
    while True:
        try:
            req = c.read_request()
        except ClientGone:
            if faults:
                raise
            raise Misbehaved("client hung up without NBD_CMD_DISC" +
                             (" after a fault it should survive" if faults_given else ""))
        if req.type == CMD_DISC:
            if faults:
                raise Misbehaved("client disconnected before the fault")
            if req.offset != 0 or req.length != 0:
                raise Misbehaved(f"NBD_CMD_DISC with offset {req.offset} length {req.length}")
            c.expect_eof(why="after NBD_CMD_DISC")
            return
        if faults:
            faults.pop(0)(c, req)
            if fatal and not faults:
                c.expect_eof()
                return
        else:
            serve(c, req)


# ---- Scenarios ---------------------------------------------------------------

SCENARIOS = {}


def scenario(name):
    def register(fn):
        SCENARIOS[name] = fn
        return fn
    return register


def on_option(which, fault, **kw):
    """A scenario: a correct server, except that option @which gets @fault
    (a function of c and the option's data); then the client must hang up."""
    def run(c):
        def hook(c, opt, data):
            if opt != which:
                return False
            fault(c, data)
            c.expect_eof()
            raise Finished()
        negotiate(c, hook, **kw)
        raise Misbehaved("the handshake finished without reaching the fault")
    return run


def add_option_fault(name, which, fault, **kw):
    SCENARIOS[name] = on_option(which, fault, **kw)


# -- Greeting

@scenario("bad-magic")
def _(c):
    c.send(b"NBDMAGIX" + struct.pack(">QH", IHAVEOPT, 3))
    c.expect_eof()


@scenario("bad-version")
def _(c):
    c.send(struct.pack(">QQH", NBDMAGIC, 0x1122334455667788, 3))
    c.expect_eof()


@scenario("oldstyle")
def _(c):
    c.send(struct.pack(">QQQI", NBDMAGIC, OLD_VERSION, SIZE, EFLAGS) + bytes(124))
    c.expect_eof(why="to an oldstyle server although TLS is required")


@scenario("newstyle-not-fixed")
def _(c):
    c.send(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FLAG_NO_ZEROES))
    # The client flags (4 bytes) may come; an option would be plaintext.
    c.expect_eof(allowed=4, why="to a non-fixed newstyle server although TLS is required")


@scenario("starttls-refused")
def _(c):
    c.greet()
    opt, _ = c.read_option()
    if opt != OPT_STARTTLS:
        raise Misbehaved(f"TLS is required, but the first option is {opt}, not STARTTLS")
    c.reply(opt, ERR_UNSUP)
    c.expect_eof(why="after STARTTLS was refused although TLS is required")


def starttls_then(fn):
    """STARTTLS accepted; the client's first bytes must be a TLS handshake
    record (not plaintext NBD); then @fn(c) instead of TLS."""
    def run(c):
        c.greet()
        opt, _ = c.read_option()
        if opt != OPT_STARTTLS:
            raise Misbehaved(f"TLS is required, but the first option is {opt}, not STARTTLS")
        c.ack(opt)
        head = c.recv_exact(5)
        if head[0] != 0x16:
            raise Misbehaved(f"after STARTTLS the client sent {head!r}, not a TLS handshake")
        (length,) = struct.unpack(">H", head[3:5])
        c.recv_exact(length)    # the rest of the ClientHello record
        fn(c)
    return run


def garbage(c):
    c.send(b"NBDMAGIC" * 8)
    c.expect_eof(allowed=1 << 20, why="after the server answered TLS with garbage")


SCENARIOS["starttls-then-garbage"] = starttls_then(garbage)
SCENARIOS["starttls-then-close"] = starttls_then(lambda c: c.close())
SCENARIOS["starttls-then-silent"] = starttls_then(
    lambda c: (c.silence(),
               c.expect_eof(allowed=1 << 20, why="while the server was silent")))


# -- Option replies

add_option_fault("opt-reply-bad-magic", OPT_STRUCTURED_REPLY,
                 lambda c, d: c.reply(OPT_STRUCTURED_REPLY, REP_ACK, magic=REP_MAGIC + 1))
add_option_fault("opt-reply-wrong-option", OPT_STRUCTURED_REPLY,
                 lambda c, d: c.reply(OPT_GO, REP_ACK))
# The client's limit is 4 + 2 * 4096 bytes (a REP_SERVER with the longest
# name and description); one more is too long.  Only the header is sent.
add_option_fault("opt-reply-too-long", OPT_GO,
                 lambda c, d: c.reply(OPT_GO, REP_INFO, length=4 + 2 * 4096 + 1))
add_option_fault("opt-reply-huge", OPT_GO,
                 lambda c, d: c.reply(OPT_GO, REP_INFO, length=0xFFFFFFFF))
add_option_fault("opt-reply-bad-type", OPT_GO,
                 lambda c, d: c.reply(OPT_GO, REP_SERVER, struct.pack(">I", 0)))
add_option_fault("info-export-short", OPT_GO,
                 lambda c, d: c.reply(OPT_GO, REP_INFO, struct.pack(">HQ", INFO_EXPORT, SIZE)))
add_option_fault("info-block-size-short", OPT_GO,
                 lambda c, d: (c.info_export(OPT_GO),
                               c.reply(OPT_GO, REP_INFO,
                                       struct.pack(">HII", INFO_BLOCK_SIZE, 512, 4096))))
add_option_fault("info-without-type", OPT_GO,
                 lambda c, d: c.reply(OPT_GO, REP_INFO, b"\0"))
add_option_fault("go-ack-without-export", OPT_GO, lambda c, d: c.ack(OPT_GO))
add_option_fault("meta-context-duplicate-id", OPT_SET_META_CONTEXT,
                 lambda c, d: (c.reply(OPT_SET_META_CONTEXT, REP_META_CONTEXT,
                                       struct.pack(">I", 1) + b"base:allocation"),
                               c.reply(OPT_SET_META_CONTEXT, REP_META_CONTEXT,
                                       struct.pack(">I", 1) + b"qemu:dirty-bitmap:b0")))

add_option_fault("sr-ack-with-payload", OPT_STRUCTURED_REPLY,
                 lambda c, d: c.reply(OPT_STRUCTURED_REPLY, REP_ACK, b"\0\0\0\0"))
add_option_fault("info-name-with-nul", OPT_GO,
                 lambda c, d: (c.info_export(OPT_GO),
                               c.reply(OPT_GO, REP_INFO, struct.pack(">H", INFO_NAME) +
                                       b"ab\0c")))
add_option_fault("info-description-too-long", OPT_GO,
                 lambda c, d: (c.info_export(OPT_GO),
                               c.reply(OPT_GO, REP_INFO, struct.pack(">H", INFO_DESCRIPTION) +
                                       b"x" * 4097)))


# SET_META_CONTEXT floods, to a client that asked for base:allocation
# alone: FLOOD contexts it never asked for, or base:allocation again and
# again under fresh ids, then the ACK.  The client must refuse the first
# one and hang up, not store them all; hanging up in the middle of the
# flood is what it should do.
FLOOD = 100000


def meta_flood(first, names):
    def fault(c, data):
        out = [struct.pack(">QIII", REP_MAGIC, OPT_SET_META_CONTEXT, REP_META_CONTEXT,
                           4 + len(name)) + struct.pack(">I", ctx_id) + name
               for ctx_id, name in enumerate(first + names, start=META_ID)]
        out.append(struct.pack(">QIII", REP_MAGIC, OPT_SET_META_CONTEXT, REP_ACK, 0))
        try:
            c.send(b"".join(out))
        except ClientGone:
            finish()
    return fault


add_option_fault("meta-context-flood-unrequested", OPT_SET_META_CONTEXT,
                 meta_flood([], [b"x-flood:%d" % i for i in range(FLOOD)]))
add_option_fault("meta-context-flood-duplicate", OPT_SET_META_CONTEXT,
                 meta_flood([META_NAME.encode()], [META_NAME.encode()] * FLOOD))
add_option_fault("meta-context-short", OPT_SET_META_CONTEXT,
                 lambda c, d: c.reply(OPT_SET_META_CONTEXT, REP_META_CONTEXT,
                                      struct.pack(">I", 1)))
# Terminal escapes and a newline in the server's error text.
add_option_fault("go-error-message-escapes", OPT_GO,
                 lambda c, d: c.reply(OPT_GO, 0x80000002, b"bad\x1b[2J\nname"))

BAD_BLOCK_SIZES = {
    "block-size-min-above-preferred": (4096, 512, 65536),
    "block-size-max-below-preferred": (512, 4096, 1024),
    "block-size-min-not-power-of-2": (3, 4096, 65536),
    "block-size-max-not-multiple": (4096, 4096, 6000),
}


def bad_block_sizes(sizes):
    def fault(c, data):
        c.info_export(OPT_GO)
        c.info_block_size(OPT_GO, sizes)
        c.ack(OPT_GO)
    return fault


for _name, _sizes in BAD_BLOCK_SIZES.items():
    add_option_fault(_name, OPT_GO, bad_block_sizes(_sizes))


@scenario("size-above-int64max")
def _(c):
    negotiate(c, size=1 << 63)
    transmission(c, [], fatal=False)


def go_unsup_fallback(gflags):
    """NBD_OPT_GO refused with ERR_UNSUP: the client must fall back to
    NBD_OPT_EXPORT_NAME, and then work."""
    def run(c):
        def hook(c, opt, data):
            if opt == OPT_GO:
                c.reply(OPT_GO, ERR_UNSUP, b"this server predates NBD_OPT_GO")
                return True
            return False
        negotiate(c, hook, gflags=gflags)
        if c.options_seen[-2:] != [OPT_GO, OPT_EXPORT_NAME]:
            raise Misbehaved(f"options were {c.options_seen}: no NBD_OPT_EXPORT_NAME after "
                             "the refused NBD_OPT_GO")
        transmission(c, [], fatal=False)
    return run


SCENARIOS["go-unsup-fallback"] = go_unsup_fallback(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)
# Without NO_ZEROES the EXPORT_NAME reply carries 124 zero bytes.
SCENARIOS["go-unsup-fallback-zeroes"] = go_unsup_fallback(FLAG_FIXED_NEWSTYLE)


@scenario("go-unsup-export-unknown")
def _(c):
    def hook(c, opt, data):
        if opt == OPT_GO:
            c.reply(OPT_GO, ERR_UNSUP)
            return True
        if opt == OPT_EXPORT_NAME:
            c.close()           # what a server does with an unknown name
            raise Finished()
        return False
    negotiate(c, hook)
    raise Misbehaved("no NBD_OPT_EXPORT_NAME after the refused NBD_OPT_GO")


# -- Option mode

def list_then(bad_entry):
    """NBD_OPT_LIST: one correct entry, then @bad_entry (the payload of a
    REP_SERVER whose name length is wrong)."""
    def run(c):
        def hook(c, opt, data):
            if opt != OPT_LIST:
                return False
            c.reply(OPT_LIST, REP_SERVER, struct.pack(">I", 4) + b"good" + b"a fine export")
            c.reply(OPT_LIST, REP_SERVER, bad_entry)
            c.expect_eof()
            raise Finished()
        negotiate(c, hook)
    return run


SCENARIOS["list-name-longer-than-reply"] = list_then(struct.pack(">I", 100) + b"abcd")
SCENARIOS["list-name-length-wraps"] = list_then(struct.pack(">I", 0xFFFFFFFC) + b"abcd")


@scenario("list-longest-entry")
def _(c):
    def hook(c, opt, data):
        if opt != OPT_LIST:
            return False
        c.reply(OPT_LIST, REP_SERVER, struct.pack(">I", 4096) + b"n" * 4096 + b"d" * 4096)
        c.ack(OPT_LIST)
        return True
    negotiate(c, hook)


# NBD_OPT_LIST_META_CONTEXT answered with FLOOD contexts: a listing stores
# nothing, so the client passes each to the caller's callback and goes on.
@scenario("list-meta-flood")
def _(c):
    def hook(c, opt, data):
        if opt != OPT_LIST_META_CONTEXT:
            return False
        c.send(b"".join(struct.pack(">QIII", REP_MAGIC, opt, REP_META_CONTEXT, 4 + len(name)) +
                        struct.pack(">I", 0) + name
                        for name in (b"x-list:%d" % i for i in range(FLOOD))))
        c.ack(opt)
        return True
    negotiate(c, hook)


@scenario("opt-go-server-dies")
def _(c):
    def hook(c, opt, data):
        if opt != OPT_GO:
            return False
        c.info_export(OPT_GO)
        c.close()
        raise Finished()
    negotiate(c, hook)


# -- Connection closed during the handshake

@scenario("close-in-greeting")
def _(c):
    c.send(struct.pack(">Q", NBDMAGIC))


@scenario("close-before-option-reply")
def _(c):
    c.greet()
    c.read_option()


add_option_fault("close-mid-option-header", OPT_STRUCTURED_REPLY,
                 lambda c, d: (c.send(struct.pack(">QH", REP_MAGIC, 0)), c.close(),
                               finish()))
add_option_fault("close-mid-option-payload", OPT_GO,
                 lambda c, d: (c.send(struct.pack(">QIII", REP_MAGIC, OPT_GO, REP_INFO, 12) +
                                      struct.pack(">HI", INFO_EXPORT, 0)), c.close(),
                               finish()))
add_option_fault("close-before-go-ack", OPT_GO,
                 lambda c, d: (c.info_export(OPT_GO), c.close(),
                               finish()))


# -- A server that goes silent

@scenario("silent-greeting")
def _(c):
    c.silence()
    c.expect_eof(why="to a server that never greeted")


@scenario("silent-option-reply")
def _(c):
    c.greet()
    c.read_option()
    c.silence()
    c.expect_eof(why="while waiting for an option reply")


@scenario("silent-list")
def _(c):
    def hook(c, opt, data):
        if opt != OPT_LIST:
            return False
        c.silence()
        c.expect_eof(why="while waiting for the NBD_OPT_LIST reply")
        raise Finished()
    negotiate(c, hook)


# -- Transmission faults

READ_FAULTS = {}


def read_fault(name, fatal=True, sr=True):
    def register(fn):
        def run(c):
            negotiate(c, sr=sr)
            transmission(c, [fn], fatal)
        SCENARIOS[name] = run
        return fn
    return register


def fill(c, req, start, end, flags=0):
    """A data chunk for [start, end) relative to the request."""
    c.data_chunk(req.cookie, req.offset + start, pattern(req.offset + start, end - start), flags)


@read_fault("read-simple-reply-with-sr")
def _(c, req):
    c.simple(req.cookie, 0, pattern(req.offset, req.length))


@read_fault("read-unknown-cookie-simple")
def _(c, req):
    c.simple(req.cookie ^ (1 << 40), 0, pattern(req.offset, req.length))


@read_fault("read-unknown-cookie-structured")
def _(c, req):
    c.data_chunk(req.cookie + 1, req.offset, pattern(req.offset, req.length), REPLY_FLAG_DONE)


@scenario("read-reply-twice")
def _(c):
    first = []

    def good(c, req):
        first.append(req.cookie)
        serve(c, req)

    def stale(c, req):
        c.done_chunk(first[0])
    negotiate(c)
    transmission(c, [good, stale], fatal=True)


@read_fault("read-chunk-larger-than-request")
def _(c, req):
    c.data_chunk(req.cookie, req.offset, pattern(req.offset, req.length + 1), REPLY_FLAG_DONE)


@read_fault("read-chunk-past-end")
def _(c, req):
    c.data_chunk(req.cookie, req.offset + req.length // 2, pattern(0, req.length),
                 REPLY_FLAG_DONE)


@read_fault("read-chunk-before-start")
def _(c, req):
    c.data_chunk(req.cookie, req.offset - 512, pattern(0, 512), REPLY_FLAG_DONE)


@read_fault("read-chunk-offset-near-2^64")
def _(c, req):
    c.data_chunk(req.cookie, 0xFFFFFFFFFFFFFF00, pattern(0, 256), REPLY_FLAG_DONE)


@read_fault("read-hole-near-2^64")
def _(c, req):
    c.hole_chunk(req.cookie, 0xFFFFFFFFFFFFFF00, 0x200, REPLY_FLAG_DONE)


# One byte past the end: a data chunk at offset + 1 of the request's length,
# and a hole that starts inside the request and ends one byte past it.
@read_fault("read-chunk-one-past-end")
def _(c, req):
    c.data_chunk(req.cookie, req.offset + 1, pattern(req.offset + 1, req.length),
                 REPLY_FLAG_DONE)


@read_fault("read-hole-past-end")
def _(c, req):
    half = req.length // 2
    c.hole_chunk(req.cookie, req.offset + half, req.length - half + 1, REPLY_FLAG_DONE)


# -- Reads whose range reaches 2^64 (sent with LIBNBD_STRICT_BOUNDS off): the
# ends of the chunks, offset + length, lie past 2^64.  Chunks that overlap
# there must still be seen to overlap.
WRAP_OVERLAP_OFFSET = 0xFFFFFFFFFFFFFF9C    # 100 bytes below 2^64
WRAP_END_OFFSET = 0xFFFFFFFFFFFFF000        # the request ends at 2^64 exactly


def read_at(offset):
    """The fault applies to a read at @offset only."""
    def wrap(fn):
        def fault(c, req):
            if req.type != CMD_READ or req.offset != offset:
                raise Misbehaved(f"expected a read at 0x{offset:x}, got {req!r}")
            fn(c, req)
        return fault
    return wrap


# [0, 200) reaches past 2^64; [10, 30) lies inside it.
@read_fault("read-wrap-overlap", fatal=False)
@read_at(WRAP_OVERLAP_OFFSET)
def _(c, req):
    fill(c, req, 0, 200)
    fill(c, req, 10, 30)
    c.done_chunk(req.cookie)


# The upper half, which ends at 2^64, twice: the lower half is never sent.
@read_fault("read-wrap-data-twice", fatal=False)
@read_at(WRAP_END_OFFSET)
def _(c, req):
    half = req.length // 2
    fill(c, req, half, req.length)
    fill(c, req, half, req.length)
    c.done_chunk(req.cookie)


@read_fault("read-wrap-hole-twice", fatal=False)
@read_at(WRAP_END_OFFSET)
def _(c, req):
    half = req.length // 2
    c.hole_chunk(req.cookie, req.offset + half, req.length - half)
    c.hole_chunk(req.cookie, req.offset + half, req.length - half)
    c.done_chunk(req.cookie)


# The control: the two halves, upper first, read correctly.
@read_fault("read-wrap-reverse", fatal=False)
@read_at(WRAP_END_OFFSET)
def _(c, req):
    half = req.length // 2
    fill(c, req, half, req.length)
    fill(c, req, 0, half)
    c.done_chunk(req.cookie)


@read_fault("read-hole-zero-size")
def _(c, req):
    c.hole_chunk(req.cookie, req.offset, 0, REPLY_FLAG_DONE)


@read_fault("read-overlapping-data", fatal=False)
def _(c, req):
    n = req.length
    fill(c, req, 0, n // 2)
    fill(c, req, n // 4, n * 3 // 4)
    fill(c, req, n * 3 // 4, n)
    c.done_chunk(req.cookie)


@read_fault("read-overlapping-hole", fatal=False)
def _(c, req):
    fill(c, req, 0, req.length)
    c.hole_chunk(req.cookie, req.offset + req.length // 2, req.length // 4, REPLY_FLAG_DONE)


# DONE before the request is covered: quarters 0 and 2 only.
@read_fault("read-done-before-covered", fatal=False)
def _(c, req):
    q = req.length // 4
    fill(c, req, 2 * q, 3 * q)
    fill(c, req, 0, q)
    c.done_chunk(req.cookie)


# 64 chunks, last first: the client tracks 63 out-of-order ranges.
@read_fault("read-many-chunks-reverse", fatal=False)
def _(c, req):
    step = req.length // 64
    for i in reversed(range(64)):
        fill(c, req, i * step, (i + 1) * step)
    c.done_chunk(req.cookie)


# The same, with a chunk straddling two that already arrived out of order.
@read_fault("read-many-chunks-overlap", fatal=False)
def _(c, req):
    step = req.length // 64
    for i in reversed(range(64)):
        fill(c, req, i * step, (i + 1) * step)
        if i == 40:
            fill(c, req, i * step + step // 2, (i + 1) * step + step // 2)
    c.done_chunk(req.cookie)


@read_fault("read-done-without-data", fatal=False)
def _(c, req):
    c.done_chunk(req.cookie)


@read_fault("read-hole-without-sr", sr=False)
def _(c, req):
    c.hole_chunk(req.cookie, req.offset, req.length, REPLY_FLAG_DONE)


@read_fault("read-error-chunk", fatal=False)
def _(c, req):
    c.error_chunk(req.cookie, NBD_EIO, "disk on fire")


@read_fault("read-error-message-too-long")
def _(c, req):
    c.error_chunk(req.cookie, NBD_EIO, "disk on fire", msglen=100)


@read_fault("read-error-offset-outside", fatal=False)
def _(c, req):
    c.error_chunk(req.cookie, NBD_EIO, "bad sector", type_=T_ERROR_OFFSET,
                  offset=req.offset + req.length)


@read_fault("read-unknown-error-type", fatal=False)
def _(c, req):
    c.error_chunk(req.cookie, NBD_EIO, "new kind of error", type_=0x8123)


@read_fault("read-unknown-chunk-type")
def _(c, req):
    c.chunk(req.cookie, REPLY_FLAG_DONE, 100, b"\0" * 8)


@read_fault("read-none-with-payload")
def _(c, req):
    c.chunk(req.cookie, REPLY_FLAG_DONE, T_NONE, b"\0" * 4)


@read_fault("read-bad-reply-magic")
def _(c, req):
    c.chunk(req.cookie, REPLY_FLAG_DONE, T_NONE, magic=0x12345678)


@read_fault("write-answered-with-data")
def _(c, req):
    c.data_chunk(req.cookie, req.offset, b"\xee" * req.length, REPLY_FLAG_DONE)


# -- Block status faults (the client asked for base:allocation)

@read_fault("bs-unknown-context", fatal=False)
def _(c, req):
    c.block_status_chunk(req.cookie, 99, [(req.length, 0)])


@read_fault("bs-zero-length-extent", fatal=False)
def _(c, req):
    c.block_status_chunk(req.cookie, META_ID, [(4096, 0), (0, 3)])


@read_fault("bs-extents-beyond-request", fatal=False)
def _(c, req):
    c.block_status_chunk(req.cookie, META_ID, [(req.length, 0), (4096, 3)])


# Allowed by the spec: the last extent may run past the request.
@read_fault("bs-last-extent-past-end", fatal=False)
def _(c, req):
    c.block_status_chunk(req.cookie, META_ID, [(req.length // 2, 0), (req.length, 3)])


@read_fault("bs-req-one-too-long", fatal=False)
def _(c, req):
    if not req.flags & CMD_FLAG_REQ_ONE:
        raise Misbehaved("block status without NBD_CMD_FLAG_REQ_ONE")
    c.block_status_chunk(req.cookie, META_ID, [(req.length * 2, 0)])


@read_fault("bs-req-one-two-extents", fatal=False)
def _(c, req):
    if not req.flags & CMD_FLAG_REQ_ONE:
        raise Misbehaved("block status without NBD_CMD_FLAG_REQ_ONE")
    c.block_status_chunk(req.cookie, META_ID, [(4096, 0), (4096, 3)])


@read_fault("bs-bad-length")
def _(c, req):
    c.chunk(req.cookie, REPLY_FLAG_DONE, T_BLOCK_STATUS, struct.pack(">IIH", META_ID, 4096, 0))


# More descriptors than the client's limit of 2^20: only the header is sent.
@read_fault("bs-too-many-extents")
def _(c, req):
    c.chunk(req.cookie, REPLY_FLAG_DONE, T_BLOCK_STATUS, length=4 + 8 * ((1 << 20) + 1))


@read_fault("bs-chunk-for-read")
def _(c, req):
    c.block_status_chunk(req.cookie, META_ID, [(req.length, 0)])


@read_fault("bs-answered-with-data")
def _(c, req):
    c.data_chunk(req.cookie, req.offset, pattern(req.offset, 512), REPLY_FLAG_DONE)


# -- Connection closed or silent during transmission

def close_after(fn):
    def fault(c, req):
        fn(c, req)
        c.close()
        raise Finished()
    return fault


@read_fault("close-mid-reply-header")
@close_after
def _(c, req):
    c.send(struct.pack(">IHH", STRUCTURED_MAGIC, REPLY_FLAG_DONE, T_OFFSET_DATA))


@read_fault("close-mid-simple-payload", sr=False)
@close_after
def _(c, req):
    c.send(struct.pack(">IIQ", SIMPLE_MAGIC, 0, req.cookie) + pattern(req.offset, 1000))


@read_fault("close-mid-chunk-payload")
@close_after
def _(c, req):
    q = req.length // 4
    fill(c, req, 0, q)
    c.send(struct.pack(">IHHQIQ", STRUCTURED_MAGIC, REPLY_FLAG_DONE, T_OFFSET_DATA, req.cookie,
                       8 + req.length - q, req.offset + q) + pattern(req.offset + q, 1000))


# A payload large enough to be received straight into the caller's buffer.
@read_fault("close-mid-large-payload")
@close_after
def _(c, req):
    c.send(struct.pack(">IHHQIQ", STRUCTURED_MAGIC, REPLY_FLAG_DONE, T_OFFSET_DATA, req.cookie,
                       8 + req.length, req.offset) + pattern(req.offset, 100000))


@scenario("close-when-idle")
def _(c):
    def then_close(c, req):
        serve(c, req)
        c.close()
        raise Finished()
    negotiate(c)
    transmission(c, [then_close], fatal=True)


@scenario("reply-after-disc")
def _(c):
    negotiate(c)
    req = c.read_request()
    if req.type != CMD_DISC:
        raise Misbehaved(f"expected NBD_CMD_DISC, got {req!r}")
    c.simple(req.cookie)
    c.close()


@scenario("silent-after-disc")
def _(c):
    negotiate(c)
    req = c.read_request()
    if req.type != CMD_DISC:
        raise Misbehaved(f"expected NBD_CMD_DISC, got {req!r}")
    c.silence()
    c.expect_eof(why="after NBD_CMD_DISC")
    # The client shut its write side; stay silent, not closing, until it
    # closes the socket altogether.
    c.wait_hangup()


def silent(name, fn):
    def fault(c, req):
        fn(c, req)
        c.silence()
        c.expect_eof(why="while the server was silent")
        raise Finished()
    read_fault(name)(fault)


silent("silent-reply", lambda c, req: None)
silent("silent-mid-header",
       lambda c, req: c.send(struct.pack(">IHH", STRUCTURED_MAGIC, REPLY_FLAG_DONE,
                                         T_OFFSET_DATA)))
silent("silent-mid-payload",
       lambda c, req: c.send(struct.pack(">IHHQIQ", STRUCTURED_MAGIC, REPLY_FLAG_DONE,
                                         T_OFFSET_DATA, req.cookie, 8 + req.length,
                                         req.offset) + pattern(req.offset, 100)))


# A correct server, to check this script and the tests' helpers.
@scenario("correct")
def _(c):
    negotiate(c)
    transmission(c, [], fatal=False)


# ---- Main ----------------------------------------------------------------------

def timed_out(signum, frame):
    log(f"{sys.argv[2]}: time limit of {RUN_TIMEOUT} s expired")
    os._exit(3)


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in SCENARIOS:
        print(f"usage: {sys.argv[0]} SOCKET SCENARIO\nscenarios: {' '.join(sorted(SCENARIOS))}",
              file=sys.stderr)
        sys.exit(2)
    path, name = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(RUN_TIMEOUT)

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(IO_TIMEOUT)
    print(f"READY {os.getpid()}", flush=True)
    try:
        sock, _ = listener.accept()
    except socket.timeout:
        log(f"{name}: no client within {IO_TIMEOUT} s")
        sys.exit(3)
    listener.close()
    os.unlink(path)

    sock.settimeout(IO_TIMEOUT)
    c = Conn(sock)
    status = 0
    try:
        SCENARIOS[name](c)
    except Finished:
        pass
    except (ClientGone, Misbehaved) as e:
        log(f"{name}: {e}")
        status = 1
    except socket.timeout:
        log(f"{name}: the client said nothing for {IO_TIMEOUT} s")
        status = 3
    finally:
        sock.close()
    sys.exit(status)


if __name__ == "__main__":
    main()
