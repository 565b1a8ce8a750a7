/* hostile-read: replies that lie about a read (or a write) cannot crash
 * the client, corrupt memory outside the caller's buffer, or leave stale
 * bytes in it.
 *
 * Against hostile-server.py, with structured replies negotiated unless a
 * scenario says otherwise.  Faults that break the framing must fail the
 * read with EPROTO and kill the connection: a simple reply to a read, an
 * unknown cookie (simple and structured), a reply for a command already
 * completed, data chunks larger than the request, beyond its end, before
 * its start or at 0xffffffffffffff00, holes near 2^64 or of size 0, a
 * structured chunk without structured replies, an error chunk whose
 * message is longer than the chunk, unknown chunk types, NONE with a
 * payload, a bad reply magic, a data chunk answering a write (whose buffer
 * must stay untouched).  Faults that leave the stream in step fail only the
 * read and the connection goes on: overlapping data or hole chunks (also
 * among 64 chunks sent last first, which alone must read correctly), DONE
 * before the request is covered (EIO: the covered parts hold the data, the
 * rest is zeroed), error chunks (EIO), an error offset outside the request.
 * In every case the buffer, filled with 0xaa first, holds no 0xaa
 * afterwards.  The edges are exact: a data chunk at offset + 1 of the
 * request's length and a hole from the middle to one byte past the end are
 * both outside.
 *
 * Reads whose range reaches 2^64 (sent with LIBNBD_STRICT_BOUNDS off), where
 * the end of a chunk, offset + length, lies past 2^64: overlapping chunks
 * there (data inside data, the upper half twice as data or as a hole) fail
 * the read with EPROTO like any overlap, with the bytes sent in place and
 * the rest zeroed (not a 2^64-byte memset, not a success with half the
 * buffer never written); the two halves upper first read correctly.
 */
#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>
#include <string.h>

#include "hostile.h"

/* flags */
#define NO_SR 1                 /* the server refuses structured replies */

