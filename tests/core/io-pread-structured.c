/* io-pread-structured: the chunk callback of nbd_pread_structured.
 *
 * Proves that the chunks seen cover the request exactly (no gap, no
 * overlap, subbuf inside buf at the chunk's place, the data right): one
 * DATA chunk from nbdkit pattern; DATA and HOLE chunks from qemu-nbd on a
 * qcow2 with holes (HOLE exactly where nothing was written, the buffer
 * zeroed there); with LIBNBD_CMD_FLAG_DF a single DATA chunk (nbd_can_df on
 * both servers); without structured replies one DATA chunk for the whole
 * read; a callback returning -1 with *error = EIO fails the read with EIO
 * but still sees every chunk (later ones with *error = EIO on input); and
 * .free runs exactly once, also when the call fails before it is sent.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define K 1024
#define M (1024 * 1024)
#define QSIZE (4 * M)
#define MAX_CHUNKS 256

struct chunk {
  uint64_t offset;
  size_t count;
  unsigned status;
  const void *subbuf;
  int error_in;
};

struct chunks {
  struct chunk c[MAX_CHUNKS];
  size_t n;
  size_t overflow;
  int fail_first_with;          /* if set, the first chunk fails with this errno */
  unsigned frees;
};

static int
chunk_cb (void *user_data, const void *subbuf, size_t count, uint64_t offset, unsigned status,
          int *error)
{
  struct chunks *cs = user_data;

  if (cs->n == MAX_CHUNKS) {
    cs->overflow++;
    return 0;
  }
  cs->c[cs->n++] = (struct chunk) { offset, count, status, subbuf, *error };
  if (cs->fail_first_with && cs->n == 1) {
    *error = cs->fail_first_with;
    return -1;
  }
  return 0;
}

static void
chunk_free (void *user_data)
{
  struct chunks *cs = user_data;

  cs->frees++;
}

