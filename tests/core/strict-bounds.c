/* strict-bounds: LIBNBD_STRICT_BOUNDS on its own.
 *
 * Proves: strict mode defaults to LIBNBD_STRICT_MASK and refuses unknown
 * bits (EINVAL); with only STRICT_BOUNDS set, a request reaching past the
 * end of the export (straddling, wholly beyond, offset+count overflowing)
 * is refused by the client before anything is sent — EINVAL for pread,
 * cache and block status, ENOSPC for pwrite, trim and zero, as libnbd 1.14
 * does — with the call's name leading the message, no cookie and nothing
 * in flight, while a request ending exactly at the end succeeds; with every
 * bit but STRICT_BOUNDS set, the same requests get a cookie, go to nbdkit,
 * and fail with nbdkit's own answer, and the handle stays usable.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "strict-common.h"

#define SIZE (1024 * 1024)

static char buf[8192];

enum op { PREAD, PWRITE, TRIM, ZERO, CACHE, BLOCK_STATUS, NR_OPS };
static const char *const sync_name[] = {
  "nbd_pread", "nbd_pwrite", "nbd_trim", "nbd_zero", "nbd_cache", "nbd_block_status"
};
static const char *const aio_name[] = {
  "nbd_aio_pread", "nbd_aio_pwrite", "nbd_aio_trim", "nbd_aio_zero", "nbd_aio_cache",
  "nbd_aio_block_status"
};
/* libnbd 1.14's errno for a request out of bounds. */
static const int oob_errno[] = { EINVAL, ENOSPC, ENOSPC, ENOSPC, EINVAL, EINVAL };
/* What nbdkit 1.32 answers for one (nbdkit: ENOSPC for writes and zeroes). */
static const int nbdkit_errno[] = { EINVAL, ENOSPC, EINVAL, ENOSPC, EINVAL, EINVAL };

static int
sync_op (struct nbd_handle *h, enum op op, uint64_t count, uint64_t off)
{
  switch (op) {
  case PREAD: return nbd_pread (h, buf, count, off, 0);
  case PWRITE: return nbd_pwrite (h, buf, count, off, 0);
  case TRIM: return nbd_trim (h, count, off, 0);
  case ZERO: return nbd_zero (h, count, off, 0);
  case CACHE: return nbd_cache (h, count, off, 0);
  default: return nbd_block_status (h, count, off, EXTENT, 0);
  }
}

static int64_t
aio_op (struct nbd_handle *h, enum op op, uint64_t count, uint64_t off)
{
  switch (op) {
  case PREAD: return nbd_aio_pread (h, buf, count, off, NBD_NULL_COMPLETION, 0);
  case PWRITE: return nbd_aio_pwrite (h, buf, count, off, NBD_NULL_COMPLETION, 0);
  case TRIM: return nbd_aio_trim (h, count, off, NBD_NULL_COMPLETION, 0);
  case ZERO: return nbd_aio_zero (h, count, off, NBD_NULL_COMPLETION, 0);
  case CACHE: return nbd_aio_cache (h, count, off, NBD_NULL_COMPLETION, 0);
  default: return nbd_aio_block_status (h, count, off, EXTENT, NBD_NULL_COMPLETION, 0);
  }
}

/* Wait for @cookie; returns nbd_aio_command_completed's final answer. */

