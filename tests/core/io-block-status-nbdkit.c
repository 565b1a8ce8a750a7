/* io-block-status-nbdkit: nbd_block_status (base:allocation) against nbdkit.
 *
 * Proves: extents from an eval-plugin script reach the callback with
 * exactly the flags the script gave (hole|zero, data, zero only, hole
 * only), clipped to start at the request's offset; the data plugin's
 * 32K-page layout is reported exactly; nbdkit memory's extents follow
 * writes and trims; on sparse-random (fixed seed) every hole|zero extent
 * reads as zeroes and every data extent as non-zero bytes, and the extents
 * tile the request; REQ_ONE gives one extent; a context nbdkit does not
 * know is not negotiated and its name never reaches the callback; a
 * callback returning -1 fails the call with its *error (EPERM), or EPROTO
 * when it left *error at 0, and the next call succeeds; .free runs once.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define K UINT64_C (1024)
#define M (K * K)
#define MAX_ENTRIES 4096

struct seen {
  unsigned calls;
  char ctx[64];
  uint64_t offset;
  size_t nr;
  uint32_t e[MAX_ENTRIES];
  bool overflow;
  int fail_with;                /* -1: fail but leave *error alone */
  unsigned frees;
};

static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr_entries, int *error)
{
  struct seen *s = user_data;

  s->calls++;
  snprintf (s->ctx, sizeof s->ctx, "%s", metacontext);
  s->offset = offset;
  if (nr_entries > MAX_ENTRIES) {
    s->overflow = true;
    nr_entries = 0;
  }
  s->nr = nr_entries;
  memcpy (s->e, entries, nr_entries * sizeof *entries);
  if (s->fail_with > 0)
    *error = s->fail_with;
  return s->fail_with ? -1 : 0;
}

static void
extent_free (void *user_data)
{
  ((struct seen *) user_data)->frees++;
}

static nbd_extent_callback
closure (struct seen *s)
{
  return (nbd_extent_callback) { .callback = extent_cb, .user_data = s, .free = extent_free };
}

struct region {
  uint64_t start, end;
  uint32_t flags;
};

/* The extents, clipped to [off, off+count), are exactly @want. */
static bool
extents_are (const char *what, const struct seen *s, uint64_t off, uint64_t count,
             const struct region *want, size_t nwant)
{
  uint64_t pos = off, end = off + count;
  size_t w = 0;

  while (w < nwant && want[w].end <= off)
    w++;
  for (size_t i = 0; i < s->nr && pos < end; i += 2, w++) {
    uint64_t stop = pos + s->e[i] < end ? pos + s->e[i] : end;
    uint64_t wstop = w < nwant ? (want[w].end < end ? want[w].end : end) : 0;

    if (w >= nwant || stop != wstop || s->e[i + 1] != want[w].flags) {
      diag ("%s: extent %zu is [%" PRIu64 ", %" PRIu64 ") flags %" PRIu32
            ", expected [%" PRIu64 ", %" PRIu64 ") flags %" PRIu32, what, i / 2, pos, stop,
            s->e[i + 1], pos, wstop, w < nwant ? want[w].flags : 0);
      return false;
    }
    pos = stop;
  }
  if (pos != end)
    diag ("%s: extents stop at %" PRIu64 ", expected %" PRIu64, what, pos, end);
  return pos == end;
}

static bool
prefix_is (const char *name)
{
  const char *e = nbd_get_error ();
  size_t n = strlen (name);

  return e && strncmp (e, name, n) == 0 && e[n] == ':';
}

static struct nbd_handle *
connect_with (const char *what, const char *uri, const char *extra_ctx)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create");
  if (extra_ctx)
    must (nbd_add_meta_context (h, extra_ctx));
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (!is_int (nbd_connect_uri (h, uri), 0, "%s: connect", what))
    bail_out ("%s: %s", what, nbd_get_error ());
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "%s: base:allocation negotiated", what);
  return h;
}

/* One block status call that should match @want over [off, off+count). */
static void
expect_map (const char *what, struct nbd_handle *h, uint64_t off, uint64_t count,
            const struct region *want, size_t nwant)
{
  struct seen s = { 0 };

  is_int (nbd_block_status (h, count, off, closure (&s), 0), 0,
          "%s: block status %" PRIu64 " at %" PRIu64, what, count, off);
  is_int (s.calls, 1, "%s: callback called once", what);
  is_str (s.ctx, LIBNBD_CONTEXT_BASE_ALLOCATION, "%s: for base:allocation", what);
  is_uint (s.offset, off, "%s: with the request's offset", what);
  ok (!s.overflow && extents_are (what, &s, off, count, want, nwant),
      "%s: the extents are exactly the layout", what);
  is_int (s.frees, 1, "%s: .free called once", what);
}

