/* io-block-status-qemu: nbd_block_status against qemu-nbd on qcow2 images
 * with known written, zeroed and untouched clusters.
 *
 * Proves: base:allocation extents carry exactly the expected hole/zero
 * flags over every byte they describe and cover at least the request;
 * the callback is called once per negotiated context, with that context's
 * name and the request's offset; qemu:allocation-depth (qemu-nbd -A) gives
 * depth 1 exactly for allocated clusters (the zeroed one too) and 0 for the
 * rest; qemu:dirty-bitmap:b0 (qemu-nbd -B) marks exactly the clusters
 * written after the bitmap was added; LIBNBD_CMD_FLAG_REQ_ONE gives one
 * extent per context, no longer than the request; an extent callback
 * returning -1 with *error set fails the call with that errno, and .free
 * runs once in every case.
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
#define SIZE (4 * M)
#define MAX_CALLS 8
#define MAX_ENTRIES 1024

/* ---- What the server should say -------------------------------------- */

struct region {
  uint64_t start, end;
  uint32_t flags;
};

/* image 1: data 64k+64k, 1M+128k; zero cluster 2M+64k; rest untouched. */
static const struct region alloc1[] = {
  { 0, 64 * K, 3 },
  { 64 * K, 128 * K, 0 },
  { 128 * K, M, 3 },
  { M, M + 128 * K, 0 },
  { M + 128 * K, SIZE, 3 },       /* the zero cluster reads as hole|zero */
};
static const struct region depth1[] = {
  { 0, 64 * K, 0 },
  { 64 * K, 128 * K, 1 },
  { 128 * K, M, 0 },
  { M, M + 128 * K, 1 },
  { M + 128 * K, 2 * M, 0 },
  { 2 * M, 2 * M + 64 * K, 1 },
  { 2 * M + 64 * K, SIZE, 0 },
};
/* image 2: 0+64k and 1M+64k written before the bitmap, 1M+64k and
 * 3M+128k after. */
static const struct region alloc2[] = {
  { 0, 64 * K, 0 },
  { 64 * K, M, 3 },
  { M, M + 64 * K, 0 },
  { M + 64 * K, 3 * M, 3 },
  { 3 * M, 3 * M + 128 * K, 0 },
  { 3 * M + 128 * K, SIZE, 3 },
};
static const struct region dirty2[] = {
  { 0, M, 0 },
  { M, M + 64 * K, 1 },
  { M + 64 * K, 3 * M, 0 },
  { 3 * M, 3 * M + 128 * K, 1 },
  { 3 * M + 128 * K, SIZE, 0 },
};

struct expect {
  const char *ctx;
  const struct region *r;
  size_t n;
};

static const struct region *
region_at (const struct expect *x, uint64_t pos)
{
  for (size_t i = 0; i < x->n; i++)
    if (pos >= x->r[i].start && pos < x->r[i].end)
      return &x->r[i];
  return NULL;
}

/* ---- What the callback saw ------------------------------------------- */

struct call {
  char ctx[64];
  uint64_t offset;
  size_t nr;                    /* entries: length/flags pairs, so 2 per extent */
  uint32_t e[MAX_ENTRIES];
  int error_in;
};

struct seen {
  struct call c[MAX_CALLS];
  size_t n;
  bool overflow;
  int fail_with;
  unsigned frees;
};