static int
cmp_chunk (const void *a, const void *b)
{
  const struct chunk *x = a, *y = b;

  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* The chunks tile [offset, offset+count) exactly, each at its place in buf. */
static bool
tiles_exactly (struct chunks *cs, const unsigned char *buf, uint64_t offset, size_t count)
{
  uint64_t pos = offset;

  if (cs->overflow || cs->n == 0)
    return false;
  qsort (cs->c, cs->n, sizeof cs->c[0], cmp_chunk);
  for (size_t i = 0; i < cs->n; i++) {
    const struct chunk *c = &cs->c[i];

    if (c->offset != pos || c->count == 0 || c->subbuf != buf + (c->offset - offset)) {
      diag ("chunk %zu: offset %" PRIu64 " count %zu subbuf %+td, expected offset %" PRIu64, i,
            c->offset, c->count, (const unsigned char *) c->subbuf - buf, pos);
      return false;
    }
    pos += c->count;
  }
  if (pos != offset + count)
    diag ("chunks end at %" PRIu64 ", request at %" PRIu64, pos, offset + count);
  return pos == offset + count;
}

static nbd_chunk_callback
closure (struct chunks *cs)
{
  return (nbd_chunk_callback) { .callback = chunk_cb, .user_data = cs, .free = chunk_free };
}

static unsigned char
pattern_byte (uint64_t pos)
{
  return (unsigned char) ((pos & ~UINT64_C (7)) >> (8 * (7 - (pos & 7))));
}

static bool
is_pattern (const unsigned char *buf, size_t count, uint64_t offset)
{
  for (size_t i = 0; i < count; i++)
    if (buf[i] != pattern_byte (offset + i))
      return false;
  return true;
}

static const char *
prefix_ok (const char *name)
{
  const char *e = nbd_get_error ();

  return e && strncmp (e, name, strlen (name)) == 0 && e[strlen (name)] == ':' ? "yes" : "no";
}

/* ---- nbdkit pattern --------------------------------------------------- */

static void
nbdkit_single_chunk (const struct test_server *s)
{
  static const struct { uint64_t off; size_t count; } r[] = {
    { 0, 1 }, { 5, 3 }, { 4095, 4097 }, { 123457, 2 * M + 1 }, { 0, 32 * M },
  };
  struct nbd_handle *h = nbd_create ();
  unsigned char *buf = malloc (32 * M);

  if (!h || !buf)
    bail_out ("nbd_create/malloc");
  if (!is_int (nbd_connect_uri (h, s->uri), 0, "pattern: connect"))
    bail_out ("%s", nbd_get_error ());
  is_int (nbd_get_structured_replies_negotiated (h), 1, "pattern: structured replies");
  is_int (nbd_can_df (h), 1, "pattern: nbd_can_df is true on nbdkit");

  for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
    for (int df = 0; df <= 1; df++) {
      struct chunks cs = { 0 };
      const char *f = df ? "DF" : "no flags";

      memset (buf, 0xaa, r[i].count);
      is_int (nbd_pread_structured (h, buf, r[i].count, r[i].off, closure (&cs),
                                    df ? LIBNBD_CMD_FLAG_DF : 0), 0,
              "pattern, %s: nbd_pread_structured %zu at %" PRIu64, f, r[i].count, r[i].off);
      is_int (cs.frees, 1, "pattern, %s: .free called once", f);
      is_int (cs.n, 1, "pattern, %s: nbdkit sends one chunk", f);
      ok (tiles_exactly (&cs, buf, r[i].off, r[i].count),
          "pattern, %s: the chunk covers the request exactly", f);
      is_int (cs.c[0].status, LIBNBD_READ_DATA, "pattern, %s: status LIBNBD_READ_DATA", f);
      is_int (cs.c[0].error_in, 0, "pattern, %s: *error is 0 on input", f);
      ok (is_pattern (buf, r[i].count, r[i].off), "pattern, %s: buffer holds the pattern", f);
    }
  }

  /* A call that fails before anything is sent still frees its closure
   * once, and never calls it. */
  {
    struct chunks cs = { 0 };

    ok (nbd_pread_structured (h, buf, 16, nbd_get_size (h) - 8, closure (&cs), 0) == -1,
        "pattern: out-of-bounds nbd_pread_structured fails");
    is_errno (EINVAL, "pattern: with EINVAL");
    is_str (prefix_ok ("nbd_pread_structured"), "yes",
            "pattern: message begins with nbd_pread_structured: (%s)", nbd_get_error ());
    is_int (cs.n, 0, "pattern: callback not called for a rejected read");
    is_int (cs.frees, 1, "pattern: .free called once for a rejected read");
  }
  {
    struct chunks cs = { 0 };

    ok (nbd_pread_structured (h, buf, 16, 0, closure (&cs), LIBNBD_CMD_FLAG_FUA) == -1,
        "pattern: nbd_pread_structured with FUA fails");
    is_errno (EINVAL, "pattern: with EINVAL (only DF is allowed)");
    is_int (cs.frees, 1, "pattern: .free called once for a bad flag");
  }
  ok (nbd_pread_structured (h, buf, 16, 0, (nbd_chunk_callback) { .callback = NULL }, 0) == -1,
      "pattern: nbd_pread_structured with a NULL closure fails");
  is_errno (EFAULT, "pattern: with EFAULT");

  is_int (nbd_shutdown (h, 0), 0, "pattern: shutdown");
  nbd_close (h);
  free (buf);
}

/* Without structured replies the whole read is one DATA chunk. */
static void
nbdkit_simple_reply (const struct test_server *s)
{
  struct nbd_handle *h = nbd_create ();
  static unsigned char buf[65536 + 3];
  struct chunks cs = { 0 };

  if (!h)
    bail_out ("nbd_create");
  must (nbd_set_request_structured_replies (h, false));
  if (!is_int (nbd_connect_uri (h, s->uri), 0, "pattern, simple replies: connect"))
    bail_out ("%s", nbd_get_error ());
  is_int (nbd_get_structured_replies_negotiated (h), 0, "simple: no structured replies");
  memset (buf, 0xaa, sizeof buf);
  is_int (nbd_pread_structured (h, buf, sizeof buf, 1001, closure (&cs), 0), 0,
          "simple: nbd_pread_structured succeeds");
  is_int (cs.n, 1, "simple: the callback was called once");
  ok (tiles_exactly (&cs, buf, 1001, sizeof buf), "simple: the chunk is the whole request");
  is_int (cs.c[0].status, LIBNBD_READ_DATA, "simple: status LIBNBD_READ_DATA");
  ok (is_pattern (buf, sizeof buf, 1001), "simple: the data is right");
  is_int (cs.frees, 1, "simple: .free called once");
  is_int (nbd_shutdown (h, 0), 0, "simple: shutdown");
  nbd_close (h);
}