/* ---- eval plugin: extents we choose ---------------------------------- */

static const struct region eval_map[] = {
  { 0, 4096, 3 },
  { 4096, 8192, 0 },
  { 8192, 16384, 2 },
  { 16384, 32768, 1 },
  { 32768, M, 3 },
};

static void
eval_extents (const struct test_server *srv)
{
  const size_t n = sizeof eval_map / sizeof eval_map[0];
  struct nbd_handle *h = connect_with ("eval", srv->uri, "qemu:allocation-depth");

  is_int (nbd_can_meta_context (h, "qemu:allocation-depth"), 0,
          "eval: a context nbdkit lacks is not negotiated");
  expect_map ("eval, whole disk", h, 0, M, eval_map, n);
  expect_map ("eval, unaligned start", h, 4000, 20000, eval_map, n);
  expect_map ("eval, inside one extent", h, 9000, 100, eval_map, n);
  expect_map ("eval, the last byte", h, M - 1, 1, eval_map, n);

  {
    struct seen s = { 0 };

    is_int (nbd_block_status (h, M - 5000, 5000, closure (&s), LIBNBD_CMD_FLAG_REQ_ONE), 0,
            "eval, REQ_ONE: block status");
    is_int (s.nr, 2, "eval, REQ_ONE: exactly one extent");
    is_int (s.e[0], 8192 - 5000, "eval, REQ_ONE: to the end of the first extent");
    is_int (s.e[1], 0, "eval, REQ_ONE: flags of that extent (data)");
    is_int (s.frees, 1, "eval, REQ_ONE: .free once");
  }
  {
    struct seen s = { 0 };

    /* Inside one long extent: the one extent is no longer than asked. */
    is_int (nbd_block_status (h, 100, 40000, closure (&s), LIBNBD_CMD_FLAG_REQ_ONE), 0,
            "eval, REQ_ONE inside an extent: block status");
    is_int (s.nr, 2, "eval, REQ_ONE inside an extent: exactly one extent");
    ok (s.e[0] >= 1 && s.e[0] <= 100, "eval, REQ_ONE inside an extent: length %" PRIu32
        " within the request", s.e[0]);
    is_int (s.e[1], 3, "eval, REQ_ONE inside an extent: hole|zero");
  }
  {
    struct seen s = { .fail_with = EPERM };

    ok (nbd_block_status (h, M, 0, closure (&s), 0) == -1, "eval: failing callback fails the call");
    is_errno (EPERM, "eval: with the callback's EPERM");
    ok (prefix_is ("nbd_block_status"), "eval: message begins with nbd_block_status: (%s)",
        nbd_get_error ());
    is_int (s.calls, 1, "eval: the callback ran once");
    is_int (s.frees, 1, "eval: .free once");
  }
  {
    struct seen s = { .fail_with = -1 };

    ok (nbd_block_status (h, M, 0, closure (&s), 0) == -1,
        "eval: failing callback that sets no errno fails the call");
    is_errno (EPROTO, "eval: with EPROTO");
    is_int (s.frees, 1, "eval: .free once");
  }
  expect_map ("eval, after the failures", h, 0, M, eval_map, n);
  is_int (nbd_shutdown (h, 0), 0, "eval: shutdown");
  nbd_close (h);
}

/* ---- data plugin: 32K pages ------------------------------------------ */

static void
data_extents (const struct test_server *srv)
{
  static const struct region map[] = {
    { 0, 32 * K, 0 },
    { 32 * K, 128 * K, 3 },
    { 128 * K, 160 * K, 0 },
    { 160 * K, M, 3 },
  };
  const size_t n = sizeof map / sizeof map[0];
  struct nbd_handle *h = connect_with ("data", srv->uri, NULL);

  expect_map ("data, whole disk", h, 0, M, map, n);
  expect_map ("data, around the second page", h, 100 * K + 3, 100 * K, map, n);
  is_int (nbd_shutdown (h, 0), 0, "data: shutdown");
  nbd_close (h);
}

/* ---- memory plugin: extents follow writes and trims ------------------ */