/* The read fails with sc->err and the connection dies. */
static void
read_kills (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_connect (&s, sc->name);
  unsigned char buf[READ_COUNT];

  if (sc->flags & NO_SR)
    is_int (nbd_get_structured_replies_negotiated (h), 0,
            "%s: structured replies were not negotiated", sc->name);
  memset (buf, STALE_BYTE, sizeof buf);
  check_error (sc->name, nbd_pread (h, buf, sizeof buf, READ_OFFSET, 0), "nbd_pread", sc->err,
               sc->text);
  ok (is_all (buf, 0, sizeof buf), "%s: the buffer is zeroed, nothing stale", sc->name);
  check_dead (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* The read fails with sc->err, the connection lives on. */
static void
read_fails (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_connect (&s, sc->name);
  unsigned char buf[READ_COUNT];

  memset (buf, STALE_BYTE, sizeof buf);
  check_error (sc->name, nbd_pread (h, buf, sizeof buf, READ_OFFSET, 0), "nbd_pread", sc->err,
               sc->text);
  ok (no_stale (buf, sizeof buf), "%s: no stale byte is left in the buffer", sc->name);
  ok (nbd_aio_is_ready (h) == 1, "%s: the connection survives", sc->name);
  check_usable (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* DONE after quarters 2 and 0 only: the read fails (short read) and only
 * quarters 1 and 3, which the server never sent, are zero. */
static void
done_before_covered (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_connect (&s, sc->name);
  unsigned char buf[READ_COUNT];
  const size_t q = READ_COUNT / 4;

  memset (buf, STALE_BYTE, sizeof buf);
  check_error (sc->name, nbd_pread (h, buf, sizeof buf, READ_OFFSET, 0), "nbd_pread", sc->err,
               sc->text);
  ok (is_pattern (buf, READ_OFFSET, q), "%s: quarter 0 holds the data sent", sc->name);
  ok (is_all (buf + q, 0, q), "%s: quarter 1 (never sent) is zero", sc->name);
  ok (is_pattern (buf + 2 * q, READ_OFFSET + 2 * q, q), "%s: quarter 2 holds the data sent",
      sc->name);
  ok (is_all (buf + 3 * q, 0, q), "%s: quarter 3 (never sent) is zero", sc->name);
  ok (nbd_aio_is_ready (h) == 1, "%s: the connection survives", sc->name);
  check_usable (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* The read succeeds with the right bytes, however the chunks came. */
static void
read_ok (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_connect (&s, sc->name);
  unsigned char buf[READ_COUNT];

  memset (buf, STALE_BYTE, sizeof buf);
  if (!ok (nbd_pread (h, buf, sizeof buf, READ_OFFSET, 0) == 0, "%s: nbd_pread", sc->name))
    diag ("error: %s", nbd_get_error ());
  ok (is_pattern (buf, READ_OFFSET, sizeof buf), "%s: reads the export's bytes", sc->name);
  check_usable (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* The first read is answered, the second gets another reply to the first. */
static void
reply_twice (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_connect (&s, sc->name);
  unsigned char buf[READ_COUNT];

  memset (buf, STALE_BYTE, sizeof buf);
  if (!ok (nbd_pread (h, buf, sizeof buf, READ_OFFSET, 0) == 0, "%s: the first read", sc->name))
    diag ("error: %s", nbd_get_error ());
  ok (is_pattern (buf, READ_OFFSET, sizeof buf), "%s: reads the export's bytes", sc->name);
  memset (buf, STALE_BYTE, sizeof buf);
  check_error (sc->name, nbd_pread (h, buf, sizeof buf, READ_OFFSET, 0), "nbd_pread", sc->err,
               sc->text);
  ok (is_all (buf, 0, sizeof buf), "%s: the buffer is zeroed, nothing stale", sc->name);
  check_dead (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* A write answered with a data chunk: the client must not write the
 * server's bytes into the caller's (const) source buffer. */
static void
write_answered_with_data (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_connect (&s, sc->name);
  unsigned char buf[READ_COUNT];

  memset (buf, 0x5c, sizeof buf);
  check_error (sc->name, nbd_pwrite (h, buf, sizeof buf, READ_OFFSET, 0), "nbd_pwrite", sc->err,
               sc->text);
  ok (is_all (buf, 0x5c, sizeof buf), "%s: the source buffer is untouched", sc->name);
  check_dead (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* ---- Reads whose range reaches 2^64 ------------------------------------ */

#define WRAP_OVERLAP_OFFSET UINT64_C (0xffffffffffffff9c)  /* 100 bytes below 2^64 */
#define WRAP_END_OFFSET UINT64_C (0xfffffffffffff000)      /* ends at 2^64 exactly */

/* flags of read_wrap: where the read goes and what the server sends */
#define WRAP_AT_END 2           /* at WRAP_END_OFFSET, else WRAP_OVERLAP_OFFSET */
#define SENT_FIRST_200 4        /* data for [0, 200) */
#define SENT_UPPER_HALF 8       /* data for [READ_COUNT / 2, READ_COUNT) */

/* A read the server answers with chunks ending past 2^64: it fails with
 * sc->err (or succeeds if sc->err is 0), the bytes the server sent are in
 * place, every other byte is zero, and the connection lives on. */
static void
read_wrap (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_connect (&s, sc->name);
  unsigned char buf[READ_COUNT];
  uint64_t offset = sc->flags & WRAP_AT_END ? WRAP_END_OFFSET : WRAP_OVERLAP_OFFSET;
  size_t from = 0, to = 0;      /* the data sent; the rest must be zero */
  int r;

  if (sc->flags & SENT_FIRST_200)
    to = 200;
  if (sc->flags & SENT_UPPER_HALF)
    from = READ_COUNT / 2, to = READ_COUNT;
  if (!sc->err)
    from = 0, to = READ_COUNT;
  ok (nbd_set_strict_mode (h, nbd_get_strict_mode (h) & ~LIBNBD_STRICT_BOUNDS) == 0,
      "%s: LIBNBD_STRICT_BOUNDS off", sc->name);
  memset (buf, STALE_BYTE, sizeof buf);
  r = nbd_pread (h, buf, sizeof buf, offset, 0);
  if (sc->err)
    check_error (sc->name, r, "nbd_pread", sc->err, sc->text);
  else if (!ok (r == 0, "%s: nbd_pread at 0x%" PRIx64, sc->name, offset))
    diag ("error: %s", nbd_get_error ());
  ok (is_all (buf, 0, from), "%s: [0, %zu) is zero", sc->name, from);
  ok (is_pattern (buf + from, offset + from, to - from), "%s: [%zu, %zu) holds the data sent",
      sc->name, from, to);
  ok (is_all (buf + to, 0, sizeof buf - to), "%s: [%zu, %d) is zero", sc->name, to, READ_COUNT);
  ok (nbd_aio_is_ready (h) == 1, "%s: the connection survives", sc->name);
  check_usable (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

static const struct scenario scenarios[] = {
  { "read-simple-reply-with-sr", read_kills, EPROTO,
    "simple reply to a read, but structured replies were negotiated" },
  { "read-unknown-cookie-simple", read_kills, EPROTO, "simple reply with an unknown cookie" },
  { "read-unknown-cookie-structured", read_kills, EPROTO,
    "structured reply chunk with an unknown cookie" },
  { "read-reply-twice", reply_twice, EPROTO, "structured reply chunk with an unknown cookie" },
  { "read-chunk-larger-than-request", read_kills, EPROTO,
    "data chunk larger than the read request" },
  { "read-chunk-past-end", read_kills, EPROTO, "data chunk outside the read request" },
  { "read-chunk-before-start", read_kills, EPROTO, "data chunk outside the read request" },
  { "read-chunk-offset-near-2^64", read_kills, EPROTO, "data chunk outside the read request" },
  { "read-hole-near-2^64", read_kills, EPROTO, "hole chunk outside the read request" },
  { "read-hole-zero-size", read_kills, EPROTO, "hole chunk of size 0" },
  { "read-chunk-one-past-end", read_kills, EPROTO, "data chunk outside the read request" },
  { "read-hole-past-end", read_kills, EPROTO, "hole chunk outside the read request" },
  { "read-hole-without-sr", read_kills, EPROTO,
    "structured reply, but structured replies were not negotiated", NO_SR },
  { "read-error-message-too-long", read_kills, EPROTO,
    "error chunk message longer than the chunk" },
  { "read-unknown-chunk-type", read_kills, EPROTO, "reply chunk of an unknown type" },
  { "read-none-with-payload", read_kills, EPROTO, "NBD_REPLY_TYPE_NONE chunk with a payload" },
  { "read-bad-reply-magic", read_kills, EPROTO, "reply with an unknown magic number" },
  { "write-answered-with-data", write_answered_with_data, EPROTO,
    "data chunk in the reply to a command that is not a read" },
  { "read-overlapping-data", read_fails, EPROTO, "server sent overlapping data chunks" },
  { "read-overlapping-hole", read_fails, EPROTO, "server sent overlapping read chunks" },
  { "read-many-chunks-reverse", read_ok },
  { "read-many-chunks-overlap", read_fails, EPROTO, "server sent overlapping data chunks" },
  { "read-done-before-covered", done_before_covered, EIO, "short read" },
  { "read-done-without-data", read_fails, EIO, "short read" },
  { "read-error-chunk", read_fails, EIO, "the server reported an error" },
  { "read-unknown-error-type", read_fails, EIO, "the server reported an error" },
  { "read-error-offset-outside", read_fails, EPROTO, "error offset outside the request" },
  { "read-wrap-overlap", read_wrap, EPROTO, "server sent overlapping data chunks",
    SENT_FIRST_200 },
  { "read-wrap-data-twice", read_wrap, EPROTO, "server sent overlapping data chunks",
    WRAP_AT_END | SENT_UPPER_HALF },
  { "read-wrap-hole-twice", read_wrap, EPROTO, "server sent overlapping read chunks",
    WRAP_AT_END },
  { "read-wrap-reverse", read_wrap, 0, NULL, WRAP_AT_END },
};

int
main (int argc, char **argv)
{
  return hostile_main (argc, argv, scenarios, sizeof scenarios / sizeof scenarios[0]);
}
