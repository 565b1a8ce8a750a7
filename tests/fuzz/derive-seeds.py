#!/usr/bin/python3
# derive-seeds.py: a few seeds the real servers never send, derived from
# their recordings (fuzz-record) by rearranging whole reply chunks: the
# chunks of a structured read in reverse or rotated order (out-of-order
# coverage), a data chunk sent twice (overlap), an error chunk turned into
# NBD_REPLY_TYPE_ERROR_OFFSET.  libFuzzer reaches these only slowly, since
# it mutates bytes, not chunks.  And two the recorder cannot make, since a
# live session runs over a real socketpair: "send-sliced" sets
# FUZZ_H2_SEND_SLICES, so that its replay takes the client's requests a
# slice at a time; "reset" sets FUZZ_H3_RESET and ends the stream halfway
# through the replies of the second batch, a server gone with commands in
# flight.  Each derived seed is named RECORDING--WHAT; the recordings
# themselves are left alone.
#
#   derive-seeds.py CORPUS_DIR
#
# The input format is fuzz-session.h's: 4 header bytes, then segments (a
# big-endian u16 length and the bytes); segment 0 is the handshake.
import os
import struct
import sys

SIMPLE = 0x67446698
STRUCTURED = 0x668E33EF
FLAG_DONE = 1
TYPE_ERROR = 0x8001
TYPE_ERROR_OFFSET = 0x8002
H2_SEND_SLICES = 0x08  # fuzz-session.h
H3_RESET = 0x80

# (recording, what): the derived seeds kept in the corpus.
WANTED = [
    ("qemu-raw-large", "reversed"),
    ("qemu-raw-large", "rotated"),
    ("qemu-raw-large", "overlap"),
    ("qemu-qcow2-depth", "reversed"),
    ("nbdkit-error", "error-offset"),
    ("nbdkit-memory-slice7", "send-sliced"),
    ("nbdkit-memory", "reset"),
]


def segments(data):
    segs, p = [], 4
    while p + 2 <= len(data):
        (n,) = struct.unpack(">H", data[p:p + 2])
        segs.append(data[p + 2:p + 2 + n])
        p += 2 + n
    return data[:4], segs


def build(hdr, segs):
    out = bytearray(hdr)
    for s in segs:
        for i in range(0, len(s), 65535):
            piece = s[i:i + 65535]
            out += struct.pack(">H", len(piece)) + piece
    return bytes(out)


def replies(seg):
    """The segment as whole replies, or None if it is not only replies."""
    out, p = [], 0
    while p < len(seg):
        (magic,) = struct.unpack(">I", seg[p:p + 4]) if p + 4 <= len(seg) else (0,)
        if magic == SIMPLE and p + 16 <= len(seg):
            out.append(seg[p:p + 16])
            p += 16
        elif magic == STRUCTURED and p + 20 <= len(seg):
            (length,) = struct.unpack(">I", seg[p + 16:p + 20])
            out.append(seg[p:p + 20 + length])
            p += 20 + length
        else:
            return None
    return out


def chunk_fields(c):
    """flags, type, cookie of a structured chunk, or None."""
    if struct.unpack(">I", c[:4])[0] != STRUCTURED:
        return None
    return struct.unpack(">HHQ", c[4:16])


def with_flags(c, flags):
    return c[:4] + struct.pack(">H", flags) + c[6:]


def groups(reps):
    """Index lists of the multi-chunk replies: consecutive chunks of one
    cookie, the last with DONE."""
    out, cur = [], []
    for i, c in enumerate(reps):
        f = chunk_fields(c)
        if f is None:
            cur = []
            continue
        if cur and chunk_fields(reps[cur[0]])[2] != f[2]:
            cur = []
        cur.append(i)
        if f[0] & FLAG_DONE:
            if len(cur) > 1:
                out.append(cur)
            cur = []
    return out


def reorder(reps, group, order):
    chunks = [reps[i] for i in order]
    chunks = [with_flags(c, chunk_fields(c)[0] & ~FLAG_DONE) for c in chunks]
    chunks[-1] = with_flags(chunks[-1], chunk_fields(chunks[-1])[0] | FLAG_DONE)
    new = list(reps)
    for i, c in zip(group, chunks):
        new[i] = c
    return new


def derive(reps, what):
    """The segment's replies changed as @what says, or None."""
    gs = groups(reps)
    if what == "reversed" and gs:
        for g in gs:
            reps = reorder(reps, g, g[::-1])
        return reps
    if what == "rotated" and gs:
        for g in gs:
            reps = reorder(reps, g, g[1:] + g[:1])
        return reps
    if what == "overlap" and gs:
        first = reps[gs[0][0]]
        new = list(reps)
        new.insert(gs[0][0], with_flags(first, chunk_fields(first)[0] & ~FLAG_DONE))
        return new
    if what == "error-offset":
        new, changed = list(reps), False
        for i, c in enumerate(reps):
            f = chunk_fields(c)
            if f and f[1] == TYPE_ERROR:
                # Point into the first read of the session (4096, 2048 bytes).
                payload = c[20:] + struct.pack(">Q", 4096 + 512)
                new[i] = (c[:4] + struct.pack(">HHQI", f[0], TYPE_ERROR_OFFSET, f[2], len(payload))
                          + payload)
                changed = True
        return new if changed else None
    return None


def derive_segments(segs, what):
    """Change the first segment of replies that @what applies to; False if
    there is none."""
    for si in range(1, len(segs)):
        reps = replies(segs[si])
        new = derive(reps, what) if reps else None
        if new is not None:
            segs[si] = b"".join(new)
            return True
    return False


def main():
    corpus = sys.argv[1]
    made = 0
    for name, what in WANTED:
        path = os.path.join(corpus, name)
        if not os.path.exists(path):
            print(f"derive-seeds: {name}: no such recording", file=sys.stderr)
            return 1
        with open(path, "rb") as f:
            hdr, segs = segments(f.read())
        if what == "send-sliced":
            hdr = hdr[:2] + bytes([hdr[2] | H2_SEND_SLICES]) + hdr[3:]
        elif what == "reset" and len(segs) > 2:
            # Segment 0 is the handshake, then one per batch.
            hdr = hdr[:3] + bytes([hdr[3] | H3_RESET])
            segs = segs[:2] + [segs[2][:len(segs[2]) // 2]]
        elif not derive_segments(segs, what):
            print(f"derive-seeds: {name}: nothing to derive {what} from", file=sys.stderr)
            return 1
        with open(os.path.join(corpus, f"{name}--{what}"), "wb") as f:
            f.write(build(hdr, segs))
        made += 1
    print(f"derive-seeds: {made} derived seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