static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr_entries, int *error)
{
  struct seen *s = user_data;
  struct call *c;

  if (s->n == MAX_CALLS || nr_entries > MAX_ENTRIES) {
    s->overflow = true;
    return 0;
  }
  c = &s->c[s->n++];
  snprintf (c->ctx, sizeof c->ctx, "%s", metacontext);
  c->offset = offset;
  c->nr = nr_entries;
  memcpy (c->e, entries, nr_entries * sizeof *entries);
  c->error_in = *error;
  if (s->fail_with) {
    *error = s->fail_with;
    return -1;
  }
  return 0;
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

static const struct call *
call_for (const struct seen *s, const char *ctx, unsigned *times)
{
  const struct call *r = NULL;

  *times = 0;
  for (size_t i = 0; i < s->n; i++)
    if (strcmp (s->c[i].ctx, ctx) == 0) {
      r = &s->c[i];
      (*times)++;
    }
  return r;
}

/* Every byte of [offset, offset+count) an extent describes has the flags
 * the extent says; the extents cover at least the request (or, with
 * req_one, there is exactly one, within the request). */
static bool
extents_exact (const struct call *c, const struct expect *x, uint64_t offset, uint64_t count,
               bool req_one)
{
  uint64_t pos = offset, end = offset + count;

  if (c->nr == 0 || c->nr % 2) {
    diag ("%s: %zu entries", x->ctx, c->nr);
    return false;
  }
  if (req_one && (c->nr != 2 || c->e[0] > count)) {
    diag ("%s: REQ_ONE gave %zu extents, the first %" PRIu32 " bytes for a %" PRIu64
          "-byte request", x->ctx, c->nr / 2, c->e[0], count);
    return false;
  }
  for (size_t i = 0; i < c->nr && pos < end; i += 2) {
    uint64_t len = c->e[i], stop = pos + len < end ? pos + len : end;
    uint32_t flags = c->e[i + 1];

    if (len == 0) {
      diag ("%s: zero-length extent %zu", x->ctx, i / 2);
      return false;
    }
    for (uint64_t p = pos; p < stop;) {
      const struct region *r = region_at (x, p);

      if (!r || r->flags != flags) {
        diag ("%s: extent %zu [%" PRIu64 ", +%" PRIu64 ") says flags %" PRIu32
              ", but at %" PRIu64 " they are %" PRIu32, x->ctx, i / 2, pos, len, flags, p,
              r ? r->flags : 0xffffffffu);
        return false;
      }
      p = r->end;
    }
    pos += len;
  }
  if (!req_one && pos < end) {
    diag ("%s: extents end at %" PRIu64 ", before the request's end %" PRIu64, x->ctx, pos,
          end);
    return false;
  }
  return true;
}

static bool
prefix_is (const char *name)
{
  const char *e = nbd_get_error ();
  size_t n = strlen (name);

  return e && strncmp (e, name, n) == 0 && e[n] == ':';
}

/* ---- The runs --------------------------------------------------------- */

static void
check_image (const char *what, const char *uri, const struct expect *xs, size_t nx)
{
  static const struct { uint64_t off, count; } req[] = {
    { 0, SIZE },
    { 0, 64 * K },
    { 64 * K, 64 * K },
    { 100, 200 * K },
    { M - 1, 2 },
    { M + 100, 3 * M - 200 },
    { SIZE - 1, 1 },
  };
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create");
  for (size_t i = 0; i < nx; i++)
    is_int (nbd_add_meta_context (h, xs[i].ctx), 0, "%s: request %s", what, xs[i].ctx);
  if (!is_int (nbd_connect_uri (h, uri), 0, "%s: connect", what))
    bail_out ("%s", nbd_get_error ());
  for (size_t i = 0; i < nx; i++)
    is_int (nbd_can_meta_context (h, xs[i].ctx), 1, "%s: %s negotiated", what, xs[i].ctx);

  for (size_t i = 0; i < sizeof req / sizeof req[0]; i++) {
    for (int one = 0; one <= 1; one++) {
      struct seen s = { 0 };
      const char *mode = one ? "REQ_ONE" : "no flags";

      is_int (nbd_block_status (h, req[i].count, req[i].off, closure (&s),
                                one ? LIBNBD_CMD_FLAG_REQ_ONE : 0), 0,
              "%s, %s: nbd_block_status %" PRIu64 " at %" PRIu64, what, mode, req[i].count,
              req[i].off);
      ok (!s.overflow, "%s, %s: callback records fit", what, mode);
      is_int (s.n, nx, "%s, %s: one callback per context", what, mode);
      is_int (s.frees, 1, "%s, %s: .free called once", what, mode);
      for (size_t j = 0; j < nx; j++) {
        unsigned times;
        const struct call *c = call_for (&s, xs[j].ctx, &times);

        if (!is_int (times, 1, "%s, %s: callback for %s exactly once", what, mode, xs[j].ctx))
          continue;
        is_uint (c->offset, req[i].off, "%s, %s: %s: the offset is the request's", what, mode,
                 xs[j].ctx);
        is_int (c->error_in, 0, "%s, %s: %s: *error 0 on input", what, mode, xs[j].ctx);
        ok (extents_exact (c, &xs[j], req[i].off, req[i].count, one),
            "%s, %s: %s: %zu extents, each with the exact flags", what, mode, xs[j].ctx,
            c->nr / 2);
      }
    }
  }

  /* The callback fails: the call fails with its errno, the handle lives. */
  {
    struct seen s = { .fail_with = ENOSPC };

    ok (nbd_block_status (h, SIZE, 0, closure (&s), 0) == -1,
        "%s: block status fails when the extent callback fails", what);
    is_errno (ENOSPC, "%s: with the callback's ENOSPC", what);
    ok (prefix_is ("nbd_block_status"), "%s: message begins with nbd_block_status: (%s)", what,
        nbd_get_error ());
    is_int (s.n, nx, "%s: every context's callback still ran", what);
    if (nx > 1)
      is_int (s.c[1].error_in, ENOSPC, "%s: the second saw *error = ENOSPC", what);
    is_int (s.frees, 1, "%s: .free called once", what);
  }
  {
    struct seen s = { 0 };

    is_int (nbd_block_status (h, 64 * K, 0, closure (&s), 0), 0,
            "%s: next block status succeeds", what);
    is_int (s.frees, 1, "%s: .free called once", what);
  }
  /* Rejected before sending: .free still once, callback never. */
  {
    struct seen s = { 0 };

    ok (nbd_block_status (h, 2, SIZE - 1, closure (&s), 0) == -1,
        "%s: block status past the end fails", what);
    is_errno (EINVAL, "%s: with EINVAL", what);
    is_int (s.n, 0, "%s: callback not called", what);
    is_int (s.frees, 1, "%s: .free called once", what);
  }
  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown", what);
  nbd_close (h);
}

int
main (void)
{
  static const char *const cmds1[] = {
    "write -P 0x11 64k 64k", "write -P 0x22 1M 128k", "write -z 2M 64k", NULL
  };
  static const char *const cmds2[] = { "write -P 0x44 0 64k", "write -P 0x44 1M 64k", NULL };
  struct test_server s;
  char *img1, *img2;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  img1 = image_create ("qcow2", SIZE, cmds1);
  img2 = image_create ("qcow2", SIZE, cmds2);
  if (!img1 || !img2)
    bail_out ("cannot create the images");
  {
    const char *bm[] = { "qemu-img", "bitmap", "--add", img2, "b0", NULL };
    const char *io[] = { "qemu-io", "-f", "qcow2", "-c", "write -P 0x55 1M 64k",
                         "-c", "write -P 0x55 3M 128k", img2, NULL };
    if (servers_run (bm, 60) != 0 || servers_run (io, 60) != 0)
      bail_out ("cannot add the bitmap or write after it");
  }

  {
    const char *args[] = { "-f", "qcow2", "-A", img1, NULL };
    const struct expect xs[] = {
      { LIBNBD_CONTEXT_BASE_ALLOCATION, alloc1, sizeof alloc1 / sizeof alloc1[0] },
      { "qemu:allocation-depth", depth1, sizeof depth1 / sizeof depth1[0] },
    };
    if (server_start_qemu_nbd (&s, args) == -1)
      bail_out ("cannot start qemu-nbd");
    check_image ("base:allocation", s.uri, xs, 1);
    check_image ("base:allocation + allocation-depth", s.uri, xs, 2);
    is_int (server_stop (&s), 0, "qemu-nbd stopped");
  }
  {
    const char *args[] = { "-f", "qcow2", "-B", "b0", img2, NULL };
    const struct expect xs[] = {
      { "qemu:dirty-bitmap:b0", dirty2, sizeof dirty2 / sizeof dirty2[0] },
      { LIBNBD_CONTEXT_BASE_ALLOCATION, alloc2, sizeof alloc2 / sizeof alloc2[0] },
    };
    if (server_start_qemu_nbd (&s, args) == -1)
      bail_out ("cannot start qemu-nbd");
    check_image ("dirty-bitmap + base:allocation", s.uri, xs, 2);
    is_int (server_stop (&s), 0, "qemu-nbd stopped");
  }
  free (img1);
  free (img2);
  return done_testing ();
}