/* ---- qemu-nbd qcow2 with holes --------------------------------------- */

static const char *const qcmds[] = {
  "write -P 0x11 64k 64k",
  "write -P 0x22 1M 128k",
  "write -z 2M 64k",
  NULL
};

static bool
written (uint64_t pos)
{
  return (pos >= 64 * K && pos < 128 * K) || (pos >= M && pos < M + 128 * K);
}

static unsigned char
qbyte (uint64_t pos)
{
  if (pos >= 64 * K && pos < 128 * K)
    return 0x11;
  if (pos >= M && pos < M + 128 * K)
    return 0x22;
  return 0;
}

static bool
q_data_right (const unsigned char *buf, size_t count, uint64_t offset)
{
  for (size_t i = 0; i < count; i++)
    if (buf[i] != qbyte (offset + i)) {
      diag ("byte at %" PRIu64 ": 0x%02x, expected 0x%02x", offset + i, buf[i],
            qbyte (offset + i));
      return false;
    }
  return true;
}

/* Every chunk is DATA exactly where qemu-io wrote data, HOLE elsewhere,
 * and a HOLE chunk's subbuf is zeroes. */
static bool
statuses_match (const struct chunks *cs)
{
  for (size_t i = 0; i < cs->n; i++) {
    const struct chunk *c = &cs->c[i];
    unsigned want = written (c->offset) ? LIBNBD_READ_DATA : LIBNBD_READ_HOLE;

    if (c->status != want) {
      diag ("chunk at %" PRIu64 "+%zu has status %u, expected %u", c->offset, c->count,
            c->status, want);
      return false;
    }
    for (size_t j = 0; j < c->count; j++)
      if (written (c->offset + j) != (want == LIBNBD_READ_DATA)) {
        diag ("chunk at %" PRIu64 "+%zu mixes data and hole", c->offset, c->count);
        return false;
      }
  }
  return true;
}

static size_t
count_status (const struct chunks *cs, unsigned status)
{
  size_t n = 0;

  for (size_t i = 0; i < cs->n; i++)
    n += cs->c[i].status == status;
  return n;
}

