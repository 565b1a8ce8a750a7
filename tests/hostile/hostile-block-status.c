/* hostile-block-status: block status replies that lie cannot reach the
 * caller's extent callback, and the connection survives those that keep
 * the stream in step.
 *
 * The client asks for base:allocation; hostile-server.py grants it with id
 * 7.  Survivable faults fail nbd_block_status with EPROTO before the
 * callback sees anything, and a second, correct block status then reaches
 * the callback: a chunk for a context never negotiated, a zero-length
 * extent, extents running past the request, and with NBD_CMD_FLAG_REQ_ONE
 * an extent longer than the request or two extents.  A last extent running
 * past the request is legal and reaches the callback as sent.  Faults that
 * break the framing kill the connection: a chunk length that is not 4 + 8n,
 * more descriptors than the client's limit of 2^20 (refused from the
 * header alone), a block status chunk answering a read, a data chunk
 * answering block status.
 */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <string.h>

#include "hostile.h"

/* flags */
#define REQ_ONE 1               /* the request carries NBD_CMD_FLAG_REQ_ONE */

#define BS_COUNT 65536

struct seen {
  int calls, frees;
  char context[64];
  uint64_t offset;
  uint32_t entries[8];
  size_t nr_entries;
};

static int
extent_cb (void *opaque, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr_entries, int *error)
{
  struct seen *s = opaque;

  s->calls++;
  snprintf (s->context, sizeof s->context, "%s", metacontext);
  s->offset = offset;
  s->nr_entries = nr_entries;
  memcpy (s->entries, entries,
          (nr_entries < 8 ? nr_entries : 8) * sizeof *entries);
  return 0;
}

static void
extent_free (void *opaque)
{
  struct seen *s = opaque;

  s->frees++;
}

static int
block_status (struct nbd_handle *h, struct seen *s, uint32_t flags)
{
  memset (s, 0, sizeof *s);
  return nbd_block_status (h, BS_COUNT, 0,
                           (nbd_extent_callback) { .callback = extent_cb, .user_data = s,
                                                   .free = extent_free }, flags);
}

static struct nbd_handle *
connect_meta (struct hostile *s, const char *name)
{
  struct nbd_handle *h = hostile_handle (name);

  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  hostile_start (s, name);
  if (!ok (nbd_connect_unix (h, s->sock) == 0, "%s: nbd_connect_unix", name))
    diag ("error: %s", nbd_get_error ());
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "%s: base:allocation negotiated", name);
  return h;
}

/* The callback saw exactly one chunk: base:allocation at offset 0 with
 * the extents e0..e3 (two pairs of length and flags). */
static void
check_seen (const char *name, const struct seen *s, uint32_t len0, uint32_t len1)
{
  is_int (s->calls, 1, "%s: the extent callback ran once", name);
  is_str (s->context, LIBNBD_CONTEXT_BASE_ALLOCATION, "%s: for base:allocation", name);
  is_uint (s->offset, 0, "%s: at offset 0", name);
  is_uint (s->nr_entries, 4, "%s: with two extents", name);
  ok (s->entries[0] == len0 && s->entries[1] == 0 && s->entries[2] == len1 &&
      s->entries[3] == 3,
      "%s: extents (%u, 0) (%u, 3), got (%u, %u) (%u, %u)", name, len0, len1, s->entries[0],
      s->entries[1], s->entries[2], s->entries[3]);
}

/* The block status fails before the callback, the connection lives on. */
static void
status_fails (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = connect_meta (&s, sc->name);
  struct seen seen;
  uint32_t flags = (sc->flags & REQ_ONE) ? LIBNBD_CMD_FLAG_REQ_ONE : 0;

  check_error (sc->name, block_status (h, &seen, flags), "nbd_block_status", sc->err, sc->text);
  is_int (seen.calls, 0, "%s: the extent callback never saw the bad chunk", sc->name);
  is_int (seen.frees, 1, "%s: the extent closure was freed once", sc->name);
  ok (nbd_aio_is_ready (h) == 1, "%s: the connection survives", sc->name);
  if (!ok (block_status (h, &seen, 0) == 0, "%s: a correct block status then works", sc->name))
    diag ("error: %s", nbd_get_error ());
  check_seen (sc->name, &seen, BS_COUNT / 2, BS_COUNT / 2);
  check_usable (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* The spec lets the last extent run past the request. */
static void
last_extent_past_end (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = connect_meta (&s, sc->name);
  struct seen seen;

  if (!ok (block_status (h, &seen, 0) == 0, "%s: nbd_block_status succeeds", sc->name))
    diag ("error: %s", nbd_get_error ());
  check_seen (sc->name, &seen, BS_COUNT / 2, BS_COUNT);
  check_usable (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* The block status fails and the connection dies. */
static void
status_kills (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = connect_meta (&s, sc->name);
  struct seen seen;

  check_error (sc->name, block_status (h, &seen, 0), "nbd_block_status", sc->err, sc->text);
  is_int (seen.calls, 0, "%s: the extent callback never ran", sc->name);
  is_int (seen.frees, 1, "%s: the extent closure was freed once", sc->name);
  check_dead (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* A read answered with a block status chunk. */
static void
read_gets_status (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = connect_meta (&s, sc->name);
  unsigned char buf[READ_COUNT];

  memset (buf, STALE_BYTE, sizeof buf);
  check_error (sc->name, nbd_pread (h, buf, sizeof buf, READ_OFFSET, 0), "nbd_pread", sc->err,
               sc->text);
  ok (is_all (buf, 0, sizeof buf), "%s: the buffer is zeroed, nothing stale", sc->name);
  check_dead (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

static const struct scenario scenarios[] = {
  { "bs-unknown-context", status_fails, EPROTO, "context it never negotiated" },
  { "bs-zero-length-extent", status_fails, EPROTO, "zero-length extent" },
  { "bs-extents-beyond-request", status_fails, EPROTO, "extents beyond the end of the request" },
  { "bs-req-one-too-long", status_fails, EPROTO, "more than asked for with NBD_CMD_FLAG_REQ_ONE",
    REQ_ONE },
  { "bs-req-one-two-extents", status_fails, EPROTO,
    "more than asked for with NBD_CMD_FLAG_REQ_ONE", REQ_ONE },
  { "bs-last-extent-past-end", last_extent_past_end },
  { "bs-bad-length", status_kills, EPROTO, "block status chunk with an invalid length" },
  { "bs-too-many-extents", status_kills, EPROTO, "block status chunk with an invalid length" },
  { "bs-answered-with-data", status_kills, EPROTO,
    "data chunk in the reply to a command that is not a read" },
  { "bs-chunk-for-read", read_gets_status, EPROTO,
    "block status chunk in the reply to another command" },
};

int
main (int argc, char **argv)
{
  return hostile_main (argc, argv, scenarios, sizeof scenarios / sizeof scenarios[0]);
}