static void
memory_extents (const struct test_server *srv)
{
  static const struct region empty[] = { { 0, M, 3 } };
  static const struct region one[] = {
    { 0, 96 * K, 3 }, { 96 * K, 128 * K, 0 }, { 128 * K, M, 3 },
  };
  struct nbd_handle *h = connect_with ("memory", srv->uri, NULL);
  const char b = 1;

  expect_map ("memory, fresh", h, 0, M, empty, 1);
  is_int (nbd_pwrite (h, &b, 1, 100000, 0), 0, "memory: write one byte at 100000");
  expect_map ("memory, after the write", h, 0, M, one, 3);
  is_int (nbd_trim (h, 32 * K, 96 * K, 0), 0, "memory: trim its page");
  expect_map ("memory, after the trim", h, 0, M, empty, 1);
  is_int (nbd_shutdown (h, 0), 0, "memory: shutdown");
  nbd_close (h);
}

/* ---- sparse-random: extents agree with the data ---------------------- */

static void
sparse_random (const struct test_server *srv)
{
  const uint64_t size = 16 * M;
  struct nbd_handle *h = connect_with ("sparse-random", srv->uri, NULL);
  unsigned char *buf = malloc (size);
  struct seen *s = calloc (1, sizeof *s);
  uint64_t pos = 0, bad_hole = UINT64_MAX, bad_data = UINT64_MAX;
  size_t data = 0, holes = 0;

  if (!buf || !s)
    bail_out ("malloc");
  is_int (nbd_get_size (h), size, "sparse-random: size");
  is_int (nbd_pread (h, buf, size, 0, 0), 0, "sparse-random: read it all");
  is_int (nbd_block_status (h, size, 0, closure (s), 0), 0, "sparse-random: block status");
  ok (!s->overflow && s->nr >= 2, "sparse-random: %zu extents", s->nr / 2);
  for (size_t i = 0; i < s->nr && pos < size; i += 2) {
    uint64_t end = pos + s->e[i] < size ? pos + s->e[i] : size;

    if (s->e[i + 1] == 3) {
      holes++;
      for (uint64_t p = pos; p < end && bad_hole == UINT64_MAX; p++)
        if (buf[p] != 0)
          bad_hole = p;
    }
    else if (s->e[i + 1] == 0) {
      data++;
      for (uint64_t p = pos; p < end && bad_data == UINT64_MAX; p++)
        if (buf[p] == 0)
          bad_data = p;
    }
    else
      diag ("unexpected flags %" PRIu32 " at %" PRIu64, s->e[i + 1], pos);
    pos = end;
  }
  is_uint (pos, size, "sparse-random: the extents tile the disk");
  ok (data > 0 && holes > 0, "sparse-random: both data (%zu) and holes (%zu)", data, holes);
  is_uint (bad_hole, UINT64_MAX, "sparse-random: every hole|zero extent reads as zeroes");
  is_uint (bad_data, UINT64_MAX, "sparse-random: every data extent reads as non-zero bytes");
  is_int (s->frees, 1, "sparse-random: .free once");
  is_int (nbd_shutdown (h, 0), 0, "sparse-random: shutdown");
  nbd_close (h);
  free (s);
  free (buf);
}

int
main (void)
{
  struct test_server s;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  {
    const char *args[] = {
      "eval", "get_size=echo 1048576",
      "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
      "can_extents=exit 0",
      "extents=echo 0 4096 hole,zero; echo 4096 4096 data; echo 8192 8192 zero; "
      "echo 16384 16384 hole; echo 32768 1015808 3",
      NULL
    };
    if (server_start_nbdkit (&s, args) == -1) {
      if (errno == ENOENT)
        skip_all ("nbdkit is not installed");
      bail_out ("cannot start nbdkit eval");
    }
    eval_extents (&s);
    is_int (server_stop (&s), 0, "nbdkit eval stopped");
  }
  {
    const char *args[] = { "data", "1 2 3 @0x20000 5", "size=1M", NULL };
    if (server_start_nbdkit (&s, args) == -1)
      bail_out ("cannot start nbdkit data");
    data_extents (&s);
    is_int (server_stop (&s), 0, "nbdkit data stopped");
  }
  {
    const char *args[] = { "memory", "size=1M", NULL };
    if (server_start_nbdkit (&s, args) == -1)
      bail_out ("cannot start nbdkit memory");
    memory_extents (&s);
    is_int (server_stop (&s), 0, "nbdkit memory stopped");
  }
  {
    const char *args[] = { "sparse-random", "size=16M", "seed=42", "percent=50",
                           "runlength=65536", NULL };
    if (server_start_nbdkit (&s, args) == -1)
      bail_out ("cannot start nbdkit sparse-random");
    sparse_random (&s);
    is_int (server_stop (&s), 0, "nbdkit sparse-random stopped");
  }
  return done_testing ();
}