static struct nbd_handle *
connect_with_strict (const char *uri, uint32_t strict)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create");
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (nbd_connect_uri (h, uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  if (!is_int (nbd_set_strict_mode (h, strict), 0, "set strict mode 0x%x", strict))
    bail_out ("%s", nbd_get_error ());
  is_int (nbd_get_strict_mode (h), strict, "strict mode reads back 0x%x", strict);
  return h;
}

static const struct {
  const char *what;
  uint64_t off, count;
} bad[] = {
  { "straddling the end", SIZE - 512, 1024 },
  { "starting at the end", SIZE, 512 },
  { "far beyond the end", UINT64_C (1) << 40, 512 },
  { "offset+count overflowing", UINT64_MAX - 100, 512 },
};

static void
bounds_only (const char *uri)
{
  struct nbd_handle *h = connect_with_strict (uri, LIBNBD_STRICT_BOUNDS);

  for (enum op op = 0; op < NR_OPS; op++) {
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
      int64_t c;

      ok (sync_op (h, op, bad[i].count, bad[i].off) == -1, "bounds only: %s %s fails",
          sync_name[op], bad[i].what);
      is_errno (oob_errno[op], "bounds only: %s %s: errno", sync_name[op], bad[i].what);
      ok (prefix_is (sync_name[op]), "bounds only: message begins with %s: (%s)",
          sync_name[op], nbd_get_error ());
      c = aio_op (h, op, bad[i].count, bad[i].off);
      is_int (c, -1, "bounds only: %s %s gets no cookie", aio_name[op], bad[i].what);
      is_errno (oob_errno[op], "bounds only: %s %s: errno", aio_name[op], bad[i].what);
      ok (prefix_is (aio_name[op]), "bounds only: message begins with %s: (%s)",
          aio_name[op], nbd_get_error ());
    }
    is_int (nbd_aio_in_flight (h), 0, "bounds only: nothing in flight after %s", aio_name[op]);
    is_int (sync_op (h, op, 512, SIZE - 512), 0, "bounds only: %s ending at the end succeeds",
            sync_name[op]);
  }
  is_int (nbd_shutdown (h, 0), 0, "bounds only: shutdown");
  nbd_close (h);
}

static void
bounds_off (const char *uri)
{
  struct nbd_handle *h = connect_with_strict (uri, LIBNBD_STRICT_MASK & ~LIBNBD_STRICT_BOUNDS);

  for (enum op op = 0; op < NR_OPS; op++) {
    for (size_t i = 0; i < 3; i++) {    /* the overflowing one is nbdkit's to judge too */
      int64_t c = aio_op (h, op, bad[i].count, bad[i].off);

      if (!ok (c > 0, "bounds off: %s %s is sent (cookie %" PRId64 ")", aio_name[op],
               bad[i].what, c)) {
        diag ("%s", nbd_get_error ());
        continue;
      }
      is_int (wait_for (h, c), -1, "bounds off: the server fails it");
      is_errno (nbdkit_errno[op], "bounds off: %s %s: nbdkit's errno", aio_name[op],
                bad[i].what);
      ok (prefix_is ("nbd_aio_command_completed"),
          "bounds off: message begins with nbd_aio_command_completed: (%s)", nbd_get_error ());
    }
    ok (sync_op (h, op, 1024, SIZE - 512) == -1, "bounds off: %s straddling the end fails",
        sync_name[op]);
    is_errno (nbdkit_errno[op], "bounds off: %s: nbdkit's errno", sync_name[op]);
    ok (prefix_is (sync_name[op]), "bounds off: message begins with %s: (%s)", sync_name[op],
        nbd_get_error ());
    is_int (nbd_aio_is_ready (h), 1, "bounds off: handle still ready after %s", sync_name[op]);
    is_int (sync_op (h, op, 512, 0), 0, "bounds off: an in-bounds %s succeeds", sync_name[op]);
  }
  is_int (nbd_shutdown (h, 0), 0, "bounds off: shutdown");
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;
  const char *args[] = { "memory", "size=1M", NULL };
  struct nbd_handle *h;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  is_int (nbd_get_strict_mode (h), LIBNBD_STRICT_MASK, "strict mode defaults to all bits");
  is_int (LIBNBD_STRICT_MASK, 0x1f, "LIBNBD_STRICT_MASK is 0x1f (libnbd 1.14)");
  ok (nbd_set_strict_mode (h, LIBNBD_STRICT_MASK + 1) == -1, "an unknown strict bit is refused");
  is_errno (EINVAL, "with EINVAL");
  ok (prefix_is ("nbd_set_strict_mode"), "message begins with nbd_set_strict_mode: (%s)",
      nbd_get_error ());
  is_int (nbd_get_strict_mode (h), LIBNBD_STRICT_MASK, "strict mode unchanged");
  nbd_close (h);

  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit");
  }
  bounds_only (s.uri);
  bounds_off (s.uri);
  is_int (server_stop (&s), 0, "nbdkit stopped");
  return done_testing ();
}