static void
qemu_holes (const struct test_server *s)
{
  static const struct { uint64_t off; size_t count; size_t data, holes; } r[] = {
    { 0, QSIZE, 2, 3 },                   /* hole data hole data hole */
    { 0, 64 * K, 0, 1 },
    { 64 * K, 64 * K, 1, 0 },
    { 100, 200 * K, 1, 2 },               /* unaligned: hole data hole */
    { 64 * K + 1, 10, 1, 0 },
    { M - 3, 6, 1, 1 },
    { 2 * M - 7, 64 * K + 14, 0, 1 },     /* the explicit zero cluster is a hole */
  };
  struct nbd_handle *h = nbd_create ();
  static unsigned char buf[QSIZE];

  if (!h)
    bail_out ("nbd_create");
  if (!is_int (nbd_connect_uri (h, s->uri), 0, "qcow2: connect to qemu-nbd"))
    bail_out ("%s", nbd_get_error ());
  is_int (nbd_can_df (h), 1, "qcow2: nbd_can_df is true on qemu-nbd");

  for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
    struct chunks cs = { 0 };
    uint64_t off = r[i].off;
    size_t count = r[i].count;

    memset (buf, 0xaa, count);
    is_int (nbd_pread_structured (h, buf, count, off, closure (&cs), 0), 0,
            "qcow2: nbd_pread_structured %zu at %" PRIu64, count, off);
    ok (tiles_exactly (&cs, buf, off, count), "qcow2: %zu chunks cover %zu at %" PRIu64 " exactly",
        cs.n, count, off);
    ok (statuses_match (&cs), "qcow2: DATA where written, HOLE elsewhere");
    ok (count_status (&cs, LIBNBD_READ_DATA) >= r[i].data && (r[i].data > 0) ==
        (count_status (&cs, LIBNBD_READ_DATA) > 0),
        "qcow2: data chunks seen: %zu (at least %zu)", count_status (&cs, LIBNBD_READ_DATA),
        r[i].data);
    ok (count_status (&cs, LIBNBD_READ_HOLE) >= r[i].holes && (r[i].holes > 0) ==
        (count_status (&cs, LIBNBD_READ_HOLE) > 0),
        "qcow2: hole chunks seen: %zu (at least %zu)", count_status (&cs, LIBNBD_READ_HOLE),
        r[i].holes);
    ok (q_data_right (buf, count, off), "qcow2: buffer is the data, zeroes in the holes");
    is_int (cs.frees, 1, "qcow2: .free called once");

    /* DF: one DATA chunk, zeroes included. */
    memset (&cs, 0, sizeof cs);
    memset (buf, 0xaa, count);
    is_int (nbd_pread_structured (h, buf, count, off, closure (&cs), LIBNBD_CMD_FLAG_DF), 0,
            "qcow2, DF: nbd_pread_structured %zu at %" PRIu64, count, off);
    is_int (cs.n, 1, "qcow2, DF: a single chunk");
    ok (tiles_exactly (&cs, buf, off, count), "qcow2, DF: covering the request");
    is_int (cs.c[0].status, LIBNBD_READ_DATA, "qcow2, DF: status LIBNBD_READ_DATA");
    ok (q_data_right (buf, count, off), "qcow2, DF: the data is right");
    is_int (cs.frees, 1, "qcow2, DF: .free called once");
  }

  /* The callback fails on the first chunk: the read fails with that errno,
   * yet every chunk is still delivered, the later ones with *error = EIO. */
  {
    struct chunks cs = { .fail_first_with = EIO };

    memset (buf, 0xaa, QSIZE);
    ok (nbd_pread_structured (h, buf, QSIZE, 0, closure (&cs), 0) == -1,
        "qcow2: read fails when the chunk callback fails");
    is_errno (EIO, "qcow2: with the callback's EIO");
    is_str (prefix_ok ("nbd_pread_structured"), "yes",
            "qcow2: message begins with nbd_pread_structured: (%s)", nbd_get_error ());
    /* In arrival order: the first saw no error, the later ones EIO. */
    is_int (cs.c[0].error_in, 0, "qcow2: first chunk saw *error 0");
    {
      bool later_eio = true;
      for (size_t i = 1; i < cs.n; i++)
        later_eio &= cs.c[i].error_in == EIO;
      ok (later_eio, "qcow2: later chunks saw *error = EIO on input");
    }
    ok (tiles_exactly (&cs, buf, 0, QSIZE), "qcow2: all %zu chunks were still seen", cs.n);
    ok (cs.n >= 5, "qcow2: at least the 5 chunks of the layout (%zu)", cs.n);
    is_int (cs.frees, 1, "qcow2: .free called once after the failed read");
    memset (buf, 0xaa, 64 * K);
    is_int (nbd_pread (h, buf, 64 * K, 64 * K, 0), 0, "qcow2: the handle still reads");
    ok (q_data_right (buf, 64 * K, 64 * K), "qcow2: correctly");
  }
  {
    struct chunks cs = { .fail_first_with = ENOSPC };

    ok (nbd_pread_structured (h, buf, 64 * K, 64 * K, closure (&cs), 0) == -1,
        "qcow2: single-chunk read fails when the callback fails");
    is_errno (ENOSPC, "qcow2: with the callback's errno ENOSPC");
    is_int (cs.frees, 1, "qcow2: .free called once");
  }

  is_int (nbd_shutdown (h, 0), 0, "qcow2: shutdown");
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;
  const char *pargs[] = { "pattern", "size=1G", NULL };
  char *img;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, pargs) == -1)
    bail_out ("cannot start nbdkit pattern");
  nbdkit_single_chunk (&s);
  nbdkit_simple_reply (&s);
  is_int (server_stop (&s), 0, "nbdkit stopped");

  img = image_create ("qcow2", QSIZE, qcmds);
  if (!img)
    bail_out ("cannot create the qcow2 image");
  {
    const char *qargs[] = { "-f", "qcow2", img, NULL };
    if (server_start_qemu_nbd (&s, qargs) == -1)
      bail_out ("cannot start qemu-nbd");
  }
  qemu_holes (&s);
  is_int (server_stop (&s), 0, "qemu-nbd stopped");
  free (img);
  return done_testing ();
}
